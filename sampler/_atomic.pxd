# Atomic loads and stores (GCC/Clang __atomic builtins) on the counters and ring indices the threads share.

from libc.stdint cimport int64_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    /* Acquire/release pair the ring indices: a record's bytes are visible before its index. */
    static inline uint64_t gp_load_acquire_u64(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void gp_store_release_u64(uint64_t *p, uint64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    /* Relaxed: statistics read while the threads write them; no ordering needed, only no torn values. */
    static inline uint64_t gp_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void gp_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline int64_t gp_load_i64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void gp_store_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    /* For a counter with one writer: no locked read-modify-write on the hot path. */
    static inline void gp_bump_u64(uint64_t *p, uint64_t n) {
        __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
    }
    /* For a counter two threads write (per-GPU error counts). */
    static inline void gp_add_u64(uint64_t *p, uint64_t n) { __atomic_fetch_add(p, n, __ATOMIC_RELAXED); }
    static inline int gp_load_flag(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void gp_store_flag(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    /* Tell the core we are spinning (frees pipeline resources for a sibling hyperthread). */
    static inline void gp_cpu_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }
    """
    uint64_t load_acquire_u64 "gp_load_acquire_u64"(const uint64_t* p) noexcept nogil
    void store_release_u64 "gp_store_release_u64"(uint64_t* p, uint64_t v) noexcept nogil
    uint64_t load_u64 "gp_load_u64"(const uint64_t* p) noexcept nogil
    void store_u64 "gp_store_u64"(uint64_t* p, uint64_t v) noexcept nogil
    int64_t load_i64 "gp_load_i64"(const int64_t* p) noexcept nogil
    void store_i64 "gp_store_i64"(int64_t* p, int64_t v) noexcept nogil
    void bump_u64 "gp_bump_u64"(uint64_t* p, uint64_t n) noexcept nogil
    void add_u64 "gp_add_u64"(uint64_t* p, uint64_t n) noexcept nogil
    int load_flag "gp_load_flag"(const int* p) noexcept nogil
    void store_flag "gp_store_flag"(int* p, int v) noexcept nogil
    void cpu_relax "gp_cpu_relax"() noexcept nogil
