# The native sampler's threads and the NVML reads they make, without the GIL (_loops.pyx); and the clocks
# they and _native stamp records with.

from libc.stdint cimport int64_t, uint32_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.types cimport clockid_t

from ._nvml cimport nvmlDevice_t, nvmlReturn_t
from ._state cimport gp_nvml_t

cdef enum:
    NS_PER_S = 1000000000


cdef inline int64_t clock_ns(clockid_t clock) noexcept nogil:
    """A clock in nanoseconds; -1 when it cannot be read."""
    cdef timespec ts
    if clock_gettime(clock, &ts) != 0:
        return -1
    return <int64_t>ts.tv_sec * NS_PER_S + ts.tv_nsec


cdef inline int64_t now_ns() noexcept nogil:
    """CLOCK_MONOTONIC in nanoseconds (the clock of time.monotonic_ns)."""
    return clock_ns(CLOCK_MONOTONIC)


# Thread bodies for pthread_create, each given the sampler's gp_state_t: one sample per GPU each period.
cdef void* fast_loop(void* arg) noexcept nogil
# Every GPU's energy counter, timed within one read at each update, and the driver's power samples.
cdef void* energy_loop(void* arg) noexcept nogil
# Every GPU's clock-event reasons each reasons period, for the fast loop to copy into its samples.
cdef void* reasons_loop(void* arg) noexcept nogil
# Instant power (field 186) in mW and, with memory_mw, the memory's power: also how a GPU's source is chosen.
cdef nvmlReturn_t read_instant_power(const gp_nvml_t* nvml, nvmlDevice_t handle, uint32_t* mw,
                                     uint32_t* memory_mw, nvmlReturn_t* memory_code) noexcept nogil
