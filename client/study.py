"""A study at cluster scale: one llm spec split into point specs, each run as its own job (a Slurm array task,
``slurm/gpuprof-study.sbatch``), and the results gathered into one requests table.

``split`` writes ``DIR/points/NNNN.yaml`` (one model x task, or one model x task x SM clock) and
``DIR/manifest.json``; ``run_point`` (``gpuprof study run DIR INDEX``) runs one of them and writes
``DIR/results/NNNN.json``: the job, its requests and where it ran (node, GPU UUID, driver, Slurm ids);
``gather`` makes one table of every result's requests, and names the points with no result, or a failed
one, instead of failing. ``gpuprof report`` takes the table.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .wire.errors import UsageError
from .wire.jobspec import LlmParams, load_job_spec, parse_job_spec

__all__ = ["BY", "SLURM_ENV", "Gathered", "gather", "point_file", "provenance", "result_file", "split"]

BY = ("model-task", "model-task-clock")
SLURM_ENV = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_CLUSTER_NAME",
    "SLURM_JOB_NODELIST",
)
MAX_POINTS = 100_000


def point_file(directory: Path, index: int) -> Path:
    return directory / "points" / f"{index:04d}.yaml"


def result_file(directory: Path, index: int) -> Path:
    return directory / "results" / f"{index:04d}.json"


def split(spec_path: str, directory: Path, by: str = "model-task-clock") -> list[dict[str, Any]]:
    """Writes one point spec per model x task (x SM clock of the spec's sweep, with ``model-task-clock``)
    and the manifest; returns the manifest's points. Each point is checked as a spec before anything is
    written."""
    if by not in BY:
        raise UsageError(f"--by must be one of {', '.join(BY)}, got {by!r}")
    if directory.exists() and any(directory.iterdir()):  # its old points and results would mix in
        raise UsageError(f"{directory} is not empty: split a study into a new directory")
    spec = load_job_spec(spec_path)
    if not isinstance(spec.params, LlmParams):
        raise UsageError(f"{spec_path}: a study splits an llm job; this is a {spec.workload} job")
    dvfs = spec.dvfs
    if by == "model-task-clock" and dvfs is not None and dvfs.sweep_all:
        raise UsageError(
            "sm_clocks: all is resolved by each node's gpuprofd: list the clocks, or split --by model-task"
        )
    clocks: list[int | None] = [None]
    if by == "model-task-clock" and dvfs is not None and dvfs.sweep:
        clocks = list(dvfs.sweep)
    base = spec.to_dict()
    points: list[dict[str, Any]] = []
    texts: list[str] = []
    for model_dict, model in zip(base["llm"]["models"], spec.params.models, strict=True):
        for task in spec.params.tasks:
            for mhz in clocks:
                index = len(points)
                data = json.loads(json.dumps(base))
                data["name"] = f"{spec.name}-{index:04d}"
                data["llm"]["models"], data["llm"]["tasks"] = [model_dict], [task]
                if mhz is not None:
                    data["dvfs"]["sm_clocks"] = [mhz]  # a sweep of one: the point carries its clock
                text = yaml.safe_dump(data, sort_keys=False)
                parse_job_spec(text, f"point {index}")  # refused here, not on a node
                points.append({"index": index, "model": model.name, "task": task, "sm_clock_mhz": mhz})
                texts.append(text)
                if len(points) > MAX_POINTS:
                    raise UsageError(f"more than {MAX_POINTS} points: split --by model-task")
    (directory / "points").mkdir(parents=True, exist_ok=True)
    (directory / "results").mkdir(exist_ok=True)
    for point, text in zip(points, texts, strict=True):
        point_file(directory, int(point["index"])).write_text(text)
    manifest = {"spec": str(Path(spec_path).resolve()), "name": spec.name, "by": by, "points": points}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return points


def _driver() -> str | None:
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    words = first.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), first.strip())


def provenance(gpu: dict[str, Any] | None, simulated: bool) -> dict[str, Any]:
    """Where a point ran: this node, the GPU (UUID, name), its driver, and the Slurm job's ids if any."""
    return {
        "node": socket.gethostname(),
        "gpu_uuid": (gpu or {}).get("uuid"),
        "gpu_name": (gpu or {}).get("name"),
        "driver": "simulated" if simulated else _driver(),
        **{name.lower(): os.environ.get(name) for name in SLURM_ENV},
    }


@dataclass(frozen=True)
class Gathered:
    """The study's requests (one row each, with its point and where it ran) and the points missing."""

    requests: pd.DataFrame
    missing: list[dict[str, Any]]  # each manifest point with no result, or whose job did not succeed
    jobs: list[dict[str, Any]]


def gather(directory: Path) -> Gathered:
    """Every point's result into one table; a point without a result, or whose job failed, is listed."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{directory}: no readable manifest.json (made by gpuprof study split): {exc}"
        ) from None
    frames, missing, jobs = [], [], []
    for point in manifest["points"]:
        path = result_file(directory, point["index"])
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            missing.append({**point, "why": "no result"})
            continue
        job = result.get("job") or {}
        if job.get("state") != "succeeded":
            missing.append({**point, "why": f"job {job.get('id')} {job.get('state')}: {job.get('reason')}"})
            continue
        jobs.append(job)
        frame = pd.DataFrame(result.get("requests") or [])
        extra = {"study_point": point["index"], "job": job.get("id"), **(result.get("provenance") or {})}
        frames.append(frame.assign(**extra))
    requests = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Gathered(requests, missing, jobs)
