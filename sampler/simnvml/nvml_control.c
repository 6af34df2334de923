/* NVML control calls on the simulated GPU: clock locks, applications clocks and the power limit.
 *
 * Like the driver's, they need root (or the config's allow_unprivileged_control). Every call, allowed or
 * not, is appended to the state's control log; a change takes effect at once as a new change point, but a
 * graphics clock lock or its reset, which takes effect clock_lock_latency_us later (sim_model.c).
 */
#include <string.h>
#include <unistd.h>

#include "sim_device.h"
#include "sim_model.h"
#include "sim_state.h"

/* Validates a call's arguments and applies them to the GPU's control state. */
typedef nvmlReturn_t (*control_fn)(struct sim_gpu *gpu, unsigned a, unsigned b, int64_t now_ns);

static void log_call(struct sim_shared *shared, const char *call, unsigned gpu, unsigned arg_count, unsigned a,
                     unsigned b, nvmlReturn_t result) {
    gpuprofSimControlCall_t *entry = &shared->log[shared->log_total % GPUPROF_SIM_LOG_ENTRIES];
    memset(entry, 0, sizeof(*entry));
    entry->seq = shared->log_total;
    entry->time_ns = sim_now_ns(shared);
    entry->pid = (int)getpid();
    entry->uid = (unsigned)geteuid();
    entry->gpu = gpu;
    entry->result = result;
    entry->arg_count = arg_count;
    entry->args[0] = a;
    entry->args[1] = b;
    strncpy(entry->call, call, sizeof(entry->call) - 1);
    shared->log_total++;
}

static nvmlReturn_t control(nvmlDevice_t device, const char *call, unsigned arg_count, unsigned a, unsigned b,
                            control_fn apply) {
    struct sim_map *map = sim_session();
    if (!map)
        return NVML_ERROR_UNINITIALIZED;
    sim_write_begin(map);
    struct sim_shared *shared = map->shared;
    unsigned index = SIM_BAD_GPU;
    int64_t now = sim_now_ns(shared);
    nvmlReturn_t ret = sim_device_index(device, shared, &index);
    if (ret == NVML_SUCCESS) {
        struct sim_gpu *gpu = &shared->gpus[index];
        if (gpu->failing_code)
            ret = gpu->failing_code;
        else if (geteuid() != 0 && !shared->allow_unprivileged_control)
            ret = NVML_ERROR_NO_PERMISSION;
        else if ((ret = apply(gpu, a, b, now)) == NVML_SUCCESS)
            sim_change_point(gpu, now);
    }
    log_call(shared, call, index, arg_count, a, b, ret);
    sim_write_end(map);
    return ret;
}

/* A graphics clock lock (0, 0: none) asked for now, in effect clock_lock_latency_us later; until then the lock
 * in effect now holds (one asked for earlier and not yet in effect never takes effect). */
static void request_sm_lock(struct sim_gpu *gpu, unsigned min_mhz, unsigned max_mhz, int64_t now_ns) {
    if (now_ns >= gpu->sm_lock_effective_ns) {
        gpu->previous_sm_min_mhz = gpu->locked_sm_min_mhz;
        gpu->previous_sm_max_mhz = gpu->locked_sm_max_mhz;
    }
    gpu->locked_sm_min_mhz = min_mhz;
    gpu->locked_sm_max_mhz = max_mhz;
    gpu->sm_lock_effective_ns = now_ns + gpu->timing.clock_lock_latency_ns;
}

/* Any clock in the supported range is accepted and rounded to the nearest supported one, as NVML does. */
static nvmlReturn_t lock_gpu_clocks(struct sim_gpu *gpu, unsigned min_mhz, unsigned max_mhz, int64_t now_ns) {
    const gpuprofSimGpuConfig_t *config = &gpu->config;
    if (min_mhz > max_mhz || min_mhz < config->min_graphics_clock_mhz || max_mhz > config->max_graphics_clock_mhz)
        return NVML_ERROR_INVALID_ARGUMENT;
    request_sm_lock(gpu, sim_nearest_graphics_clock(config, min_mhz), sim_nearest_graphics_clock(config, max_mhz),
                    now_ns);
    return NVML_SUCCESS;
}

static nvmlReturn_t unlock_gpu_clocks(struct sim_gpu *gpu, unsigned a, unsigned b, int64_t now_ns) {
    (void)a, (void)b;
    request_sm_lock(gpu, 0, 0, now_ns);
    return NVML_SUCCESS;
}

static nvmlReturn_t lock_memory_clocks(struct sim_gpu *gpu, unsigned min_mhz, unsigned max_mhz, int64_t now_ns) {
    (void)now_ns;
    if (min_mhz > max_mhz || !sim_is_memory_clock(&gpu->config, min_mhz) ||
        !sim_is_memory_clock(&gpu->config, max_mhz))
        return NVML_ERROR_INVALID_ARGUMENT;
    gpu->locked_mem_min_mhz = min_mhz;
    gpu->locked_mem_max_mhz = max_mhz;
    return NVML_SUCCESS;
}

static nvmlReturn_t unlock_memory_clocks(struct sim_gpu *gpu, unsigned a, unsigned b, int64_t now_ns) {
    (void)a, (void)b, (void)now_ns;
    gpu->locked_mem_min_mhz = gpu->locked_mem_max_mhz = 0;
    return NVML_SUCCESS;
}

static nvmlReturn_t set_applications_clocks(struct sim_gpu *gpu, unsigned mem_mhz, unsigned graphics_mhz,
                                            int64_t now_ns) {
    (void)now_ns;
    if (!sim_is_memory_clock(&gpu->config, mem_mhz) || !sim_is_graphics_clock(&gpu->config, graphics_mhz))
        return NVML_ERROR_INVALID_ARGUMENT;
    gpu->app_mem_mhz = mem_mhz;
    gpu->app_graphics_mhz = graphics_mhz;
    return NVML_SUCCESS;
}

static nvmlReturn_t reset_applications_clocks(struct sim_gpu *gpu, unsigned a, unsigned b, int64_t now_ns) {
    (void)a, (void)b, (void)now_ns;
    gpu->app_mem_mhz = gpu->config.memory_clocks_mhz[0];
    gpu->app_graphics_mhz = gpu->config.max_graphics_clock_mhz;
    return NVML_SUCCESS;
}

static nvmlReturn_t set_power_limit(struct sim_gpu *gpu, unsigned limit_mw, unsigned unused, int64_t now_ns) {
    (void)unused, (void)now_ns;
    double watts = limit_mw / 1000.0;
    if (watts < gpu->config.min_power_limit_w || watts > gpu->config.max_power_limit_w)
        return NVML_ERROR_INVALID_ARGUMENT;
    gpu->power_limit_w = watts;
    return NVML_SUCCESS;
}

/* Locks the graphics clock into [min, max] MHz; a power cap may still take it below min. */
SIM_EXPORT nvmlReturn_t nvmlDeviceSetGpuLockedClocks(nvmlDevice_t device, unsigned int min_mhz, unsigned int max_mhz) {
    return control(device, "nvmlDeviceSetGpuLockedClocks", 2, min_mhz, max_mhz, lock_gpu_clocks);
}

/* Lets the GPU pick its graphics clock again. */
SIM_EXPORT nvmlReturn_t nvmlDeviceResetGpuLockedClocks(nvmlDevice_t device) {
    return control(device, "nvmlDeviceResetGpuLockedClocks", 0, 0, 0, unlock_gpu_clocks);
}

/* Locks the memory clock into [min, max] MHz; both must be supported memory clocks. */
SIM_EXPORT nvmlReturn_t nvmlDeviceSetMemoryLockedClocks(nvmlDevice_t device, unsigned int min_mhz,
                                                        unsigned int max_mhz) {
    return control(device, "nvmlDeviceSetMemoryLockedClocks", 2, min_mhz, max_mhz, lock_memory_clocks);
}

/* Lets the GPU pick its memory clock again. */
SIM_EXPORT nvmlReturn_t nvmlDeviceResetMemoryLockedClocks(nvmlDevice_t device) {
    return control(device, "nvmlDeviceResetMemoryLockedClocks", 0, 0, 0, unlock_memory_clocks);
}

/* Sets the clocks used when busy and not locked; the pair must be supported. */
SIM_EXPORT nvmlReturn_t nvmlDeviceSetApplicationsClocks(nvmlDevice_t device, unsigned int mem_mhz,
                                                        unsigned int graphics_mhz) {
    return control(device, "nvmlDeviceSetApplicationsClocks", 2, mem_mhz, graphics_mhz, set_applications_clocks);
}

/* Restores the default applications clocks (the top clocks). */
SIM_EXPORT nvmlReturn_t nvmlDeviceResetApplicationsClocks(nvmlDevice_t device) {
    return control(device, "nvmlDeviceResetApplicationsClocks", 0, 0, 0, reset_applications_clocks);
}

/* Sets the power limit in mW, within nvmlDeviceGetPowerManagementLimitConstraints. */
SIM_EXPORT nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned int limit_mw) {
    return control(device, "nvmlDeviceSetPowerManagementLimit", 1, limit_mw, 0, set_power_limit);
}
