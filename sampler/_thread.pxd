# POSIX threads, signal masks and timer slack: what the sampler needs to run and pace its own threads.

from posix.signal cimport sigset_t
from posix.types cimport clockid_t

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_attr_t:
        pass
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass

    int pthread_create(pthread_t*, const pthread_attr_t*, void* (*)(void*) noexcept nogil, void*)
    int pthread_join(pthread_t, void**)
    int pthread_getcpuclockid(pthread_t, clockid_t*)
    int pthread_setname_np(pthread_t, const char*)  # GNU; Python.h defines _GNU_SOURCE
    int pthread_mutex_init(pthread_mutex_t*, const pthread_mutexattr_t*)
    int pthread_mutex_destroy(pthread_mutex_t*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)

cdef extern from "<sched.h>" nogil:
    cdef struct sched_param:
        int sched_priority
    enum:
        SCHED_FIFO

cdef extern from "<pthread.h>" nogil:
    int pthread_setschedparam(pthread_t, int, const sched_param*)

cdef extern from "<signal.h>" nogil:
    int pthread_sigmask(int, const sigset_t*, sigset_t*)

cdef extern from "<sys/prctl.h>" nogil:
    enum:
        PR_SET_TIMERSLACK
    int prctl(int, ...)
