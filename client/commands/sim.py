"""``gpuprof sim``: inspect and drive gpuprof's simulated GPUs (no NVIDIA driver needed)."""

from __future__ import annotations

import json
import time

import click

from gpuprof.client.wire.errors import UsageError
from gpuprof.sampler.errors import NVML_ERROR_CODES, nvml_error_name
from gpuprof.sampler.sim import SimulatedNvml, load_config

from .common import echo_json, json_option


@click.group()
def sim() -> None:
    """Inspect and drive the simulated GPUs that --simulate uses.

    The simulated GPUs' state (utilization, locked clocks, power limit, energy) lives in a file shared
    by every process of this user: $GPUPROF_SIM_STATE, or a per-user default. Everything shown here is
    SIMULATED.

    \b
    Examples:
      gpuprof sim status --json
      gpuprof sim load --gpu 0 --util 90 --seconds 30
      gpuprof sim configure eight-gpus.json
    """


def _said(as_json: bool, text: str, **fields: object) -> None:
    """What a sim command did: the sentence, or with --json one object (always "simulated": true)."""
    if as_json:
        echo_json({"simulated": True, **fields})
    else:
        click.echo(text)


@sim.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Show each simulated GPU's utilization, clocks, locks, power limit and energy.

    \b
    Examples:
      gpuprof sim status
      gpuprof sim status --json | jq '.gpus[0].power_w'
    """
    simulator = SimulatedNvml()
    gpus = simulator.status()
    if as_json:
        payload = {"simulated": True, "state": simulator.state_path, "gpus": [g.as_dict() for g in gpus]}
        click.echo(json.dumps(payload))
        return
    click.echo(f"SIMULATED GPUs (state {simulator.state_path})")
    for g in gpus:
        lock = (
            "unlocked"
            if g.locked_sm_clock_range_mhz is None
            else "locked {}-{} MHz".format(*g.locked_sm_clock_range_mhz)
        )
        failing = "" if g.failing_code is None else f"  FAILING with {nvml_error_name(g.failing_code)}"
        click.echo(
            f"  GPU {g.index}  {g.name}  util {g.util_pct:.0f}%  SM {g.sm_clock_mhz} MHz ({lock})  "
            f"mem {g.mem_clock_mhz} MHz  {g.power_w:.1f} W of {g.power_limit_w:.0f} W limit  "
            f"{g.temp_c:.0f} C  energy {g.energy_j:,.1f} J{failing}"
        )


@sim.command()
@click.option("--gpu", type=click.IntRange(min=0), default=0, show_default=True, help="Simulated GPU index.")
@click.option("--util", type=click.FloatRange(0, 100), required=True, help="Utilization in percent (0-100).")
@click.option(
    "--seconds", type=click.FloatRange(min=0, min_open=True), help="Hold for S seconds, then restore."
)
@json_option
def load(gpu: int, util: float, seconds: float | None, as_json: bool) -> None:
    """Set a simulated GPU's utilization (what a running kernel would do to it).

    Without --seconds the load stays until changed; with it, the previous load is restored afterwards
    (also on Ctrl-C).

    \b
    Examples:
      gpuprof sim load --util 80                      GPU 0 busy 80% of the time, until changed
      gpuprof sim load --gpu 1 --util 100 --seconds 10   then back to what it was
      gpuprof sim load --util 0                       idle again
    """
    simulator = SimulatedNvml()
    gpus = simulator.status()
    before = gpus[gpu].util_pct if gpu < len(gpus) else 0.0
    simulator.set_utilization(gpu, util)
    _said(as_json, f"simulated GPU {gpu}: utilization {util:g}%", gpu=gpu, util_pct=util, previous_pct=before)
    if seconds is None:
        return
    try:
        time.sleep(seconds)
    finally:
        simulator.set_utilization(gpu, before)
        _said(as_json, f"simulated GPU {gpu}: utilization restored to {before:g}%", gpu=gpu, util_pct=before)


@sim.command()
@click.option("--gpu", type=click.IntRange(min=0), default=0, show_default=True, help="Simulated GPU index.")
@click.argument("code")
@json_option
def fail(gpu: int, code: str, as_json: bool) -> None:
    """Make every NVML call on a simulated GPU fail with CODE (e.g. GPU_IS_LOST); `clear` heals it.

    \b
    Examples:
      gpuprof sim fail GPU_IS_LOST --gpu 1            what a fallen-off-the-bus GPU does to gpuprofd
      gpuprof sim fail clear --gpu 1
    """
    if code.lower() == "clear":
        SimulatedNvml().set_failure(gpu, None)
        _said(as_json, f"simulated GPU {gpu}: healthy", gpu=gpu, failing=None)
        return
    name = code.upper() if code.upper().startswith("NVML_ERROR_") else f"NVML_ERROR_{code.upper()}"
    if name not in NVML_ERROR_CODES:
        choices = ", ".join(n.removeprefix("NVML_ERROR_") for n in NVML_ERROR_CODES if n != "NVML_SUCCESS")
        raise UsageError(f"unknown NVML error {code!r}; choose one of {choices}")
    SimulatedNvml().set_failure(gpu, NVML_ERROR_CODES[name])
    _said(as_json, f"simulated GPU {gpu}: every NVML call now fails with {name}", gpu=gpu, failing=name)


@sim.command()
@click.argument("config", type=click.Path(dir_okay=False))
@json_option
def configure(config: str, as_json: bool) -> None:
    """Reset the simulated GPUs from a JSON CONFIG file (docs/simulated-gpu.md lists its keys).

    \b
    Example:
      echo '{"gpus": [{}, {}, {}, {}]}' > four.json && gpuprof sim configure four.json   four H100s
    """
    simulator = SimulatedNvml()
    simulator.configure(load_config(config))
    count = len(simulator.status())
    _said(as_json, f"simulated GPUs configured from {config} ({count} GPUs)", config=config, gpus=count)


@sim.command()
@json_option
def reset(as_json: bool) -> None:
    """Reset the simulated GPUs to the default (one H100), clearing loads, locks and failures.

    \b
    Example:
      gpuprof sim reset && gpuprof sim status
    """
    SimulatedNvml().reset()
    _said(as_json, "simulated GPUs reset to defaults", gpus=len(SimulatedNvml().status()))


@sim.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def log(as_json: bool) -> None:
    """List the control calls (clock locks, power limits) made on the simulated GPUs, oldest first.

    \b
    Examples:
      gpuprof sim log                                 after a sweep: every lock, and every reset
      gpuprof sim log --json | jq '.calls | length'
    """
    calls = SimulatedNvml().control_log()
    if as_json:
        click.echo(
            json.dumps({"simulated": True, "calls": [vars(c) | {"result": c.result_name} for c in calls]})
        )
        return
    if not calls:
        click.echo("no control calls recorded")
    for c in calls:
        click.echo(f"  #{c.seq} pid {c.pid} uid {c.uid} GPU {c.gpu}: {c.call}{c.args} -> {c.result_name}")
