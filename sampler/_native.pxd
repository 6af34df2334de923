# The native sampler's extension type: it owns the state (_state.pxd) and the threads (_loops.pxd).

from posix.types cimport pid_t

from ._state cimport gp_state_t
from ._thread cimport pthread_mutex_t, pthread_t


cdef class NativeSampler:
    cdef gp_state_t* st
    cdef void* lib
    cdef pthread_mutex_t lifecycle  # serialises start/stop/close, which release the GIL to join
    cdef pthread_t fast_thread
    cdef pthread_t energy_thread
    cdef pthread_t reasons_thread
    cdef bint reasons_joinable
    cdef bint fast_joinable
    cdef bint energy_joinable
    cdef bint nvml_initialized
    cdef bint started
    cdef readonly bint closed
    cdef pid_t owner_pid
    cdef readonly tuple gpus

    cdef int spawn(self) noexcept nogil
    cdef void join_threads(self) noexcept nogil
