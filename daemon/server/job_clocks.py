"""A job's clock changes: made when it starts, per point when its worker asks, and put back when it ends.

``JobClocks`` holds the daemon's ``ClockControl`` (None when DVFS is off) and each served GPU's inventory
entry; ``JobRunner`` calls it at a job's start and end and for each of a sweep's clock requests. Every change
goes through ``ClockControl`` (clocks.py), which journals it before it is made.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gpuprof.client.wire.errors import GpuprofError
from gpuprof.client.wire.messages import GpuInfo

from .clocks import ClockControl, ClockRequest, phase_pairs_of, resolve_request, sweep_of
from .store import JobRecord

log = logging.getLogger("gpuprofd")


class JobClocks:
    """Clock changes on behalf of jobs, each on its own GPU only."""

    def __init__(self, control: ClockControl | None, gpu_info: dict[int, GpuInfo]) -> None:
        self.control = control  # None: DVFS is off, and a job asking for it is refused at submit
        self.gpu_info = gpu_info

    def _uuid(self, gpu: int) -> str:
        return self.gpu_info[gpu].uuid

    def apply(self, record: JobRecord) -> dict[str, Any] | None:
        """Make the clock changes the job asks for (journaled, reset when it ends); what was set."""
        request = ClockRequest.from_spec(record.spec.get("dvfs"))
        if request is None:
            return None
        if self.control is None:
            raise GpuprofError("the job asks for clock changes, but DVFS is off on this daemon")
        sweep = sweep_of(record.spec.get("dvfs"))
        resolved = resolve_request(request, self.gpu_info[record.gpu])
        self.control.apply(record.gpu, self._uuid(record.gpu), resolved)
        applied: dict[str, Any] = {
            "sm_clock_mhz": resolved.sm_clock_mhz,
            "sm_clock_range_mhz": list(resolved.sm_clock_range_mhz) if resolved.sm_clock_range_mhz else None,
            "memory_clock_mhz": resolved.memory_clock_mhz,
            "power_limit_w": resolved.power_limit_w,
        }
        if isinstance(sweep, list):
            applied["sweep_sm_clocks_mhz"] = sweep
        pairs = phase_pairs_of(record.spec.get("dvfs"))
        if pairs is not None:
            applied["phase_clocks_mhz"] = pairs
        log.info("job %s: GPU %d clocks set: %s", record.id, record.gpu, applied)
        return applied

    def put_back(self, gpu: int) -> None:
        """Reset what an earlier job changed on ``gpu`` and could not put back then (its GPU was failing)."""
        if self.control is None or gpu not in self.gpu_info:
            return
        try:
            done = self.control.reset(self._uuid(gpu))
        except GpuprofError as exc:
            done = f"FAILED: {exc}"
        if done is not None and done.startswith("FAILED: "):
            failure = done.removeprefix("FAILED: ")
            raise GpuprofError(f"GPU {gpu} keeps clock changes of an earlier job, not put back: {failure}")
        if done is not None:
            log.warning("GPU %d: clock changes an earlier job left were put back: %s", gpu, done)

    def reset(self, gpu: int) -> None:
        """Put back what a job changed on ``gpu``; a failure is logged and stays journaled."""
        if self.control is None or gpu not in self.gpu_info:
            return
        try:
            self.control.reset(self._uuid(gpu))
        except GpuprofError as exc:
            log.error("GPU %d: clocks not reset: %s", gpu, exc)

    def answer(
        self, job_id: str, gpu: int, sweep: frozenset[int], wanted: Any, switch: bool = False
    ) -> dict[str, Any]:
        """Lock the SM clock a sweep's point asks for (one of the clocks approved at submit), or unlock it
        (``wanted`` None); the reply for the worker, with when the call returned (``applied_ns``). A
        ``switch`` at a phase edge (two a batch) is logged at debug level only."""
        try:
            if self.control is None or not sweep:
                raise GpuprofError("this job has no clock sweep (or DVFS is off on this daemon)")
            if wanted is None:
                self.control.reset_sm(self._uuid(gpu))
            elif isinstance(wanted, int) and wanted in sweep:
                self.control.apply(gpu, self._uuid(gpu), ClockRequest(sm_clock_mhz=wanted))
            else:
                raise GpuprofError(f"{wanted!r} MHz is not among the job's sweep clocks")
        except GpuprofError as exc:
            return {"ok": False, "error": str(exc)}
        applied_ns = time.monotonic_ns()  # the call returned: the GPU may still take a while to switch
        log.log(
            logging.DEBUG if switch else logging.INFO,
            "job %s: GPU %d SM clock %s",
            job_id,
            gpu,
            wanted or "reset",
        )
        return {"ok": True, "sm_clock_mhz": wanted, "applied_ns": applied_ns}

    def top_sm_clock_mhz(self, gpu: int) -> int | None:
        """The GPU's highest supported SM clock: what an unlocked point is judged against."""
        info = self.gpu_info.get(gpu)
        return max(info.graphics_clocks_mhz) if info and info.graphics_clocks_mhz else None
