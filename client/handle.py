"""A handle on one submitted job: wait for it with progress, cancel it, and fetch its result."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from .wire.errors import JobNotFound, JobWaitTimeout
from .wire.states import FINAL_STATES

if TYPE_CHECKING:
    from .stream import Subscription


class JobClient(Protocol):
    """What a handle asks of its client (client/api.py's Client)."""

    def hello(self) -> dict[str, Any]: ...

    def job(self, job_id: str) -> dict[str, Any]: ...

    def cancel(self, job_id: str) -> dict[str, Any]: ...

    def stream(self, gpu: int | None = None, job: str | None = None) -> Subscription: ...

    def requests(self, job_id: str) -> pd.DataFrame: ...

    def trace(self, job_id: str, table: str = ..., chunk_rows: int = ...) -> pd.DataFrame: ...


SUMMARY_KEYS = (
    "id",
    "state",
    "user",
    "energy_counter_j",
    "energy_integrated_j",
    "duration_s",
    "mean_power_w",
    "simulated",
    "windows",
)


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    """The --json form of a job map: its result's figures and windows lifted to the top level."""
    out = {k: v for k, v in job.items() if k != "result"}
    for key, value in (job.get("result") or {}).items():
        out.setdefault(key, value)  # the job's own id, gpu and simulated come first and win
    for key in SUMMARY_KEYS:
        out.setdefault(key, [] if key == "windows" else None)
    return out


@dataclass
class JobResult:
    """A finished job: ``summary``, the same map ``--json`` prints (``job_json``: the result's figures at
    the top level, ``summary["energy_counter_j"]``), ``job`` as the daemon keeps it (the result under
    ``job["result"]``), its trace and energy readings, its marked windows, for an llm job its requests (one
    row each; empty otherwise) and the driver's total-power samples the fused energy split its edges by
    (empty from a daemon that keeps none)."""

    summary: dict[str, Any]
    trace: pd.DataFrame
    energy: pd.DataFrame
    windows: pd.DataFrame
    requests: pd.DataFrame = field(default_factory=pd.DataFrame)
    job: dict[str, Any] = field(default_factory=dict)
    driver_power: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class JobProgress:
    """What a waiting or running job is doing now, from its map and its live samples and markers."""

    job: dict[str, Any]
    power_w: float | None = None
    sm_clock_mhz: int | None = None
    phase: str | None = None
    updated: int = 0  # live messages seen so far
    fraction: float | None = None  # of the job done, where its workload says (status markers' done/total)
    now_ns: Callable[[], int] = field(default=time.time_ns, repr=False)

    @property
    def seconds_left(self) -> float | None:
        """The time left at the pace so far (elapsed x undone / done), once a tenth of the job is done."""
        if self.fraction is None or self.fraction < 0.1 or self.state != "running":
            return None
        return self.elapsed_s * (1 - self.fraction) / self.fraction

    @property
    def id(self) -> str:
        return str(self.job["id"])

    @property
    def state(self) -> str:
        return str(self.job["state"])

    @property
    def simulated(self) -> bool:
        return bool(self.job.get("simulated"))

    @property
    def elapsed_s(self) -> float:
        """Seconds running (or, while queued, waiting), by the daemon's wall-clock stamps."""
        start = self.job.get("started_ns") or self.job.get("created_ns")
        if not start:
            return 0.0
        end = self.job.get("finished_ns") or self.now_ns()
        return max(0.0, (end - start) / 1e9)

    def apply(self, message: dict[str, Any]) -> None:
        """Take in one live message (client/stream.py's dicts)."""
        self.updated += 1
        kind = message["kind"]
        if kind == "samples":
            power = _last_present(message.get("power_w"))
            clock = _last_present(message.get("sm_clock_mhz"))
            self.power_w = power if power is not None else self.power_w
            self.sm_clock_mhz = int(clock) if clock is not None else self.sm_clock_mhz
        elif kind == "job" and isinstance(message.get("job"), dict):
            self.job = message["job"]
        elif kind == "marker":
            marker, name = message.get("marker"), message.get("name")
            if marker == "begin":
                self.phase = str(name)
            elif marker == "end" and self.phase == name:
                self.phase = None
            elif marker == "status":
                given = message.get("attrs")
                attrs: dict[str, Any] = given if isinstance(given, dict) else {}
                done, total = attrs.get("done"), attrs.get("total")
                if (
                    isinstance(done, int | float)
                    and isinstance(total, int | float)
                    and 0 <= done <= total > 0
                ):
                    self.fraction = done / total
            elif marker in ("fail", "event"):
                self.phase = f"{marker}: {name}"


def _last_present(values: Any) -> float | None:
    if not isinstance(values, list):
        return None
    return next((float(v) for v in reversed(values) if v is not None), None)


class JobHandle:
    """One job on a daemon: ``.id``, ``.info()``, ``.wait()``, ``.result()``, ``.stream()``, ``.cancel()``."""

    def __init__(self, client: JobClient, job_id: str, job: dict[str, Any] | None = None) -> None:
        self.client = client
        self.id = job_id
        self.last = job or {"id": job_id, "state": "queued"}

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r}, state={self.last.get('state')!r})"

    def info(self) -> dict[str, Any]:
        """The job's map, fresh from the daemon."""
        self.last = self.client.job(self.id)
        return self.last

    def cancel(self) -> dict[str, Any]:
        """Cancel the job; returns its map."""
        self.last = self.client.cancel(self.id)
        return self.last

    def wait(
        self,
        timeout_s: float | None = None,
        poll_s: float = 0.2,
        progress: Callable[[JobProgress], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the job ends (succeeded, failed, cancelled or interrupted); returns its map.

        ``progress`` is called about every ``poll_s`` with a JobProgress; asking for it subscribes to the
        live stream for the job's power and markers. Raises JobWaitTimeout after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        subscription = self.client.stream(job=self.id) if progress is not None else None
        tracker = JobProgress(self.info())
        try:
            while tracker.job["state"] not in FINAL_STATES:
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobWaitTimeout(f"job {self.id} still {tracker.state} after {timeout_s:g} s")
                if progress is not None:
                    progress(tracker)
                if subscription is not None:
                    for message in subscription.poll(poll_s):
                        tracker.apply(message)
                else:
                    time.sleep(poll_s)
                # Polling too: a live message can be lost (slow joiner, high-water mark), the map cannot.
                tracker.job = self.info()
        finally:
            if subscription is not None:
                subscription.close()
        if progress is not None:
            progress(tracker)
        return tracker.job

    def result(self, timeout_s: float | None = None) -> JobResult:
        """Wait for the job, then fetch its trace, energy readings, windows and driver power samples."""
        summary = self.wait(timeout_s)
        trace, energy = (self._table(summary, table) for table in ("samples", "energy"))
        result = summary.get("result") or {}
        windows = pd.DataFrame(result.get("windows") or [])
        requests = self._table(summary, "requests") if (result.get("llm") or {}).get("requests") else None
        found = pd.DataFrame() if requests is None else requests
        keeps_driver_power = "driver_power" in self.client.hello().get("capabilities", [])  # not an older one
        driver_power = self._table(summary, "driver_power") if keeps_driver_power else pd.DataFrame()
        return JobResult(
            job_json(summary), trace, energy, windows, found, job=summary, driver_power=driver_power
        )

    def _table(self, summary: dict[str, Any], table: str) -> pd.DataFrame:

        try:
            if table == "requests":
                return self.client.requests(self.id)
            return self.client.trace(self.id, table)
        except JobNotFound:
            if summary["state"] == "succeeded":
                raise
            return pd.DataFrame()  # a job that failed before it ran has no trace

    def stream(self) -> Iterator[dict[str, Any]]:
        """The job's live messages (see Client.stream), ending once the job has ended."""
        with self.client.stream(job=self.id) as subscription:
            if self.info()["state"] in FINAL_STATES:
                return
            checked = time.monotonic()
            while True:
                for message in subscription.poll(0.25):
                    yield message
                    job = message.get("job") if message["kind"] == "job" else None
                    if isinstance(job, dict) and job.get("state") in FINAL_STATES:
                        return
                if time.monotonic() - checked > 1.0:  # the final job message may have been lost
                    checked = time.monotonic()
                    if self.info()["state"] in FINAL_STATES:
                        return
