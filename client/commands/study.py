"""``gpuprof study``: split an llm spec into point specs, run one point (a Slurm array task), gather them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
from pathlib import Path

import click

from ..api import Client
from ..job_render import job_json
from ..llm_render import requests_json
from ..study import BY, gather, point_file, provenance, result_file, split
from ..wire.errors import OutputError
from ..wire.jobspec import load_job_spec
from .common import echo_json, endpoint_option, json_option
from .run import follow_or_cancel, private_daemon, probe


@click.group()
def study() -> None:
    """A study across a cluster: one job per point, gathered into one table.

    \b
    Examples:
      gpuprof study split examples/study.yaml -o study/          one spec per model x task x clock
      sbatch --array=0-$(( $(ls study/points | wc -l) - 1 ))%8 slurm/gpuprof-study.sbatch study/
      gpuprof study gather study/ -o study.parquet               one table; missing points listed
      gpuprof report study.parquet -o report/
    """


@study.command("split")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", "directory", required=True, type=click.Path(file_okay=False), help="Study directory."
)
@click.option(
    "--by",
    type=click.Choice(BY),
    default="model-task-clock",
    show_default=True,
    help="One point per model x task x SM clock of the sweep, or per model x task (each sweeping its clocks "
    "on one GPU).",
)
@json_option
def split_command(spec: str, directory: str, by: str, as_json: bool) -> None:
    """Write one job spec per point of the llm job SPEC into DIR/points, and DIR/manifest.json."""
    points = split(spec, Path(directory), by)
    if as_json:
        specs = [str(point_file(Path(directory), i)) for i in range(len(points))]
        echo_json({"directory": directory, "points": len(points), "specs": specs})
        return
    click.echo(f"{len(points)} point specs in {Path(directory) / 'points'}; run them as a Slurm array:")
    click.echo(f"  sbatch --array=0-{len(points) - 1}%8 slurm/gpuprof-study.sbatch {directory}")


@study.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("index", type=click.IntRange(0))
@click.option("--simulate", is_flag=True, help="Use gpuprof's simulated GPU (automatic without a driver).")
@click.option("--allow-dvfs", is_flag=True, help="Let a private daemon apply the point's clock (needs root).")
@json_option
@endpoint_option
def run_command(
    directory: str, index: int, simulate: bool, allow_dvfs: bool, as_json: bool, endpoint: str
) -> None:
    """Run point INDEX of the study in DIRECTORY (what a Slurm array task runs) and write its result,
    requests and where it ran into DIR/results/INDEX.json. Uses the gpuprofd at --endpoint when one answers,
    otherwise a private one, as gpuprof run does. Inside a Slurm job the point runs on the GPU Slurm gave it
    (the point's gpu counts the task's GPUs, mapped by gpuprofd: docs/slurm.md)."""
    folder = Path(directory)
    spec_path = point_file(folder, index)
    if not spec_path.is_file():
        raise click.BadParameter(
            f"{spec_path} does not exist (gpuprof study split made how many?)", param_hint="INDEX"
        )
    job_spec = load_job_spec(spec_path)
    hello = probe(endpoint)
    with contextlib.ExitStack() as stack:
        if hello is None:
            endpoint = private_daemon(stack, simulate, allow_dvfs)
        client = stack.enter_context(Client(endpoint))
        allocated = os.environ.get("SLURM_JOB_GPUS", "").split(",")[0]
        if allocated.isdigit() and not client.counts_slurm_gpus():
            job_spec = dataclasses.replace(job_spec, gpu=int(allocated))  # the node's index, Slurm's GPU
        handle = client.submit(job_spec)
        click.echo(f"point {index}: job {handle.id} on gpuprofd at {endpoint}", err=True)
        # Slurm stops a task with SIGTERM (scancel, its time limit): the job must not outlive it on the GPU.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        job = follow_or_cancel(handle)
        requests = client.requests(handle.id) if job["state"] == "succeeded" else None
        gpu = next((g.to_dict() for g in client.gpus() if g.index == job.get("gpu")), None)
    record = {
        "index": index,
        "job": job_json(job),
        "requests": requests_json(requests) if requests is not None else [],
        "provenance": provenance(gpu, bool(job.get("simulated"))),
    }
    out = result_file(folder, index)
    try:
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, default=str))
        tmp.replace(out)  # a half-written result is never taken for one
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"point {index}: {job['state']}, wrote {out}", err=True)
    if as_json:
        echo_json({"index": index, "job": job.get("id"), "state": job["state"], "result": str(out)})


@study.command("gather")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", required=True, help="The table: .parquet or .csv.")
@json_option
def gather_command(directory: str, output: str, as_json: bool) -> None:
    """Gather every point's requests in DIRECTORY into one table (with node, GPU UUID, driver and Slurm
    ids); points with no result or a failed job are listed, not fatal. gpuprof report takes the table."""
    gathered = gather(Path(directory))
    frame = gathered.requests
    if output.endswith(".parquet"):
        frame.to_parquet(output, index=False)
    elif output.endswith(".csv"):
        frame.to_csv(output, index=False)
    else:
        raise click.BadParameter("must end in .parquet or .csv", param_hint="-o")
    points = len(gathered.jobs) + len(gathered.missing)
    click.echo(f"{len(frame)} requests from {len(gathered.jobs)} of {points} points -> {output}", err=True)
    for point in gathered.missing:
        where = f"{point['model']} / {point['task']}" + (
            f" at {point['sm_clock_mhz']} MHz" if point["sm_clock_mhz"] else ""
        )
        click.echo(f"  missing point {point['index']} ({where}): {point['why']}", err=True)
    if as_json:
        echo_json(
            {"output": output, "requests": len(frame), "points": points, "gathered": len(gathered.jobs),
             "missing": gathered.missing}
        )  # fmt: skip
