# cython: cdivision=True
"""Native power sampler: NVML read by pthreads that never take the GIL (_loops.pyx), into rings drained as
numpy arrays."""

import os

import numpy as np

from . import records
from .errors import DeviceNotFound, NvmlError, NvmlLibraryNotFound, UsageError

from libc.errno cimport ESRCH
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport strerror
from posix.dlfcn cimport RTLD_LOCAL, RTLD_NOW, dlclose, dlerror, dlopen, dlsym
from posix.signal cimport SIG_SETMASK, sigfillset, sigset_t
from posix.types cimport clockid_t
from posix.unistd cimport getpid

from ._atomic cimport load_i64, load_u64, store_flag
from ._loops cimport clock_ns, energy_loop, fast_loop, now_ns, read_instant_power, reasons_loop
from ._nvml cimport *
from ._records cimport *
from ._ring cimport gp_ring_t, ring_alloc, ring_free, ring_pending, ring_pop
from ._state cimport GP_ERROR_OTHER, GP_ERROR_SLOTS, gp_gpu_t, gp_nvml_t, gp_state_t
from ._thread cimport (
    pthread_create, pthread_getcpuclockid, pthread_join, pthread_setname_np, pthread_mutex_destroy,
    pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock, pthread_sigmask, SCHED_FIFO,
    pthread_setschedparam, sched_param,
)

SAMPLE_SIZE = sizeof(gp_sample_t)
ENERGY_SIZE = sizeof(gp_energy_t)
POWER_SIZE = sizeof(gp_power_t)


def _layout_errors():
    """Differences between the C record layouts and records.py's dtypes (empty when they agree)."""
    cdef gp_sample_t s
    cdef gp_energy_t e
    cdef gp_power_t w
    cdef char* sp = <char*>&s
    cdef char* ep = <char*>&e
    cdef char* wp = <char*>&w
    sample = {
        "t_ns": <char*>&s.t_ns - sp, "clock_event_reasons": <char*>&s.clock_event_reasons - sp,
        "power_mw": <char*>&s.power_mw - sp, "sm_clock_mhz": <char*>&s.sm_clock_mhz - sp,
        "mem_clock_mhz": <char*>&s.mem_clock_mhz - sp, "gpu": <char*>&s.gpu - sp,
        "missing": <char*>&s.missing - sp, "util_pct": <char*>&s.util_pct - sp,
        "temp_c": <char*>&s.temp_c - sp, "power_source": <char*>&s.power_source - sp,
        "memory_power_mw": <char*>&s.memory_power_mw - sp,
    }
    energy = {
        "t_start_ns": <char*>&e.t_start_ns - ep, "t_end_ns": <char*>&e.t_end_ns - ep,
        "energy_mj": <char*>&e.energy_mj - ep, "gpu": <char*>&e.gpu - ep,
        "nvml_return": <char*>&e.nvml_return - ep,
    }
    power = {"t_ns": <char*>&w.t_ns - wp, "power_mw": <char*>&w.power_mw - wp, "gpu": <char*>&w.gpu - wp}
    problems = []
    for name, dtype, offsets, size in (
        ("gp_sample_t", records.SAMPLE_DTYPE, sample, SAMPLE_SIZE),
        ("gp_energy_t", records.ENERGY_DTYPE, energy, ENERGY_SIZE),
        ("gp_power_t", records.DRIVER_POWER_DTYPE, power, POWER_SIZE),
    ):
        if dtype.itemsize != size:
            problems.append(f"{name} is {size} bytes, dtype {dtype.itemsize}")
        for field, offset in offsets.items():
            if dtype.fields[field][1] != offset:
                problems.append(f"{name}.{field} at {offset}, dtype at {dtype.fields[field][1]}")
    constants = {
        "MISSING_POWER": GP_MISSING_POWER, "MISSING_SM_CLOCK": GP_MISSING_SM_CLOCK,
        "MISSING_MEM_CLOCK": GP_MISSING_MEM_CLOCK, "MISSING_UTIL": GP_MISSING_UTIL,
        "MISSING_TEMP": GP_MISSING_TEMP, "MISSING_REASONS": GP_MISSING_REASONS,
        "MISSING_MEMORY_POWER": GP_MISSING_MEMORY_POWER,
        "POWER_SOURCE_INSTANT": GP_POWER_INSTANT, "POWER_SOURCE_AVERAGE": GP_POWER_AVERAGE,
        "JITTER_BINS": GP_JITTER_BINS, "FIELD_POWER_INSTANT": NVML_FI_DEV_POWER_INSTANT,
    }
    problems += [f"{k} is {v} in C, {getattr(records, k)} in records.py"
                 for k, v in constants.items() if getattr(records, k) != v]
    return problems


# The threads memcpy records straight into arrays of these dtypes: a mismatch would corrupt every sample.
_problems = _layout_errors()
if _problems:
    raise ImportError("gpuprof.sampler._native does not match records.py: " + "; ".join(_problems))


# ---- Opening NVML (Python thread, with the GIL) -----------------------------------------------------------

cdef void* resolve(void* lib, const char* name) except NULL:
    """Address of an NVML symbol; NvmlError(NVML_ERROR_FUNCTION_NOT_FOUND) when the library lacks it."""
    cdef void* address = dlsym(lib, name)
    if address == NULL:
        raise NvmlError(NVML_ERROR_FUNCTION_NOT_FOUND, name.decode())
    return address


cdef int resolve_all(gp_nvml_t* nvml, void* lib) except -1:
    nvml.init = <nvmlInit_v2_fn>resolve(lib, b"nvmlInit_v2")
    nvml.shutdown = <nvmlShutdown_fn>resolve(lib, b"nvmlShutdown")
    nvml.get_count = <nvmlDeviceGetCount_v2_fn>resolve(lib, b"nvmlDeviceGetCount_v2")
    nvml.get_handle = <nvmlDeviceGetHandleByIndex_v2_fn>resolve(lib, b"nvmlDeviceGetHandleByIndex_v2")
    nvml.get_field_values = <nvmlDeviceGetFieldValues_fn>resolve(lib, b"nvmlDeviceGetFieldValues")
    nvml.get_power_usage = <nvmlDeviceGetPowerUsage_fn>resolve(lib, b"nvmlDeviceGetPowerUsage")
    nvml.get_clock_info = <nvmlDeviceGetClockInfo_fn>resolve(lib, b"nvmlDeviceGetClockInfo")
    nvml.get_utilization = <nvmlDeviceGetUtilizationRates_fn>resolve(lib, b"nvmlDeviceGetUtilizationRates")
    nvml.get_temperature = <nvmlDeviceGetTemperature_fn>resolve(lib, b"nvmlDeviceGetTemperature")
    nvml.get_event_reasons = <nvmlDeviceGetCurrentClocksEventReasons_fn>resolve(
        lib, b"nvmlDeviceGetCurrentClocksEventReasons")
    nvml.get_total_energy = <nvmlDeviceGetTotalEnergyConsumption_fn>resolve(
        lib, b"nvmlDeviceGetTotalEnergyConsumption")
    nvml.get_samples = <nvmlDeviceGetSamples_fn>dlsym(lib, b"nvmlDeviceGetSamples")  # optional
    return 0


cdef bint driver_power_kept(const gp_nvml_t* nvml, nvmlDevice_t handle) noexcept nogil:
    """Whether the driver keeps total-power samples for the GPU: the size query of its buffer succeeds."""
    cdef unsigned int size = 0
    cdef int value_type = 0
    if nvml.get_samples == NULL:
        return False
    return nvml.get_samples(handle, NVML_TOTAL_POWER_SAMPLES, 0, &value_type, &size, NULL) == NVML_SUCCESS \
        and size > 0


cdef int open_gpu(const gp_nvml_t* nvml, gp_gpu_t* gpu, unsigned int index) except -1:
    """Handle and power source of GPU ``index``: instant power if field 186 reads, else the 1 s average."""
    cdef nvmlReturn_t code
    cdef uint32_t mw = 0, memory_mw = 0
    cdef nvmlReturn_t memory_code = NVML_ERROR_NOT_SUPPORTED
    cdef unsigned int average = 0
    code = nvml.get_handle(index, &gpu.handle)
    if code != NVML_SUCCESS:
        raise NvmlError(code, "nvmlDeviceGetHandleByIndex_v2", index)
    gpu.index = <uint16_t>index
    gpu.driver_power = driver_power_kept(nvml, gpu.handle)
    if read_instant_power(nvml, gpu.handle, &mw, &memory_mw, &memory_code) == NVML_SUCCESS:
        gpu.power_source = GP_POWER_INSTANT
        gpu.memory_power = memory_code == NVML_SUCCESS
        return 0
    code = nvml.get_power_usage(gpu.handle, &average)
    if code != NVML_SUCCESS:
        raise NvmlError(code, "nvmlDeviceGetPowerUsage", index)
    gpu.power_source = GP_POWER_AVERAGE
    return 0


cdef object drain_ring(gp_ring_t* ring, dtype):
    """Pop every pending record of ``ring`` into a new array of ``dtype`` (one memcpy, or two at the wrap)."""
    cdef uint64_t n = ring_pending(ring)
    out = np.empty(n, dtype=dtype)
    cdef uint8_t[::1] raw = out.view(np.uint8)
    # The GIL makes Python's drainers the ring's one consumer, but the allocation above may have run
    # Python code (a finalizer) that let another thread drain: recount after the last Python call.
    n = min(n, ring_pending(ring))
    if n == 0:
        return out[:0]
    ring_pop(ring, &raw[0], n)
    return out if n == <uint64_t>out.shape[0] else out[:n]


def _dlerror_text(path):
    cdef const char* text = dlerror()
    reason = text.decode(errors="replace") if text != NULL else "not loadable"
    prefix = f"{path}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


cdef class NativeSampler:
    """Samples GPUs through NVML on two native threads (fast loop, energy counter) that never take the GIL."""

    def __cinit__(self, str path, gpus, int64_t period_ns, int64_t spin_ns, int64_t energy_period_ns,
                  uint64_t sample_capacity, uint64_t energy_capacity, int64_t reasons_period_ns=0,
                  uint64_t power_capacity=0):
        cdef unsigned int count = 0
        cdef nvmlReturn_t code
        cdef int i
        # First, so that __dealloc__ (which runs even when this raises) always finds a valid mutex.
        pthread_mutex_init(&self.lifecycle, NULL)
        self.owner_pid = getpid()
        self.gpus = tuple(int(g) for g in gpus)
        distinct = len(set(self.gpus)) == len(self.gpus)
        if not self.gpus or not distinct or any(not 0 <= g < 0xFFFF for g in self.gpus):
            raise UsageError(f"GPU indices must be distinct and in [0, 65535), got {list(self.gpus)}")
        if period_ns <= 0 or spin_ns < 0 or energy_period_ns < 0 or reasons_period_ns < 0:
            raise UsageError("the period must be > 0 ns, spin, energy and reasons periods >= 0 ns")
        if sample_capacity == 0 or energy_capacity == 0:
            raise UsageError("ring capacities must be at least one record")
        self.st = <gp_state_t*>calloc(1, sizeof(gp_state_t))
        if self.st == NULL:
            raise MemoryError()
        self.st.period_ns = period_ns
        self.st.spin_ns = spin_ns
        self.st.energy_period_ns = energy_period_ns
        self.st.reasons_period_ns = reasons_period_ns
        self.st.n_gpus = len(self.gpus)
        self.st.gpus = <gp_gpu_t*>calloc(self.st.n_gpus, sizeof(gp_gpu_t))
        self.st.jitter = <uint64_t*>calloc(GP_JITTER_BINS, sizeof(uint64_t))
        if self.st.gpus == NULL or self.st.jitter == NULL:
            raise MemoryError()
        if (ring_alloc(&self.st.samples, sample_capacity, sizeof(gp_sample_t))
                or ring_alloc(&self.st.energy, energy_capacity, sizeof(gp_energy_t))
                or (power_capacity and ring_alloc(&self.st.power, power_capacity, sizeof(gp_power_t)))):
            raise MemoryError(f"no memory for rings of {sample_capacity} samples, {energy_capacity} "
                              f"readings, {power_capacity} driver power samples")

        self.lib = dlopen(os.fsencode(path), RTLD_NOW | RTLD_LOCAL)
        if self.lib == NULL:
            raise NvmlLibraryNotFound(path, _dlerror_text(path))
        resolve_all(&self.st.nvml, self.lib)
        code = self.st.nvml.init()
        if code != NVML_SUCCESS:
            raise NvmlError(code, "nvmlInit_v2")
        self.nvml_initialized = True
        code = self.st.nvml.get_count(&count)
        if code != NVML_SUCCESS:
            raise NvmlError(code, "nvmlDeviceGetCount_v2")
        for index in self.gpus:
            if index >= count:
                raise DeviceNotFound(index, count)
        for i in range(self.st.n_gpus):
            open_gpu(&self.st.nvml, &self.st.gpus[i], self.gpus[i])
            # Read by the energy thread, into a ring: without either, the driver's samples are not read.
            self.st.gpus[i].driver_power &= power_capacity > 0 and energy_period_ns > 0
            # Read once here, so that the first samples carry the reasons before their thread's first read.
            self.st.gpus[i].reasons_code = self.st.nvml.get_event_reasons(
                self.st.gpus[i].handle, <unsigned long long*>&self.st.gpus[i].reasons)

    def __dealloc__(self):
        # Never free memory a thread still uses: a sampler garbage-collected while running is stopped first.
        if self.st != NULL:
            with nogil:
                self.join_threads()
            if self.nvml_initialized:
                self.st.nvml.shutdown()
            ring_free(&self.st.samples)
            ring_free(&self.st.energy)
            ring_free(&self.st.power)
            free(self.st.gpus)
            free(self.st.jitter)
            free(self.st)
            self.st = NULL
        # Once NVML was initialised the library stays mapped: a driver may keep threads of its own in it.
        if self.lib != NULL and not self.nvml_initialized:
            dlclose(self.lib)
        pthread_mutex_destroy(&self.lifecycle)

    cdef int spawn(self) noexcept nogil:
        """Start the threads with every signal blocked (signals are for Python's main thread); errno or 0."""
        cdef sigset_t all_signals, previous
        cdef int rc
        sigfillset(&all_signals)
        pthread_sigmask(SIG_SETMASK, &all_signals, &previous)
        rc = pthread_create(&self.fast_thread, NULL, fast_loop, self.st)
        self.fast_joinable = rc == 0
        if rc == 0:
            # Named here, not by the thread itself, so the name is there as soon as start() returns.
            pthread_setname_np(self.fast_thread, b"gpuprof-fast")  # what top -H and gdb show
        if rc == 0 and self.st.energy_period_ns > 0:
            rc = pthread_create(&self.energy_thread, NULL, energy_loop, self.st)
            self.energy_joinable = rc == 0
            if rc == 0:
                pthread_setname_np(self.energy_thread, b"gpuprof-energy")
        if rc == 0 and self.st.reasons_period_ns > 0:
            rc = pthread_create(&self.reasons_thread, NULL, reasons_loop, self.st)
            self.reasons_joinable = rc == 0
            if rc == 0:
                pthread_setname_np(self.reasons_thread, b"gpuprof-reasons")
        pthread_sigmask(SIG_SETMASK, &previous, NULL)
        return rc

    cdef void join_threads(self) noexcept nogil:
        """Ask both threads to stop and wait for them (a forked child has none to wait for)."""
        if getpid() != self.owner_pid:
            self.fast_joinable = self.energy_joinable = self.reasons_joinable = False
            return
        store_flag(&self.st.stop_requested, 1)
        if self.fast_joinable:
            pthread_join(self.fast_thread, NULL)
            self.fast_joinable = False
        if self.energy_joinable:
            pthread_join(self.energy_thread, NULL)
            self.energy_joinable = False
        if self.reasons_joinable:
            pthread_join(self.reasons_thread, NULL)
            self.reasons_joinable = False

    def start(self):
        """Start sampling; a sampler runs once (UsageError when started again or closed)."""
        cdef int rc = 0
        with nogil:
            pthread_mutex_lock(&self.lifecycle)
        try:
            if self.closed:
                raise UsageError("sampler is closed")
            if self.started:
                raise UsageError("sampler already started; a sampler runs once")
            self.started = True
            with nogil:
                rc = self.spawn()
                if rc != 0:
                    self.join_threads()
            if rc != 0:
                raise OSError(rc, f"cannot start a sampler thread: {strerror(rc).decode()}")
        finally:
            pthread_mutex_unlock(&self.lifecycle)

    def set_realtime(self, int priority):
        """Run the fast thread SCHED_FIFO at ``priority`` (1-99): 0, or an errno (EPERM: no CAP_SYS_NICE)."""
        cdef sched_param param
        cdef int rc = ESRCH
        param.sched_priority = priority
        with nogil:
            pthread_mutex_lock(&self.lifecycle)
            if self.fast_joinable:
                rc = pthread_setschedparam(self.fast_thread, SCHED_FIFO, &param)
            pthread_mutex_unlock(&self.lifecycle)
        return rc

    def stop(self):
        """Stop and join the threads, without the GIL; idempotent. Undrained records stay for drain()."""
        with nogil:
            pthread_mutex_lock(&self.lifecycle)
            if self.started:
                self.join_threads()
            pthread_mutex_unlock(&self.lifecycle)

    def close(self):
        """Stop, then shut NVML down; drain() and the statistics still work afterwards."""
        self.stop()
        with nogil:
            pthread_mutex_lock(&self.lifecycle)
            if self.nvml_initialized and not self.closed:
                self.st.nvml.shutdown()
                self.nvml_initialized = False
            self.closed = True
            pthread_mutex_unlock(&self.lifecycle)

    @property
    def running(self):
        """Whether the sampling threads were started and not yet stopped."""
        return bool(self.fast_joinable)

    def drain_samples(self):
        """Samples recorded since the last drain, oldest first, as a SAMPLE_DTYPE array."""
        return drain_ring(&self.st.samples, records.SAMPLE_DTYPE)

    def drain_energy(self):
        """Energy-counter readings recorded since the last drain, oldest first, as an ENERGY_DTYPE array."""
        return drain_ring(&self.st.energy, records.ENERGY_DTYPE)

    def drain_driver_power(self):
        """The driver's total-power samples read since the last drain, oldest first per GPU, as a
        DRIVER_POWER_DTYPE array (empty when they are not read)."""
        return drain_ring(&self.st.power, records.DRIVER_POWER_DTYPE)

    def drain(self):
        """(samples, energy) recorded since the last drain."""
        return self.drain_samples(), self.drain_energy()

    def counters(self):
        """Run counters: ticks, samples, deadline misses, overflows, energy readings, elapsed_ns."""
        cdef gp_state_t* st = self.st
        cdef int64_t first = load_i64(&st.first_tick_ns)
        cdef int64_t stopped = load_i64(&st.stopped_ns)
        cdef int64_t elapsed = 0
        if first != 0:
            elapsed = (stopped if stopped != 0 else now_ns()) - first
        return {
            "ticks": load_u64(&st.ticks),
            "samples": load_u64(&st.samples_written),
            "deadline_misses": load_u64(&st.deadline_misses),
            "read_overrun_misses": load_u64(&st.read_overrun_misses),
            "overflows": load_u64(&st.samples.overflows),
            "energy_readings": load_u64(&st.energy_readings),
            "energy_reads": load_u64(&st.energy_reads),
            "energy_cpu_ns": load_i64(&st.energy_cpu_ns),
            "energy_overflows": load_u64(&st.energy.overflows),
            "power_reads": load_u64(&st.power_reads),
            "power_samples": load_u64(&st.power_samples),
            "power_overflows": load_u64(&st.power.overflows),
            "first_tick_ns": first,
            "elapsed_ns": elapsed,
        }

    def cpu_ns(self):
        """CPU time the fast-loop thread has used (sampler overhead), or None before start()."""
        cdef clockid_t clock
        cdef int64_t used = -1
        with nogil:
            # Under the lifecycle lock the thread cannot be joined (its id freed) while we read its clock.
            pthread_mutex_lock(&self.lifecycle)
            if self.fast_joinable and pthread_getcpuclockid(self.fast_thread, &clock) == 0:
                used = clock_ns(clock)
            pthread_mutex_unlock(&self.lifecycle)
        if used < 0:
            used = load_i64(&self.st.cpu_ns)
        return used if self.started else None

    def jitter_histogram(self):
        """Counts of |tick interval - period| in 1 us bins (records.JITTER_BINS; the last bin is overflow)."""
        out = np.empty(GP_JITTER_BINS, dtype=np.uint64)
        cdef uint64_t[::1] view = out
        cdef Py_ssize_t i
        for i in range(GP_JITTER_BINS):
            view[i] = load_u64(&self.st.jitter[i])
        return out

    def errors(self):
        """Failed NVML reads per GPU: {gpu: {nvml_return_code: count}} (every GPU, possibly empty)."""
        cdef int i, slot
        cdef uint64_t n
        result = {}
        for i in range(self.st.n_gpus):
            codes = {}
            for slot in range(1, GP_ERROR_SLOTS):
                n = load_u64(&self.st.gpus[i].errors[slot])
                if n:
                    codes[slot if slot != GP_ERROR_OTHER else NVML_ERROR_UNKNOWN] = n
            result[self.gpus[i]] = codes
        return result

    def driver_power(self):
        """Which GPUs' driver total-power samples are read: {gpu: bool}."""
        return {self.gpus[i]: bool(self.st.gpus[i].driver_power) for i in range(self.st.n_gpus)}

    def power_sources(self):
        """Where each GPU's power comes from: {gpu: records.POWER_SOURCE_*}."""
        return {self.gpus[i]: self.st.gpus[i].power_source for i in range(self.st.n_gpus)}
