/* The simulated GPUs' shared state: its layout in the mapped file, and how processes map, read and write it.
 *
 * Every process that uses the simulation maps the same file, so all of them see one set of GPUs. Readers
 * never lock: they copy what they need inside a seqlock section and retry if a writer intervened. Writers
 * (control calls, gpuprofSim* calls) are serialized across threads by a mutex and across processes by
 * flock() on the file, which the kernel releases if the writer dies.
 */
#ifndef GPUPROF_SIM_STATE_H
#define GPUPROF_SIM_STATE_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "gpuprof_sim.h"

#define SIM_EXPORT __attribute__((visibility("default")))

#define SIM_MAGIC 0x324D495346505047ULL /* "GPPFSIM2" */
#define SIM_LAYOUT_VERSION 4
/* Change points kept per GPU. The 1 s power average looks back 1.08 s, so the sensors are exact unless a GPU's
 * operating point changes more often than this in that time; then the oldest are merged (sim_model.c). */
#define SIM_SEGMENTS 1024
#define SIM_BAD_GPU 0xFFFFFFFFu

/* From start_ns until the next change point, power is base_w * (1 + ripple(t)). */
struct sim_segment {
    int64_t start_ns;
    double energy_j; /* counter at start_ns */
    double base_w;   /* power without the ripple */
    double temp_c;   /* at start_ns */
    uint64_t reasons;
    uint32_t sm_mhz;
    uint32_t mem_mhz;
};

/* The config's times in ns, so the read path does no conversions. */
struct sim_timing {
    int64_t instant_period_ns;
    int64_t instant_window_ns;
    int64_t average_period_ns;
    int64_t average_window_ns;
    int64_t samples_period_ns; /* the driver's total-power sample buffer (nvmlDeviceGetSamples) */
    int64_t samples_window_ns;
    int64_t samples_lag_ns;
    int64_t samples_jitter_ns; /* a sample's time: its tick + up to this much either way, whole us */
    int64_t energy_period_ns;
    int64_t phase_ns;
    int64_t ripple_period_ns;
    int64_t ripple_phase_ns;
    int64_t energy_call_latency_ns;
    int64_t read_stall_ns;
    int64_t read_stall_period_ns;
    int64_t clock_lock_latency_ns;
};

struct sim_gpu {
    gpuprofSimGpuConfig_t config; /* validated, derived fields filled in, memory clocks descending */
    struct sim_timing timing;
    double utilization_pct;
    double memory_utilization_pct;
    double power_limit_w;
    uint32_t locked_sm_min_mhz; /* 0: unlocked; the lock last asked for (what the driver reports) */
    uint32_t locked_sm_max_mhz;
    uint32_t previous_sm_min_mhz; /* the lock in effect until sm_lock_effective_ns (0: unlocked) */
    uint32_t previous_sm_max_mhz;
    int64_t sm_lock_effective_ns; /* when the lock last asked for takes effect (clock_lock_latency_us) */
    uint32_t locked_mem_min_mhz; /* 0: unlocked */
    uint32_t locked_mem_max_mhz;
    uint32_t app_mem_mhz;
    uint32_t app_graphics_mhz;
    int32_t failing_code;
    uint32_t reserved;
    uint64_t segment_count; /* change points ever made; the latest is segments[(count - 1) % SIM_SEGMENTS] */
    struct sim_segment segments[SIM_SEGMENTS];
};

struct sim_shared {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t size;
    uint32_t seq __attribute__((aligned(64))); /* odd while a writer is inside */
    uint32_t gpu_count;
    uint32_t allow_unprivileged_control;
    uint32_t reserved;
    int64_t manual_clock_ns; /* > 0: the model's time; 0: CLOCK_MONOTONIC */
    uint64_t log_total;
    gpuprofSimControlCall_t log[GPUPROF_SIM_LOG_ENTRIES];
    struct sim_gpu gpus[GPUPROF_SIM_MAX_GPUS];
};

/* One mapping of a state file. */
struct sim_map {
    struct sim_shared *shared;
    int fd;
    dev_t dev;
    ino_t ino;
    char path[PATH_MAX];
};

/* Control access: the NVML session's mapping when it is the requested file, else one of its own. */
struct sim_access {
    struct sim_map *map;
    struct sim_map own;
};

/* The state file for `requested` (NULL: the environment's); 1 if it is the shared /tmp fallback. */
int sim_resolve_path(const char *requested, char *path, size_t size);

nvmlReturn_t sim_session_init(void);
nvmlReturn_t sim_session_shutdown(void);
struct sim_map *sim_session(void);
void sim_session_path(const char *requested, char *path, size_t size);

nvmlReturn_t sim_access_begin(const char *requested, struct sim_access *access);
void sim_access_end(struct sim_access *access);

void sim_write_begin(struct sim_map *map);
void sim_write_end(struct sim_map *map);
int64_t sim_monotonic_ns(void);
void sim_repair_stuck_writer(struct sim_map *map);

#if defined(__x86_64__) || defined(__i386__)
#define sim_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define sim_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define sim_cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

/* Starts a lock-free read; waits out a writer, repairing the state if that writer died inside. */
static inline uint32_t sim_read_begin(struct sim_map *map) {
    unsigned spins = 0;
    for (;;) {
        uint32_t seq = __atomic_load_n(&map->shared->seq, __ATOMIC_ACQUIRE);
        if (!(seq & 1u))
            return seq;
        if (++spins == (1u << 20))
            sim_repair_stuck_writer(map), spins = 0;
        sim_cpu_relax();
    }
}

/* Whether what was read since sim_read_begin may be torn and must be read again. */
static inline int sim_read_retry(const struct sim_map *map, uint32_t seq) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&map->shared->seq, __ATOMIC_RELAXED) != seq;
}

/* The model's time: the manual clock when set, else CLOCK_MONOTONIC (the same in every process). */
static inline int64_t sim_now_ns(const struct sim_shared *shared) {
    int64_t manual = __atomic_load_n(&shared->manual_clock_ns, __ATOMIC_RELAXED);
    return manual > 0 ? manual : sim_monotonic_ns();
}

#endif /* GPUPROF_SIM_STATE_H */
