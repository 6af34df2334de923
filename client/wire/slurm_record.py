"""The record gpuprof's Slurm prolog writes for gpuprofd: one JSON file per Slurm job, the contract between
``gpuprof slurm prolog`` (client/slurm.py, run by slurmd as root) and gpuprofd (daemon/server/slurm.py).

``<slurm_jobs_dir>/<SLURM_JOB_ID>.json``: ``{"version": 1, "slurm_job_id": "42", "uid": 1000,
"started_ns": ..., "simulated": false, "gpus": [{"index": 0, "uuid": "GPU-...", "energy_j": 123.4}]}``. Both
sides trust a record only where root (or gpuprofd's own user) owns it and every directory above it, and
no one else may write them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import MAX_SLURM_GPUS, SLURM_JOB_ID_RE

RECORD_VERSION = 1
MAX_RECORD_BYTES = 64 * 1024
MAX_GPUS = MAX_SLURM_GPUS


def is_slurm_job_id(value: object) -> bool:
    return isinstance(value, str) and SLURM_JOB_ID_RE.fullmatch(value) is not None


def record_path(directory: str | os.PathLike[str], slurm_job_id: str) -> Path:
    if not is_slurm_job_id(slurm_job_id):
        raise ValueError(f"not a Slurm job id: {slurm_job_id[:24]!r}")
    return Path(directory) / f"{slurm_job_id}.json"


def allocated_gpus(value: str) -> list[int]:
    """Slurm's GPU ids from ``$SLURM_JOB_GPUS`` ("0,2" or "0-3,6"); ValueError when it is not that."""
    gpus: list[int] = []
    for part in filter(None, value[:4096].split(",")):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()) or len(part) > 16:
            raise ValueError(f"SLURM_JOB_GPUS={value[:64]!r} is not a list of GPU ids")
        first, last = int(low), int(high) if sep else int(low)
        if last - first + len(gpus) >= MAX_GPUS:
            raise ValueError(f"SLURM_JOB_GPUS={value[:64]!r} names too many GPUs")
        gpus += range(first, last + 1)
    return gpus


def trusted(info: os.stat_result, uids: tuple[int, ...]) -> bool:
    """Whether a file or directory belongs to one of ``uids`` and no one else may write it."""
    return info.st_uid in uids and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def trusted_directory(path: str | os.PathLike[str], uids: tuple[int, ...]) -> bool:
    """Whether ``path`` is a directory (not a link) that only ``uids`` can change, nor swap for another:
    every directory above it belongs to root or ``uids`` and is writable by no one else, save root's
    sticky directories (such as /tmp), where no one can rename what they do not own."""
    absolute = Path(os.path.abspath(path))
    try:
        info = os.lstat(absolute)
        if not stat.S_ISDIR(info.st_mode) or not trusted(info, uids):
            return False
        for parent in absolute.parents:
            above = os.lstat(parent)
            if stat.S_ISLNK(above.st_mode) or above.st_uid not in (0, *uids):
                return False
            open_to_others = above.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if open_to_others and not (above.st_mode & stat.S_ISVTX and above.st_uid == 0):
                return False
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class SlurmGpu:
    index: int  # the node's GPU (NVML index), as gpuprofd serves it
    uuid: str | None
    energy_j: float | None  # gpuprofd's energy counter of this GPU when the prolog ran


@dataclass(frozen=True)
class SlurmJob:
    """One Slurm job on this node as its prolog recorded it."""

    id: str
    uid: int
    gpus: tuple[SlurmGpu, ...]
    started_ns: int | None = None

    @property
    def gpu_indices(self) -> list[int]:
        return [gpu.index for gpu in self.gpus]


def record_dict(job: SlurmJob, simulated: bool) -> dict[str, Any]:
    """The record's JSON form (what ``gpuprof slurm prolog`` writes); ``simulated``: its GPUs are."""
    return {
        "version": RECORD_VERSION,
        "slurm_job_id": job.id,
        "uid": job.uid,
        "started_ns": job.started_ns,
        "simulated": simulated,
        "gpus": [{"index": g.index, "uuid": g.uuid, "energy_j": g.energy_j} for g in job.gpus],
    }


def parse_record(data: object) -> SlurmJob:
    """A record's fields, checked; ValueError names what is wrong."""
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        raise ValueError(f"not a version-{RECORD_VERSION} gpuprof Slurm record")
    job_id, uid, gpus = data.get("slurm_job_id"), data.get("uid"), data.get("gpus")
    started = data.get("started_ns")
    if not is_slurm_job_id(job_id):
        raise ValueError("slurm_job_id must be a Slurm job id (digits)")
    if not isinstance(uid, int) or isinstance(uid, bool) or uid < 0:
        raise ValueError("uid must be an integer >= 0")
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
        raise ValueError("gpus must be a list")
    parsed = []
    for gpu in gpus:
        if not isinstance(gpu, dict):
            raise ValueError("each GPU must be a map")
        index, uuid, energy = gpu.get("index"), gpu.get("uuid"), gpu.get("energy_j")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError("each GPU needs an index >= 0")
        if uuid is not None and (not isinstance(uuid, str) or len(uuid) > 96):
            raise ValueError("a GPU's uuid must be a string")
        if energy is not None and (not isinstance(energy, (int, float)) or isinstance(energy, bool)):
            raise ValueError("a GPU's energy_j must be a number")
        parsed.append(SlurmGpu(index, uuid, None if energy is None else float(energy)))
    if started is not None and (not isinstance(started, int) or isinstance(started, bool)):
        raise ValueError("started_ns must be an integer")
    return SlurmJob(id=str(job_id), uid=uid, gpus=tuple(parsed), started_ns=started)
