"""gpuprof's Slurm prolog and epilog: which Slurm job owns which GPUs, and what each Slurm job cost.

slurmd runs them as root on the node, with the job's ``SLURM_JOB_ID``, ``SLURM_JOB_UID`` and
``SLURM_JOB_GPUS`` in their environment. Both always end with status 0: a failing prolog or epilog drains
the node, and gpuprof must never take a node out of service. What goes wrong is said on stderr (slurmd's
log) and the job runs on, unmeasured by gpuprof's accounting.

* **prolog** writes ``<slurm_jobs_dir>/<SLURM_JOB_ID>.json`` (daemon/server/slurm.py reads it): the uid and
  the GPUs (Slurm's GPU ids, taken as the node's NVML indices, with their UUIDs and energy counters as
  gpuprofd reports them). gpuprofd then attributes that user's jobs to the Slurm job.
* **epilog** asks gpuprofd to cancel the Slurm job's gpuprof jobs still queued or running (a GPU Slurm
  gives to someone else must not keep running them), waits for them to end, and says what the Slurm job
  cost: the energy the allocation's GPUs used between prolog and epilog (their energy counters'
  difference) and the energy of its gpuprof jobs, as ``gpuprof key=value ...``. That text goes to slurmd's log
  and, with accounting by slurmdbd, into the job's ``AdminComment`` (``sacctmgr modify job``; ``sacct -o
  AdminComment`` shows it). Then it removes the record.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .api import Client
from .wire.errors import GpuprofError
from .wire.protocol import SLURM_JOB_ID_RE
from .wire.slurm_record import SlurmGpu, SlurmJob, allocated_gpus, record_dict, trusted_directory
from .wire.states import FINAL_STATES

DEFAULT_JOBS_DIR = "/run/gpuprof/slurm"
END_WAIT_S = 20.0  # how long the epilog waits for cancelled jobs to end (the whole epilog: at most ~50 s)
COMMAND_TIMEOUT_S = 10.0
MAX_COMMENT_CHARS = 1000


def _say(message: str) -> None:
    print(f"gpuprof slurm: {message}", file=sys.stderr, flush=True)


def _job_id(env: Mapping[str, str]) -> str:
    job_id = env.get("SLURM_JOB_ID", "")
    if not SLURM_JOB_ID_RE.fullmatch(job_id):
        raise ValueError(f"SLURM_JOB_ID={job_id[:24]!r} is not a Slurm job id (slurmd sets it for a prolog)")
    return job_id


def _daemon_gpus(endpoint: str) -> tuple[dict[int, dict[str, Any]], bool]:
    """Each GPU gpuprofd serves, by index (its uuid and energy counter in J, from the metrics request), and
    whether they are simulated."""
    with Client(endpoint, timeout_s=COMMAND_TIMEOUT_S) as client:
        body = client.request("metrics")
    gpus = {int(gpu["index"]): gpu for gpu in body.get("gpus", []) if isinstance(gpu, dict)}
    return gpus, bool(body.get("simulated"))


def prolog(env: Mapping[str, str], jobs_dir: str, endpoint: str) -> str:
    """Write the Slurm job's record; returns what was done (for the log). Raises on what it cannot do."""
    job_id = _job_id(env)
    uid = env.get("SLURM_JOB_UID", "")
    if not uid.isdigit():
        raise ValueError(f"SLURM_JOB_UID={uid[:24]!r} is not a uid")
    gpus = allocated_gpus(env.get("SLURM_JOB_GPUS", ""))
    served: dict[int, dict[str, Any]] = {}
    simulated = False
    try:
        served, simulated = _daemon_gpus(endpoint)
    except GpuprofError as exc:  # recorded all the same: gpuprofd may start later
        _say(f"job {job_id}: gpuprofd did not answer ({exc}); GPUs recorded without UUIDs or energy")
    job = SlurmJob(
        id=job_id,
        uid=int(uid),
        started_ns=time.time_ns(),
        gpus=tuple(
            SlurmGpu(index, served.get(index, {}).get("uuid"), served.get(index, {}).get("energy_j"))
            for index in gpus
        ),
    )
    record = record_dict(job, simulated)
    directory = Path(jobs_dir)
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not trusted_directory(directory, (os.geteuid(),)):
        raise ValueError(f"{directory} (or a directory above it) may be changed by others: not written there")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{job_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(record, file)
            file.flush()
            os.fchmod(file.fileno(), 0o644)
            os.fsync(file.fileno())
        os.replace(tmp, directory / f"{job_id}.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return f"job {job_id}: uid {uid}, GPUs {gpus or 'none'} recorded in {directory}"


def _read_record(jobs_dir: str, job_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(jobs_dir) / f"{job_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def end_jobs(endpoint: str, job_id: str, wait_s: float = END_WAIT_S) -> dict[str, Any]:
    """Cancel the Slurm job's gpuprof jobs and wait (at most ``wait_s``) until each has ended: the last
    ``slurm_end`` reply, its ``cancelled`` every job cancelled on the way."""
    deadline = time.monotonic() + wait_s
    cancelled: list[str] = []
    with Client(endpoint, timeout_s=COMMAND_TIMEOUT_S) as client:
        while True:
            reply = client.request("slurm_end", {"slurm_job_id": job_id})
            cancelled += [job for job in reply.get("cancelled", []) if job not in cancelled]
            ended = all(job.get("state") in FINAL_STATES for job in reply.get("jobs", []))
            if ended or time.monotonic() >= deadline:
                return {**reply, "cancelled": cancelled}
            time.sleep(0.25)


def cost(
    record: dict[str, Any] | None,
    now: dict[int, dict[str, Any]],
    ended: dict[str, Any],
    simulated_now: bool | None = None,
) -> dict[str, Any]:
    """What the Slurm job cost, for its AdminComment: the allocation's GPUs' energy between prolog and
    epilog (their counters' difference), and the fused energy of its gpuprof jobs with the sum of their
    bounds. ``simulated_now``: whether gpuprofd serves simulated GPUs, as it said at the epilog (None: it
    did not answer); with the prolog's record, it says whether any figure is simulated (``unknown`` when
    neither could tell)."""
    out: dict[str, Any] = {"gpus": [], "gpu_energy_j": None, "method": "energy-counter-prolog-to-epilog"}
    if record is not None:
        joules: list[float | None] = []
        for gpu in record.get("gpus", []):
            index, start = gpu.get("index"), gpu.get("energy_j")
            end = now.get(index, {}).get("energy_j") if isinstance(index, int) else None
            uuid_now = now.get(index, {}).get("uuid") if isinstance(index, int) else None
            same = gpu.get("uuid") is None or gpu.get("uuid") == uuid_now
            used = None
            if isinstance(start, float | int) and isinstance(end, float | int) and same:
                used = round(end - start, 3)
            out["gpus"].append({"index": index, "uuid": gpu.get("uuid"), "energy_j": used})
            joules.append(used)
        if joules and all(j is not None for j in joules):
            out["gpu_energy_j"] = round(sum(j for j in joules if j is not None), 3)
        started = record.get("started_ns")
        if isinstance(started, int):
            out["seconds"] = round((time.time_ns() - started) / 1e9, 3)
    recorded = bool(record.get("simulated")) if record is not None else None
    known = [flag for flag in (recorded, simulated_now) if flag is not None]
    out["simulated"] = any(known) if known else None
    jobs = ended.get("jobs", [])
    energies = [job.get("energy_j") for job in jobs]
    bounds = [job.get("energy_bound_j") for job in jobs]
    out["gpuprof_jobs"] = len(jobs)
    out["gpuprof_jobs_method"] = "fused-energy-counter"
    out["gpuprof_jobs_energy_j"] = (
        round(sum(energies), 3) if jobs and all(isinstance(e, float | int) for e in energies) else None
    )
    out["gpuprof_jobs_energy_bound_j"] = (
        round(sum(bounds), 3)
        if out["gpuprof_jobs_energy_j"] is not None and all(isinstance(b, float | int) for b in bounds)
        else None
    )
    out["cancelled"] = len(ended.get("cancelled", []))
    return out


def comment_text(figures: dict[str, Any]) -> str:
    """The cost as ``gpuprof key=value ...``, at most MAX_COMMENT_CHARS (the per-GPU entries go first).

    Not JSON: sacctmgr turns double quotes into backquotes and lowercases what it stores, so the text is
    words and numbers that survive both (a GPU's UUID is hex, in any case).
    """

    def word(value: Any) -> str:
        if value is None:
            return "unknown"
        if isinstance(value, bool):
            return str(value).lower()
        return str(value).replace(" ", "-")

    fields = [f"{key}={word(value)}" for key, value in figures.items() if key != "gpus"]
    for gpu in figures.get("gpus", []):
        index = gpu.get("index")
        fields += [
            f"gpu{index}_uuid={word(gpu.get('uuid'))}",
            f"gpu{index}_energy_j={word(gpu.get('energy_j'))}",
        ]
    text = "gpuprof " + " ".join(fields)
    while len(text) > MAX_COMMENT_CHARS and fields:
        fields.pop()
        text = "gpuprof " + " ".join(fields)
    return text


def parse_comment(text: str) -> dict[str, str]:
    """The fields of a ``comment_text`` (as stored, or as logged)."""
    return dict(part.split("=", 1) for part in text.removeprefix("gpuprof ").split() if "=" in part)


def admin_comment(job_id: str, text: str) -> None:
    """Set the ended Slurm job's AdminComment in Slurm's accounting database (``sacctmgr modify job``: the
    only way once a job has ended; needs AccountingStorageType=accounting_storage/slurmdbd)."""
    command = ["sacctmgr", "-i", "modify", "job", "where", f"jobid={job_id}", "set", f"AdminComment={text}"]
    if shutil.which(command[0]) is None:
        raise RuntimeError("AdminComment not set: sacctmgr not found")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"AdminComment not set: sacctmgr took over {COMMAND_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[:300]
        raise RuntimeError(f"AdminComment not set: sacctmgr: {said}")


def epilog(env: Mapping[str, str], jobs_dir: str, endpoint: str, account: bool = True) -> str:
    """Cancel the Slurm job's gpuprof jobs, record its cost, remove its record; returns what was done. The
    record stays when gpuprofd did not answer, so that the epilog can be run again by hand."""
    job_id = _job_id(env)
    record = _read_record(jobs_dir, job_id)
    done = []
    ended: dict[str, Any] = {}
    now: dict[int, dict[str, Any]] = {}
    simulated_now: bool | None = None
    answered = False
    try:
        ended = end_jobs(endpoint, job_id)
        answered = True
        now, simulated_now = _daemon_gpus(endpoint)
        if ended.get("cancelled"):
            done.append(f"cancelled gpuprof jobs {', '.join(ended['cancelled'])}")
    except GpuprofError as exc:
        kept = f"; its record stays: run SLURM_JOB_ID={job_id} gpuprof slurm epilog once gpuprofd answers"
        _say(f"job {job_id}: gpuprofd did not answer ({exc}): its gpuprof jobs were not cancelled" + kept)
    text = comment_text({**cost(record, now, ended, simulated_now), "node": socket.gethostname()})
    done.append(text)  # in slurmd's log whatever becomes of the AdminComment
    if account:
        try:
            admin_comment(job_id, text)
            done.append("written to its AdminComment")
        except RuntimeError as exc:
            done.append(str(exc))
    if answered and trusted_directory(jobs_dir, (os.geteuid(),)):
        (Path(jobs_dir) / f"{job_id}.json").unlink(missing_ok=True)
    return f"job {job_id}: " + "; ".join(done)
