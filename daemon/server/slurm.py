"""Which Slurm job a gpuprof job belongs to, from facts gpuprofd can check.

gpuprof's prolog (``gpuprof slurm prolog``, run as root by slurmd when a job starts on the node) writes one
record per Slurm job to ``slurm_jobs_dir``: the job's id, its user's uid and the GPUs Slurm gave it (index
and UUID), with each GPU's energy counter then; its epilog removes it. gpuprofd trusts a record only when
the directory and the file belong to root (or to the daemon's own user) and no one else may write them.

A submit is attributed to a Slurm job by, in order:

1. the cgroup of the submitting process (``/proc/PID/cgroup`` holds ``job_ID`` at Slurm's own place inside
   a Slurm step, with Slurm's cgroup plugins), when that job's record names the caller's uid;
2. the Slurm job id the client names (its ``$SLURM_JOB_ID``), accepted only when that job's record names
   the caller's uid: a user cannot claim another user's Slurm job;
3. the caller's only Slurm job on the node (or the only one holding the GPU asked for).

Every rule ends at a record of the caller's own uid: a process id reused, or a cgroup a user made, can only
point at one of the caller's own Slurm jobs.

With ``slurm_enforce_gpus``, a user's job may run only on a GPU its Slurm job was given.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from pathlib import Path

from gpuprof.client.wire import protocol
from gpuprof.client.wire.slurm_record import (
    MAX_RECORD_BYTES,
    SlurmJob,
    is_slurm_job_id,
    parse_record,
    record_path,
    trusted,
    trusted_directory,
)

from .identity import Caller

# Where Slurm's cgroup plugins put a job's processes, from the hierarchy's root (a user can make cgroups
# named job_N in a subtree delegated to them, never at these places): cgroup v2 under slurmstepd's scope,
# cgroup v1 under /slurm (or /slurm_NODE with several slurmd) and the job's uid.
CGROUP_JOB_RE = re.compile(
    r"^/(?:system\.slice/slurmstepd\.scope|slurm(?:_[^/]+)?/uid_[0-9]+)/job_([0-9]{1,12})(?:/|$)"
)
MAX_RECORDS = 4096  # a node runs far fewer Slurm jobs at once; more files are not read
MAX_CGROUP_BYTES = 16 * 1024
log = logging.getLogger("gpuprofd")


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


class AllocationError(ValueError):
    """A GPU index past the Slurm job's GPUs."""


class SlurmJobs:
    """The prolog's records under ``directory`` (none when it is "" or absent), read when asked."""

    def __init__(self, directory: str, enforce: bool, daemon_uid: int, proc: str = "/proc") -> None:
        self.directory = Path(directory) if directory else None
        self.enforce = enforce
        self.trusted_uids = (0, daemon_uid)
        self.proc = proc

    def _usable_dir(self) -> Path | None:
        if self.directory is None or not trusted_directory(self.directory, self.trusted_uids):
            return None
        return self.directory

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
            if not stat.S_ISREG(info.st_mode) or not trusted(info, self.trusted_uids):
                return None
            data = os.read(fd, MAX_RECORD_BYTES + 1)
        finally:
            os.close(fd)
        try:
            if len(data) > MAX_RECORD_BYTES:
                raise ValueError("too large")
            job = parse_record(json.loads(data))
        except (ValueError, RecursionError):
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

    def place(
        self,
        caller: Caller,
        claimed: str | None,
        gpu: int,
        sent_gpus: list[int] | None = None,
        exempt: bool = False,
    ) -> tuple[SlurmJob | None, int]:
        """(the Slurm job a submit by ``caller`` belongs to, or None; the node's GPU it runs on).

        ``claimed`` is the client's ``$SLURM_JOB_ID``: a client inside a Slurm job counts GPUs as CUDA does
        there, from 0 over the job's own GPUs, so ``gpu`` is mapped through the job's record (or, when
        the node has none, through ``sent_gpus``, the client's ``$SLURM_JOB_GPUS``: no fact, but without a
        record nothing is enforced either). Raises ProtocolError ``denied`` when the caller names a Slurm
        job that is not theirs, and, with ``enforce`` (unless ``exempt``: an admin), when the GPU is not
        one their Slurm job was given; AllocationError when ``gpu`` is past the job's GPUs.
        """
        job: SlurmJob | None = None
        in_cgroup = None if caller.remote else cgroup_job(caller.pid, self.proc)
        if in_cgroup is not None:
            record = self.get(in_cgroup)
            job = record if record is not None and record.uid == caller.uid else None
        if job is None and claimed is not None:
            record = self.get(claimed)
            if record is not None and record.uid != caller.uid:
                log.warning(
                    "refused %s (uid %d) the Slurm job %s of uid %d",
                    caller.user,
                    caller.uid,
                    claimed,
                    record.uid,
                )
                raise protocol.ProtocolError(
                    "denied",
                    f"Slurm job {claimed} is not {caller.user}'s (its prolog record names uid {record.uid}); "
                    "a job is attributed only to its own user's Slurm job",
                )
            job = record
        node_gpu = gpu
        if claimed is not None:
            allocation = job.gpu_indices if job is not None else list(sent_gpus or ())
            if allocation:
                if gpu >= len(allocation):
                    which = (
                        f"Slurm job {job.id}" if job is not None else f"Slurm job {claimed} ($SLURM_JOB_GPUS)"
                    )
                    raise AllocationError(
                        f"{which} has {len(allocation)} GPU(s) on this node (node GPU "
                        f"{', '.join(map(str, allocation))}); inside a Slurm job, gpu counts the job's own "
                        f"GPUs from 0, as CUDA does there: 0..{len(allocation) - 1}"
                    )
                node_gpu = allocation[gpu]
        if job is None:
            mine = [j for j in self.all() if j.uid == caller.uid]
            holding = [j for j in mine if node_gpu in j.gpu_indices]
            job = mine[0] if len(mine) == 1 else holding[0] if len(holding) == 1 else None
        if self.enforce and not exempt:
            self._check_gpu(caller, job, node_gpu, claimed)
        return job, node_gpu

    def _check_gpu(self, caller: Caller, job: SlurmJob | None, gpu: int, claimed: str | None) -> None:
        if job is None:
            named = f" (no prolog record of Slurm job {claimed} on this node)" if claimed else ""
            log.warning(
                "refused %s (uid %d) GPU %d: no Slurm job of theirs here", caller.user, caller.uid, gpu
            )
            why = (
                f"GPU {gpu} is not allocated to {caller.user} by Slurm{named}: this node runs jobs only "
                "on the GPUs of their user's Slurm job (slurm_enforce_gpus); submit from inside the "
                "allocation (sbatch or srun --gres=gpu:N)"
            )
            raise protocol.ProtocolError("denied", why, key="gpu", problem=f"denied: {why}")
        if gpu not in job.gpu_indices:
            held = ", ".join(str(i) for i in job.gpu_indices) or "none"
            log.warning(
                "refused %s (uid %d) GPU %d: not Slurm job %s's", caller.user, caller.uid, gpu, job.id
            )
            why = (
                f"GPU {gpu} is not allocated to Slurm job {job.id} (its GPUs on this node: {held}); "
                "this node runs jobs only on the GPUs of their user's Slurm job (slurm_enforce_gpus)"
            )
            raise protocol.ProtocolError("denied", why, key="gpu", problem=f"denied: {why}")
