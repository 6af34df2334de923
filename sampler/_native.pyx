# cython: cdivision=True
"""Native power sampler: NVML read by pthreads that never take the GIL, into rings drained as numpy arrays."""

import os

import numpy as np

from . import records
from .errors import DeviceNotFound, NvmlError, NvmlLibraryNotFound, UsageError

from libc.errno cimport ESRCH
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset, strerror
from posix.dlfcn cimport RTLD_LOCAL, RTLD_NOW, dlclose, dlerror, dlopen, dlsym
from posix.signal cimport SIG_SETMASK, sigfillset, sigset_t
from posix.time cimport (
    CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_THREAD_CPUTIME_ID, TIMER_ABSTIME, clock_gettime, clock_nanosleep,
    timespec,
)
from posix.types cimport clockid_t
from posix.unistd cimport getpid

from ._atomic cimport (
    add_u64, bump_u64, cpu_relax, load_flag, load_i64, load_u64, store_flag, store_i64, store_u64,
)
from ._nvml cimport *
from ._records cimport *
from ._ring cimport gp_ring_t, ring_alloc, ring_free, ring_pending, ring_pop, ring_push
from ._thread cimport (
    PR_SET_TIMERSLACK, prctl, pthread_create, pthread_getcpuclockid, pthread_join, pthread_setname_np,
    pthread_mutex_destroy, pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock, pthread_sigmask,
    SCHED_FIFO, pthread_setschedparam, sched_param,
)

cdef enum:
    NS_PER_S = 1000000000
    # A sleeping thread wakes at least this often to see a stop request (matters for slow rates only).
    MAX_SLEEP_NS = 10000000

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


# ---- Clock and pacing -------------------------------------------------------------------------------------

cdef inline int64_t clock_ns(clockid_t clock) noexcept nogil:
    """A clock in nanoseconds; -1 when it cannot be read."""
    cdef timespec ts
    if clock_gettime(clock, &ts) != 0:
        return -1
    return <int64_t>ts.tv_sec * NS_PER_S + ts.tv_nsec


cdef inline int64_t now_ns() noexcept nogil:
    """CLOCK_MONOTONIC in nanoseconds (the clock of time.monotonic_ns)."""
    return clock_ns(CLOCK_MONOTONIC)


cdef int64_t wait_until(int* stop, int64_t deadline, int64_t spin_ns) noexcept nogil:
    """Sleep until ``deadline - spin_ns``, spin to ``deadline``; the wake time, or -1 on a stop request."""
    cdef int64_t wake_at = deadline - spin_ns
    cdef int64_t now, until
    cdef timespec ts
    while True:
        if load_flag(stop):
            return -1
        now = now_ns()
        if now >= wake_at:
            break
        until = wake_at if wake_at - now <= MAX_SLEEP_NS else now + MAX_SLEEP_NS
        ts.tv_sec = until // NS_PER_S
        ts.tv_nsec = until % NS_PER_S
        # Absolute deadline: a late wake-up does not shift the phase. EINTR just goes round the loop.
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)
    if spin_ns > 0:
        now = now_ns()
        while now < deadline:
            cpu_relax()
            now = now_ns()
    return now


cdef inline int64_t next_free_slot(int64_t deadline, int64_t period, int64_t now,
                                   uint64_t* missed) noexcept nogil:
    """The first slot ``deadline + k * period`` still ahead of ``now``; slots skipped added to ``missed``."""
    cdef int64_t skipped
    if now <= deadline:
        return deadline
    skipped = (now - deadline) // period + 1
    if missed != NULL:
        bump_u64(missed, <uint64_t>skipped)
    return deadline + skipped * period


# ---- NVML reads (sampler threads) -------------------------------------------------------------------------

cdef inline int error_slot(nvmlReturn_t code) noexcept nogil:
    return code if 0 < code < GP_ERROR_OTHER else GP_ERROR_OTHER


cdef inline uint16_t failed(gp_gpu_t* gpu, nvmlReturn_t code, uint16_t missing_bit) noexcept nogil:
    """Count a failed read for its GPU and return the sample's missing bit for it."""
    add_u64(&gpu.errors[error_slot(code)], 1)
    return missing_bit


cdef inline uint32_t clamp_u32(unsigned long long value) noexcept nogil:
    return <uint32_t>value if value <= 0xFFFFFFFFULL else 0xFFFFFFFFU


cdef uint32_t value_mw(int value_type, const nvmlValue_t* value) noexcept nogil:
    """A power value in mW, whatever type NVML gave it."""
    if value_type == NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
        return clamp_u32(value.ullVal)
    if value_type == NVML_VALUE_TYPE_UNSIGNED_LONG:
        return clamp_u32(value.ulVal)
    if value_type == NVML_VALUE_TYPE_SIGNED_LONG_LONG:
        return clamp_u32(<unsigned long long>value.sllVal if value.sllVal > 0 else 0)
    if value_type == NVML_VALUE_TYPE_DOUBLE:
        return clamp_u32(<unsigned long long>value.dVal if value.dVal > 0 else 0)
    return value.uiVal


cdef inline uint32_t field_mw(const nvmlFieldValue_t* field) noexcept nogil:
    """A power field's value in mW, whatever type NVML gave it."""
    return value_mw(field.valueType, &field.value)


cdef nvmlReturn_t read_instant_power(const gp_nvml_t* nvml, nvmlDevice_t handle, uint32_t* mw,
                                     uint32_t* memory_mw, nvmlReturn_t* memory_code) noexcept nogil:
    """Instant power (field 186) in mW, and with ``memory_mw`` the memory's power (field 185 in the memory
    scope) in the same call; the call's or else field 186's own NVML return code."""
    cdef nvmlFieldValue_t fields[2]
    cdef nvmlReturn_t code
    memset(fields, 0, sizeof(fields))
    fields[0].fieldId = NVML_FI_DEV_POWER_INSTANT
    fields[1].fieldId = NVML_FI_DEV_POWER_AVERAGE
    fields[1].scopeId = NVML_POWER_SCOPE_MEMORY
    code = nvml.get_field_values(handle, 2 if memory_mw != NULL else 1, fields)
    if memory_code != NULL:
        memory_code[0] = code if code != NVML_SUCCESS else fields[1].nvmlReturn
    if code != NVML_SUCCESS:
        return code
    if memory_mw != NULL and fields[1].nvmlReturn == NVML_SUCCESS:
        memory_mw[0] = field_mw(&fields[1])
    if fields[0].nvmlReturn != NVML_SUCCESS:
        return fields[0].nvmlReturn
    mw[0] = field_mw(&fields[0])
    return NVML_SUCCESS


cdef void read_gpu(const gp_nvml_t* nvml, gp_gpu_t* gpu, gp_sample_t* s, bint own_reasons) noexcept nogil:
    """One fast-loop sample of ``gpu``: a failed read leaves its value 0 and sets its missing bit."""
    cdef nvmlReturn_t code
    cdef unsigned int value = 0
    cdef unsigned long long reasons = 0
    cdef nvmlUtilization_t util
    memset(s, 0, sizeof(gp_sample_t))
    s.gpu = gpu.index
    s.power_source = gpu.power_source
    s.t_ns = now_ns()
    cdef nvmlReturn_t memory_code = NVML_ERROR_NOT_SUPPORTED
    if gpu.power_source == GP_POWER_INSTANT:
        code = read_instant_power(nvml, gpu.handle, &s.power_mw,
                                  &s.memory_power_mw if gpu.memory_power else NULL, &memory_code)
    else:
        code = nvml.get_power_usage(gpu.handle, &value)
        s.power_mw = value
    if code != NVML_SUCCESS:
        s.power_mw = 0
        s.missing |= failed(gpu, code, GP_MISSING_POWER)
    if not gpu.memory_power or memory_code != NVML_SUCCESS:
        s.memory_power_mw = 0
        s.missing |= GP_MISSING_MEMORY_POWER  # counted with the power read's errors, or not reported
    code = nvml.get_clock_info(gpu.handle, NVML_CLOCK_SM, &value)
    if code == NVML_SUCCESS:
        s.sm_clock_mhz = value
    else:
        s.missing |= failed(gpu, code, GP_MISSING_SM_CLOCK)
    code = nvml.get_clock_info(gpu.handle, NVML_CLOCK_MEM, &value)
    if code == NVML_SUCCESS:
        s.mem_clock_mhz = value
    else:
        s.missing |= failed(gpu, code, GP_MISSING_MEM_CLOCK)
    code = nvml.get_utilization(gpu.handle, &util)
    if code == NVML_SUCCESS:
        s.util_pct = <uint8_t>(util.gpu if util.gpu < 255 else 255)
    else:
        s.missing |= failed(gpu, code, GP_MISSING_UTIL)
    code = nvml.get_temperature(gpu.handle, NVML_TEMPERATURE_GPU, &value)
    if code == NVML_SUCCESS:
        s.temp_c = <uint8_t>(value if value < 255 else 255)
    else:
        s.missing |= failed(gpu, code, GP_MISSING_TEMP)
    if own_reasons:  # read each tick, here (it stalls ~24 ms about every 100 ms on an H100)
        code = nvml.get_event_reasons(gpu.handle, &reasons)
        if code == NVML_SUCCESS:
            s.clock_event_reasons = reasons
        else:
            s.missing |= failed(gpu, code, GP_MISSING_REASONS)
    elif load_u64(&gpu.reasons_code) == NVML_SUCCESS and not (s.missing & GP_MISSING_SM_CLOCK):
        s.clock_event_reasons = load_u64(&gpu.reasons)  # the reasons thread's latest read
    else:
        s.missing |= GP_MISSING_REASONS  # not read yet, failing, or the GPU fails its reads now


cdef void* fast_loop(void* arg) noexcept nogil:
    """Thread body: each period, one sample per GPU into the sample ring; keeps phase, counts missed slots."""
    cdef gp_state_t* st = <gp_state_t*>arg
    cdef int64_t period = st.period_ns
    cdef int64_t deadline = now_ns()
    cdef int64_t wake
    cdef int64_t previous = 0
    cdef int64_t deviation
    cdef int64_t end
    cdef int64_t late
    cdef uint64_t missed
    cdef gp_sample_t sample
    cdef int i
    # Default slack lets the kernel defer our wake-up by 50 us; at 10 kHz that is half a period.
    prctl(PR_SET_TIMERSLACK, <unsigned long>1, <unsigned long>0, <unsigned long>0, <unsigned long>0)
    while True:
        wake = wait_until(&st.stop_requested, deadline, st.spin_ns)
        if wake < 0:
            break
        if previous == 0:
            store_i64(&st.first_tick_ns, wake)
        else:
            deviation = wake - previous - period
            deviation = (-deviation if deviation < 0 else deviation) // 1000
            bump_u64(&st.jitter[deviation if deviation < GP_JITTER_BINS else GP_JITTER_BINS - 1], 1)
        previous = wake
        for i in range(st.n_gpus):
            read_gpu(&st.nvml, &st.gpus[i], &sample, st.reasons_period_ns == 0)
            if ring_push(&st.samples, &sample):
                bump_u64(&st.samples_written, 1)
        bump_u64(&st.ticks, 1)
        # A slot already past when this tick ends is missed: skip it (counted) rather than run late.
        # The misses go to NVML when the reads took longer than the wake-up was late, else to the wake-up.
        end = now_ns()
        missed = 0
        late = wake - deadline
        deadline = next_free_slot(deadline + period, period, end, &missed)
        if missed:
            bump_u64(&st.deadline_misses, missed)
            if end - wake >= late:
                bump_u64(&st.read_overrun_misses, missed)
    store_i64(&st.stopped_ns, now_ns())
    store_i64(&st.cpu_ns, clock_ns(CLOCK_THREAD_CPUTIME_ID))
    return NULL


cdef enum:
    # An unchanged counter is still kept this often, so that a trace shows the reads went on.
    ENERGY_KEEP_NS = 1000000000
    # The counter's update period until one is observed (H100: ~100 ms), and the range a measured one may
    # take; reads go back to back from this long before the next update is due until it is seen.
    ENERGY_UPDATE_GUESS_NS = 100000000
    ENERGY_UPDATE_MIN_NS = 20000000
    ENERGY_UPDATE_MAX_NS = 1000000000
    ENERGY_GUARD_NS = 15000000
    # The driver's total-power buffer holds ~2.4 s on an H100 (120 samples, one per ~20 ms): it is read
    # right after a counter update (the quiet part of the energy thread's cycle) once this long has passed
    # (so a window's end has them within ~0.35 s), and in any case once POWER_OVERDUE_NS has, so that no
    # sample ages out of it unread.
    POWER_READ_NS = 250000000
    POWER_OVERDUE_NS = 1000000000
    POWER_BATCH = 256  # samples asked for per call: more than the buffer holds


cdef inline void keep_power(gp_state_t* st, const gp_power_t* sample) noexcept nogil:
    if ring_push(&st.power, sample):
        bump_u64(&st.power_samples, 1)


cdef void read_power(gp_state_t* st, gp_gpu_t* gpu) noexcept nogil:
    """The driver's total-power samples newer than the last one read, each moved from the driver's
    real-time microseconds onto CLOCK_MONOTONIC (the clocks' offset read around the call)."""
    cdef nvmlSample_t batch[POWER_BATCH]
    cdef unsigned int count = POWER_BATCH
    cdef int value_type = NVML_VALUE_TYPE_UNSIGNED_INT
    cdef gp_power_t sample
    cdef int64_t real0, mono, real1, offset
    cdef nvmlReturn_t code
    cdef unsigned int i
    real0 = clock_ns(CLOCK_REALTIME)
    mono = now_ns()
    real1 = clock_ns(CLOCK_REALTIME)
    offset = real0 + (real1 - real0) // 2 - mono
    code = st.nvml.get_samples(gpu.handle, NVML_TOTAL_POWER_SAMPLES, gpu.power_seen_us, &value_type,
                               &count, batch)
    bump_u64(&st.power_reads, 1)
    gpu.next_power_read_ns = now_ns() + POWER_READ_NS
    if code == NVML_ERROR_NOT_FOUND:  # nothing newer
        return
    if code != NVML_SUCCESS:
        add_u64(&gpu.errors[error_slot(code)], 1)
        return
    memset(&sample, 0, sizeof(sample))
    sample.gpu = gpu.index
    for i in range(count if count <= POWER_BATCH else POWER_BATCH):
        if batch[i].timeStamp <= gpu.power_seen_us:
            continue
        gpu.power_seen_us = batch[i].timeStamp
        sample.t_ns = <int64_t>batch[i].timeStamp * 1000 - offset
        sample.power_mw = value_mw(value_type, &batch[i].sampleValue)
        keep_power(st, &sample)


cdef inline void keep_energy(gp_state_t* st, gp_energy_t* reading) noexcept nogil:
    if ring_push(&st.energy, reading):
        bump_u64(&st.energy_readings, 1)


cdef void read_energy(gp_state_t* st, gp_gpu_t* gpu) noexcept nogil:
    """One read of ``gpu``'s counter: kept if it failed, changed or a second has passed (with the read just
    before a change, which times it); and when to read next: in energy_period_ns, or at once while the next
    update is due (its period observed, less ENERGY_GUARD_NS, until it comes)."""
    cdef gp_energy_t reading
    cdef unsigned long long mj = 0
    cdef bint keep, changed
    cdef int64_t interval, due
    memset(&reading, 0, sizeof(reading))
    reading.gpu = gpu.index
    reading.t_start_ns = now_ns()
    reading.nvml_return = st.nvml.get_total_energy(gpu.handle, &mj)
    reading.t_end_ns = now_ns()
    bump_u64(&st.energy_reads, 1)
    if reading.nvml_return == NVML_SUCCESS:
        reading.energy_mj = mj
    else:
        add_u64(&gpu.errors[error_slot(reading.nvml_return)], 1)
    changed = (gpu.has_last_energy and reading.nvml_return == NVML_SUCCESS
               and gpu.last_energy.nvml_return == NVML_SUCCESS
               and reading.energy_mj != gpu.last_energy.energy_mj)
    # A failed read is kept (it says why a GPU's energy is unknown); a failing GPU is read each period only.
    keep = (not gpu.has_last_energy or changed or reading.nvml_return != NVML_SUCCESS
            or gpu.last_energy.nvml_return != NVML_SUCCESS
            or reading.t_end_ns - gpu.last_energy_kept_ns >= ENERGY_KEEP_NS)
    if keep:
        if gpu.has_last_energy and not gpu.last_energy_kept:
            keep_energy(st, &gpu.last_energy)  # the last read before the change
        keep_energy(st, &reading)
        gpu.last_energy_kept_ns = reading.t_end_ns
    if changed:
        if gpu.last_change_ns != 0:
            interval = reading.t_end_ns - gpu.last_change_ns
            if ENERGY_UPDATE_MIN_NS <= interval <= ENERGY_UPDATE_MAX_NS:  # one period, not a missed one
                gpu.update_period_ns = (3 * gpu.update_period_ns + interval) // 4
        gpu.last_change_ns = reading.t_end_ns
    gpu.last_energy = reading
    gpu.last_energy_kept = keep
    gpu.has_last_energy = True
    if gpu.driver_power and reading.t_end_ns >= gpu.next_power_read_ns and (
            changed or reading.t_end_ns >= gpu.next_power_read_ns + POWER_OVERDUE_NS - POWER_READ_NS):
        read_power(st, gpu)
    due = gpu.last_change_ns + gpu.update_period_ns - ENERGY_GUARD_NS
    if reading.nvml_return != NVML_SUCCESS:  # a failing GPU is tried again each period, not back to back
        gpu.next_energy_read_ns = reading.t_end_ns + st.energy_period_ns
    elif gpu.last_change_ns == 0 or reading.t_end_ns >= due:
        gpu.next_energy_read_ns = reading.t_end_ns  # the update is due: back to back until it shows
    else:
        gpu.next_energy_read_ns = min(reading.t_end_ns + st.energy_period_ns, due)


cdef void* energy_loop(void* arg) noexcept nogil:
    """Thread body: every GPU's energy counter, off the fast loop (each read is a ~3 ms call that spins on
    an H100). Between updates a GPU is read every energy period; from shortly before its next update is due
    until it shows, back to back, so that each update is timed within one read at a fraction of the CPU.
    Right after an update, at most every POWER_READ_NS, it reads the driver's total-power samples too."""
    cdef gp_state_t* st = <gp_state_t*>arg
    cdef int i, next_gpu
    cdef int64_t soonest
    for i in range(st.n_gpus):
        st.gpus[i].update_period_ns = ENERGY_UPDATE_GUESS_NS
        st.gpus[i].next_energy_read_ns = 0
    while True:
        next_gpu = 0
        soonest = st.gpus[0].next_energy_read_ns
        for i in range(1, st.n_gpus):
            if st.gpus[i].next_energy_read_ns < soonest:
                soonest = st.gpus[i].next_energy_read_ns
                next_gpu = i
        if wait_until(&st.stop_requested, soonest, 0) < 0:
            break
        read_energy(st, &st.gpus[next_gpu])
    for i in range(st.n_gpus):  # the driver's samples up to the stop, so that a trace's end has them too
        if st.gpus[i].driver_power:
            read_power(st, &st.gpus[i])
    store_i64(&st.energy_cpu_ns, clock_ns(CLOCK_THREAD_CPUTIME_ID))
    return NULL


cdef void* reasons_loop(void* arg) noexcept nogil:
    """Thread body: every GPU's clock-event reasons each reasons period, for the fast loop to copy into its
    samples: the read stalls for tens of ms about every 100 ms on an H100, which would cost the 1 kHz loop
    its slots."""
    cdef gp_state_t* st = <gp_state_t*>arg
    cdef int64_t period = st.reasons_period_ns
    cdef int64_t deadline = now_ns()
    cdef unsigned long long reasons
    cdef nvmlReturn_t code
    cdef gp_gpu_t* gpu
    cdef int i
    while wait_until(&st.stop_requested, deadline, 0) >= 0:
        for i in range(st.n_gpus):
            gpu = &st.gpus[i]
            reasons = 0
            code = st.nvml.get_event_reasons(gpu.handle, &reasons)
            if code == NVML_SUCCESS:
                store_u64(&gpu.reasons, reasons)
            else:
                add_u64(&gpu.errors[error_slot(code)], 1)
            store_u64(&gpu.reasons_code, <uint64_t>code)
        deadline = next_free_slot(deadline + period, period, now_ns(), NULL)
    return NULL


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
