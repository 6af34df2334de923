# C mirrors of the record layouts in records.py; _native checks at import that sizes and offsets agree.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

# One GPU read by the fast loop: SAMPLE_DTYPE, 40 bytes.
cdef struct gp_sample_t:
    int64_t t_ns
    uint64_t clock_event_reasons
    uint32_t power_mw
    uint32_t sm_clock_mhz
    uint32_t mem_clock_mhz
    uint16_t gpu
    uint16_t missing
    uint8_t util_pct
    uint8_t temp_c
    uint8_t power_source
    uint8_t reserved  # explicit padding, zeroed, so the drained bytes are deterministic
    uint32_t memory_power_mw  # field 185 in the memory scope (Hopper and newer), an average

# One energy-counter reading by the slow loop: ENERGY_DTYPE, 32 bytes.
cdef struct gp_energy_t:
    int64_t t_start_ns
    int64_t t_end_ns
    uint64_t energy_mj
    uint16_t gpu
    uint16_t reserved
    int32_t nvml_return

# One sample of the driver's total-power buffer: DRIVER_POWER_DTYPE, 16 bytes.
cdef struct gp_power_t:
    int64_t t_ns  # the driver's timestamp, on CLOCK_MONOTONIC
    uint32_t power_mw
    uint16_t gpu
    uint16_t reserved

# records.MISSING_*, POWER_SOURCE_* and JITTER_BINS.
cdef enum:
    GP_MISSING_POWER = 0x01
    GP_MISSING_SM_CLOCK = 0x02
    GP_MISSING_MEM_CLOCK = 0x04
    GP_MISSING_UTIL = 0x08
    GP_MISSING_TEMP = 0x10
    GP_MISSING_REASONS = 0x20
    GP_MISSING_MEMORY_POWER = 0x40
    GP_POWER_INSTANT = 0
    GP_POWER_AVERAGE = 1
    GP_JITTER_BINS = 65536
