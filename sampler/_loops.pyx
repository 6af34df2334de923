# cython: cdivision=True
"""The native sampler's threads: the fast loop, the energy counter's and the clock-event reasons', and the
NVML reads they make: plain C on the sampler's shared state (_state.pxd), never the GIL. _native starts
them."""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset
from posix.time cimport (
    CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_THREAD_CPUTIME_ID, TIMER_ABSTIME, clock_nanosleep, timespec,
)

from ._atomic cimport add_u64, bump_u64, cpu_relax, load_flag, load_u64, store_i64, store_u64
from ._nvml cimport *
from ._records cimport *
from ._ring cimport ring_push
from ._state cimport GP_ERROR_OTHER, gp_gpu_t, gp_nvml_t, gp_state_t
from ._thread cimport PR_SET_TIMERSLACK, prctl

cdef enum:
    # A sleeping thread wakes at least this often to see a stop request (matters for slow rates only).
    MAX_SLEEP_NS = 10000000


# ---- Clock and pacing -------------------------------------------------------------------------------------

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
