"""Clock changes (DVFS): made only when allowed, journaled before they happen, and always undone.

Before gpuprofd locks a clock or sets a power limit it writes what it is about to change, and the value to
put back, to ``STATE_DIR/clocks.json`` (fsynced). It resets the GPU when the job ends, however it ends,
and removes the entry only once the reset succeeded. Whatever is still in the journal is reset when the
daemon starts (after a crash or SIGKILL) and by ``gpuprofd reset-clocks`` (the systemd unit's
ExecStopPost). GPUs are named by UUID in the journal, so a changed GPU order cannot send a reset astray.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuprof.client.wire.errors import GpuprofError, NvmlError, PermissionDenied
from gpuprof.client.wire.messages import GpuInfo
from gpuprof.sampler.device import Gpu, NvmlSession
from gpuprof.sampler.library import NvmlLibrary

from ..atomic import write_text_atomically

log = logging.getLogger("gpuprofd")
JOURNAL_FILE = "clocks.json"


class ClockJournal:
    """What gpuprofd changed on which GPU (by UUID) and has not yet put back."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / JOURNAL_FILE

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise GpuprofError(
                f"{self.path}: unreadable clock journal ({exc}); reset the GPUs by hand"
            ) from None
        return data if isinstance(data, dict) else {}

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        write_text_atomically(self.path, json.dumps(entries, indent=1, sort_keys=True))

    def mark(self, uuid: str, index: int, **changes: Any) -> None:
        entries = self.load()
        if uuid in entries and all(key in entries[uuid] for key in changes):
            return  # journaled already (a sweep's next clock, a phase switch): nothing to write
        entry = entries.setdefault(uuid, {"index": index})
        for key, value in changes.items():
            entry.setdefault(key, value)  # the first original value is the one to restore
        self._write(entries)

    def unmark_key(self, uuid: str, key: str) -> None:
        """Forget one change that was put back; the entry goes when nothing else is left in it."""
        entries = self.load()
        entry = entries.get(uuid)
        if entry is None or entry.pop(key, None) is None:
            return
        if set(entry) <= {"index"}:
            entries.pop(uuid)
        self._write(entries)

    def unmark(self, uuid: str) -> None:
        entries = self.load()
        if entries.pop(uuid, None) is not None:
            self._write(entries)


class ClockSpecError(GpuprofError):
    """A clock a job spec asks for that its GPU does not support; ``path`` is its key in ``dvfs:``."""

    def __init__(self, path: tuple[str | int, ...], problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(problem)


@dataclass(frozen=True)
class ClockRequest:
    """What a job asks for: an SM clock lock, a memory clock lock, a power limit (each optional)."""

    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    power_limit_w: float | None = None
    snap: bool = False
    sm_clock_range_mhz: tuple[int, int] | None = None  # a range lock instead of one clock

    @classmethod
    def from_spec(cls, dvfs: dict[str, Any] | None) -> ClockRequest | None:
        """The job-wide changes of a spec's dvfs section (a sweep's SM clocks are set point by point)."""
        if not dvfs:
            return None
        sm = dvfs.get("sm_clocks")
        return cls(
            sm_clock_mhz=sm if isinstance(sm, int) else None,
            memory_clock_mhz=dvfs.get("memory_clock"),
            power_limit_w=dvfs.get("power_limit_w"),
            snap=bool(dvfs.get("snap", False)),
            sm_clock_range_mhz=_pair(dvfs.get("sm_clock_range")),
        )


def _pair(value: Any) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if isinstance(value, list) and len(value) == 2 else None


def nearest(value: int, supported: list[int]) -> list[int]:
    """The supported values on either side of ``value`` (one when it is beyond the ends)."""
    ordered = sorted(set(supported))
    at = bisect.bisect_left(ordered, value)
    return ordered[max(0, at - 1) : at + 1]


def resolve_request(request: ClockRequest, gpu: GpuInfo) -> ClockRequest:
    """``request`` checked against the GPU's supported clocks and power range; snapped if it asks.

    An unsupported value is a GpuprofError naming the nearest supported ones.
    """
    out: dict[str, Any] = {"snap": request.snap, "power_limit_w": request.power_limit_w}
    for key, supported_key, what, path in (
        ("sm_clock_mhz", "graphics_clocks_mhz", "an SM clock", ("sm_clocks",)),
        ("memory_clock_mhz", "memory_clocks_mhz", "a memory clock", ("memory_clock",)),
    ):
        out[key] = _supported(getattr(request, key), gpu, supported_key, what, request.snap, path)
    if request.sm_clock_range_mhz is not None:
        low, high = (
            _supported(end, gpu, "graphics_clocks_mhz", "an SM clock", request.snap, ("sm_clock_range", i))
            for i, end in enumerate(request.sm_clock_range_mhz)
        )
        out["sm_clock_range_mhz"] = (low, high)
    if request.power_limit_w is not None:
        lowest, highest = gpu.min_power_limit_w, gpu.max_power_limit_w
        if not lowest <= request.power_limit_w <= highest:
            wanted = request.power_limit_w
            raise ClockSpecError(
                ("power_limit_w",),
                f"GPU {gpu.index} takes power limits in [{lowest:g}, {highest:g}] W, not {wanted:g} W",
            )
    return ClockRequest(**out)


def _supported(
    value: int | None,
    gpu: GpuInfo,
    supported_key: str,
    what: str,
    snap: bool,
    path: tuple[str | int, ...],
) -> int | None:
    """``value`` if the GPU supports it, the nearest supported one when ``snap``, else ClockSpecError."""
    supported = list(getattr(gpu, supported_key))
    if value is None or value in supported:
        return value
    close = nearest(value, supported)
    if not snap:
        raise ClockSpecError(
            path,
            f"GPU {gpu.index} does not support {what} of {value} MHz; nearest supported: "
            f"{', '.join(map(str, close))} MHz (or set dvfs.snap: true)",
        )
    return min(close, key=lambda v: (abs(v - value), v))


def sweep_of(dvfs: dict[str, Any] | None) -> list[int] | str | None:
    """A spec's sweep: its SM clocks, ``"all"``, or None when it sets one clock or none."""
    sm = (dvfs or {}).get("sm_clocks")
    return sm if isinstance(sm, list) or sm == "all" else None


def resolve_sweep(sweep: list[int] | str, snap: bool, gpu: GpuInfo) -> list[int]:
    """A sweep's clocks checked against the GPU's (snapped if asked, duplicates dropped, order kept)."""
    supported = sorted(set(gpu.graphics_clocks_mhz))
    if isinstance(sweep, str):  # "all", the one string sweep_of gives
        return supported
    out: list[int] = []
    for index, mhz in enumerate(sweep):
        value = _supported(int(mhz), gpu, "graphics_clocks_mhz", "an SM clock", snap, ("sm_clocks", index))
        if value is not None and value not in out:
            out.append(value)
    return out


def phase_pairs_of(dvfs: dict[str, Any] | None) -> list[list[int]] | None:
    """A spec's (prefill, decode) SM clock pairs (``phase_clocks``), None when it has none."""
    phases = (dvfs or {}).get("phase_clocks")
    pairs = phases.get("pairs") if isinstance(phases, dict) else None
    return pairs if isinstance(pairs, list) and pairs else None


def resolve_phase_pairs(pairs: list[list[int]], snap: bool, gpu: GpuInfo) -> list[list[int]]:
    """Phase clock pairs checked against the GPU's SM clocks (snapped if asked, duplicates dropped)."""
    out: list[list[int]] = []
    for index, pair in enumerate(pairs):
        path = ("phase_clocks", "pairs", index)
        resolved = [
            int(_supported(int(mhz), gpu, "graphics_clocks_mhz", f"a {phase} SM clock", snap, path) or mhz)
            for mhz, phase in zip(pair, ("prefill", "decode"), strict=True)
        ]
        if resolved not in out:
            out.append(resolved)
    return out


class ClockControl:
    """Locks and resets clocks through NVML, journaling first. Used only when DVFS is allowed."""

    def __init__(self, library: NvmlLibrary, journal: ClockJournal) -> None:
        self.library = library
        self.journal = journal

    def apply(self, index: int, uuid: str, request: ClockRequest) -> None:
        """Make the changes ``request`` asks of GPU ``index``; a failure undoes what was done and raises."""
        with NvmlSession(self.library) as nvml:
            gpu = nvml.gpu(index)
            try:
                if request.power_limit_w is not None:
                    self.journal.mark(uuid, index, power_limit_mw=gpu.power_limit_mw())
                    gpu.set_power_limit_mw(int(request.power_limit_w * 1000))
                if request.memory_clock_mhz is not None:
                    self.journal.mark(uuid, index, memory_locked=True)
                    gpu.lock_memory_clocks(request.memory_clock_mhz, request.memory_clock_mhz)
                low, high = request.sm_clock_range_mhz or (request.sm_clock_mhz, request.sm_clock_mhz)
                if low is not None and high is not None:
                    self.journal.mark(uuid, index, sm_locked=True)
                    gpu.lock_sm_clocks(low, high)
            except (NvmlError, PermissionDenied) as failure:
                self._reset_gpu(gpu, uuid)
                raise GpuprofError(f"GPU {index}: cannot change clocks: {failure}") from None

    def reset_all(self) -> list[str]:
        """Reset every GPU in the journal; returns a line per GPU (entries that fail stay journaled)."""
        entries = self.journal.load()
        if not entries:
            return []
        done = []
        with NvmlSession(self.library) as nvml:
            for uuid, entry in entries.items():
                try:
                    gpu = nvml.gpu_by_uuid(uuid, entry.get("index"))
                except (NvmlError, PermissionDenied) as exc:
                    done.append(f"{uuid}: not found ({exc}); left journaled")
                    continue
                done.append(f"GPU {entry.get('index')} ({uuid}): {self._reset_gpu(gpu, uuid)}")
        return done

    def reset_sm(self, uuid: str) -> None:
        """Unlock the SM clock alone (between a sweep's points); the journal forgets it only once done."""
        if "sm_locked" not in self.journal.load().get(uuid, {}):
            return
        with NvmlSession(self.library) as nvml:
            try:
                nvml.gpu_by_uuid(uuid).reset_sm_clocks()
            except (NvmlError, PermissionDenied) as exc:
                raise GpuprofError(f"GPU {uuid}: SM clock not reset: {exc}") from None
        self.journal.unmark_key(uuid, "sm_locked")

    def reset(self, uuid: str) -> str | None:
        """Reset one GPU if the journal holds changes for it; what was done, or None."""
        if uuid not in self.journal.load():
            return None
        with NvmlSession(self.library) as nvml:
            return self._reset_gpu(nvml.gpu_by_uuid(uuid), uuid)

    def _reset_gpu(self, gpu: Gpu, uuid: str) -> str:
        entry = self.journal.load().get(uuid, {})
        failures, done = [], []
        steps: list[tuple[str, str, Callable[[], None]]] = [
            ("sm_locked", "SM clock unlocked", gpu.reset_sm_clocks),
            ("memory_locked", "memory clock unlocked", gpu.reset_memory_clocks),
            (
                "power_limit_mw",
                f"power limit back to {entry.get('power_limit_mw', 0) / 1000:g} W",
                lambda: gpu.set_power_limit_mw(int(entry["power_limit_mw"])),
            ),
        ]
        for key, what, call in steps:
            if key not in entry:
                continue
            try:
                call()
                done.append(what)
            except (NvmlError, PermissionDenied) as exc:
                failures.append(f"{what}: {exc}")
        if failures:
            log.error(
                "GPU %s: could not reset: %s (left in %s)", uuid, "; ".join(failures), self.journal.path
            )
            return "FAILED: " + "; ".join(failures)
        self.journal.unmark(uuid)
        log.info("GPU %s reset: %s", uuid, ", ".join(done) or "nothing was changed")
        return ", ".join(done) or "nothing was changed"
