# The native sampler's state: NVML entry points, per-GPU state, shared counters and rings (plain C memory,
# shared by the sampler's threads in _loops and the extension type in _native).

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint64_t

from ._nvml cimport (
    nvmlDevice_t,
    nvmlDeviceGetClockInfo_fn,
    nvmlDeviceGetCount_v2_fn,
    nvmlDeviceGetCurrentClocksEventReasons_fn,
    nvmlDeviceGetFieldValues_fn,
    nvmlDeviceGetHandleByIndex_v2_fn,
    nvmlDeviceGetPowerUsage_fn,
    nvmlDeviceGetSamples_fn,
    nvmlDeviceGetTemperature_fn,
    nvmlDeviceGetTotalEnergyConsumption_fn,
    nvmlDeviceGetUtilizationRates_fn,
    nvmlInit_v2_fn,
    nvmlShutdown_fn,
)
from ._records cimport gp_energy_t
from ._ring cimport gp_ring_t

cdef enum:
    # Error counts per GPU: NVML codes 1..62 each in their own slot, any other code in the last one.
    GP_ERROR_SLOTS = 64
    GP_ERROR_OTHER = 63

# NVML entry points resolved with dlsym when the sampler opens the library.
cdef struct gp_nvml_t:
    nvmlInit_v2_fn init
    nvmlShutdown_fn shutdown
    nvmlDeviceGetCount_v2_fn get_count
    nvmlDeviceGetHandleByIndex_v2_fn get_handle
    nvmlDeviceGetFieldValues_fn get_field_values
    nvmlDeviceGetPowerUsage_fn get_power_usage
    nvmlDeviceGetClockInfo_fn get_clock_info
    nvmlDeviceGetUtilizationRates_fn get_utilization
    nvmlDeviceGetTemperature_fn get_temperature
    nvmlDeviceGetCurrentClocksEventReasons_fn get_event_reasons
    nvmlDeviceGetTotalEnergyConsumption_fn get_total_energy
    nvmlDeviceGetSamples_fn get_samples  # NULL where the library lacks it

# One sampled GPU.
cdef struct gp_gpu_t:
    nvmlDevice_t handle
    uint16_t index  # NVML device index, written into every record
    uint8_t power_source  # GP_POWER_INSTANT or GP_POWER_AVERAGE, chosen at open
    bint memory_power  # whether NVML reports the memory's power (field 185, memory scope), tried at open
    uint64_t errors[GP_ERROR_SLOTS]  # failed reads by NVML return code; both threads add (atomically)
    gp_energy_t last_energy  # the energy thread's latest read, kept only if the next one differs
    bint last_energy_kept
    bint has_last_energy
    int64_t last_energy_kept_ns
    int64_t last_change_ns  # when the counter was last seen to change (the read's end); 0: not yet
    int64_t update_period_ns  # the counter's update period as observed (a running mean)
    int64_t next_energy_read_ns
    uint64_t reasons  # the clock-event reasons as the reasons thread last read them
    uint64_t reasons_code  # that read's NVML return code (the first read is made when the GPU is opened)
    bint driver_power  # whether the driver keeps total-power samples for this GPU (asked at open)
    unsigned long long power_seen_us  # the newest driver power sample's timestamp read so far
    int64_t next_power_read_ns

# Everything the threads touch: plain C memory, so they never need the GIL or a Python object.
cdef struct gp_state_t:
    gp_nvml_t nvml
    gp_gpu_t* gpus
    int n_gpus
    int64_t period_ns
    int64_t spin_ns
    int64_t energy_period_ns
    int64_t reasons_period_ns  # 0: the fast loop reads the clock-event reasons itself, each tick
    int stop_requested  # set (release) by stop(), polled (acquire) by both threads
    gp_ring_t samples
    gp_ring_t energy
    gp_ring_t power  # the driver's total-power samples (capacity 0: not read)
    uint64_t power_reads  # calls of nvmlDeviceGetSamples
    uint64_t power_samples  # driver power samples recorded
    uint64_t ticks
    uint64_t samples_written
    uint64_t deadline_misses
    uint64_t read_overrun_misses  # the part of deadline_misses in ticks whose reads took >= a period
    uint64_t energy_readings  # kept: the reads around each change of the counter, and one a second
    uint64_t energy_reads  # made
    int64_t energy_cpu_ns  # CPU time the energy thread used, stored as it exits
    int64_t first_tick_ns  # 0 until the first tick
    int64_t stopped_ns  # 0 until the fast thread exits
    int64_t cpu_ns  # CPU time the fast thread used, stored as it exits
    uint64_t* jitter  # GP_JITTER_BINS counts of |interval - period| in microseconds
