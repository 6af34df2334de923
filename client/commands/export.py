"""``gpuprof export``: write a job's trace to Parquet or CSV, like ``gpuprof sample`` does."""

from __future__ import annotations

from typing import Any

import click

from gpuprof.sampler.trace import check_writable, output_paths, write_frames

from ..api import Client
from .common import echo_json, endpoint_option, json_option


def export_job(client: Client, job_id: str, output: str) -> dict[str, Any]:
    """Fetch a job's trace and energy readings and write them; returns what was written."""
    output_paths(output)
    check_writable(output)
    job = client.job(job_id)
    samples, energy = client.trace(job_id, "samples"), client.trace(job_id, "energy")
    clocks = client.time()  # the daemon's clocks read together: relates t_ns to the wall clock
    meta = {
        "monotonic_anchor_ns": clocks.get("monotonic_ns"),
        "wall_anchor_ns": clocks.get("wall_ns"),
        "simulated": bool(job.get("simulated")),
        "job": job_id,
        "job_state": job.get("state"),
        "source": f"gpuprofd at {client.endpoint}",
    }
    samples_path, energy_path = write_frames(samples, energy, output, meta)
    return {"job": job_id, "samples": str(samples_path), "energy": str(energy_path), "rows": len(samples)}


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "-o", "--output", required=True, help="Trace file, .parquet or .csv (energy goes to NAME.energy.EXT)."
)
@json_option
@endpoint_option
def export(job_id: str, output: str, as_json: bool, endpoint: str) -> None:
    """Write JOB's power and clock trace, and its energy-counter readings beside it.

    The files have the columns of `gpuprof sample`'s; timestamps are the daemon host's CLOCK_MONOTONIC.

    \b
    Examples:
      gpuprof export 3f2a9c -o run.parquet      writes run.parquet and run.energy.parquet
      gpuprof export 3f2a9c -o run.csv          writes run.csv, run.energy.csv and run.meta.json
    """
    with Client(endpoint) as client:
        written = export_job(client, job_id, output)
    if as_json:
        echo_json(written)
    else:
        click.echo(
            f"wrote {written['rows']:,} samples to {written['samples']}, energy to {written['energy']}"
        )
