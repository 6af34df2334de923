"""``gpuprof status``: how the daemon is doing: its sampler's timing and losses, its history, its queues."""

from __future__ import annotations

import time
from typing import Any

import click

from gpuprof.client.wire.errors import DaemonUnavailable

from ..api import Client
from ..render import nvml_errors_text
from .common import echo_json, endpoint_option, json_option


def render_status(stats: dict[str, Any], endpoint: str) -> str:
    """The ``stats`` reply as a few lines of text."""
    sampler, history, publish, jobs = stats["sampler"], stats["history"], stats["publish"], stats["jobs"]
    misses, nvml = sampler["deadline_misses"], sampler.get("read_overrun_misses", 0)
    source = "SIMULATED GPU" if stats["simulated"] else "NVIDIA driver"
    errors = nvml_errors_text(sampler["errors"])
    queued = ", ".join(f"GPU {gpu}: {n}" for gpu, n in jobs["queued"].items()) or "none"
    running = ", ".join(f"GPU {gpu}: {job}" for gpu, job in jobs["running"].items()) or "none"
    p99 = sampler["jitter_p99_us"]
    priority = sampler.get("realtime_priority") or 0
    scheduling = f"SCHED_FIFO {priority}" if priority else "normal priority"
    if sampler.get("realtime_error"):
        scheduling += f" ({sampler['realtime_error']})"
    lines = [
        f"gpuprofd at {endpoint}  ({source}), up {stats['uptime_s']:,.0f} s",
        f"  sampler    {sampler['backend']}, {scheduling}, "
        f"{sampler['achieved_rate_hz']:,.1f} Hz of {sampler['rate_hz']:,.0f} Hz; "
        f"jitter p99 {'-' if p99 is None else f'{p99:.0f} us'}; {misses:,} deadline misses "
        f"({nvml:,} in slow NVML reads, {misses - nvml:,} from late wake-ups); "
        f"{sampler['overflows'] + sampler['energy_overflows']:,} overflows",
        f"  nvml       {errors or 'no errors'}",
        f"  history    {history['samples']:,} samples of {history['capacity']:,} "
        f"({history['seconds']:g} s, {history['bytes'] / 2**20:.0f} MiB); "
        f"{history['dropped_samples']:,} aged out",
        f"  live       a batch every {publish['interval_ms']:g} ms; {publish['batches']:,} published; "
        f"a viewer falling {publish['hwm']:,} batches behind loses the excess",
        f"  jobs       running {running}; queued {queued}",
    ]
    return "\n".join(lines)


@click.command()
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=0,
    metavar="S",
    help="Wait up to S seconds for the daemon to answer (one just started in the background).",
)
@json_option
@endpoint_option
def status(wait_s: float, as_json: bool, endpoint: str) -> None:
    """Show the daemon's health: sampler rate, deadline misses and NVML errors, history, queues.

    Deadline misses are split by their larger cause: slow NVML reads (the driver stalls now and then),
    or the sampler thread waking late (CPU contention on the node).

    \b
    Examples:
      gpuprof status --json
      gpuprof status --wait 30        after starting gpuprofd in the background: once it answers
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with Client(endpoint) as client:
                stats = client.stats()
            break
        except DaemonUnavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)
    if as_json:
        echo_json(stats)
    else:
        click.echo(render_status(stats, endpoint))
