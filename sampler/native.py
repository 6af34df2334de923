"""The Cython sampler backend: NVML read by native threads that never take the GIL."""

from __future__ import annotations

import atexit
import os
import weakref

import numpy as np

from . import _native, records
from .backend import SamplerConfig, SamplerStats, jitter_percentiles, mark_running
from .errors import nvml_error_name
from .library import NvmlLibrary

# Started samplers, stopped at interpreter exit: a native thread must not outlive the objects it reads into.
_STARTED: weakref.WeakSet[CythonSampler] = weakref.WeakSet()


class CythonSampler:
    """Samples GPUs from a native fast loop and a native energy-counter loop; drains numpy record arrays."""

    backend_name = "cython"

    def __init__(self, config: SamplerConfig, library: NvmlLibrary) -> None:
        self.config = config
        self.library_path = library.path
        self.simulated = library.simulated
        energy_period_ns = round(1e9 / config.energy_rate_hz) if config.energy_rate_hz > 0 else 0
        self._native = _native.NativeSampler(
            library.path,
            config.gpus,
            config.period_ns,
            config.spin_us * 1000,
            energy_period_ns,
            config.sample_capacity,
            config.energy_capacity,
            round(1e9 / config.reasons_rate_hz) if config.reasons_rate_hz > 0 else 0,
            config.driver_power_capacity,
        )
        self._realtime = 0
        self._realtime_error: str | None = None

    @property
    def running(self) -> bool:
        return self._native.running

    def start(self) -> None:
        """Start both sampling threads; a sampler runs once (UsageError when started again)."""
        self._native.start()
        _STARTED.add(self)
        mark_running(self, True)
        if self.config.realtime_priority:
            rc = self._native.set_realtime(self.config.realtime_priority)
            if rc == 0:
                self._realtime = self.config.realtime_priority
            else:
                self._realtime_error = f"SCHED_FIFO {self.config.realtime_priority}: {os.strerror(rc)}"

    def stop(self) -> None:
        """Stop and join the threads (idempotent); records not yet drained stay for drain()."""
        self._native.stop()
        _STARTED.discard(self)
        mark_running(self, False)

    def close(self) -> None:
        """Stop and shut NVML down; drain() and stats() still work afterwards."""
        self.stop()
        self._native.close()

    def __enter__(self) -> CythonSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """(samples, energy) recorded since the last drain: SAMPLE_DTYPE and ENERGY_DTYPE arrays."""
        return self._native.drain()

    def drain_driver_power(self) -> np.ndarray:
        """The driver's total-power samples read since the last call: a DRIVER_POWER_DTYPE array."""
        return self._native.drain_driver_power()

    def stats(self) -> SamplerStats:
        """Counters of the run so far (or of the whole run once stopped)."""
        counters = self._native.counters()
        p50, p99, top = jitter_percentiles(self._native.jitter_histogram())
        return SamplerStats(
            backend=self.backend_name,
            rate_hz=self.config.rate_hz,
            elapsed_s=counters["elapsed_ns"] / 1e9,
            ticks=counters["ticks"],
            samples=counters["samples"],
            deadline_misses=counters["deadline_misses"],
            read_overrun_misses=counters["read_overrun_misses"],
            realtime_priority=self._realtime,
            realtime_error=self._realtime_error,
            overflows=counters["overflows"],
            energy_readings=counters["energy_readings"],
            energy_overflows=counters["energy_overflows"],
            energy_reads=counters["energy_reads"],
            energy_cpu_ns=counters["energy_cpu_ns"] or None,
            driver_power=self._native.driver_power(),
            driver_power_reads=counters["power_reads"],
            driver_power_samples=counters["power_samples"],
            driver_power_overflows=counters["power_overflows"],
            jitter_p50_us=p50,
            jitter_p99_us=p99,
            jitter_max_us=top,
            cpu_ns=self._native.cpu_ns(),
            errors={
                gpu: {nvml_error_name(code): n for code, n in sorted(codes.items())}
                for gpu, codes in self._native.errors().items()
            },
            power_source={
                gpu: records.POWER_SOURCE_NAMES[source]
                for gpu, source in self._native.power_sources().items()
            },
        )


@atexit.register
def _stop_started() -> None:
    for sampler in list(_STARTED):
        sampler.stop()
