/* gpuprof's control API of the simulated GPUs (gpuprofSim*): configure, inspect and steer them.
 *
 * These work with or without nvmlInit: each call maps the state file for its own duration unless the NVML
 * session in this process already has that file mapped.
 */
#include <stdio.h>
#include <string.h>

#include "sim_model.h"
#include "sim_state.h"

/* Tells gpuprof this is its simulation (gpuprof.sampler.library looks for this symbol) and which API it has. */
SIM_EXPORT unsigned int gpuprofSimVersion(void) { return GPUPROF_SIM_API_VERSION; }

/* The sizes of the control structs, so ctypes mirrors can check themselves. */
SIM_EXPORT nvmlReturn_t gpuprofSimStructSizes(unsigned int *config, unsigned int *gpu_config, unsigned int *status,
                                              unsigned int *control_call) {
    if (!config || !gpu_config || !status || !control_call)
        return NVML_ERROR_INVALID_ARGUMENT;
    *config = sizeof(gpuprofSimConfig_t);
    *gpu_config = sizeof(gpuprofSimGpuConfig_t);
    *status = sizeof(gpuprofSimGpuStatus_t);
    *control_call = sizeof(gpuprofSimControlCall_t);
    return NVML_SUCCESS;
}

/* The defaults: one simulated H100, every GPU slot filled with the same defaults. */
SIM_EXPORT nvmlReturn_t gpuprofSimDefaultConfig(gpuprofSimConfig_t *config) {
    if (!config)
        return NVML_ERROR_INVALID_ARGUMENT;
    sim_default_config(config);
    return NVML_SUCCESS;
}

/* The state file a call with `state_path` acts on (NULL: the NVML session's, else the environment's). */
SIM_EXPORT nvmlReturn_t gpuprofSimStatePath(const char *state_path, char *path, unsigned int size) {
    char resolved[PATH_MAX];
    if (!path)
        return NVML_ERROR_INVALID_ARGUMENT;
    sim_session_path(state_path, resolved, sizeof(resolved));
    if (strlen(resolved) + 1 > size)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(path, resolved, strlen(resolved) + 1);
    return NVML_SUCCESS;
}

/* Resets the whole state (GPUs, locks, limits, failures, log) to `config`, or to the defaults when NULL. */
SIM_EXPORT nvmlReturn_t gpuprofSimConfigure(const char *state_path, const gpuprofSimConfig_t *config) {
    static gpuprofSimConfig_t defaults; /* guarded by the session mutex that sim_access_begin holds */
    struct sim_access access;
    if (config && sim_config_problem(config))
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = sim_access_begin(state_path, &access);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!config) {
        sim_default_config(&defaults);
        config = &defaults;
    }
    sim_write_begin(access.map);
    sim_reset(access.map->shared, config, sim_monotonic_ns());
    sim_write_end(access.map);
    sim_access_end(&access);
    return NVML_SUCCESS;
}

static void fill_status(const struct sim_gpu *gpu, unsigned index, int64_t now_ns, gpuprofSimGpuStatus_t *out) {
    const struct sim_segment *segment = sim_segment_at(gpu, now_ns);
    memset(out, 0, sizeof(*out));
    out->time_ns = now_ns;
    out->index = index;
    out->failing_code = gpu->failing_code;
    snprintf(out->name, sizeof(out->name), "%s", gpu->config.name);
    snprintf(out->uuid, sizeof(out->uuid), "%s", gpu->config.uuid);
    out->utilization_pct = gpu->utilization_pct;
    out->memory_utilization_pct = gpu->memory_utilization_pct;
    out->power_w = sim_power_w(gpu, now_ns);
    out->energy_j = sim_energy_j(gpu, now_ns);
    out->temp_c = sim_temp_c(gpu, now_ns);
    out->power_limit_w = gpu->power_limit_w;
    out->default_power_limit_w = gpu->config.default_power_limit_w;
    out->clock_event_reasons = segment->reasons;
    out->sm_clock_mhz = segment->sm_mhz;
    out->mem_clock_mhz = segment->mem_mhz;
    out->locked_sm_min_mhz = gpu->locked_sm_min_mhz;
    out->locked_sm_max_mhz = gpu->locked_sm_max_mhz;
    out->locked_mem_min_mhz = gpu->locked_mem_min_mhz;
    out->locked_mem_max_mhz = gpu->locked_mem_max_mhz;
    out->applications_mem_clock_mhz = gpu->app_mem_mhz;
    out->applications_graphics_clock_mhz = gpu->app_graphics_mhz;
}

/* Every GPU as the model sees it now, one consistent snapshot; *count is the GPU count. */
SIM_EXPORT nvmlReturn_t gpuprofSimGetStatus(const char *state_path, gpuprofSimGpuStatus_t *status,
                                            unsigned int capacity, unsigned int *count) {
    struct sim_access access;
    if (!status || !count)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = sim_access_begin(state_path, &access);
    if (ret != NVML_SUCCESS)
        return ret;
    const struct sim_shared *shared = access.map->shared;
    unsigned gpus;
    uint32_t seq;
    do {
        seq = sim_read_begin(access.map);
        gpus = shared->gpu_count < GPUPROF_SIM_MAX_GPUS ? shared->gpu_count : GPUPROF_SIM_MAX_GPUS;
        int64_t now_ns = sim_now_ns(shared);
        for (unsigned i = 0; i < gpus && i < capacity; i++)
            fill_status(&shared->gpus[i], i, now_ns, &status[i]);
    } while (sim_read_retry(access.map, seq));
    sim_access_end(&access);
    *count = gpus;
    return capacity < gpus ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
}

/* Changes one GPU's state under the writers' lock; INVALID_ARGUMENT for an index past the GPU count. */
static nvmlReturn_t update_gpu(const char *state_path, unsigned gpu, double utilization_pct,
                               double memory_utilization_pct, int failing_code, int set_utilization) {
    struct sim_access access;
    nvmlReturn_t ret = sim_access_begin(state_path, &access);
    if (ret != NVML_SUCCESS)
        return ret;
    struct sim_shared *shared = access.map->shared;
    sim_write_begin(access.map);
    if (gpu >= shared->gpu_count) {
        ret = NVML_ERROR_INVALID_ARGUMENT;
    } else if (set_utilization) {
        shared->gpus[gpu].utilization_pct = utilization_pct;
        shared->gpus[gpu].memory_utilization_pct = memory_utilization_pct;
        sim_change_point(&shared->gpus[gpu], sim_now_ns(shared));
    } else {
        shared->gpus[gpu].failing_code = failing_code;
    }
    sim_write_end(access.map);
    sim_access_end(&access);
    return ret;
}

/* Sets how busy a GPU is (percent; memory < 0: same as the GPU's); power and clocks follow at once. */
SIM_EXPORT nvmlReturn_t gpuprofSimSetUtilization(const char *state_path, unsigned int gpu, double utilization_pct,
                                                 double memory_utilization_pct) {
    if (memory_utilization_pct < 0)
        memory_utilization_pct = utilization_pct;
    if (!(utilization_pct >= 0 && utilization_pct <= 100) ||
        !(memory_utilization_pct >= 0 && memory_utilization_pct <= 100))
        return NVML_ERROR_INVALID_ARGUMENT;
    return update_gpu(state_path, gpu, utilization_pct, memory_utilization_pct, 0, 1);
}

/* Makes every NVML call on GPU `gpu` return `code` (e.g. NVML_ERROR_GPU_IS_LOST); 0 heals it. */
SIM_EXPORT nvmlReturn_t gpuprofSimSetFailure(const char *state_path, unsigned int gpu, nvmlReturn_t code) {
    if (code < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    return update_gpu(state_path, gpu, 0, 0, code, 0);
}

/* Stops the model's clock at time_ns (> 0, never earlier than the model's time), or frees it with 0. */
SIM_EXPORT nvmlReturn_t gpuprofSimSetClock(const char *state_path, long long time_ns) {
    struct sim_access access;
    if (time_ns < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = sim_access_begin(state_path, &access);
    if (ret != NVML_SUCCESS)
        return ret;
    struct sim_shared *shared = access.map->shared;
    sim_write_begin(access.map);
    if (time_ns > 0 && time_ns < sim_now_ns(shared))
        ret = NVML_ERROR_INVALID_ARGUMENT; /* the counter must never run backwards */
    else
        __atomic_store_n(&shared->manual_clock_ns, time_ns, __ATOMIC_RELAXED);
    sim_write_end(access.map);
    sim_access_end(&access);
    return ret;
}

SIM_EXPORT nvmlReturn_t gpuprofSimEnergyAt(const char *state_path, unsigned int gpu, const long long *time_ns,
                                           unsigned int count, double *energy_j) {
    struct sim_access access;
    if ((!time_ns || !energy_j) && count)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = sim_access_begin(state_path, &access);
    if (ret != NVML_SUCCESS)
        return ret;
    const struct sim_shared *shared = access.map->shared;
    uint32_t seq;
    do {
        seq = sim_read_begin(access.map);
        ret = NVML_SUCCESS;
        int64_t now_ns = sim_now_ns(shared);
        if (gpu >= shared->gpu_count) {
            ret = NVML_ERROR_INVALID_ARGUMENT;
            continue;
        }
        for (unsigned i = 0; i < count; i++) {
            if (time_ns[i] > now_ns) {
                ret = NVML_ERROR_INVALID_ARGUMENT; /* the future is not known yet */
                break;
            }
            energy_j[i] = sim_energy_j(&shared->gpus[gpu], time_ns[i]);
        }
    } while (sim_read_retry(access.map, seq));
    sim_access_end(&access);
    return ret;
}

/* The most recent control calls, oldest first (up to `capacity`), and how many were ever made. */
SIM_EXPORT nvmlReturn_t gpuprofSimReadControlLog(const char *state_path, gpuprofSimControlCall_t *calls,
                                                 unsigned int capacity, unsigned int *count,
                                                 unsigned long long *total) {
    struct sim_access access;
    if ((!calls && capacity) || !count || !total)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = sim_access_begin(state_path, &access);
    if (ret != NVML_SUCCESS)
        return ret;
    const struct sim_shared *shared = access.map->shared;
    uint64_t made, first;
    unsigned n;
    uint32_t seq;
    do {
        seq = sim_read_begin(access.map);
        made = shared->log_total;
        n = (unsigned)(made < GPUPROF_SIM_LOG_ENTRIES ? made : GPUPROF_SIM_LOG_ENTRIES);
        n = n < capacity ? n : capacity;
        first = made - n;
        for (unsigned i = 0; i < n; i++)
            calls[i] = shared->log[(first + i) % GPUPROF_SIM_LOG_ENTRIES];
    } while (sim_read_retry(access.map, seq));
    sim_access_end(&access);
    *count = n;
    *total = made;
    return NVML_SUCCESS;
}
