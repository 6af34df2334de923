"""A pure-Python sampler on pynvml: the native sampler's twin, used as test oracle and benchmark baseline."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pynvml

from . import backend, records
from .backend import SamplerConfig, SamplerStats, jitter_percentiles
from .device import nvml_code as _code
from .device import use_library
from .errors import DeviceNotFound, NvmlError, UsageError, nvml_error_name
from .library import NvmlLibrary


class _Ring:
    """A bounded FIFO of structured records that drops (and counts) what does not fit."""

    def __init__(self, dtype: np.dtype, capacity: int) -> None:
        self.buffer = np.zeros(capacity, dtype=dtype)
        self.count = 0
        self.overflows = 0
        self.total = 0
        self.lock = threading.Lock()

    def push(self, record: tuple[Any, ...]) -> None:
        with self.lock:
            if self.count == len(self.buffer):
                self.overflows += 1
                return
            self.buffer[self.count] = record
            self.count += 1
            self.total += 1

    def drain(self) -> np.ndarray:
        with self.lock:
            out = self.buffer[: self.count].copy()
            self.count = 0
        return out


ENERGY_KEEP_NS = 1_000_000_000  # an unchanged counter is still kept this often
ENERGY_UPDATE_GUESS_NS = 100_000_000  # the counter's update period until one is observed (H100: ~100 ms)
ENERGY_UPDATE_RANGE_NS = (20_000_000, 1_000_000_000)  # what an observed period may be (one, not a missed one)
ENERGY_GUARD_NS = 15_000_000  # reads go back to back from this long before the next update is due


# The driver's total-power buffer (~2.4 s on an H100) is read right after a counter update once this long has
# passed, and in any case once the second has (the native loop's rule).
POWER_READ_NS = 250_000_000
POWER_OVERDUE_NS = 1_000_000_000
TOTAL_POWER_SAMPLES = 0  # nvmlSamplingType_t


Reading = tuple[int, int, int, int, int]  # an ENERGY_DTYPE record: t_start, t_end, mJ, gpu, NVML code


class _EnergyState:
    """One GPU's energy reads: which to keep, and when to read next (the native loop's rules)."""

    def __init__(self) -> None:
        self.last: Reading | None = None
        self.last_kept = False
        self.kept_ns = 0
        self.change_ns = 0
        self.period_ns = ENERGY_UPDATE_GUESS_NS
        self.next_read_ns = 0

    def read(
        self, reading: tuple[int, int, int, int, int], sparse_ns: int
    ) -> list[tuple[int, int, int, int, int]]:
        """The reads to keep now that ``reading`` (t_start, t_end, mJ, gpu, code) was made."""
        end, value, code = reading[1], reading[2], reading[4]
        last = self.last
        changed = last is not None and code == 0 and last[4] == 0 and value != last[2]
        # A failed read is kept (it says why a GPU's energy is unknown); a failing GPU is read each period.
        failing = code != 0 or (last is not None and last[4] != 0)
        keep = last is None or changed or failing or end - self.kept_ns >= ENERGY_KEEP_NS
        kept = []
        if keep:
            if last is not None and not self.last_kept:
                kept.append(last)  # the last read before the change: it times the update
            kept.append(reading)
            self.kept_ns = end
        if changed:
            interval = end - self.change_ns
            if self.change_ns and ENERGY_UPDATE_RANGE_NS[0] <= interval <= ENERGY_UPDATE_RANGE_NS[1]:
                self.period_ns = (3 * self.period_ns + interval) // 4
            self.change_ns = end
        self.last, self.last_kept = reading, keep
        due = self.change_ns + self.period_ns - ENERGY_GUARD_NS
        if code != 0:  # a failing GPU is tried again each period, not back to back
            self.next_read_ns = end + sparse_ns
        else:
            self.next_read_ns = end if not self.change_ns or end >= due else min(end + sparse_ns, due)
        return kept


class PynvmlSampler:
    """Samples GPUs through pynvml from Python threads; same interface and output as CythonSampler."""

    backend_name = "pynvml"

    def __init__(self, config: SamplerConfig, library: NvmlLibrary) -> None:
        self.config = config
        self.library_path = library.path
        self.simulated = library.simulated
        use_library(library.path)
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlError(_code(exc), "nvmlInit") from exc
        self._initialized = True
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        try:
            count = pynvml.nvmlDeviceGetCount()
            for gpu in config.gpus:
                if gpu >= count:
                    raise DeviceNotFound(gpu, count)
            self._handles = [self._handle(gpu) for gpu in config.gpus]
            pairs = zip(config.gpus, self._handles, strict=True)
            self._sources = [self._probe_power_source(gpu, handle) for gpu, handle in pairs]
        except pynvml.NVMLError as exc:
            self.close()
            raise NvmlError(_code(exc), "nvmlDeviceGetCount") from exc
        except Exception:
            self.close()
            raise
        self._samples = _Ring(records.SAMPLE_DTYPE, config.sample_capacity)
        self._energy = _Ring(records.ENERGY_DTYPE, config.energy_capacity)
        self._driver_power = _Ring(records.DRIVER_POWER_DTYPE, max(config.driver_power_capacity, 1))
        self._power_kept = {
            gpu: config.driver_power_capacity > 0 and self._keeps_power(handle)
            for gpu, handle in zip(config.gpus, self._handles, strict=True)
        }
        self._power_reads = 0
        self._errors: dict[int, Counter[int]] = {g: Counter() for g in config.gpus}
        self._histogram = np.zeros(records.JITTER_BINS, dtype=np.uint64)
        self._ticks = 0
        self._misses = 0
        self._energy_reads = 0
        self._read_overrun_misses = 0
        self._started_ns = 0
        self._stopped_ns = 0
        self._cpu_ns = 0
        self._realtime = 0
        self._realtime_error: str | None = None

    @staticmethod
    def _handle(gpu: int) -> Any:
        try:
            return pynvml.nvmlDeviceGetHandleByIndex(gpu)
        except pynvml.NVMLError as exc:
            raise NvmlError(_code(exc), "nvmlDeviceGetHandleByIndex", gpu) from exc

    def _probe_power_source(self, gpu: int, handle: Any) -> int:
        try:
            (value,) = pynvml.nvmlDeviceGetFieldValues(handle, [records.FIELD_POWER_INSTANT])
            if value.nvmlReturn == pynvml.NVML_SUCCESS:
                return records.POWER_SOURCE_INSTANT
        except pynvml.NVMLError:
            pass
        try:
            pynvml.nvmlDeviceGetPowerUsage(handle)
        except pynvml.NVMLError as exc:
            raise NvmlError(_code(exc), "nvmlDeviceGetPowerUsage", gpu) from exc
        return records.POWER_SOURCE_AVERAGE

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        if self._threads:
            raise UsageError("sampler already started; a sampler runs once")
        if not self._initialized:
            raise UsageError("sampler is closed")
        self._threads = [threading.Thread(target=self._fast_loop, name="gpuprof-pynvml-fast", daemon=True)]
        if self.config.energy_rate_hz > 0:
            self._threads.append(
                threading.Thread(target=self._energy_loop, name="gpuprof-pynvml-energy", daemon=True)
            )
        backend.mark_running(self, True)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        if not self._threads:
            return  # never started: nothing to stop, and a later start() still works
        self._stop.set()
        for thread in self._threads:
            thread.join()
        if self._threads and not self._stopped_ns:
            self._stopped_ns = time.monotonic_ns()
        backend.mark_running(self, False)

    def close(self) -> None:
        self.stop()
        if self._initialized:
            self._initialized = False
            pynvml.nvmlShutdown()

    def __enter__(self) -> PynvmlSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        return self._samples.drain(), self._energy.drain()

    def drain_driver_power(self) -> np.ndarray:
        return self._driver_power.drain()

    @staticmethod
    def _keeps_power(handle: Any) -> bool:
        """Whether the driver keeps total-power samples for the GPU (a read of its buffer answers)."""
        try:
            pynvml.nvmlDeviceGetSamples(handle, TOTAL_POWER_SAMPLES, 0)
        except pynvml.NVMLError as exc:
            return _code(exc) == pynvml.NVML_ERROR_NOT_FOUND
        except AttributeError:  # an nvidia-ml-py without the call
            return False
        return True

    def _read_driver_power(self, gpu: int, handle: Any, seen_us: int) -> int:
        """Push the driver's power samples newer than ``seen_us`` (moved onto CLOCK_MONOTONIC); the newest
        timestamp read."""
        offset_ns = time.time_ns() - time.monotonic_ns()
        self._power_reads += 1
        try:
            value_type, batch = pynvml.nvmlDeviceGetSamples(handle, TOTAL_POWER_SAMPLES, seen_us)
        except pynvml.NVMLError as exc:
            if _code(exc) != pynvml.NVML_ERROR_NOT_FOUND:
                self._errors[gpu][_code(exc)] += 1
            return seen_us
        for sample in batch:
            if sample.timeStamp <= seen_us:
                continue
            seen_us = int(sample.timeStamp)
            value = sample.sampleValue
            mw = value.dVal if value_type == pynvml.NVML_VALUE_TYPE_DOUBLE else value.uiVal
            self._driver_power.push((seen_us * 1000 - offset_ns, max(0, min(int(mw), 0xFFFFFFFF)), gpu))
        return seen_us

    def _read(self, index: int, gpu: int, handle: Any) -> tuple[Any, ...]:
        missing = 0
        errors = self._errors[gpu]
        t_ns = time.monotonic_ns()
        power = sm = mem = util = temp = reasons = memory_power = 0
        missing |= records.MISSING_MEMORY_POWER  # cleared below where NVML reports it
        try:
            if self._sources[index] == records.POWER_SOURCE_INSTANT:
                value, memory = pynvml.nvmlDeviceGetFieldValues(
                    handle,
                    [records.FIELD_POWER_INSTANT, (records.FIELD_POWER_AVERAGE, records.POWER_SCOPE_MEMORY)],
                )
                if memory.nvmlReturn == pynvml.NVML_SUCCESS:
                    memory_power = memory.value.uiVal
                    missing &= ~records.MISSING_MEMORY_POWER
                if value.nvmlReturn != pynvml.NVML_SUCCESS:
                    raise pynvml.NVMLError(value.nvmlReturn)
                power = value.value.uiVal
            else:
                power = pynvml.nvmlDeviceGetPowerUsage(handle)
        except pynvml.NVMLError as exc:
            missing |= records.MISSING_POWER
            errors[_code(exc)] += 1
        reads = (
            (records.MISSING_SM_CLOCK, pynvml.nvmlDeviceGetClockInfo, (handle, records.CLOCK_SM)),
            (records.MISSING_MEM_CLOCK, pynvml.nvmlDeviceGetClockInfo, (handle, records.CLOCK_MEM)),
            (records.MISSING_UTIL, pynvml.nvmlDeviceGetUtilizationRates, (handle,)),
            (records.MISSING_TEMP, pynvml.nvmlDeviceGetTemperature, (handle, records.TEMPERATURE_GPU)),
            (records.MISSING_REASONS, pynvml.nvmlDeviceGetCurrentClocksEventReasons, (handle,)),
        )
        values = []
        for bit, function, args in reads:
            try:
                values.append(function(*args))
            except pynvml.NVMLError as exc:
                missing |= bit
                errors[_code(exc)] += 1
                values.append(None)
        sm = values[0] or 0
        mem = values[1] or 0
        util = values[2].gpu if values[2] is not None else 0
        temp = values[3] or 0
        reasons = values[4] or 0
        return (
            t_ns,
            reasons,
            power,
            sm,
            mem,
            gpu,
            missing,
            min(util, 255),
            min(temp, 255),
            self._sources[index],
            memory_power,
        )

    def _fast_loop(self) -> None:
        if self.config.realtime_priority:
            try:  # pid 0: this thread only
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.config.realtime_priority))
                self._realtime = self.config.realtime_priority
            except OSError as exc:
                self._realtime_error = f"SCHED_FIFO {self.config.realtime_priority}: {exc.strerror}"
        period = self.config.period_ns
        deadline = time.monotonic_ns()
        self._started_ns = deadline
        previous = 0
        targets = list(enumerate(zip(self.config.gpus, self._handles, strict=True)))
        spin_ns = self.config.spin_us * 1000
        while not self._stop.is_set():
            now = time.monotonic_ns()
            if now < deadline - spin_ns:
                time.sleep((deadline - spin_ns - now) / 1e9)
            while (now := time.monotonic_ns()) < deadline:
                pass  # the last spin_us busy-waited, as the native sampler does
            if previous:
                deviation_us = abs(now - previous - period) // 1000
                self._histogram[min(deviation_us, records.JITTER_BINS - 1)] += 1
            previous = now
            self._ticks += 1
            for index, (gpu, handle) in targets:
                self._samples.push(self._read(index, gpu, handle))
            woke, late, now = now, now - deadline, time.monotonic_ns()
            deadline += period
            if now >= deadline:  # slots that passed while this tick ran are missed, phase kept
                skipped = (now - deadline) // period + 1
                self._misses += skipped
                if now - woke >= late:  # the reads took longer than the wake-up was late: NVML's
                    self._read_overrun_misses += skipped
                deadline += skipped * period
            self._cpu_ns = time.thread_time_ns()

    def _energy_loop(self) -> None:
        """The native energy loop's policy (_loops.pyx): each GPU read every energy period, and back to back
        from shortly before its next counter update is due until it shows; only the reads around a change
        (and one a second) are kept."""
        sparse_ns = round(1e9 / self.config.energy_rate_hz)
        state = {gpu: _EnergyState() for gpu in self.config.gpus}
        handles = dict(zip(self.config.gpus, self._handles, strict=True))
        seen_us = dict.fromkeys(self.config.gpus, 0)
        power_due = dict.fromkeys(self.config.gpus, 0)
        while not self._stop.is_set():
            gpu = min(state, key=lambda g: state[g].next_read_ns)
            wait_s = (state[gpu].next_read_ns - time.monotonic_ns()) / 1e9
            if wait_s > 0 and self._stop.wait(wait_s):
                break
            start = time.monotonic_ns()
            try:
                energy, code = pynvml.nvmlDeviceGetTotalEnergyConsumption(handles[gpu]), 0
            except pynvml.NVMLError as exc:
                energy, code = 0, _code(exc)
                self._errors[gpu][code] += 1
            self._energy_reads += 1
            end = time.monotonic_ns()
            changed = state[gpu].change_ns
            for kept in state[gpu].read((start, end, energy, gpu, code), sparse_ns):
                self._energy.push(kept)
            changed = state[gpu].change_ns != changed
            overdue = end >= power_due[gpu] + POWER_OVERDUE_NS - POWER_READ_NS
            if self._power_kept[gpu] and end >= power_due[gpu] and (changed or overdue):
                seen_us[gpu] = self._read_driver_power(gpu, handles[gpu], seen_us[gpu])
                power_due[gpu] = time.monotonic_ns() + POWER_READ_NS
        for gpu in self.config.gpus:  # the driver's samples up to the stop, so that a trace's end has them
            if self._power_kept[gpu]:
                self._read_driver_power(gpu, handles[gpu], seen_us[gpu])

    def stats(self) -> SamplerStats:
        end = self._stopped_ns or time.monotonic_ns()
        p50, p99, top = jitter_percentiles(self._histogram)
        return SamplerStats(
            backend=self.backend_name,
            rate_hz=self.config.rate_hz,
            elapsed_s=(end - self._started_ns) / 1e9 if self._started_ns else 0.0,
            ticks=self._ticks,
            samples=self._samples.total,
            deadline_misses=self._misses,
            read_overrun_misses=self._read_overrun_misses,
            realtime_priority=self._realtime,
            realtime_error=self._realtime_error,
            overflows=self._samples.overflows,
            energy_readings=self._energy.total,
            energy_overflows=self._energy.overflows,
            energy_reads=self._energy_reads,
            driver_power=dict(self._power_kept),
            driver_power_reads=self._power_reads,
            driver_power_samples=self._driver_power.total,
            driver_power_overflows=self._driver_power.overflows,
            jitter_p50_us=p50,
            jitter_p99_us=p99,
            jitter_max_us=top,
            errors={
                g: {nvml_error_name(c): n for c, n in sorted(cnt.items())} for g, cnt in self._errors.items()
            },
            power_source={
                gpu: records.POWER_SOURCE_NAMES[source]
                for gpu, source in zip(self.config.gpus, self._sources, strict=True)
            },
            cpu_ns=self._cpu_ns,
        )
