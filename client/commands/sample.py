"""``gpuprof sample``: record a power and clock trace of one or more GPUs to Parquet or CSV."""

from __future__ import annotations

import json
import sys

import click
import numpy as np

from gpuprof.sampler import BACKENDS, Sampler, SamplerConfig, open_sampler
from gpuprof.sampler.backend import DEFAULT_ENERGY_RATE_HZ, DEFAULT_RATE_HZ, DEFAULT_SPIN_US
from gpuprof.sampler.library import resolve
from gpuprof.sampler.recording import record
from gpuprof.sampler.summary import summarize
from gpuprof.sampler.trace import check_writable, driver_power_path, output_paths, write_trace

from ..render import render_summary
from .run import simulate_without_driver


def _progress(batch: np.ndarray, count: int, elapsed: float, seconds: float | None) -> None:
    latest = {int(s["gpu"]): s["power_mw"] / 1000 for s in batch[-64:]}
    powers = "  ".join(f"GPU{gpu} {watts:6.1f} W" for gpu, watts in sorted(latest.items()))
    total = f"/{seconds:.0f}" if seconds is not None else ""
    click.echo(f"\r  {elapsed:6.1f}{total} s  {count:>9,} samples  {powers}   ", nl=False, err=True)


@click.command()
@click.option(
    "--gpu", "gpus", type=int, multiple=True, help="GPU index to sample (repeat for several). Default: 0."
)
@click.option("--rate", type=float, default=DEFAULT_RATE_HZ, show_default=True, help="Fast-loop rate in Hz.")
@click.option(
    "--energy-rate",
    type=float,
    default=DEFAULT_ENERGY_RATE_HZ,
    show_default=True,
    help=(
        "Energy-counter reads per second between its updates (each read spins ~3 ms on an H100); from "
        "shortly before each ~100 ms update until it shows they go back to back, so every update is timed "
        "within one read. Only the reads around a change are kept (0 turns them off)."
    ),
)
@click.option("--seconds", type=float, help="How long to record. Default: until Ctrl-C.")
@click.option(
    "-o",
    "--output",
    required=True,
    help=(
        "Trace file, .parquet or .csv (energy goes to NAME.energy.EXT, the driver's power samples to "
        "NAME.driver_power.EXT)."
    ),
)
@click.option("--simulate", is_flag=True, help="Sample gpuprof's simulated GPU (automatic without a driver).")
@click.option("--backend", type=click.Choice(BACKENDS), default="cython", show_default=True, help="Sampler.")
@click.option(
    "--spin-us",
    type=int,
    default=DEFAULT_SPIN_US,
    show_default=True,
    help="Busy-wait this long before each tick: less timing jitter for more CPU (0 sleeps all the way).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def sample(
    gpus: tuple[int, ...],
    rate: float,
    energy_rate: float,
    seconds: float | None,
    output: str,
    simulate: bool,
    backend: str,
    spin_us: int,
    as_json: bool,
) -> None:
    """Record a timestamped power, clock, utilization and temperature trace.

    Power is NVML's instant power field (a ~25 ms average refreshed every ~100 ms on an H100); the
    energy counter is read on its own slower thread. The summary gives energy both ways, with
    bounds, over the recorded window. Ctrl-C stops recording and keeps everything recorded.

    \b
    Examples:
      gpuprof sample --seconds 30 -o run.parquet
      gpuprof sample --gpu 0 --gpu 1 --rate 10000 --seconds 5 -o fast.csv --json
    """
    if seconds is not None and not (0 < seconds < float("inf")):
        raise click.BadParameter(f"must be a finite number > 0, got {seconds:g}", param_hint="--seconds")
    output_paths(output)
    check_writable(output)
    config = SamplerConfig(gpus=gpus or (0,), rate_hz=rate, energy_rate_hz=energy_rate, spin_us=spin_us)
    library = resolve(simulate=simulate_without_driver(simulate))
    sampler = open_sampler(config, library, backend=backend)
    try:
        _run(sampler, library.label, seconds, output, as_json)
    finally:
        sampler.close()


def _run(sampler: Sampler, label: str, seconds: float | None, output: str, as_json: bool) -> None:
    config = sampler.config
    if not as_json or sys.stderr.isatty():
        until = f"for {seconds:g} s" if seconds is not None else "until Ctrl-C"
        click.echo(
            f"Sampling GPU {', '.join(map(str, config.gpus))} on the {label} "
            f"at {config.rate_hz:g} Hz {until}...",
            err=True,
        )
    show = sys.stderr.isatty()
    recording = record(
        sampler, seconds, progress=(lambda b, n, e: _progress(b, n, e, seconds)) if show else None
    )
    if show:
        click.echo("", err=True)
    summary = summarize(recording)
    samples_path, energy_path = write_trace(recording.trace, output, wall_clock=True)
    summary["output"] = {
        "samples": str(samples_path),
        "energy": str(energy_path),
        "driver_power": str(driver_power_path(samples_path)),
    }
    if as_json:
        click.echo(json.dumps(summary, default=str))
    else:
        click.echo(render_summary(summary))
