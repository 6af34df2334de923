"""The interface every sampler backend implements, and the run statistics they report."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .records import JITTER_BINS

DEFAULT_RATE_HZ = 1000.0
# Busy-wait before each tick: on the H100 machine (a VM) a thread woken from clock_nanosleep is up to
# ~100 us late; spinning the last 50 us brought p99 |interval - period| at 1 kHz from 106 us to 36 us
# for 5% of a core (BENCHMARKS.md). 0 sleeps all the way.
DEFAULT_SPIN_US = 50
# Energy-counter reads a second between its updates; around each update they go back to back
# (docs/measurement.md).
DEFAULT_ENERGY_RATE_HZ = 50.0
MAX_RATE_HZ = 100_000.0
MIN_RATE_HZ = 0.1
DEFAULT_REASONS_RATE_HZ = 20.0
MAX_ENERGY_RATE_HZ = 1000.0
# Room for the driver's total-power samples: one per ~20 ms on an H100, with margin.
DRIVER_POWER_RATE_HZ = 100.0


@dataclass(frozen=True)
class SamplerConfig:
    """What to sample and how fast. Validated on construction."""

    gpus: tuple[int, ...] = (0,)
    rate_hz: float = DEFAULT_RATE_HZ
    energy_rate_hz: float = DEFAULT_ENERGY_RATE_HZ
    buffer_seconds: float = 60.0  # ring capacity: samples kept between two drains
    spin_us: int = DEFAULT_SPIN_US  # busy-wait this long before each deadline (lower jitter, more CPU)
    # > 0: run the fast loop SCHED_FIFO at this priority, so a busy node cannot delay its wake-ups (needs
    # CAP_SYS_NICE; without it the loop runs at normal priority and stats say so).
    realtime_priority: int = 0
    # Clock-event-reason reads a second, on their own thread (the read stalls tens of ms on an H100 about
    # every 100 ms); each sample carries the latest. 0: the fast loop reads them each tick.
    reasons_rate_hz: float = DEFAULT_REASONS_RATE_HZ

    def __post_init__(self) -> None:
        from .errors import UsageError

        if not self.gpus:
            raise UsageError("no GPU to sample: name at least one GPU index")
        if len(set(self.gpus)) != len(self.gpus):
            raise UsageError(f"GPU indices repeat: {list(self.gpus)}")
        if any(g < 0 for g in self.gpus):
            raise UsageError(f"GPU indices must be >= 0, got {list(self.gpus)}")
        if not (MIN_RATE_HZ <= self.rate_hz <= MAX_RATE_HZ):
            raise UsageError(
                f"sampling rate must be in [{MIN_RATE_HZ:g}, {MAX_RATE_HZ:g}] Hz, got {self.rate_hz:g}"
            )
        if not (self.energy_rate_hz == 0 or MIN_RATE_HZ <= self.energy_rate_hz <= MAX_ENERGY_RATE_HZ):
            raise UsageError(
                f"energy-counter rate must be 0 (off) or in [{MIN_RATE_HZ:g}, {MAX_ENERGY_RATE_HZ:g}] Hz, "
                f"got {self.energy_rate_hz:g}"
            )
        if not (self.reasons_rate_hz == 0 or MIN_RATE_HZ <= self.reasons_rate_hz <= MAX_RATE_HZ):
            raise UsageError(
                "clock-event-reasons rate must be 0 (each tick) or in "
                f"[{MIN_RATE_HZ:g}, {MAX_RATE_HZ:g}] Hz, got {self.reasons_rate_hz:g}"
            )
        if not (0 < self.buffer_seconds <= 3600):
            raise UsageError(f"buffer must hold (0, 3600] s of samples, got {self.buffer_seconds:g}")
        if not (0 <= self.spin_us <= 1000):
            raise UsageError(f"spin must be in [0, 1000] us, got {self.spin_us}")
        if not (0 <= self.realtime_priority <= 99):
            raise UsageError(f"realtime priority must be in [0, 99] (0: off), got {self.realtime_priority}")

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.rate_hz)

    @property
    def sample_capacity(self) -> int:
        """Ring slots for fast-loop samples (one per GPU per tick)."""
        return max(1024, int(self.rate_hz * self.buffer_seconds) * len(self.gpus))

    @property
    def energy_capacity(self) -> int:
        return max(256, int(max(self.energy_rate_hz, 1.0) * self.buffer_seconds) * len(self.gpus))

    @property
    def driver_power_capacity(self) -> int:
        """Ring slots for the driver's total-power samples (~50 a second per GPU on an H100); 0 when the
        energy counter is not read (the energy thread reads them)."""
        if self.energy_rate_hz == 0:
            return 0
        return max(256, int(DRIVER_POWER_RATE_HZ * self.buffer_seconds) * len(self.gpus))


@dataclass
class SamplerStats:
    """How a sampling run went: rate achieved, timing, losses and NVML errors."""

    backend: str
    rate_hz: float
    elapsed_s: float
    ticks: int
    samples: int
    deadline_misses: int
    overflows: int  # fast-loop samples dropped because the ring was full
    energy_readings: int  # kept: the reads around each counter change (and one a second)
    energy_overflows: int
    jitter_p50_us: float | None
    jitter_p99_us: float | None
    jitter_max_us: float | None
    errors: dict[int, dict[str, int]] = field(default_factory=dict)  # gpu -> NVML error name -> count
    cpu_ns: int | None = None  # CPU time the fast-loop thread used (sampler overhead)
    power_source: dict[int, str] = field(default_factory=dict)  # gpu -> "instant" | "average_1s"
    # The part of deadline_misses in ticks whose NVML reads took longer than the thread woke late (a slow
    # driver call did most of the damage); the rest came from waking late (CPU contention, scheduling).
    read_overrun_misses: int = 0
    realtime_priority: int = 0  # the fast loop's SCHED_FIFO priority in effect (0: normal scheduling)
    realtime_error: str | None = None  # why a requested realtime priority could not be set
    energy_reads: int = 0  # energy-counter reads made (most are not kept: the value had not changed)
    energy_cpu_ns: int | None = None  # CPU time the energy thread used, once it has stopped
    # The driver's total-power samples (nvmlDeviceGetSamples), read by the energy thread: per GPU whether
    # the driver keeps them, the calls made, the samples recorded and those dropped on a full ring.
    driver_power: dict[int, bool] = field(default_factory=dict)
    driver_power_reads: int = 0
    driver_power_samples: int = 0
    driver_power_overflows: int = 0

    @property
    def achieved_rate_hz(self) -> float:
        return self.ticks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "rate_hz": self.rate_hz,
            "achieved_rate_hz": self.achieved_rate_hz,
            "elapsed_s": self.elapsed_s,
            "ticks": self.ticks,
            "samples": self.samples,
            "deadline_misses": self.deadline_misses,
            "read_overrun_misses": self.read_overrun_misses,
            "realtime_priority": self.realtime_priority,
            "realtime_error": self.realtime_error,
            "overflows": self.overflows,
            "energy_readings": self.energy_readings,
            "energy_overflows": self.energy_overflows,
            "energy_reads": self.energy_reads,
            "energy_cpu_ns": self.energy_cpu_ns,
            "driver_power": {str(g): kept for g, kept in self.driver_power.items()},
            "driver_power_reads": self.driver_power_reads,
            "driver_power_samples": self.driver_power_samples,
            "driver_power_overflows": self.driver_power_overflows,
            "jitter_p50_us": self.jitter_p50_us,
            "jitter_p99_us": self.jitter_p99_us,
            "jitter_max_us": self.jitter_max_us,
            "errors": {str(g): dict(c) for g, c in self.errors.items()},
            "power_source": {str(g): s for g, s in self.power_source.items()},
            "cpu_ns": self.cpu_ns,
            "cpu_us_per_sample": self.cpu_us_per_sample,
        }

    @property
    def cpu_us_per_sample(self) -> float | None:
        """Fast-loop CPU microseconds per GPU-sample, pacing included."""
        return self.cpu_ns / 1000 / self.samples if self.cpu_ns is not None and self.samples else None


def jitter_percentiles(histogram: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """p50, p99 and max of |interval - period| in microseconds from a JITTER_BINS histogram."""
    total = int(histogram.sum())
    if total == 0:
        return None, None, None
    cumulative = np.cumsum(histogram)
    p50 = float(np.searchsorted(cumulative, 0.50 * total, side="left"))
    p99 = float(np.searchsorted(cumulative, 0.99 * total, side="left"))
    nonzero = np.flatnonzero(histogram)
    top = float(nonzero[-1]) if nonzero.size else 0.0
    if top >= JITTER_BINS - 1:
        top = float("inf")
    return p50, p99, top


# Samplers whose threads are running, so tests (and the daemon) can check that none is left behind.
_RUNNING: weakref.WeakSet[Any] = weakref.WeakSet()


def mark_running(sampler: object, running: bool) -> None:
    """Record that ``sampler`` started (True) or stopped (False) its threads."""
    if running:
        _RUNNING.add(sampler)
    else:
        _RUNNING.discard(sampler)


def running_samplers() -> list[object]:
    """Samplers started and not yet stopped."""
    return list(_RUNNING)


class Sampler(Protocol):
    """A power sampler over a set of GPUs. Both backends implement this, with identical output.

    ``start()`` begins sampling on background threads; ``drain()`` returns everything recorded since
    the last drain as ``(samples, energy)`` arrays of ``SAMPLE_DTYPE`` and ``ENERGY_DTYPE``, and
    ``drain_driver_power()`` the driver's own power samples read since its last call (``DRIVER_POWER_DTYPE``,
    empty where the driver keeps none); ``stop()``
    ends the threads (idempotent) and leaves undrained samples to a last ``drain()``; ``close()`` stops
    and releases NVML.
    """

    config: SamplerConfig
    library_path: str
    simulated: bool

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def running(self) -> bool: ...

    def drain(self) -> tuple[np.ndarray, np.ndarray]: ...

    def drain_driver_power(self) -> np.ndarray: ...

    def stats(self) -> SamplerStats: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sampler: ...

    def __exit__(self, *exc: object) -> None: ...
