"""What a Monitor keeps of its sampler's records: all its windows still need and a short history, in memory
that does not grow with the time the monitor has run.

``RecordStore`` holds the drained samples and energy-counter readings in chunks. Everything of the last
``history_s`` seconds is kept whole (so a past interval can still be measured, and a new window's start has
the readings before it). Older records are kept only while an open window needs them, and then compacted:
around each open window's start (``EDGE_S`` either side, where the fused estimate places that edge) every
sample stays; elsewhere only the samples where a GPU's power reading changed, which hold the same step of
power (``integrate_power``'s sample-and-hold) in about a hundredth of the rows at 1 kHz. The figures the
compaction would lose (sample counts, clock percentiles, clock-event reasons, memory power) are counted as
the samples arrive, per window and GPU, in a ``WindowTally``. The driver's power samples (~50 a second per
GPU) follow the same rule, but beyond the history only those around an open window's start stay: the
fused estimate uses them to place that edge, and the counter gives the energy between the edges (a past
interval whose edge lies where they are gone is split by the field's readings instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .records import (
    DRIVER_POWER_DTYPE,
    ENERGY_DTYPE,
    MISSING_MEMORY_POWER,
    MISSING_POWER,
    MISSING_SM_CLOCK,
    SAMPLE_DTYPE,
)

# Whole records kept either side of an open window's start: the fused estimate solves an edge from the
# counter updates up to three periods (~0.3 s) before it to one after, and the power readings over them.
EDGE_S = 1.0
EDGE_NS = int(EDGE_S * 1e9)
# Records a window's figures are computed from before its start: half the edge's margin, enough for the
# fused solve and the power reading that holds at the start, and less to copy for each window measured.
LOOKBACK_NS = EDGE_NS // 2
MERGE_CHUNKS = 64  # chunks of one kind beyond which the settled ones are merged into one array


class WindowTally:
    """Counts of one GPU's samples inside one window, taken as they arrive: how many, the SM clocks seen (a
    histogram), the clock-event reasons, the memory power."""

    def __init__(self, gpu: int, t_start_ns: int) -> None:
        self.gpu = gpu
        self.t_start_ns = t_start_ns
        self.t_end_ns: int | None = None  # set when the window ends; samples after it are not counted
        self.samples = 0
        self.clocks: dict[int, int] = {}  # SM clock MHz -> samples
        self.reasons = 0  # union of the clock-event reason bits
        self.memory_power_mw_sum = 0.0
        self.memory_power_samples = 0

    def add(self, samples: np.ndarray) -> None:
        """Count the samples of this GPU that fall inside the window."""
        inside = (samples["gpu"] == self.gpu) & (samples["t_ns"] >= self.t_start_ns)
        if self.t_end_ns is not None:
            inside &= samples["t_ns"] <= self.t_end_ns
        own = samples[inside]
        if own.size == 0:
            return
        self.samples += int(own.size)
        clocked = own[(own["missing"] & MISSING_SM_CLOCK) == 0]["sm_clock_mhz"]
        for mhz, count in zip(*np.unique(clocked, return_counts=True), strict=True):
            self.clocks[int(mhz)] = self.clocks.get(int(mhz), 0) + int(count)
        self.reasons |= int(np.bitwise_or.reduce(own["clock_event_reasons"]))
        memory = own[(own["missing"] & MISSING_MEMORY_POWER) == 0]["memory_power_mw"]
        self.memory_power_mw_sum += float(memory.sum(dtype=np.float64))
        self.memory_power_samples += int(memory.size)

    def clock_percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100) of the SM clocks counted, as ``np.percentile`` (linear) would give
        it over the samples themselves; None when no clock was read."""
        if not self.clocks:
            return None
        values = np.array(sorted(self.clocks), dtype=np.float64)
        cumulative = np.cumsum([self.clocks[int(v)] for v in values])
        position = q / 100 * (int(cumulative[-1]) - 1)
        below, above = int(np.floor(position)), int(np.ceil(position))
        low = values[int(np.searchsorted(cumulative, below, side="right"))]
        high = values[int(np.searchsorted(cumulative, above, side="right"))]
        return float(low + (position - below) * (high - low))

    @property
    def memory_power_w(self) -> float | None:
        """Mean memory power in W, None where the GPU reports none."""
        if not self.memory_power_samples:
            return None
        return self.memory_power_mw_sum / self.memory_power_samples / 1000.0


def tallies_of(samples: np.ndarray, gpus: Iterable[int], t_start_ns: int, t_end_ns: int) -> list[WindowTally]:
    """One WindowTally per GPU over [t_start_ns, t_end_ns] of ``samples``, counted at once."""
    out = []
    for gpu in gpus:
        tally = WindowTally(gpu, t_start_ns)
        tally.t_end_ns = t_end_ns
        tally.add(samples)
        out.append(tally)
    return out


def _join(arrays: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """The arrays end to end, copied as bytes: records.concat's field-by-field copy costs more per window."""
    if not arrays:
        return np.zeros(0, dtype)
    return np.concatenate([np.ascontiguousarray(a).view(np.uint8) for a in arrays]).view(dtype)


class _Chunks:
    """Record arrays of one dtype in arrival (time) order; each chunk is whole or already compacted."""

    def __init__(self, dtype: np.dtype, times: Callable[[np.ndarray], np.ndarray]) -> None:
        self.dtype = dtype
        self.times = times  # a record's time, ns
        self.arrays: list[np.ndarray] = []
        self.compacted: list[bool] = []

    def append(self, records: np.ndarray) -> None:
        if records.size:
            self.arrays.append(records)
            self.compacted.append(False)

    def drop_before(self, cut_ns: int) -> None:
        """Forget every record older than ``cut_ns``."""
        while self.arrays and int(self.times(self.arrays[0])[-1]) < cut_ns:
            self.arrays.pop(0)
            self.compacted.pop(0)
        if self.arrays and int(self.times(self.arrays[0])[0]) < cut_ns:
            self.arrays[0] = self.arrays[0][self.times(self.arrays[0]) >= cut_ns]

    def drop_empty(self) -> None:
        kept = [i for i, array in enumerate(self.arrays) if array.size]
        self.arrays = [self.arrays[i] for i in kept]
        self.compacted = [self.compacted[i] for i in kept]

    def merge_older_than(self, t_ns: int) -> None:
        """Join the leading chunks that end before ``t_ns`` (and so will not change again) into one, once
        there are many: a long window then costs a few arrays, not one per drain."""
        count = 0
        while count < len(self.arrays) and int(self.times(self.arrays[count])[-1]) < t_ns:
            count += 1
        if count > 1 and len(self.arrays) > MERGE_CHUNKS:
            self.arrays[:count] = [_join(self.arrays[:count], self.dtype)]
            self.compacted[:count] = [all(self.compacted[:count])]

    def all(self) -> np.ndarray:
        return _join(self.arrays, self.dtype)

    def since(self, t_ns: int) -> np.ndarray:
        """The records from ``t_ns`` on."""
        start = len(self.arrays)
        while start > 0 and int(self.times(self.arrays[start - 1])[-1]) >= t_ns:
            start -= 1
        if start == len(self.arrays):
            return np.zeros(0, self.dtype)
        first = self.arrays[start]
        return _join([first[self.times(first) >= t_ns], *self.arrays[start + 1 :]], self.dtype)

    @property
    def count(self) -> int:
        return sum(a.size for a in self.arrays)


def _sample_times(samples: np.ndarray) -> np.ndarray:
    return samples["t_ns"]


def _near_starts(t: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Which of the instants ``t`` (int64 ns) lie within EDGE_NS of one of the sorted ``starts``."""
    if starts.size == 0:
        return np.zeros(t.size, dtype=bool)
    after = np.searchsorted(starts, t).clip(0, starts.size - 1)
    before = (after - 1).clip(0, starts.size - 1)
    return np.minimum(np.abs(t - starts[after]), np.abs(t - starts[before])) <= EDGE_NS


def _near_edges(driver_power: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The driver power samples within EDGE_NS of an open window's start: the only ones its figures need
    once they are older than the history."""
    return driver_power[_near_starts(driver_power["t_ns"].astype(np.int64), starts)]


def _energy_times(energy: np.ndarray) -> np.ndarray:
    return energy["t_end_ns"]


class RecordStore:
    """A Monitor's samples, energy readings and driver power samples (module docstring): whole for the last
    ``history_ns``, compacted beyond that while an open window needs them, dropped once none does."""

    def __init__(self, history_ns: int) -> None:
        self.history_ns = history_ns
        self._samples = _Chunks(SAMPLE_DTYPE, _sample_times)
        self._energy = _Chunks(ENERGY_DTYPE, _energy_times)
        self._driver_power = _Chunks(DRIVER_POWER_DTYPE, _sample_times)
        self._last_power_mw: dict[int, int] = {}  # per GPU: the compacted records' latest power reading
        self.whole_since_ns = 0  # from this instant on every record is kept whole; before it, maybe not

    def append(self, samples: np.ndarray, energy: np.ndarray, driver_power: np.ndarray | None = None) -> None:
        self._samples.append(samples)
        self._energy.append(energy)
        if driver_power is not None:  # drained oldest first per GPU; sorted, a chunk ends with its latest
            self._driver_power.append(driver_power[np.argsort(driver_power["t_ns"], kind="stable")])

    def trim(self, now_ns: int, starts_ns: Iterable[int]) -> None:
        """Drop what no open window (starting at ``starts_ns``) and no history needs; compact what only an
        open window's interior needs."""
        starts = np.sort(np.fromiter(starts_ns, dtype=np.int64))
        history_start = now_ns - self.history_ns
        cut = min(history_start, int(starts[0]) - EDGE_NS) if starts.size else history_start
        for chunks in (self._samples, self._energy, self._driver_power):
            chunks.drop_before(cut)
        whole_since = max(
            cut, self._compact_older(self._samples, history_start, lambda chunk: self._compact(chunk, starts))
        )
        # Not counted in whole_since: where the driver's samples are gone, the fused estimate splits an edge
        # by the field's readings, which the samples still hold.
        self._compact_older(self._driver_power, history_start, lambda chunk: _near_edges(chunk, starts))
        for chunks in (self._samples, self._energy, self._driver_power):
            chunks.merge_older_than(history_start)
        self.whole_since_ns = max(self.whole_since_ns, whole_since)

    @staticmethod
    def _compact_older(
        chunks: _Chunks, history_start: int, compact: Callable[[np.ndarray], np.ndarray]
    ) -> int:
        """Compact, once, each chunk of ``chunks`` that ended before ``history_start``; returns the instant
        from which they are all whole (0 when none was compacted)."""
        whole_since = 0
        for i, chunk in enumerate(chunks.arrays):
            end = int(chunks.times(chunk)[-1])
            if end >= history_start:
                break
            if not chunks.compacted[i]:
                chunks.arrays[i] = compact(chunk)
                chunks.compacted[i] = True
            whole_since = end + 1
        chunks.drop_empty()
        return whole_since

    def _compact(self, chunk: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The rows of ``chunk`` an open window's figures still need: all within EDGE_NS of a start, else
        each GPU's changes of power reading."""
        keep = _near_starts(chunk["t_ns"].astype(np.int64), starts)
        powered = (chunk["missing"] & MISSING_POWER) == 0
        for gpu in np.unique(chunk["gpu"]):
            rows = np.flatnonzero((chunk["gpu"] == gpu) & powered)
            if rows.size == 0:
                continue
            power = chunk["power_mw"][rows].astype(np.int64)
            previous = np.concatenate([[self._last_power_mw.get(int(gpu), -1)], power[:-1]])
            keep[rows[power != previous]] = True
            self._last_power_mw[int(gpu)] = int(power[-1])
        return chunk[keep]

    def arrays(self, since_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(samples, energy readings) kept from ``since_ns`` on (default: all), oldest first."""
        if since_ns is None:
            return self._samples.all(), self._energy.all()
        return self._samples.since(since_ns), self._energy.since(since_ns)

    def driver_power(self, since_ns: int | None = None) -> np.ndarray:
        """The driver power samples kept from ``since_ns`` on (default: all), oldest first."""
        return self._driver_power.all() if since_ns is None else self._driver_power.since(since_ns)

    def energy_since(self, t_ns: int) -> np.ndarray:
        """The energy readings from ``t_ns`` on."""
        return self._energy.since(t_ns)

    @property
    def kept_samples(self) -> int:
        return self._samples.count

    @property
    def kept_energy_readings(self) -> int:
        return self._energy.count

    @property
    def kept_driver_power(self) -> int:
        return self._driver_power.count
