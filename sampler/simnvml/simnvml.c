/* gpuprof's simulated libnvidia-ml: NVML init, inventory and the read path.
 *
 * Every getter is lock-free and makes no syscall but clock_gettime: it finds its GPU in the shared state,
 * evaluates the model at the current time inside a seqlock section, and retries if a writer intervened.
 * The control calls are in nvml_control.c, gpuprof's own gpuprofSim* API in sim_control.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sim_device.h"
#include "sim_model.h"
#include "sim_state.h"

#define DRIVER_VERSION "580.159.04"
#define NVML_VERSION "13.580.159.04"
#define CUDA_DRIVER_VERSION 13000

struct nvmlDevice_st sim_devices[GPUPROF_SIM_MAX_GPUS];

/* One lock-free read of a GPU; `seq` validates it. */
struct gpu_read {
    struct sim_map *map;
    const struct sim_gpu *gpu;
    uint32_t seq;
    int64_t now_ns;
};

/* Opens a read section on `device`'s GPU; an injected failure is read inside it too. */
static nvmlReturn_t read_begin(nvmlDevice_t device, struct gpu_read *read) {
    read->map = sim_session();
    if (!read->map)
        return NVML_ERROR_UNINITIALIZED;
    read->seq = sim_read_begin(read->map);
    unsigned index;
    nvmlReturn_t ret = sim_device_index(device, read->map->shared, &index);
    if (ret != NVML_SUCCESS)
        return ret;
    read->gpu = &read->map->shared->gpus[index];
    read->now_ns = sim_now_ns(read->map->shared);
    return read->gpu->failing_code;
}

static int read_retry(const struct gpu_read *read) { return read->map && sim_read_retry(read->map, read->seq); }

/* What a NULL output pointer earns: INVALID_ARGUMENT, or UNINITIALIZED first, as NVML checks that first. */
static nvmlReturn_t bad_pointer(void) {
    return sim_session() ? NVML_ERROR_INVALID_ARGUMENT : NVML_ERROR_UNINITIALIZED;
}

static unsigned watts_to_mw(double watts) {
    if (!(watts > 0))
        return 0;
    return watts >= 4294967.0 ? 0xFFFFFFFFu : (unsigned)lround(watts * 1000.0);
}

static unsigned long long energy_mj(double joules) {
    if (!(joules > 0))
        return 0;
    return joules >= 1.8e16 ? ~0ULL : (unsigned long long)floor(joules * 1000.0);
}

static nvmlReturn_t copy_string(char *out, unsigned int length, const char *value) {
    if (strlen(value) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

/* Field 186: the mean of the last window before the latest refresh tick. */
static unsigned instant_power_mw(const struct sim_gpu *gpu, int64_t now_ns, int64_t *tick_ns) {
    const struct sim_timing *t = &gpu->timing;
    *tick_ns = sim_sensor_tick(now_ns, t->instant_period_ns, t->phase_ns);
    return watts_to_mw(sim_mean_power_w(gpu, *tick_ns, t->instant_window_ns));
}

/* How long after a refresh tick the counter shows it: an H100 read's value was current ~9 ms before the
 * middle of the read that first shows it (benchmarks/counter_probe.py, docs/measurement.md). */
#define ENERGY_VISIBLE_DELAY_NS 9000000LL

/* The energy counter as a read that returns at now_ns sees it: the latest refresh tick visible at the
 * middle of the call (which took the GPU's energy call latency). */
static unsigned long long energy_counter_mj(const struct sim_gpu *gpu, int64_t now_ns, int64_t *tick_ns) {
    int64_t middle = now_ns - gpu->timing.energy_call_latency_ns / 2;
    *tick_ns = sim_sensor_tick(middle - ENERGY_VISIBLE_DELAY_NS, gpu->timing.energy_period_ns, gpu->timing.phase_ns);
    return energy_mj(sim_energy_j(gpu, *tick_ns));
}

/* Sleeps ns, resuming after signals. */
static void sleep_ns(int64_t ns) {
    struct timespec left = {ns / 1000000000LL, ns % 1000000000LL};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

/* The real energy read blocks the caller for ~4 ms; sleep as long, without spinning. */
static void energy_read_delay(nvmlDevice_t device) {
    struct sim_map *map = sim_session();
    unsigned index;
    if (!map || sim_device_index(device, map->shared, &index) != NVML_SUCCESS)
        return;
    int64_t ns = __atomic_load_n(&map->shared->gpus[index].timing.energy_call_latency_ns, __ATOMIC_RELAXED);
    if (ns > 0 && ns <= 1000000000LL)
        sleep_ns(ns);
}

/* The H100's periodic driver stall: the first power read of each read_stall_period on a GPU blocks
 * read_stall_us (per process, as each process has its own driver calls in flight). */
static void power_read_stall(nvmlDevice_t device) {
    static int64_t last_period[GPUPROF_SIM_MAX_GPUS];
    struct sim_map *map = sim_session();
    unsigned index;
    if (!map || sim_device_index(device, map->shared, &index) != NVML_SUCCESS)
        return;
    const struct sim_timing *t = &map->shared->gpus[index].timing;
    int64_t stall = __atomic_load_n(&t->read_stall_ns, __ATOMIC_RELAXED);
    int64_t period = __atomic_load_n(&t->read_stall_period_ns, __ATOMIC_RELAXED);
    if (stall <= 0 || stall > 1000000000LL || period <= 0)
        return;
    int64_t current = sim_now_ns(map->shared) / period;
    if (__atomic_exchange_n(&last_period[index], current, __ATOMIC_RELAXED) != current)
        sleep_ns(stall);
}

/* Initializes NVML (refcounted): maps the state file named by $GPUPROF_SIM_STATE on the first call. */
SIM_EXPORT nvmlReturn_t nvmlInit_v2(void) { return sim_session_init(); }

/* The pre-v2 name of nvmlInit_v2. */
SIM_EXPORT nvmlReturn_t nvmlInit(void) { return sim_session_init(); }

/* nvmlInit_v2 with flags (NO_GPUS, NO_ATTACH), which the simulation accepts and ignores; pynvml calls this. */
SIM_EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return sim_session_init();
}

/* Drops one init; the last one unmaps the state. */
SIM_EXPORT nvmlReturn_t nvmlShutdown(void) { return sim_session_shutdown(); }

/* NVML's description of a return code. */
SIM_EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    default: return "Unknown Error";
    }
}

/* The driver version the simulation reports (the measured H100's). */
SIM_EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (!version)
        return bad_pointer();
    return sim_session() ? copy_string(version, length, DRIVER_VERSION) : NVML_ERROR_UNINITIALIZED;
}

/* The NVML library version matching DRIVER_VERSION. */
SIM_EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    if (!version)
        return bad_pointer();
    return sim_session() ? copy_string(version, length, NVML_VERSION) : NVML_ERROR_UNINITIALIZED;
}

/* The CUDA driver API version (1000 * major + 10 * minor); NVML answers this without init. */
SIM_EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    if (!version)
        return NVML_ERROR_INVALID_ARGUMENT;
    *version = CUDA_DRIVER_VERSION;
    return NVML_SUCCESS;
}

/* Same as nvmlSystemGetCudaDriverVersion. */
SIM_EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    return nvmlSystemGetCudaDriverVersion(version);
}

/* How many GPUs the simulated node has. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    struct sim_map *map = sim_session();
    if (!map)
        return NVML_ERROR_UNINITIALIZED;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = __atomic_load_n(&map->shared->gpu_count, __ATOMIC_RELAXED);
    return NVML_SUCCESS;
}

/* The pre-v2 name of nvmlDeviceGetCount_v2. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

/* The handle of GPU `index`; a GPU with an injected failure fails here too, as a lost GPU does. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!device)
        return bad_pointer();
    if (index >= GPUPROF_SIM_MAX_GPUS)
        return sim_session() ? NVML_ERROR_INVALID_ARGUMENT : NVML_ERROR_UNINITIALIZED;
    struct gpu_read read;
    nvmlReturn_t ret;
    do
        ret = read_begin(&sim_devices[index], &read);
    while (read_retry(&read));
    if (ret == NVML_SUCCESS)
        *device = &sim_devices[index];
    return ret;
}

/* The pre-v2 name of nvmlDeviceGetHandleByIndex_v2. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

/* The index of a handle's GPU. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    if (!index)
        return bad_pointer();
    struct gpu_read read;
    nvmlReturn_t ret;
    do
        ret = read_begin(device, &read);
    while (read_retry(&read));
    if (ret == NVML_SUCCESS)
        *index = (unsigned)(read.gpu - read.map->shared->gpus);
    return ret;
}

/* Copies one of the GPU's strings (name or UUID) out of the shared state. */
static nvmlReturn_t get_gpu_string(nvmlDevice_t device, char *out, unsigned int length, int uuid) {
    char value[NVML_DEVICE_UUID_BUFFER_SIZE];
    struct gpu_read read;
    nvmlReturn_t ret;
    if (!out)
        return bad_pointer();
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS)
            snprintf(value, sizeof(value), "%s", uuid ? read.gpu->config.uuid : read.gpu->config.name);
    } while (read_retry(&read));
    return ret == NVML_SUCCESS ? copy_string(out, length, value) : ret;
}

/* The product name, "NVIDIA H100 80GB HBM3 (simulated)" by default. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    return get_gpu_string(device, name, length, 0);
}

/* The GPU's UUID, deterministic per index unless configured. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    return get_gpu_string(device, uuid, length, 1);
}

/* The handle of the GPU whose UUID is `uuid`; NOT_FOUND when no simulated GPU has it. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    if (!uuid || !device)
        return bad_pointer();
    unsigned int count;
    nvmlReturn_t ret = nvmlDeviceGetCount_v2(&count);
    if (ret != NVML_SUCCESS)
        return ret;
    for (unsigned int index = 0; index < count && index < GPUPROF_SIM_MAX_GPUS; index++) {
        char candidate[NVML_DEVICE_UUID_BUFFER_SIZE];
        if (nvmlDeviceGetUUID(&sim_devices[index], candidate, sizeof candidate) == NVML_SUCCESS &&
            strcmp(candidate, uuid) == 0)
            return nvmlDeviceGetHandleByIndex_v2(index, device);
    }
    return NVML_ERROR_NOT_FOUND;
}

/* Fills one requested field; unknown fields (and 186 where configured unsupported) get NOT_SUPPORTED. */
static void read_field(const struct sim_gpu *gpu, int64_t now_ns, long long wall_us, nvmlFieldValue_t *field) {
    int64_t tick_ns = now_ns;
    field->timestamp = wall_us;
    field->latencyUsec = 0;
    field->value.ullVal = 0;
    field->nvmlReturn = NVML_SUCCESS;
    if (field->fieldId == NVML_FI_DEV_POWER_INSTANT && gpu->config.instant_power_supported) {
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        field->value.uiVal = instant_power_mw(gpu, now_ns, &tick_ns);
    } else if (field->fieldId == NVML_FI_DEV_POWER_AVERAGE && field->scopeId == NVML_POWER_SCOPE_MEMORY) {
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        field->value.uiVal = watts_to_mw(sim_memory_power_w(gpu, now_ns));
    } else if (field->fieldId == NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION) {
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
        field->value.ullVal = energy_counter_mj(gpu, now_ns, &tick_ns);
    } else {
        field->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
    }
    field->latencyUsec = (now_ns - tick_ns) / 1000; /* how old the sensor's value is */
}

/* Reads fields 186 (instant power, mW) and 83 (energy, mJ); asking for 83 blocks like the energy call. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int count, nvmlFieldValue_t *values) {
    if (!values || count < 0)
        return bad_pointer();
    for (int i = 0; i < count; i++)
        if (values[i].fieldId == NVML_FI_DEV_POWER_INSTANT) {
            power_read_stall(device);
            break;
        }
    for (int i = 0; i < count; i++)
        if (values[i].fieldId == NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION) {
            energy_read_delay(device);
            break;
        }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    long long wall_us = (long long)wall.tv_sec * 1000000LL + wall.tv_nsec / 1000;
    struct gpu_read read;
    nvmlReturn_t ret;
    do {
        ret = read_begin(device, &read);
        for (int i = 0; ret == NVML_SUCCESS && i < count; i++)
            read_field(read.gpu, read.now_ns, wall_us, &values[i]);
    } while (read_retry(&read));
    return ret;
}

/* Power in mW averaged over the last second (NVML's behaviour on Ampere and newer), refreshed every ~80 ms. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    if (!power)
        return bad_pointer();
    power_read_stall(device);
    struct gpu_read read;
    nvmlReturn_t ret;
    unsigned mw = 0;
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS) {
            const struct sim_timing *t = &read.gpu->timing;
            int64_t tick_ns = sim_sensor_tick(read.now_ns, t->average_period_ns, t->phase_ns);
            mw = watts_to_mw(sim_mean_power_w(read.gpu, tick_ns, t->average_window_ns));
        }
    } while (read_retry(&read));
    if (ret == NVML_SUCCESS)
        *power = mw;
    return ret;
}

/* The energy counter in mJ since "driver load", refreshed every 100 ms; blocks ~3.9 ms like the real call. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    if (!energy)
        return bad_pointer();
    energy_read_delay(device);
    struct gpu_read read;
    nvmlReturn_t ret;
    unsigned long long mj = 0;
    int64_t tick_ns;
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS)
            mj = energy_counter_mj(read.gpu, read.now_ns, &tick_ns);
    } while (read_retry(&read));
    if (ret == NVML_SUCCESS)
        *energy = mj;
    return ret;
}

/* How many total-power samples the driver's buffer holds: the latest 120, ~2.4 s at one per 20 ms, as measured
 * on the H100 (docs/measurement.md, "The driver's power samples"). */
#define POWER_SAMPLES_KEPT 120

/* CLOCK_REALTIME - CLOCK_MONOTONIC in ns, taken once per process so that a sample's timestamp never changes
 * between calls (a caller passes back the last one it saw; one shifted by a microsecond would repeat or drop
 * a sample). Applied to the manual clock too. */
static int64_t realtime_offset_ns(void) {
    static int64_t offset; /* 0: not taken yet (it never is 0 in practice) */
    int64_t taken = __atomic_load_n(&offset, __ATOMIC_ACQUIRE);
    if (taken)
        return taken;
    struct timespec wall;
    int64_t before = sim_monotonic_ns();
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t after = sim_monotonic_ns();
    int64_t value = (int64_t)wall.tv_sec * 1000000000LL + wall.tv_nsec - (before + (after - before) / 2);
    if (!value)
        value = 1;
    int64_t expected = 0; /* the first thread to take it wins, so every caller sees the same offset */
    if (!__atomic_compare_exchange_n(&offset, &expected, value, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return expected;
    return value;
}

/* A sample's timestamp: its model time on CLOCK_REALTIME, in us. */
static unsigned long long sample_timestamp_us(int64_t tick_ns, int64_t offset_ns) {
    int64_t wall = tick_ns + offset_ns;
    return wall > 0 ? (unsigned long long)(wall / 1000) : 0;
}

/* How far sample k is taken off its tick, in ns: a 64-bit hash of k (splitmix64's finalizer) mapped uniformly
 * onto the whole microseconds in [-samples_jitter_ns, +samples_jitter_ns], so the same in every call and every
 * process, and a sample's timestamp is its tick's plus whole us. Kept below half the period in whole us too, so
 * the timestamps stay strictly increasing. The GPU's ripple phase (0 for GPU 0, different for each other GPU)
 * seeds the hash, so that the GPUs of a node do not wander in step, as real ones do not. */
static int64_t sample_jitter_ns(const struct sim_timing *t, int64_t k) {
    int64_t most_us = t->samples_jitter_ns / 1000;
    int64_t limit_us = (t->samples_period_ns / 1000 - 1) / 2;
    if (most_us > limit_us)
        most_us = limit_us;
    if (most_us <= 0)
        return 0;
    uint64_t h = (uint64_t)k + (uint64_t)t->ripple_phase_ns + 0x9E3779B97F4A7C15ULL;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
    h ^= h >> 31;
    return ((int64_t)(h % (uint64_t)(2 * most_us + 1)) - most_us) * 1000;
}

/* When sample k is taken (model time): its tick, phase_ns + k * samples_period_ns, plus its jitter. */
static int64_t sample_time_ns(const struct sim_timing *t, int64_t k) {
    return t->phase_ns + k * t->samples_period_ns + sample_jitter_ns(t, k);
}

/* The buffered samples newer than `last_seen`: fills `out` with the oldest `capacity` of them and returns how
 * many there are. The buffer holds the latest POWER_SAMPLES_KEPT samples taken at or before now; sample k is
 * taken at its jittered time (sample_time_ns) and is the mean power of the window ending samples_lag_ns before
 * that. */
static unsigned power_samples(const struct sim_gpu *gpu, int64_t now_ns, unsigned long long last_seen,
                              unsigned capacity, nvmlSample_t *out) {
    const struct sim_timing *t = &gpu->timing;
    int64_t offset = realtime_offset_ns();
    /* The latest tick at or before now is k - 1. As the jitter is under half the period, the next tick's sample
     * (k) may be taken already and that tick's not yet; no other is out of step with its tick. */
    int64_t k = (sim_sensor_tick(now_ns, t->samples_period_ns, t->phase_ns) - t->phase_ns) / t->samples_period_ns + 1;
    while (sample_time_ns(t, k) > now_ns)
        k--;
    int64_t oldest = k - (POWER_SAMPLES_KEPT - 1);
    unsigned first = 0;
    while (first < POWER_SAMPLES_KEPT && sample_timestamp_us(sample_time_ns(t, oldest + first), offset) <= last_seen)
        first++;
    for (unsigned i = first, n = 0; i < POWER_SAMPLES_KEPT && n < capacity; i++, n++) {
        int64_t taken = sample_time_ns(t, oldest + i);
        out[n].timeStamp = sample_timestamp_us(taken, offset);
        out[n].sampleValue.ullVal = 0;
        out[n].sampleValue.uiVal = watts_to_mw(sim_mean_power_w(gpu, taken - t->samples_lag_ns, t->samples_window_ns));
    }
    return POWER_SAMPLES_KEPT - first;
}

/* The driver's buffer of total-power samples (NVML_TOTAL_POWER_SAMPLES only), as on an H100: one per
 * power_samples_period_ms (20) tick, taken up to power_samples_jitter_ms (6) off it, each the mean power in mW of
 * the power_samples_window_ms (25) ending power_samples_lag_ms (2) before its timestamp (us, CLOCK_REALTIME); the
 * latest 120 taken are kept. samples NULL: *count = 120. Else up to *count of those newer than last_seen, oldest
 * first; NOT_FOUND when none is. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetSamples(nvmlDevice_t device, int type, unsigned long long last_seen,
                                             int *value_type, unsigned int *count, nvmlSample_t *samples) {
    if (!value_type || !count)
        return bad_pointer();
    nvmlSample_t values[POWER_SAMPLES_KEPT];
    unsigned capacity = *count < POWER_SAMPLES_KEPT ? *count : POWER_SAMPLES_KEPT;
    unsigned newer = 0;
    struct gpu_read read;
    nvmlReturn_t ret;
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS && type != NVML_TOTAL_POWER_SAMPLES)
            ret = NVML_ERROR_NOT_SUPPORTED;
        if (ret == NVML_SUCCESS && samples)
            newer = power_samples(read.gpu, read.now_ns, last_seen, capacity, values);
    } while (read_retry(&read));
    if (ret != NVML_SUCCESS)
        return ret;
    *value_type = NVML_VALUE_TYPE_UNSIGNED_INT;
    if (!samples) {
        *count = POWER_SAMPLES_KEPT;
        return NVML_SUCCESS;
    }
    unsigned n = newer < capacity ? newer : capacity;
    memcpy(samples, values, n * sizeof(nvmlSample_t));
    *count = n;
    return newer ? NVML_SUCCESS : NVML_ERROR_NOT_FOUND;
}

/* Which of the GPU's values a one-number getter returns. */
enum gpu_value {
    SM_CLOCK,
    MEM_CLOCK,
    MAX_SM_CLOCK,
    MAX_MEM_CLOCK,
    APP_SM_CLOCK,
    APP_MEM_CLOCK,
    TEMPERATURE,
    POWER_LIMIT_MW,
    DEFAULT_POWER_LIMIT_MW,
    MIN_POWER_LIMIT_MW,
    MAX_POWER_LIMIT_MW,
};

static unsigned gpu_value(const struct sim_gpu *gpu, int64_t now_ns, enum gpu_value which) {
    const gpuprofSimGpuConfig_t *config = &gpu->config;
    switch (which) {
    case SM_CLOCK: return sim_segment_at(gpu, now_ns)->sm_mhz;
    case MEM_CLOCK: return sim_segment_at(gpu, now_ns)->mem_mhz;
    case MAX_SM_CLOCK: return config->max_graphics_clock_mhz;
    case MAX_MEM_CLOCK: return config->memory_clocks_mhz[0];
    case APP_SM_CLOCK: return gpu->app_graphics_mhz;
    case APP_MEM_CLOCK: return gpu->app_mem_mhz;
    case TEMPERATURE: {
        double temp = sim_temp_c(gpu, now_ns);
        return temp > 0 ? (unsigned)lround(temp) : 0;
    }
    case POWER_LIMIT_MW: return watts_to_mw(gpu->power_limit_w);
    case DEFAULT_POWER_LIMIT_MW: return watts_to_mw(config->default_power_limit_w);
    case MIN_POWER_LIMIT_MW: return watts_to_mw(config->min_power_limit_w);
    case MAX_POWER_LIMIT_MW: return watts_to_mw(config->max_power_limit_w);
    }
    return 0;
}

/* Reads one number of `device`'s GPU. */
static nvmlReturn_t get_gpu_value(nvmlDevice_t device, enum gpu_value which, unsigned int *out) {
    if (!out)
        return bad_pointer();
    struct gpu_read read;
    nvmlReturn_t ret;
    unsigned value = 0;
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS)
            value = gpu_value(read.gpu, read.now_ns, which);
    } while (read_retry(&read));
    if (ret == NVML_SUCCESS)
        *out = value;
    return ret;
}

/* Which value a clock getter reads for a clock type; -1 for VIDEO (not modelled), -2 for an unknown type. */
static int clock_value(int type, enum gpu_value sm, enum gpu_value mem) {
    if (type == NVML_CLOCK_GRAPHICS || type == NVML_CLOCK_SM)
        return (int)sm;
    if (type == NVML_CLOCK_MEM)
        return (int)mem;
    return type == NVML_CLOCK_VIDEO ? -1 : -2;
}

static nvmlReturn_t get_clock(nvmlDevice_t device, int type, enum gpu_value sm, enum gpu_value mem,
                              unsigned int *clock) {
    int which = clock_value(type, sm, mem);
    if (which >= 0)
        return get_gpu_value(device, (enum gpu_value)which, clock);
    unsigned ignored;
    nvmlReturn_t ret = get_gpu_value(device, MAX_SM_CLOCK, &ignored); /* init and handle errors first */
    if (ret != NVML_SUCCESS)
        return ret;
    return which == -1 ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_INVALID_ARGUMENT;
}

/* The current graphics/SM or memory clock in MHz, as the GPU's DVFS set it. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    return get_clock(device, type, SM_CLOCK, MEM_CLOCK, clock);
}

/* The highest supported graphics/SM or memory clock in MHz. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    return get_clock(device, type, MAX_SM_CLOCK, MAX_MEM_CLOCK, clock);
}

/* The applications clock (the ceiling when busy and not locked) in MHz. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetApplicationsClock(nvmlDevice_t device, int type, unsigned int *clock) {
    return get_clock(device, type, APP_SM_CLOCK, APP_MEM_CLOCK, clock);
}

/* The applications clock after a reset: the top clocks. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetDefaultApplicationsClock(nvmlDevice_t device, int type, unsigned int *clock) {
    return get_clock(device, type, MAX_SM_CLOCK, MAX_MEM_CLOCK, clock);
}

/* GPU temperature in degrees C from the first-order thermal model. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    unsigned value;
    nvmlReturn_t ret = get_gpu_value(device, TEMPERATURE, &value); /* init and handle errors first */
    if (ret == NVML_SUCCESS && sensor != NVML_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS && !temp)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        *temp = value;
    return ret;
}

/* The power limit in effect, in mW. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit) {
    return get_gpu_value(device, POWER_LIMIT_MW, limit);
}

/* The power limit the GPU boots with, in mW. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device, unsigned int *limit) {
    return get_gpu_value(device, DEFAULT_POWER_LIMIT_MW, limit);
}

/* The enforced power limit in mW: the management limit, as no other limit is modelled. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    return get_gpu_value(device, POWER_LIMIT_MW, limit);
}

/* The range nvmlDeviceSetPowerManagementLimit accepts, in mW. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned int *min_limit,
                                                                      unsigned int *max_limit) {
    if (!min_limit || !max_limit)
        return bad_pointer();
    nvmlReturn_t ret = get_gpu_value(device, MIN_POWER_LIMIT_MW, min_limit);
    return ret == NVML_SUCCESS ? get_gpu_value(device, MAX_POWER_LIMIT_MW, max_limit) : ret;
}

/* Utilization in percent: GPU (kernel running) and memory, as last set with gpuprofSimSetUtilization. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    if (!utilization)
        return bad_pointer();
    struct gpu_read read;
    nvmlReturn_t ret;
    nvmlUtilization_t value = {0, 0};
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS) {
            value.gpu = (unsigned)lround(read.gpu->utilization_pct);
            value.memory = (unsigned)lround(read.gpu->memory_utilization_pct);
        }
    } while (read_retry(&read));
    if (ret == NVML_SUCCESS)
        *utilization = value;
    return ret;
}

static nvmlReturn_t get_reasons(nvmlDevice_t device, unsigned long long *reasons, int supported) {
    if (!reasons)
        return bad_pointer();
    struct gpu_read read;
    nvmlReturn_t ret;
    unsigned long long value = 0;
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS)
            value = supported ? 0x1FFULL : sim_segment_at(read.gpu, read.now_ns)->reasons;
    } while (read_retry(&read));
    if (ret == NVML_SUCCESS)
        *reasons = value;
    return ret;
}

/* Why the clocks are where they are: 0x1 GpuIdle, 0x2 ApplicationsClocksSetting, 0x4 SwPowerCap. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons) {
    return get_reasons(device, reasons, 0);
}

/* The pre-R535 name of nvmlDeviceGetCurrentClocksEventReasons. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                                   unsigned long long *reasons) {
    return get_reasons(device, reasons, 0);
}

/* The clock-event reasons this GPU can report (bits 0x1..0x100). */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t device,
                                                                  unsigned long long *reasons) {
    return get_reasons(device, reasons, 1);
}

/* The pre-R535 name of nvmlDeviceGetSupportedClocksEventReasons. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksThrottleReasons(nvmlDevice_t device,
                                                                     unsigned long long *reasons) {
    return get_reasons(device, reasons, 1);
}

/* NVML's size protocol: too small (or NULL) an array gets INSUFFICIENT_SIZE and the count needed. */
static nvmlReturn_t copy_clocks(const unsigned *clocks, unsigned n, unsigned int *count, unsigned int *out) {
    unsigned capacity = *count;
    *count = n;
    if (!out || capacity < n)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, clocks, n * sizeof(unsigned));
    return NVML_SUCCESS;
}

/* The supported memory clocks in MHz, descending (2619, 1593 by default). */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetSupportedMemoryClocks(nvmlDevice_t device, unsigned int *count,
                                                           unsigned int *clocks) {
    if (!count)
        return bad_pointer();
    unsigned values[GPUPROF_SIM_MAX_MEMORY_CLOCKS];
    unsigned n = 0;
    struct gpu_read read;
    nvmlReturn_t ret;
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS) {
            n = read.gpu->config.memory_clock_count % (GPUPROF_SIM_MAX_MEMORY_CLOCKS + 1);
            memcpy(values, read.gpu->config.memory_clocks_mhz, n * sizeof(unsigned));
        }
    } while (read_retry(&read));
    return ret == NVML_SUCCESS ? copy_clocks(values, n, count, clocks) : ret;
}

/* The graphics clocks supported with memory clock `memory_mhz`, descending; NOT_FOUND for another memory clock. */
SIM_EXPORT nvmlReturn_t nvmlDeviceGetSupportedGraphicsClocks(nvmlDevice_t device, unsigned int memory_mhz,
                                                             unsigned int *count, unsigned int *clocks) {
    if (!count)
        return bad_pointer();
    unsigned values[GPUPROF_SIM_MAX_GRAPHICS_CLOCKS];
    unsigned n = 0;
    struct gpu_read read;
    nvmlReturn_t ret;
    do {
        ret = read_begin(device, &read);
        if (ret == NVML_SUCCESS && !sim_is_memory_clock(&read.gpu->config, memory_mhz))
            ret = NVML_ERROR_NOT_FOUND;
        if (ret == NVML_SUCCESS)
            n = sim_graphics_clocks(&read.gpu->config, values, GPUPROF_SIM_MAX_GRAPHICS_CLOCKS);
    } while (read_retry(&read));
    if (n > GPUPROF_SIM_MAX_GRAPHICS_CLOCKS)
        n = GPUPROF_SIM_MAX_GRAPHICS_CLOCKS;
    return ret == NVML_SUCCESS ? copy_clocks(values, n, count, clocks) : ret;
}
