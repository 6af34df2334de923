"""``gpuprof export``: write a job's trace to Parquet or CSV, like ``gpuprof sample`` does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from gpuprof.client.wire.errors import OutputError, UsageError
from gpuprof.sampler.trace import check_writable, driver_power_path, output_paths, write_frames

from ..api import Client
from .common import echo_json, endpoint_option, json_option


def export_job(client: Client, job_id: str, output: str) -> dict[str, Any]:
    """Fetch a job's trace, energy readings and driver power samples and write them; returns what was
    written."""
    output_paths(output)
    check_writable(output)
    job = client.job(job_id)
    job_id = str(job["id"])  # a prefix given, the whole id from here on
    samples, energy = client.trace(job_id, "samples"), client.trace(job_id, "energy")
    keeps_driver_power = "driver_power" in client.hello().get("capabilities", [])  # an older daemon does not
    driver_power = client.trace(job_id, "driver_power") if keeps_driver_power else None
    clocks = client.time()  # the daemon's clocks read together: relates t_ns to the wall clock
    meta = {
        "monotonic_anchor_ns": clocks.get("monotonic_ns"),
        "wall_anchor_ns": clocks.get("wall_ns"),
        "simulated": bool(job.get("simulated")),
        "job": job_id,
        "job_state": job.get("state"),
        "source": f"gpuprofd at {client.endpoint}",
    }
    samples_path, energy_path = write_frames(
        samples, energy, output, meta, wall_clock=True, driver_power=driver_power
    )
    written = {"job": job_id, "samples": str(samples_path), "energy": str(energy_path), "rows": len(samples)}
    if driver_power is not None:
        written["driver_power"] = str(driver_power_path(samples_path))
    return written


def export_requests(client: Client, job_id: str, output: str) -> dict[str, Any]:
    """Fetch an llm job's requests table and write it (Parquet or CSV, by the file's suffix)."""
    path = Path(output)
    if path.suffix not in (".parquet", ".csv"):
        raise UsageError(f"{output}: the requests file must end in .parquet or .csv")
    check_writable(output)
    frame = client.requests(job_id)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, path)  # a reader never sees a half-written file
    except OSError as exc:
        raise OutputError(f"cannot write {output!r}: {exc.strerror}") from exc
    return {"job": job_id, "requests": str(path), "rows": len(frame)}


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "-o",
    "--output",
    required=True,
    help=(
        "Trace file, .parquet or .csv (energy goes to NAME.energy.EXT, the driver's power samples to "
        "NAME.driver_power.EXT)."
    ),
)
@click.option(
    "--requests",
    "requests_",
    is_flag=True,
    help="Write an llm job's requests table (one row per request) to OUTPUT instead of the trace.",
)
@json_option
@endpoint_option
def export(job_id: str, output: str, requests_: bool, as_json: bool, endpoint: str) -> None:
    """Write JOB's power and clock trace, and its energy-counter readings and the driver's power samples
    beside it.

    The files have the columns of `gpuprof sample`'s; timestamps are the daemon host's CLOCK_MONOTONIC.
    With --requests, write an llm job's requests instead: tokens, phases, energy, input features and
    quality of each request (columns in docs/llm.md).

    \b
    Examples:
      gpuprof export 01m97091dk4s -o run.parquet      writes run.parquet, run.energy.parquet and
                                                      run.driver_power.parquet
      gpuprof export 01m97091dk4s -o run.csv          writes run.csv, run.energy.csv, run.driver_power.csv
                                                      and run.meta.json
      gpuprof export 01m97091dk4s --requests -o requests.parquet
    """
    with Client(endpoint) as client:
        if requests_:
            written = export_requests(client, job_id, output)
            if as_json:
                echo_json(written)
            else:
                click.echo(f"wrote {written['rows']:,} requests to {written['requests']}")
            return
        written = export_job(client, job_id, output)
    if as_json:
        echo_json(written)
    else:
        also = f", driver power to {written['driver_power']}" if "driver_power" in written else ""
        click.echo(
            f"wrote {written['rows']:,} samples to {written['samples']}, energy to {written['energy']}{also}"
        )
