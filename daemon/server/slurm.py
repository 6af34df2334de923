"""Which Slurm job a gpuprof job belongs to, from facts gpuprofd can check.

gpuprof's prolog (``gpuprof slurm prolog``, run as root by slurmd when a job starts on the node) writes one
record per Slurm job to ``slurm_jobs_dir``: the job's id, its user's uid and the GPUs Slurm gave it (index
and UUID), with each GPU's energy counter then; its epilog removes it. gpuprofd trusts a record only when
the directory and the file belong to root (or to the daemon's own user) and no one else may write them.

A submit is attributed to a Slurm job by, in order:

1. the cgroup of the submitting process (``/proc/PID/cgroup`` holds ``job_ID`` inside a Slurm step, with
   Slurm's cgroup plugins): a fact of the kernel;
2. the Slurm job id the client names (its ``$SLURM_JOB_ID``), accepted only when that job's record names
   the caller's uid: a user cannot claim another user's Slurm job;
3. the caller's only Slurm job on the node (or the only one holding the GPU asked for).

With ``slurm_enforce_gpus``, a user's job may run only on a GPU its Slurm job was given.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuprof.client.wire import protocol
from gpuprof.client.wire.protocol import SLURM_JOB_ID_RE

from .identity import Caller

RECORD_VERSION = 1
CGROUP_JOB_RE = re.compile(r"/job_([0-9]{1,12})(?:/|$)")
MAX_RECORD_BYTES = 64 * 1024
MAX_RECORDS = 4096  # a node runs far fewer Slurm jobs at once; more files are not read
MAX_CGROUP_BYTES = 16 * 1024


@dataclass(frozen=True)
class SlurmGpu:
    index: int  # the node's GPU (NVML index), as gpuprofd serves it
    uuid: str | None
    energy_j: float | None  # gpuprofd's energy counter of this GPU when the prolog ran


@dataclass(frozen=True)
class SlurmJob:
    """One Slurm job on this node as its prolog recorded it (``gpus`` None: no record, known by cgroup)."""

    id: str
    uid: int | None
    gpus: tuple[SlurmGpu, ...] | None
    started_ns: int | None = None

    @property
    def gpu_indices(self) -> list[int]:
        return [gpu.index for gpu in self.gpus or ()]


def is_slurm_job_id(value: object) -> bool:
    return isinstance(value, str) and SLURM_JOB_ID_RE.fullmatch(value) is not None


def record_path(directory: str | os.PathLike[str], slurm_job_id: str) -> Path:
    if not is_slurm_job_id(slurm_job_id):
        raise ValueError(f"not a Slurm job id: {protocol.excerpt(slurm_job_id)}")
    return Path(directory) / f"{slurm_job_id}.json"


def record_dict(job: SlurmJob) -> dict[str, Any]:
    """The record's JSON form (what ``gpuprof slurm prolog`` writes)."""
    return {
        "version": RECORD_VERSION,
        "slurm_job_id": job.id,
        "uid": job.uid,
        "started_ns": job.started_ns,
        "gpus": [{"index": g.index, "uuid": g.uuid, "energy_j": g.energy_j} for g in job.gpus or ()],
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
    if not isinstance(gpus, list) or len(gpus) > 1024:
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


def cgroup_job(pid: int | None, proc: str = "/proc") -> str | None:
    """The Slurm job id in the cgroup path of process ``pid`` (``.../job_123/step_0/...``), or None."""
    if pid is None or pid <= 0:
        return None
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as file:
            text = file.read(MAX_CGROUP_BYTES).decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        match = CGROUP_JOB_RE.search(line.split(":", 2)[-1])
        if match:
            return match.group(1)
    return None


def _trusted(info: os.stat_result, trusted_uids: tuple[int, ...]) -> bool:
    return info.st_uid in trusted_uids and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class SlurmJobs:
    """The prolog's records under ``directory`` (none when it is "" or absent), read when asked."""

    def __init__(self, directory: str, enforce: bool, daemon_uid: int, proc: str = "/proc") -> None:
        self.directory = Path(directory) if directory else None
        self.enforce = enforce
        self.trusted_uids = (0, daemon_uid)
        self.proc = proc

    def _usable_dir(self) -> Path | None:
        if self.directory is None:
            return None
        try:
            info = os.stat(self.directory)
        except OSError:
            return None
        return self.directory if stat.S_ISDIR(info.st_mode) and _trusted(info, self.trusted_uids) else None

    def get(self, slurm_job_id: str) -> SlurmJob | None:
        """The record of one Slurm job, if the prolog wrote a trustworthy one."""
        directory = self._usable_dir()
        if directory is None or not is_slurm_job_id(slurm_job_id):
            return None
        try:
            fd = os.open(record_path(directory, slurm_job_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or not _trusted(info, self.trusted_uids):
                return None
            data = os.read(fd, MAX_RECORD_BYTES + 1)
        finally:
            os.close(fd)
        try:
            if len(data) > MAX_RECORD_BYTES:
                raise ValueError("too large")
            job = parse_record(json.loads(data))
        except ValueError:
            return None
        return job if job.id == slurm_job_id else None

    def all(self) -> list[SlurmJob]:
        directory = self._usable_dir()
        if directory is None:
            return []
        jobs = []
        try:
            names = sorted(os.listdir(directory))[:MAX_RECORDS]
        except OSError:
            return []
        for name in names:
            stem = name.removesuffix(".json")
            if name.endswith(".json") and is_slurm_job_id(stem):
                job = self.get(stem)
                if job is not None:
                    jobs.append(job)
        return jobs

    def attribute(
        self, caller: Caller, claimed: str | None, gpu: int, exempt: bool = False
    ) -> SlurmJob | None:
        """The Slurm job a submit by ``caller`` for ``gpu`` belongs to (module docstring), or None.

        Raises ProtocolError ``denied`` when the caller names a Slurm job that is not theirs, and, with
        ``enforce`` (unless ``exempt``: an admin), when ``gpu`` is not one their Slurm job was given.
        """
        job: SlurmJob | None = None
        in_cgroup = None if caller.remote else cgroup_job(caller.pid, self.proc)
        if in_cgroup is not None:
            job = self.get(in_cgroup) or SlurmJob(id=in_cgroup, uid=caller.uid, gpus=None)
        elif claimed is not None:
            record = self.get(claimed)
            if record is not None and record.uid != caller.uid:
                raise protocol.ProtocolError(
                    "denied",
                    f"Slurm job {claimed} is not {caller.user}'s (its prolog record names uid {record.uid}); "
                    "a job is attributed only to its own user's Slurm job",
                )
            job = record
        else:
            mine = [j for j in self.all() if j.uid == caller.uid]
            holding = [j for j in mine if gpu in j.gpu_indices]
            job = mine[0] if len(mine) == 1 else holding[0] if len(holding) == 1 else None
        if self.enforce and not exempt:
            self._check_gpu(caller, job, gpu, claimed)
        return job

    def _check_gpu(self, caller: Caller, job: SlurmJob | None, gpu: int, claimed: str | None) -> None:
        if job is None or job.gpus is None:
            named = claimed if job is None else job.id
            named = f" (no prolog record of Slurm job {named} on this node)" if named else ""
            raise protocol.ProtocolError(
                "denied",
                f"GPU {gpu} is not allocated to {caller.user} by Slurm{named}: this node runs jobs only "
                "on the GPUs of their user's Slurm job (slurm_enforce_gpus); submit from inside the "
                "allocation (sbatch or srun --gres=gpu:N)",
                key="gpu",
            )
        if gpu not in job.gpu_indices:
            held = ", ".join(str(i) for i in job.gpu_indices) or "none"
            raise protocol.ProtocolError(
                "denied",
                f"GPU {gpu} is not allocated to Slurm job {job.id} (its GPUs on this node: {held}); "
                "this node runs jobs only on the GPUs of their user's Slurm job (slurm_enforce_gpus)",
                key="gpu",
            )
