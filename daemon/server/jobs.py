"""Running jobs: one worker subprocess per job, one job at a time per GPU, FIFO queues, timeouts, cancel."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.messages import GpuInfo
from gpuprof.sampler.library import NvmlLibrary
from gpuprof.sampler.records import DRIVER_POWER_DTYPE, ENERGY_DTYPE, SAMPLE_DTYPE, concat
from gpuprof.sampler.trace import Trace

from ..analysis.phase_clocks import phase_clocks_section
from ..analysis.requests import HeldPower, llm_result
from ..analysis.results import job_result, plain, unmeasured
from ..analysis.sweep import (
    burn_sweep_section,
    command_sweep_section,
    mark_capped,
    point_energy,
    steady_energy,
    sweep_section,
)
from ..analysis.windows import PhaseWindow, windows
from ..markers import Marker
from ..worker_env import (
    EXPECT_UID_ENV,
    JOB_SPEC_ENV,
    MARKER_FD_ENV,
    MAX_FILE_ENV,
    SIM_GPU_ENV,
    SIM_STATE_ENV,
    SIMULATE_ENV,
    WORKER_MODULE,
)
from .clocks import ClockControl
from .job_clocks import JobClocks
from .limits import TokenBucket
from .markers import MarkerReader
from .processes import WorkerLimits, directory_bytes, process_cwd, running, tree_pids, tree_rss_bytes
from .store import JobRecord, JobStore

KILL_GRACE_S = 5.0
MARKER_BATCH = 256  # markers taken from a worker before the daemon's loop turns to its other work
QUESTIONS = ("dvfs", "energy_query")  # events the daemon answers, each at some cost
QUESTIONS_PER_S = 20
SWITCHES_PER_S = 100  # a phase-clock job's clock switches (two a batch): each an NVML call of the daemon's
RESOURCE_CHECK_S = 0.5  # how often a running job's memory and output are measured
WORKER_PID_FILE = "worker.pid"  # in the job's directory: the worker's pid, also its process group
log = logging.getLogger("gpuprofd")
FINISHED_ENERGY_S = 600.0  # how long an ended job's energy stays in the metrics request's answer
MAX_FINISHED_ENERGY = 1000
COUNTER_SETTLE_NS = 300_000_000  # how long a finished job waits for the energy counter's next update
# ... and, on a GPU whose driver keeps power samples, for them to cover the update period after the end
# (the sampler reads them every ~0.3 s): this long past the end, at most DRIVER_SETTLE_NS.
DRIVER_COVER_NS = 150_000_000
DRIVER_SETTLE_NS = 1_000_000_000


def worker_account(uid: int) -> pwd.struct_passwd | None:
    """The account a job's worker runs as: the job's user when the daemon is root (None: the daemon's own).

    A root daemon never runs a job as root on someone else's behalf: a job of uid 0 is root's own.
    """
    if os.geteuid() != 0 or uid == 0:
        return None
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        raise GpuprofError(
            f"uid {uid} has no account on this node: cannot run its job as that user"
        ) from None


def counter_increase(energy: list[np.ndarray]) -> float | None:
    """The energy counter's increase (J) from the first good reading in ``energy`` to the last."""
    if not energy:
        return None
    first, last = _good_reading(energy, 0), _good_reading(energy, -1)
    return None if first is None or last is None else max(0.0, (last - first) / 1000.0)


def _good_reading(chunks: list[np.ndarray], end: int) -> int | None:
    """The first (end 0) or last (end -1) successful counter reading (mJ) among the chunks."""
    for chunk in chunks if end == 0 else reversed(chunks):
        good = chunk["energy_mj"][chunk["nvml_return"] == 0]
        if good.size:
            return int(good[end])
    return None


def record_workload(record: JobRecord) -> str:
    """The workload kind of a job's spec."""
    return str(record.spec.get("workload", ""))


@dataclass
class RunningJob:
    """A job whose worker is running, with what the daemon has gathered for it so far."""

    record: JobRecord
    process: subprocess.Popen[bytes]
    channel: socket.socket
    reader: MarkerReader
    started_mono_ns: int
    deadline_mono_ns: int
    samples: list[np.ndarray] = field(default_factory=list)
    energy: list[np.ndarray] = field(default_factory=list)
    driver_power: list[np.ndarray] = field(default_factory=list)  # the driver's own power samples, if kept
    markers: list[Marker] = field(default_factory=list)
    stop_reason: tuple[str, str] | None = None  # (final state, reason) once the daemon ended it
    kill_at_ns: int | None = None
    next_resource_check_ns: int = 0
    exited_ns: int | None = None  # when the worker was seen to have exited

    def counter_settled(self, now_ns: int) -> bool:
        """Whether the energy counter has been seen to update after the worker exited (the sampler keeps the
        reads around each update only once it shows), and the driver's power samples, where the GPU has
        them, cover the update period after it; or long enough has passed that they will not."""
        assert self.exited_ns is not None
        waited = now_ns - self.exited_ns
        driven = [chunk for chunk in self.driver_power if chunk.size]
        covered = not driven or int(driven[-1]["t_ns"].max()) >= self.exited_ns + DRIVER_COVER_NS
        if waited >= DRIVER_SETTLE_NS or (waited >= COUNTER_SETTLE_NS and covered):
            return True
        recent = concat(self.energy[-8:], ENERGY_DTYPE)
        good = recent[recent["nvml_return"] == 0]
        changed = np.flatnonzero(np.diff(good["energy_mj"].astype(np.int64)) != 0) + 1
        return covered and bool(changed.size) and int(good["t_start_ns"][changed[-1]]) > self.exited_ns

    peak_rss_bytes: int = 0
    clocks: dict[str, Any] | None = None  # the clock changes made for the job (reset when it ends)
    sweep: frozenset[int] = frozenset()  # SM clocks the worker may ask for, one point at a time
    questions: TokenBucket = field(
        default_factory=lambda: TokenBucket(
            QUESTIONS_PER_S, QUESTIONS_PER_S, QUESTIONS_PER_S, time.monotonic()
        )
    )  # the clock changes and energy queries it may still ask for now
    switches: TokenBucket | None = None  # a phase-clock job's switches at phase edges, counted apart


class JobRunner:
    """Starts queued jobs on idle GPUs, feeds them samples, and finishes them with a result."""

    def __init__(
        self,
        store: JobStore,
        state_dir: Path,
        library: NvmlLibrary,
        publish: Any,
        sim_state_path: str | None = None,
        limits: WorkerLimits | None = None,
        clocks: ClockControl | None = None,
        inventory: list[GpuInfo] | None = None,
    ) -> None:
        self.store = store
        self.clocks = JobClocks(clocks, {gpu.index: gpu for gpu in inventory or []})
        self.limits = limits or WorkerLimits.from_config(0, 1024)
        self.jobs_dir = state_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # workers of other users enter their own job directory: search, not list
            for directory in (state_dir, self.jobs_dir):
                directory.chmod(0o711)
        self.library = library  # the one the daemon samples: a simulated GPU is idled through it
        self.simulated = library.simulated
        self.sim_state_path = sim_state_path
        self.publish = publish  # callable(job_id, kind, body)
        self.running: dict[int, RunningJob] = {}  # gpu -> job
        # Jobs that ended lately, for the metrics request: id -> (gpu, J, CLOCK_MONOTONIC ns of the end).
        self.finished_energy: OrderedDict[str, tuple[int, float | None, int, str | None]] = OrderedDict()

    def schedule(self, gpus: list[int]) -> None:
        """Start the oldest queued job on every idle GPU."""
        for gpu in gpus:
            if gpu not in self.running:
                queued = self.store.queued(gpu, limit=1)
                if queued:
                    self._start(queued[0])

    def _start(self, record: JobRecord) -> None:
        try:
            account = worker_account(record.uid)
            self.clocks.put_back(record.gpu)
            clocks = self.clocks.apply(record)
        except GpuprofError as exc:
            failed = self.store.set_state(record.id, "failed", str(exc))
            self.publish(record.id, "job", {"job": failed.to_dict()})
            return
        try:
            self._launch(record, account, clocks)
        except Exception as exc:  # the job fails; the daemon, and the GPU's clocks, must not
            log.exception("job %s: cannot start its worker", record.id)
            if clocks is not None:
                self.clocks.reset(record.gpu)
            failed = self.store.set_state(record.id, "failed", f"cannot start the worker: {exc}")
            self.publish(record.id, "job", {"job": failed.to_dict()})

    def _launch(
        self, record: JobRecord, account: pwd.struct_passwd | None, clocks: dict[str, Any] | None
    ) -> None:
        job_dir = self.jobs_dir / record.id
        job_dir.mkdir(mode=0o700, exist_ok=True)
        spec_file = job_dir / "spec.json"
        spec_file.write_text(json.dumps(record.spec))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        drop: dict[str, Any] = {}
        if account is not None:  # a root daemon runs the job as its user, who must own its directory
            for path in (job_dir, spec_file):
                os.chown(path, account.pw_uid, account.pw_gid)
            groups = os.getgrouplist(account.pw_name, account.pw_gid)
            drop = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": groups}
            env.update(
                HOME=account.pw_dir,
                USER=account.pw_name,
                LOGNAME=account.pw_name,
            )
            env[EXPECT_UID_ENV] = str(account.pw_uid)
            if self.simulated:  # the simulated GPU's state, as the daemon sees it (not the user's default)
                env[SIM_STATE_ENV] = self.sim_state_path or ""
        env.update(CUDA_VISIBLE_DEVICES=str(record.gpu), CUDA_DEVICE_ORDER="PCI_BUS_ID")
        env[JOB_SPEC_ENV] = str(spec_file)
        env[MARKER_FD_ENV] = str(theirs.fileno())
        env[MAX_FILE_ENV] = str(self.limits.output_bytes)
        if self.simulated:
            env[SIMULATE_ENV] = "1"
            env[SIM_GPU_ENV] = str(record.gpu)
        with open(job_dir / "worker.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE],
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a cancel kills all it started
                cwd=job_dir,
                **drop,  # setgroups, setgid, setuid in the child, before it runs anything
            )
        theirs.close()
        # For the next daemon, if this one dies. The directory is the job user's: never follow a link there.
        pid_fd = os.open(
            job_dir / WORKER_PID_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600
        )
        with os.fdopen(pid_fd, "w") as pid_file:
            pid_file.write(f"{process.pid}\n")
        ours.setblocking(False)
        now = time.monotonic_ns()
        timeout_s = float(record.spec.get("timeout_s", 3600))
        self.running[record.gpu] = RunningJob(
            record=record,
            process=process,
            channel=ours,
            reader=MarkerReader(ours),
            started_mono_ns=now,
            deadline_mono_ns=now + int(timeout_s * 1e9),
            clocks=clocks,
            sweep=frozenset(
                [*((clocks or {}).get("sweep_sm_clocks_mhz") or ())]
                + [mhz for pair in (clocks or {}).get("phase_clocks_mhz") or () for mhz in pair]
            ),
            switches=TokenBucket(SWITCHES_PER_S, SWITCHES_PER_S, SWITCHES_PER_S, time.monotonic())
            if (clocks or {}).get("phase_clocks_mhz")
            else None,
        )
        worker_uid = account.pw_uid if account is not None else os.geteuid()
        self.store.set_state(record.id, "running", worker_uid=worker_uid)
        self._announce(record.id)

    def feed(self, samples: np.ndarray, energy: np.ndarray, driver_power: np.ndarray | None = None) -> None:
        """Give every running job the samples, counter readings and driver power samples of its GPU."""
        for gpu, job in self.running.items():
            job.samples.append(samples[samples["gpu"] == gpu])
            job.energy.append(energy[energy["gpu"] == gpu])
            if driver_power is not None:
                job.driver_power.append(driver_power[driver_power["gpu"] == gpu])

    def channels(self) -> dict[int, RunningJob]:
        """Marker sockets to poll, by file descriptor."""
        return {job.channel.fileno(): job for job in self.running.values()}

    def read_markers(self, job: RunningJob, drain: bool = False) -> None:
        """Take the worker's pending markers (a batch; all of them when ``drain``) and publish them;
        answer its clock requests and energy queries."""
        while True:
            for marker in job.reader.read_available(MARKER_BATCH):
                self._take_marker(job, marker)
            if not drain or not job.reader.more_waiting:
                return

    def _take_marker(self, job: RunningJob, marker: Marker) -> None:
        job.markers.append(marker)
        if marker.kind == "event" and marker.name in QUESTIONS:
            switches = job.switches if marker.name == "dvfs" and "phase" in marker.attrs else None
            bucket, rate, what = (
                (switches, SWITCHES_PER_S, "clock switches")
                if switches is not None
                else (job.questions, QUESTIONS_PER_S, "questions")
            )
            bucket.refill(time.monotonic())
            if bucket.tokens < 1:  # the worker runs the user's code: its questions cost the daemon
                self._answer(job, {"ok": False, "error": f"more than {rate} {what} a second"})
                return
            bucket.tokens -= 1
        if marker.kind == "event" and marker.name == "dvfs":
            wanted = marker.attrs.get("sm_clock_mhz")
            switch = job.switches is not None and "phase" in marker.attrs
            self._answer(job, self.clocks.answer(job.record.id, job.record.gpu, job.sweep, wanted, switch))
        elif marker.kind == "event" and marker.name == "energy_query":
            power = HeldPower(
                concat(job.samples, SAMPLE_DTYPE),
                job.record.gpu,
                concat(job.energy, ENERGY_DTYPE),
                concat(job.driver_power, DRIVER_POWER_DTYPE),
            )
            if isinstance(marker.attrs.get("steady"), str):  # a steady phase's windows so far
                phase = str(marker.attrs.get("phase"))
                self._answer(job, steady_energy(job.markers, power, marker.attrs["steady"], phase))
            else:
                point = str(marker.attrs.get("point"))
                workload = record_workload(job.record)
                self._answer(job, point_energy(workload, job.markers, power, point, self.simulated))
        self.publish(
            job.record.id,
            "marker",
            {"kind": marker.kind, "name": marker.name, "t_ns": marker.t_ns, "attrs": marker.attrs},
        )

    @staticmethod
    def _answer(job: RunningJob, reply: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # a worker that went away needs no answer
            job.channel.send(msgpack.packb(reply))

    def cancel(self, job_id: str, by: str) -> bool:
        """Stop a running job (True), or say it is not running here (False)."""
        for job in self.running.values():
            if job.record.id == job_id:
                self._stop(job, "cancelled", f"cancelled by {by}")
                return True
        return False

    def _stop(self, job: RunningJob, state: str, reason: str) -> None:
        if job.stop_reason is None:
            job.stop_reason = (state, reason)
            self._signal(job, signal.SIGTERM)
            self._signal(job, signal.SIGCONT)  # a stopped worker could not act on the SIGTERM
            job.kill_at_ns = time.monotonic_ns() + int(KILL_GRACE_S * 1e9)

    @staticmethod
    def _signal(job: RunningJob, signum: int) -> None:
        # SIGKILL reaches every process the worker started too, in whatever group or session (a command
        # job's program runs in its own): only the worker's descendants, found through /proc.
        family = tree_pids(job.process.pid) if signum == signal.SIGKILL else []
        with contextlib.suppress(ProcessLookupError):  # it already exited
            os.killpg(job.process.pid, signum)
        for pid in family[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def check(self) -> None:
        """Finish jobs whose worker exited; enforce timeouts and kill stragglers."""
        now = time.monotonic_ns()
        for gpu, job in list(self.running.items()):
            if job.process.poll() is not None:
                if job.exited_ns is None:
                    self.read_markers(job, drain=True)
                    job.exited_ns = now
                if job.counter_settled(now):  # the counter's update after the end is in: the end is timed
                    self._finish(gpu, job)
            elif job.kill_at_ns is not None and now >= job.kill_at_ns:
                self._signal(job, signal.SIGKILL)
            elif now >= job.deadline_mono_ns:
                timeout = (job.deadline_mono_ns - job.started_mono_ns) / 1e9
                self._stop(job, "failed", f"timed out after {timeout:g} s (the job's timeout_s)")
            elif job.stop_reason is None and now >= job.next_resource_check_ns:
                job.next_resource_check_ns = now + int(RESOURCE_CHECK_S * 1e9)
                self._check_resources(job)

    def _check_resources(self, job: RunningJob) -> None:
        """Fail a job whose processes hold more memory, or whose directory more bytes, than allowed."""
        rss = tree_rss_bytes(job.process.pid)
        job.peak_rss_bytes = max(job.peak_rss_bytes, rss)
        if rss > self.limits.memory_bytes:
            self._stop(
                job,
                "failed",
                f"its processes held {rss / 2**20:,.0f} MiB of memory, over the limit of "
                f"{self.limits.memory_bytes / 2**20:,.0f} MiB (worker_memory_limit_mb)",
            )
            return
        written = directory_bytes(self.jobs_dir / job.record.id)
        if written > self.limits.output_bytes:
            self._stop(
                job,
                "failed",
                f"it wrote {written / 2**20:,.1f} MiB, over the limit of "
                f"{self.limits.output_bytes / 2**20:,.0f} MiB (worker_output_limit_mb)",
            )

    def job_energy(self) -> dict[str, dict[str, Any]]:
        """Each running job's energy so far and that of jobs ended within FINISHED_ENERGY_S: the energy
        counter's increase from the job's first reading to its latest (J; None without readings), which
        only grows, so a metrics scraper never sees it fall."""
        self._prune_finished()
        out = {
            job_id: {"gpu": gpu, "energy_j": joules, "running": False, "slurm_job_id": slurm_job_id}
            for job_id, (gpu, joules, _, slurm_job_id) in self.finished_energy.items()
        }
        for gpu, job in self.running.items():
            out[job.record.id] = {
                "gpu": gpu,
                "energy_j": counter_increase(job.energy),
                "running": True,
                "slurm_job_id": job.record.slurm_job_id,
            }
        return out

    def _prune_finished(self) -> None:
        now = time.monotonic_ns()
        while self.finished_energy:
            oldest = next(iter(self.finished_energy.values()))
            if (
                now - oldest[2] <= FINISHED_ENERGY_S * 1e9
                and len(self.finished_energy) <= MAX_FINISHED_ENERGY
            ):
                break
            self.finished_energy.popitem(last=False)

    def _finish(self, gpu: int, job: RunningJob) -> None:
        del self.running[gpu]
        self.finished_energy[job.record.id] = (
            gpu,
            counter_increase(job.energy),
            time.monotonic_ns(),
            job.record.slurm_job_id,
        )
        self._prune_finished()  # bounded whether or not anything asks for metrics
        job.channel.close()
        end_ns = job.exited_ns or time.monotonic_ns()
        if job.clocks is not None:
            self.clocks.reset(gpu)
        code = job.process.returncode
        failures = [m for m in job.markers if m.kind == "fail"]
        if job.stop_reason is not None:
            state, reason = job.stop_reason
        elif code == 0:
            state, reason = "succeeded", None
        elif code < 0:
            state, reason = "failed", f"worker killed by {signal.Signals(-code).name}"
        else:
            detail = str(failures[-1].attrs.get("reason", "")) if failures else "see worker.log"
            state, reason = "failed", f"worker exited with status {code}: {detail}"
        if code < 0:
            self._idle_simulated_gpu(gpu)
        samples = concat(job.samples, SAMPLE_DTYPE)
        energy = concat(job.energy, ENERGY_DTYPE)
        driver_power = concat(job.driver_power, DRIVER_POWER_DTYPE)
        unread = unmeasured(samples, energy, gpu) if state == "succeeded" else None
        if unread is not None:  # a workload that ran on a GPU nobody could read measured nothing
            state, reason = "failed", unread
        trace = Trace(
            samples,
            energy,
            time.monotonic_ns(),
            time.time_ns(),
            self.simulated,
            {"job": job.record.id},
            driver_power,
        )
        self.store.save_trace(job.record.id, trace)
        phase_windows = windows(job.markers, start_ns=job.started_mono_ns, end_ns=end_ns)
        try:
            result = job_result(
                samples, energy, gpu, job.started_mono_ns, end_ns, phase_windows, self.simulated, driver_power
            )
        except Exception as exc:  # odd markers must not leave the job running forever: it ends, failed
            log.exception("job %s: cannot build its result", job.record.id)
            result = {"error": f"result not built: {type(exc).__name__}: {str(exc)[:300]}"}
            state, reason = "failed", result["error"]
        workload = record_workload(job.record)
        requests = any(m.kind == "event" and m.name == "request" for m in job.markers)
        if workload == "llm" or (workload == "command" and requests):  # a program's requests: same tables
            self._llm_result(job, result, phase_windows, samples, energy, gpu, driver_power)
        elif job.sweep:
            sections = {"burn": burn_sweep_section, "command": command_sweep_section}
            section = sections.get(workload)
            swept = section(phase_windows, HeldPower(samples, gpu, energy, driver_power)) if section else None
            if swept is not None:
                result["dvfs"] = plain(swept, "dvfs")
        if workload == "command":
            ran = [m.attrs for m in job.markers if m.kind == "event" and m.name == "command"]
            result["command"] = plain(dict(ran[-1]), "command") if ran else None
        if job.clocks is not None:
            reset = "after every point and at the job's end" if job.sweep else "at the job's end"
            result.setdefault("dvfs", {}).update({"set": job.clocks, "reset": reset})
        self.store.set_result(job.record.id, result)
        self.store.set_state(job.record.id, state, reason)
        self._announce(job.record.id)

    def _llm_result(
        self,
        job: RunningJob,
        result: dict[str, Any],
        phase_windows: list[PhaseWindow],
        samples: np.ndarray,
        energy: np.ndarray,
        gpu: int,
        driver_power: np.ndarray,
    ) -> None:
        """An llm job's requests table (saved beside its trace) and its summary section."""
        try:
            power = HeldPower(samples, gpu, energy, driver_power)  # built once: every figure below uses it
            rows, section = llm_result(
                job.markers, phase_windows, samples, energy, gpu, self.simulated, power, driver_power
            )
            self.store.save_requests(job.record.id, rows)
            top = self.clocks.top_sm_clock_mhz(gpu)
            mark_capped(section["points"], phase_windows, power, top)
            mark_capped(section["steady_state"], phase_windows, power, top)
            swept = sweep_section(section["points"], rows, phase_windows, power, section["steady_state"])
            if swept is not None:
                result.setdefault("dvfs", {}).update(plain(swept, "dvfs"))
            phases = (job.record.spec.get("dvfs") or {}).get("phase_clocks") or {}
            budget = float(phases.get("latency_budget", 1.1))
            phased = phase_clocks_section(
                rows, phase_windows, power, budget, self.simulated, section["steady_state"]
            )
            if phased is not None:
                result.setdefault("dvfs", {})["phase_clocks"] = plain(phased, "dvfs.phase_clocks")
        except Exception as exc:  # a worker's odd markers must not cost the job its other results
            log.exception("job %s: cannot build its requests table", job.record.id)
            result["llm"] = {"error": f"requests table not built: {type(exc).__name__}: {exc}"}
            return
        result["llm"] = section

    def _idle_simulated_gpu(self, gpu: int) -> None:
        """Idle a simulated GPU whose worker was killed: a real GPU's work ends with its process."""
        if not self.simulated:
            return
        from gpuprof.sampler.sim import SimulatedNvml

        try:
            SimulatedNvml(self.library.path, self.sim_state_path).set_utilization(gpu, 0)
        except GpuprofError as exc:
            log.warning("cannot idle simulated GPU %d: %s", gpu, exc)

    def stop_orphans(self, records: list[JobRecord]) -> list[int]:
        """Stop the workers of jobs a previous daemon left running (it died without stopping them).

        A worker runs in its own session, so it outlives a daemon killed by SIGKILL and would keep its
        GPU busy. Its pid is in the job's directory; it is signalled only while that pid is still a
        process working in that directory, never a stranger that reused the pid. Returns the pids stopped.
        """
        orphans: dict[int, int] = {}  # pid (= process group) -> gpu
        for record in records:
            job_dir = self.jobs_dir / record.id
            try:
                pid = int((job_dir / WORKER_PID_FILE).read_text())
            except (OSError, ValueError):
                continue
            if process_cwd(pid) == job_dir.resolve():
                orphans[pid] = record.gpu
        for pid in orphans:
            for signum in (signal.SIGTERM, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signum)
        deadline = time.monotonic() + KILL_GRACE_S
        while any(running(pid) for pid in orphans) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid, gpu in orphans.items():
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            self._idle_simulated_gpu(gpu)
        return list(orphans)

    def _announce(self, job_id: str) -> None:
        record = self.store.get(job_id)
        if record is not None:
            self.publish(job_id, "job", {"job": record.to_dict()})

    def shutdown(self, reason: str) -> None:
        """Stop every worker and mark its job interrupted (the daemon is going away)."""
        for job in self.running.values():
            self._stop(job, "interrupted", reason)
        deadline = time.monotonic() + KILL_GRACE_S
        while self.running and time.monotonic() < deadline:
            self.check()
            time.sleep(0.05)
        for job in self.running.values():
            self._signal(job, signal.SIGKILL)
        while self.running:
            self.check()
            time.sleep(0.01)
