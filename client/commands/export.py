"""``gpuprof export``: write a job's trace to Parquet or CSV, like ``gpuprof sample`` does."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import pandas as pd

from gpuprof.sampler.errors import OutputError
from gpuprof.sampler.trace import check_writable, output_paths

from ..api import Client
from .common import echo_json, endpoint_option, json_option


def write_frames(
    samples: pd.DataFrame, energy: pd.DataFrame, path: str, meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write samples to ``path`` and energy readings to NAME.energy.EXT, with gpuprof's metadata."""
    target, energy_path, fmt = output_paths(path)
    try:
        for file, frame in ((target, samples), (energy_path, energy)):
            tmp = file.with_name(f".{file.name}.tmp")
            if fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(frame, preserve_index=False)
                merged = {**(table.schema.metadata or {}), b"gpuprof": json.dumps(meta, default=str).encode()}
                pq.write_table(table.replace_schema_metadata(merged), tmp)
            else:
                frame.to_csv(tmp, index=False)
            os.replace(tmp, file)  # a reader never sees a half-written file
        if fmt == "csv":
            target.with_name(f"{target.stem}.meta.json").write_text(json.dumps(meta, indent=2, default=str))
    except OSError as exc:
        raise OutputError(f"cannot write {str(exc.filename or target)!r}: {exc.strerror}") from exc
    return target, energy_path


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
