"""The daemon's bounded in-memory history of samples and energy readings, for live viewers and job traces.

Samples of every GPU share one preallocated ring, energy readings another; when a ring is full the oldest
records are overwritten and counted as dropped. Each ring keeps a contiguous int64 time key beside the
records so queries are two ``searchsorted`` calls, never a scan.

Ordering assumption: the sampler stamps records in the order it pushes them (one fast thread for samples,
one energy thread for readings), so every appended batch is non-decreasing in time and starts no earlier
than the newest stored record. A batch that breaks this is rejected whole with :class:`HistoryOrderError`
(nothing is stored): it means a sampler bug or two samplers feeding one history, and silently reordering
would hide either.
"""

from __future__ import annotations

import math
import threading
from typing import Literal

import numpy as np

from gpuprof.sampler.backend import DEFAULT_ENERGY_RATE_HZ
from gpuprof.sampler.records import ENERGY_DTYPE, SAMPLE_DTYPE

KEPT_ENERGY_PER_S = 30.0  # the reads the sampler keeps: the two around each ~100 ms update, and margin


class HistoryOrderError(ValueError):
    """A batch that is not in time order, or older than what the history already holds."""


def sample_keys(samples: np.ndarray) -> np.ndarray:
    """The time key of samples: their timestamp."""
    return samples["t_ns"].astype(np.int64)


def energy_keys(energy: np.ndarray) -> np.ndarray:
    """The time key of energy readings: the middle of the ~4 ms call, as ``energy_window`` uses it."""
    return ((energy["t_start_ns"] + energy["t_end_ns"]) // 2).astype(np.int64)


class _TimeRing:
    """A fixed-capacity ring of records of one dtype, ordered by an int64 time key."""

    def __init__(self, dtype: np.dtype, capacity: int, kind: str) -> None:
        self.dtype = dtype
        self.capacity = capacity
        self.kind = kind
        self.records = np.zeros(capacity, dtype)
        self.keys = np.zeros(capacity, np.int64)
        self.head = 0  # physical slot of the next write
        self.count = 0
        self.dropped = 0

    @property
    def newest_key(self) -> int | None:
        return int(self.keys[(self.head - 1) % self.capacity]) if self.count else None

    @property
    def oldest_key(self) -> int | None:
        return int(self.keys[(self.head - self.count) % self.capacity]) if self.count else None

    def check(self, keys: np.ndarray) -> None:
        """Raise HistoryOrderError unless ``keys`` can be appended in order."""
        if keys.size == 0:
            return
        if keys.size > 1 and bool(np.any(keys[1:] < keys[:-1])):
            bad = int(np.flatnonzero(keys[1:] < keys[:-1])[0])
            raise HistoryOrderError(
                f"{self.kind} batch is not in time order: record {bad + 1} ({int(keys[bad + 1])} ns) "
                f"is older than record {bad} ({int(keys[bad])} ns)"
            )
        newest = self.newest_key
        if newest is not None and int(keys[0]) < newest:
            raise HistoryOrderError(
                f"{self.kind} batch starts at {int(keys[0])} ns, before the newest stored record "
                f"({newest} ns); two samplers feeding one history, or a sampler bug"
            )

    def append(self, records: np.ndarray, keys: np.ndarray) -> None:
        """Store a checked batch, overwriting (and counting) the oldest records when full."""
        n = records.size
        if n == 0:
            return
        if n >= self.capacity:
            self.dropped += self.count + n - self.capacity
            self.records[:] = records[n - self.capacity :]
            self.keys[:] = keys[n - self.capacity :]
            self.head, self.count = 0, self.capacity
            return
        self.dropped += max(0, self.count + n - self.capacity)
        first = min(n, self.capacity - self.head)
        self.records[self.head : self.head + first] = records[:first]
        self.keys[self.head : self.head + first] = keys[:first]
        self.records[: n - first] = records[first:]
        self.keys[: n - first] = keys[first:]
        self.head = (self.head + n) % self.capacity
        self.count = min(self.capacity, self.count + n)

    def _segments(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The physical (start, stop) of the older and the newer part of the stored records."""
        start = (self.head - self.count) % self.capacity
        if start + self.count <= self.capacity:
            return (start, start + self.count), (0, 0)
        return (start, self.capacity), (0, self.head)

    def locate(self, t_ns: int, side: Literal["left", "right"]) -> int:
        """Logical index (0 = oldest) where ``t_ns`` would be inserted, as ``np.searchsorted``."""
        (a0, a1), (b0, b1) = self._segments()
        i = int(np.searchsorted(self.keys[a0:a1], t_ns, side=side))
        if i < a1 - a0:
            return i
        return (a1 - a0) + int(np.searchsorted(self.keys[b0:b1], t_ns, side=side))

    def copy_range(self, lo: int, hi: int) -> np.ndarray:
        """A copy of logical records [lo, hi)."""
        out = np.empty(max(0, hi - lo), self.dtype)
        if hi <= lo:
            return out
        (a0, a1), (b0, _) = self._segments()
        older = a1 - a0
        if lo < older:
            stop = min(hi, older)
            out[: stop - lo] = self.records[a0 + lo : a0 + stop]
        if hi > older:
            start = max(lo, older)
            out[start - lo :] = self.records[b0 + start - older : b0 + hi - older]
        return out

    def between(self, t0: int, t1: int) -> np.ndarray:
        return self.copy_range(self.locate(t0, "left"), self.locate(t1, "right"))


class SampleHistory:
    """The last ``seconds`` of samples and energy readings of ``gpus`` GPUs, in two preallocated rings.

    Thread-safe: one lock guards appends and queries, and queries return copies.
    """

    def __init__(
        self,
        seconds: float = 600.0,
        rate_hz: float = 1000.0,
        gpus: int = 1,
        energy_rate_hz: float = DEFAULT_ENERGY_RATE_HZ,
    ) -> None:
        if not seconds > 0 or not rate_hz > 0 or gpus < 1 or energy_rate_hz < 0:
            raise ValueError(
                f"history needs seconds > 0, rate_hz > 0, gpus >= 1 and energy_rate_hz >= 0; got "
                f"seconds={seconds}, rate_hz={rate_hz}, gpus={gpus}, energy_rate_hz={energy_rate_hz}"
            )
        self.seconds = seconds
        self._samples = _TimeRing(SAMPLE_DTYPE, math.ceil(seconds * rate_hz) * gpus, "samples")
        # At least 1 Hz worth of slots, so a history kept with the counter off still takes stray readings.
        # Of the reads, those around each counter change are kept: ~20 a second per GPU at most.
        energy_slots = math.ceil(seconds * min(max(energy_rate_hz, 1.0), KEPT_ENERGY_PER_S)) * gpus
        self._energy = _TimeRing(ENERGY_DTYPE, energy_slots, "energy")
        self._latest: dict[int, np.void] = {}
        self._latest_energy: dict[int, tuple[int, int]] = {}  # gpu -> (t_ns, mJ) of its newest good reading
        self._lock = threading.Lock()

    def append(self, samples: np.ndarray, energy: np.ndarray) -> None:
        """Add one drained batch (all GPUs mixed). Rejects the whole batch when it is out of time order."""
        if samples.dtype != SAMPLE_DTYPE or energy.dtype != ENERGY_DTYPE:
            raise TypeError("append takes a SAMPLE_DTYPE and an ENERGY_DTYPE array")
        s_keys, e_keys = sample_keys(samples), energy_keys(energy)
        with self._lock:
            self._samples.check(s_keys)
            self._energy.check(e_keys)
            self._samples.append(samples, s_keys)
            self._energy.append(energy, e_keys)
            if samples.size:
                reversed_gpus = samples["gpu"][::-1]
                gpus, from_end = np.unique(reversed_gpus, return_index=True)
                for gpu, back in zip(gpus.tolist(), from_end.tolist(), strict=True):
                    self._latest[int(gpu)] = samples[samples.size - 1 - back].copy()
            good = energy[energy["nvml_return"] == 0]
            for reading in (
                good[::-1][np.unique(good["gpu"][::-1], return_index=True)[1]] if good.size else ()
            ):
                key = (int(reading["t_start_ns"]) + int(reading["t_end_ns"])) // 2  # as energy_keys
                self._latest_energy[int(reading["gpu"])] = (key, int(reading["energy_mj"]))

    def between(self, t0_ns: int, t1_ns: int, gpu: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(samples, energy) with time in [t0_ns, t1_ns], both ends included; of one GPU or all.

        An energy reading's time is the middle of its call, as in ``energy_window``.
        """
        with self._lock:
            samples = self._samples.between(t0_ns, t1_ns)
            energy = self._energy.between(t0_ns, t1_ns)
        if gpu is not None:
            samples = samples[samples["gpu"] == gpu]
            energy = energy[energy["gpu"] == gpu]
        return samples, energy

    def since(self, t_ns: int, gpu: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(samples, energy) at or after ``t_ns``; a poller passes its last seen time + 1."""
        return self.between(t_ns, np.iinfo(np.int64).max, gpu)

    def latest(self, gpu: int) -> np.void | None:
        """The newest sample of ``gpu`` still in the history, or None."""
        with self._lock:
            record = self._latest.get(gpu)
            oldest = self._samples.oldest_key
        if record is None or oldest is None or int(record["t_ns"]) < oldest:
            return None
        return record

    def latest_energy_mj(self, gpu: int) -> int | None:
        """The newest successful energy-counter reading of ``gpu`` still in the history (mJ), or None."""
        with self._lock:
            found = self._latest_energy.get(gpu)
            oldest = self._energy.oldest_key
        return None if found is None or oldest is None or found[0] < oldest else found[1]

    @property
    def oldest_t_ns(self) -> int | None:
        """Time of the oldest stored sample (None when empty): nothing older can be cut from here."""
        with self._lock:
            return self._samples.oldest_key

    @property
    def newest_t_ns(self) -> int | None:
        with self._lock:
            return self._samples.newest_key

    @property
    def dropped_samples(self) -> int:
        """Samples overwritten (or never stored) because the history was full."""
        return self._samples.dropped

    @property
    def dropped_energy(self) -> int:
        return self._energy.dropped

    @property
    def sample_capacity(self) -> int:
        return self._samples.capacity

    @property
    def energy_capacity(self) -> int:
        return self._energy.capacity

    @property
    def nbytes(self) -> int:
        """Memory the rings hold (48 bytes per sample slot): 600 s at 1 kHz of 8 GPUs is ~230 MB."""
        rings = (self._samples, self._energy)
        return sum(ring.records.nbytes + ring.keys.nbytes for ring in rings)

    def __len__(self) -> int:
        """Samples stored."""
        return self._samples.count
