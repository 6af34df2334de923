"""gpuprofd's request handling, apart from its sockets: one request's bytes in, one reply's bytes out.

``Handlers`` takes what a request may touch as arguments (the job store, the runner of jobs, the policy,
the node's GPUs, the sample history), so it is tested in-process against a fake runner
(tests/unit/test_handlers.py). The socket loop (daemon.py) only moves frames and calls ``answer``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import numpy as np

from gpuprof.client.wire import protocol
from gpuprof.client.wire.errors import GpuprofError, JobSpecError
from gpuprof.client.wire.jobspec import SUBMITTED_SOURCE, CommandParams, JobSpec, JobSpecKeyError, LlmParams
from gpuprof.client.wire.messages import GpuInfo
from gpuprof.client.wire.spec_schema import Document, KeyPath
from gpuprof.client.wire.states import FINAL_STATES
from gpuprof.sampler.energy import reason_names
from gpuprof.sampler.records import MISSING_MEM_CLOCK, MISSING_POWER, MISSING_SM_CLOCK

from ..config import DaemonConfig, tcp_port
from .clocks import (
    ClockRequest,
    ClockSpecError,
    phase_pairs_of,
    resolve_phase_pairs,
    resolve_request,
    resolve_sweep,
    sweep_of,
)
from .history import SampleHistory
from .identity import Caller
from .limits import RequestLimits, ServiceTimes
from .logbound import Bugs
from .policy import Policy
from .slurm import AllocationError, SlurmJobs
from .store import JobRecord, JobStore, TraceNotFound

log = logging.getLogger("gpuprofd")
PEEK_BYTES = 4096  # a rate-limited request this small is decoded for its id
CAPABILITIES = [
    "jobs",
    "live",
    "trace",
    "burn",
    "history",
    "stats",
    "metrics",
    "command",
    "slurm",
    "driver_power",  # the trace request's driver_power table
]
LIVE_COLUMNS = (
    "t_ns",
    "power_mw",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "util_pct",
    "temp_c",
    "clock_event_reasons",
)
INTERNAL = "internal error; see the daemon's log"


class Running(Protocol):
    """A running job as the handlers see it."""

    @property
    def record(self) -> JobRecord: ...


class Runner(Protocol):
    """What the handlers ask of the runner of jobs (daemon/server/jobs.py's JobRunner, or a fake)."""

    @property
    def running(self) -> Mapping[int, Running]: ...

    def schedule(self, gpus: list[int]) -> None: ...

    def cancel(self, job_id: str, by: str) -> bool: ...

    def job_energy(self) -> dict[str, dict[str, Any]]: ...


@dataclass(frozen=True)
class Node:
    """The GPUs this daemon serves, as NVML described them when it started."""

    inventory: list[GpuInfo]  # each served GPU, as the gpus request returns it
    simulated: bool
    unreadable: dict[int, str] = field(default_factory=dict)  # GPUs left out: their NVML error

    @property
    def gpus(self) -> list[int]:
        return [gpu.index for gpu in self.inventory]


@functools.cache  # a lookup in the installed distributions' metadata: ~0.5 ms, once per hello otherwise
def daemon_version() -> str:
    try:
        return version("gpuprof")
    except PackageNotFoundError:
        return "unknown"


def live_body(gpu: int, own: np.ndarray, simulated: bool, job: str | None) -> dict[str, Any]:
    """A samples message (live, or a history reply) for ``gpu``'s samples ``own``."""
    body: dict[str, Any] = {name: own[name].tolist() for name in LIVE_COLUMNS}
    body["power_w"] = [mw / 1000 for mw in body.pop("power_mw")]
    body.update(gpu=gpu, simulated=simulated, job=job)
    return body


class Handlers:
    """Answers requests: decodes, admits (rate and time share), checks the policy, dispatches to
    ``on_<type>``, and encodes the reply or a bounded error. A bug in a handler costs its request only."""

    def __init__(
        self,
        config: DaemonConfig,
        store: JobStore,
        runner: Runner,
        policy: Policy,
        node: Node,
        history: SampleHistory,
        *,
        publish_job: Callable[[str, str, dict[str, Any]], None],
        limits: RequestLimits,
        bugs: Bugs,
        loop_stats: Callable[[], dict[str, Any]] = dict,
        service_times: ServiceTimes | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.policy = policy
        self.node = node
        self.history = history
        self.publish_job = publish_job
        self.limits = limits
        self.bugs = bugs
        self.loop_stats = loop_stats  # what only the loop knows: its sampler and what it published
        self.service_times = service_times or ServiceTimes()
        self.started_ns = time.monotonic_ns()
        self.slurm = SlurmJobs(config.slurm_jobs_dir, config.slurm_enforce_gpus, policy.daemon_uid)

    # --- one request ------------------------------------------------------------------------------

    def answer(self, payload: bytes, caller: Caller | None) -> bytes:
        """The reply to one request; the time it took is counted for its type and against its user."""
        started = time.perf_counter()
        served: list[str] = []  # the request's type, once it is known
        try:
            return self._reply_to(payload, caller, served)
        finally:
            took = time.perf_counter() - started
            self.service_times.add(served[0] if served else "refused", took)
            if caller is not None:
                self.limits.charge(caller.uid, took)

    def _reply_to(self, payload: bytes, caller: Caller | None, served: list[str]) -> bytes:
        request_id: int | None = None
        try:
            if caller is None:  # cannot happen while ZAP runs; refused rather than served anonymously
                raise protocol.ProtocolError("denied", "the connection has no verified user")
            refusal = self.limits.admit(caller.uid)
            if refusal is not None:
                log.warning("rate-limited %s (uid %d): %s", caller.user, caller.uid, refusal)
                raise protocol.ProtocolError("rate_limited", refusal, _request_id(payload))
            try:
                request = protocol.decode_request(payload, self.config.max_message_bytes)
            except protocol.ProtocolError as exc:
                log.info("refused a request of %s (uid %d): %s", caller.user, caller.uid, exc.message)
                raise
            request_id = request.id
            served.append(request.type)
            self.policy.check_use(caller, request.type)
            body = getattr(self, f"on_{request.type}")(request.body, caller)
            return protocol.encode_reply(request.id, body)
        except protocol.ProtocolError as exc:
            return protocol.encode_error(
                exc.request_id if request_id is None else request_id,
                exc.code,
                exc.message,
                exc.key,
                exc.problem,
            )
        except JobSpecKeyError as exc:
            return protocol.encode_error(request_id, "invalid_spec", str(exc), exc.key, exc.problem)
        except JobSpecError as exc:
            return protocol.encode_error(request_id, "invalid_spec", str(exc))
        except GpuprofError as exc:
            return protocol.encode_error(request_id, "bad_request", str(exc))
        except Exception:  # a bug must cost one request, never the daemon
            self.bugs.log(f"request {served[0] if served else '?'}")
            return protocol.encode_error(request_id, "internal", INTERNAL)

    def job_or_404(self, job_id: str, caller: Caller, request: str) -> JobRecord:
        """The job, if it exists and ``caller`` may see it (its owner, or an admin)."""
        record = self.store.get(job_id) if self.store.valid_id(job_id) else None
        if record is None:
            raise protocol.ProtocolError("not_found", f"no job {protocol.excerpt(job_id)}")
        self.policy.check_job(caller, request, record.id, record.user, record.uid)
        return record

    def running_job(self, gpu: int) -> str | None:
        running = self.runner.running.get(gpu)
        return running.record.id if running else None

    # --- the requests (docs/protocol.md) ----------------------------------------------------------

    def on_hello(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        config = self.config
        return {
            "daemon_version": daemon_version(),
            "protocol": protocol.PROTOCOL_VERSION,
            "capabilities": CAPABILITIES,
            "pub_endpoint": config.publish_endpoint,
            # remote clients subscribe on their endpoint's host at this port (None: no tcp)
            "tcp_pub_port": tcp_port(config.tcp_publish_endpoint) if config.tcp_endpoint else None,
            "simulated": self.node.simulated,
            "gpus": len(self.node.gpus),
            "user": caller.user,  # who the daemon takes this connection for
        }

    def on_gpus(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return {"gpus": [gpu.to_dict() for gpu in self.node.inventory]}

    def on_time(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return {"monotonic_ns": time.monotonic_ns(), "wall_ns": time.time_ns()}

    def on_stats(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        running = {str(gpu): job.record.id for gpu, job in self.runner.running.items()}
        history = self.history
        return {
            "uptime_s": (time.monotonic_ns() - self.started_ns) / 1e9,
            "simulated": self.node.simulated,
            **self.loop_stats(),
            "history": {
                "seconds": history.seconds,
                "samples": len(history),
                "capacity": history.sample_capacity,
                "dropped_samples": history.dropped_samples,
                "oldest_t_ns": history.oldest_t_ns,
                "newest_t_ns": history.newest_t_ns,
                "bytes": history.nbytes,
            },
            "jobs": {
                "running": running,
                "queued": {str(gpu): self.store.count_queued(gpu) for gpu in self.node.gpus},
            },
            "requests": self.service_times.summary(),
            "rate_limited": {str(uid): count for uid, count in self.limits.refused.items()},
            "internal_errors": self.bugs.total,
        }

    def on_metrics(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """What a metrics exporter serves (``gpuprof exporter``): each GPU's energy counter, power, clocks
        and clock-event reasons as last read, its running job and queue; each running or lately ended job's
        energy; the sampler's counts. Job ids and GPUs only: no user or job names."""
        now = time.monotonic_ns()
        running = self.runner.running
        gpus = []
        for gpu in self.node.inventory:
            latest = self.history.latest(gpu.index)
            counter_mj = self.history.latest_energy_mj(gpu.index)
            job = running.get(gpu.index)
            figures: dict[str, Any] = {"power_w": None, "sm_clock_mhz": None, "mem_clock_mhz": None}
            reasons: list[str] | None = None
            if latest is not None:
                missing = int(latest["missing"])
                figures = {
                    "power_w": None if missing & MISSING_POWER else int(latest["power_mw"]) / 1000.0,
                    "sm_clock_mhz": None if missing & MISSING_SM_CLOCK else int(latest["sm_clock_mhz"]),
                    "mem_clock_mhz": None if missing & MISSING_MEM_CLOCK else int(latest["mem_clock_mhz"]),
                }
                reasons = reason_names(int(latest["clock_event_reasons"]))
            gpus.append(
                {
                    "index": gpu.index,
                    "uuid": gpu.uuid,
                    "name": gpu.name,
                    "energy_j": counter_mj / 1000.0 if counter_mj is not None else None,
                    **figures,
                    "clock_event_reasons": reasons,
                    "running_job": job.record.id if job is not None else None,
                    "slurm_job_id": job.record.slurm_job_id if job is not None else None,
                    "queued": self.store.count_queued(gpu.index),
                }
            )
        sampler = self.loop_stats().get("sampler", {})
        return {
            "daemon_version": daemon_version(),
            "simulated": self.node.simulated,
            "uptime_s": (now - self.started_ns) / 1e9,
            "gpus": gpus,
            "jobs": self.runner.job_energy(),
            "sampler": {
                key: sampler.get(key)
                for key in ("samples", "ticks", "deadline_misses", "read_overrun_misses", "energy_reads")
            },
        }

    def on_history(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        gpu = body["gpu"]
        if gpu not in self.node.gpus:
            raise protocol.ProtocolError("not_found", f"GPU {gpu} is not served here; GPUs: {self.node.gpus}")
        seconds = min(float(body.get("seconds", 30)), self.history.seconds)
        samples, _ = self.history.since(time.monotonic_ns() - int(seconds * 1e9), gpu)
        stride = max(1, math.ceil(samples.size / body.get("max_points", 2000)))
        kept = samples[::-1][::stride][::-1]  # every stride-th sample, the newest always among them
        live = live_body(gpu, kept, self.node.simulated, self.running_job(gpu))
        return {**live, "seconds": seconds, "stride": stride, "available": samples.size}

    def on_submit(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        spec = JobSpec.from_dict(body["spec"], default_timeout_s=self.config.default_timeout_s)
        try:
            slurm, node_gpu = self.slurm.place(
                caller,
                body.get("slurm_job_id"),
                spec.gpu,
                body.get("slurm_gpus"),
                exempt=self.policy.is_admin(caller),
            )
        except AllocationError as exc:
            raise _spec_error(("gpu",), str(exc)) from None
        if node_gpu != spec.gpu:  # counted within a Slurm job's GPUs: the node's from here on
            spec = dataclasses.replace(spec, gpu=node_gpu)
        gpus = self.node.gpus
        if spec.gpu not in gpus:  # errors in the form of JobSpec's own: source, key, problem
            lost = self.node.unreadable.get(spec.gpu)
            why = f" (NVML could not read it when gpuprofd started: {lost})" if lost else ""
            raise _spec_error(("gpu",), f"GPU {spec.gpu} is not served here{why}; GPUs: {gpus}")
        if spec.timeout_s > self.config.max_timeout_s:
            raise _spec_error(
                ("timeout_s",),
                f"{spec.timeout_s:g} s exceeds this daemon's limit of {self.config.max_timeout_s:g} s "
                "(max_timeout_s)",
            )
        if isinstance(spec.params, LlmParams) and spec.params.trust_remote_code:
            self.policy.check_remote_code(caller)
        if isinstance(spec.params, CommandParams):
            self.policy.check_command(caller)
        stored = spec.to_dict()
        request = ClockRequest.from_spec(stored.get("dvfs"))
        if request is not None:
            self.policy.check_dvfs(caller)
            gpu = self.node.inventory[gpus.index(spec.gpu)]
            try:
                resolve_request(request, gpu)
                sweep = sweep_of(stored["dvfs"])
                if sweep is not None:  # the worker may then ask for exactly these clocks
                    stored["dvfs"]["sm_clocks"] = resolve_sweep(sweep, request.snap, gpu)
                pairs = phase_pairs_of(stored["dvfs"])
                if pairs is not None:  # and for these, switched at phase edges
                    stored["dvfs"]["phase_clocks"]["pairs"] = resolve_phase_pairs(pairs, request.snap, gpu)
            except ClockSpecError as exc:
                raise _spec_error(("dvfs", *exc.path), exc.problem) from None
        self.check_quota(caller)
        record = self.store.create(
            stored,
            body.get("spec_text", ""),
            caller.user,
            caller.uid,
            spec.gpu,
            self.node.simulated,
            slurm_job_id=slurm.id if slurm is not None else None,
        )
        self.runner.schedule(gpus)
        return {"job": (self.store.get(record.id) or record).to_dict()}

    def check_quota(self, caller: Caller) -> None:
        """Refuse a submit that would give ``caller`` more queued jobs than max_queued_jobs_per_user."""
        limit = self.config.max_queued_jobs_per_user
        if caller.uid in self.limits.exempt_uids:
            return
        queued = self.store.count_queued_of(caller.uid)
        if queued >= limit:
            log.warning("refused a submit by %s (uid %d): %d jobs queued", caller.user, caller.uid, queued)
            raise protocol.ProtocolError(
                "quota_exceeded",
                f"{caller.user} has {queued} queued jobs; this daemon queues at most {limit} per user "
                "(max_queued_jobs_per_user): wait for some to start, or cancel some",
            )

    def on_jobs(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        limit = int(body.get("limit", 100))  # 1..MAX_JOBS_LISTED, checked with the request
        user = body.get("user")
        if not self.policy.is_admin(caller):
            if user not in (None, caller.user):
                raise self.policy.deny(
                    caller,
                    f"listing the jobs of {protocol.excerpt(user)}",
                    "only an admin sees other users' jobs",
                )
            user = caller.user
        records = self.store.list(user=user, state=body.get("state"), gpu=body.get("gpu"), limit=limit)
        return {"jobs": [_listed(r.to_dict()) for r in records]}

    def on_job(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return {"job": self.job_or_404(body["id"], caller, "job").to_dict()}

    def on_cancel(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        record = self.job_or_404(body["id"], caller, "cancel")
        if record.state == "queued":
            cancelled = self.store.set_state(
                record.id, "cancelled", f"cancelled by {caller.user} before it started"
            )
            self.publish_job(record.id, "job", {"job": cancelled.to_dict()})
        elif record.state == "running":
            self.runner.cancel(record.id, caller.user)
        elif record.state in FINAL_STATES:
            raise protocol.ProtocolError("bad_request", f"job {record.id} already {record.state}")
        return {"job": self.job_or_404(record.id, caller, "cancel").to_dict()}

    def on_slurm_end(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """A Slurm job has ended (its epilog asks, as root): cancel its gpuprof jobs still queued or running,
        and tell each of its jobs' state and energy. Asked again, it cancels nothing new: the epilog asks
        until every job has ended."""
        slurm_job_id = body["slurm_job_id"]
        if not self.policy.is_admin(caller):
            raise self.policy.deny(
                caller, f"ending Slurm job {slurm_job_id}", "only root (Slurm's epilog) or an admin may"
            )
        cancelled = []
        for record in self.store.active_of_slurm_job(slurm_job_id):
            by = f"the end of Slurm job {slurm_job_id} (its epilog)"
            if record.state == "queued":
                done = self.store.set_state(record.id, "cancelled", f"cancelled by {by} before it started")
                self.publish_job(record.id, "job", {"job": done.to_dict()})
            else:
                self.runner.cancel(record.id, by)
            cancelled.append(record.id)
        if cancelled:
            log.info("Slurm job %s ended: cancelled gpuprof jobs %s", slurm_job_id, ", ".join(cancelled))
        jobs = []
        for record in self.store.of_slurm_job(slurm_job_id):
            result = record.result or {}
            jobs.append(
                {
                    "id": record.id,
                    "gpu": record.gpu,
                    "state": record.state,
                    "energy_j": result.get("energy_counter_j"),
                    "energy_bound_j": result.get("energy_counter_uncertainty_j"),
                }
            )
        return {"slurm_job_id": slurm_job_id, "cancelled": cancelled, "jobs": jobs}

    def on_trace(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        record = self.job_or_404(body["id"], caller, "trace")
        if record.state not in FINAL_STATES:
            raise protocol.ProtocolError("not_found", f"job {record.id} is {record.state}: no trace yet")
        table = body.get("table", "samples")
        try:
            if table == "requests":
                frame = self.store.load_requests(record.id)
            elif table == "driver_power":
                frame = self.store.load_driver_power(record.id)
            else:
                samples, energy = self.store.load_trace(record.id)
                frame = samples if table == "samples" else energy
        except TraceNotFound as exc:
            raise protocol.ProtocolError("not_found", str(exc)) from None
        offset = int(body.get("offset", 0))
        limit = int(body.get("limit", protocol.MAX_TRACE_CHUNK))
        if table == "requests":  # each row holds up to 2,000 characters of answer: a reply stays ~4 MB
            limit = min(limit, protocol.MAX_REQUESTS_CHUNK)
        chunk = frame.iloc[offset : offset + limit]
        columns = {name: _nullable(chunk[name]) for name in chunk}
        end = offset + len(chunk)
        return {
            "columns": columns,
            "rows": len(chunk),
            "total": len(frame),
            "next_offset": end if end < len(frame) else None,
        }


def _nullable(column: Any) -> list[Any]:
    """A trace column as a list, a missing value (NaN, or NA of a nullable integer column) as None."""
    values, missing = column.astype(object).tolist(), column.isna().tolist()
    return [None if gone else value for value, gone in zip(values, missing, strict=True)]


def _request_id(payload: bytes) -> int | None:
    """The id of a small request not otherwise read (so a refusal can be matched to it), or None: a
    refusal must cost less than decoding a large message."""
    if len(payload) > PEEK_BYTES:
        return None
    try:
        return protocol.decode_request(payload).id
    except protocol.ProtocolError as exc:
        return exc.request_id


def _spec_error(path: KeyPath, problem: str) -> JobSpecKeyError:
    """A spec error found by the daemon, in JobSpec's own form: the submitted spec, its key, the problem."""
    return Document(None, SUBMITTED_SOURCE).error(path, problem)


def _listed(job: dict[str, Any]) -> dict[str, Any]:
    """A job map for listings: no spec text, and its result's totals without the per-window figures
    (``job`` has those)."""
    job = {name: value for name, value in job.items() if name != "spec_text"}
    result = job.get("result")
    if isinstance(result, dict) and "windows" in result:
        totals = {k: v for k, v in result.items() if k != "windows"}
        job = {**job, "result": {**totals, "window_count": len(result["windows"])}}
    return job
