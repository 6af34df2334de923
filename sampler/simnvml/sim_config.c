/* The simulated GPU's defaults (an H100 80GB HBM3 as measured), config validation, and state reset. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sim_model.h"

static void default_gpu_config(gpuprofSimGpuConfig_t *config) {
    memset(config, 0, sizeof(*config));
    snprintf(config->name, sizeof(config->name), "%s", "NVIDIA H100 80GB HBM3 (simulated)");
    /* 70 W idle; at utilization 100 the top clocks would draw 70 + 670 + 80 = 820 W, so the 700 W limit
     * caps the graphics clock at 1725 MHz (mean power 675 W), as measured on the H100. */
    config->idle_power_w = 70.0;
    config->core_dynamic_power_w = 670.0;
    config->memory_dynamic_power_w = 80.0;
    config->min_voltage_v = 0.70;
    config->max_voltage_v = 1.05;
    config->ripple_fraction = 0.03;
    config->ripple_period_ms = 273.0; /* not commensurate with the 100 ms sensor period */
    config->power_limit_w = -1.0;
    config->default_power_limit_w = 700.0;
    config->min_power_limit_w = 200.0;
    config->max_power_limit_w = 700.0;
    config->ambient_temp_c = 30.0;
    config->thermal_resistance_c_per_w = 0.06;
    config->thermal_time_constant_s = 30.0;
    config->instant_power_period_ms = 100.0;
    config->instant_power_window_ms = 25.0;
    config->average_power_period_ms = 80.0;
    config->average_power_window_ms = 1000.0;
    /* The H100's buffer of total-power samples: one every 20 ms, each the mean of the 25 ms ending 2 ms before
     * its timestamp (docs/measurement.md, "The driver's power samples"). The driver's cadence wanders (11.6-32.8
     * ms between samples, p10-p90, mean ~21 ms): each sample is taken up to 6 ms off its 20 ms tick. */
    config->power_samples_period_ms = 20.0;
    config->power_samples_window_ms = 25.0;
    config->power_samples_lag_ms = 2.0;
    config->power_samples_jitter_ms = 6.0;
    config->energy_period_ms = 100.0;
    config->energy_call_latency_us = 2800.0;
    config->read_stall_us = 0.0;
    config->read_stall_period_ms = 100.0;
    config->clock_lock_latency_us = 20000.0; /* an assumption: docs/simulated-gpu.md, "Control calls" */
    config->sensor_phase_ms = -1.0;
    config->initial_energy_j = -1.0;
    config->utilization_pct = 0.0;
    config->min_graphics_clock_mhz = 345;
    config->max_graphics_clock_mhz = 1980;
    config->graphics_clock_step_mhz = 15;
    config->memory_clock_count = 2;
    config->memory_clocks_mhz[0] = 2619;
    config->memory_clocks_mhz[1] = 1593;
    config->instant_power_supported = 1;
}

void sim_default_config(gpuprofSimConfig_t *config) {
    memset(config, 0, sizeof(*config));
    config->gpu_count = 1;
    for (unsigned i = 0; i < GPUPROF_SIM_MAX_GPUS; i++)
        default_gpu_config(&config->gpus[i]);
}

static int64_t ms_to_ns(double ms) { return llround(ms * 1e6); }

static int in_range(double x, double low, double high) { return x >= low && x <= high; } /* false for NaN */

/* A negative value asks for the derived default. */
static int derived_or_in_range(double x, double low, double high) { return x < 0 || in_range(x, low, high); }

#define CHECK(ok, field)                                                                                     \
    do {                                                                                                     \
        if (!(ok))                                                                                           \
            return field;                                                                                    \
    } while (0)

/* The first field of `c` that is out of its documented range (docs/simulated-gpu.md), or NULL. */
static const char *gpu_config_problem(const gpuprofSimGpuConfig_t *c) {
    CHECK(memchr(c->name, 0, sizeof(c->name)) && c->name[0], "name");
    CHECK(memchr(c->uuid, 0, sizeof(c->uuid)), "uuid");
    CHECK(in_range(c->idle_power_w, 0, 5000), "idle_power_w");
    CHECK(in_range(c->core_dynamic_power_w, 0, 10000), "core_dynamic_power_w");
    CHECK(in_range(c->memory_dynamic_power_w, 0, 5000), "memory_dynamic_power_w");
    CHECK(in_range(c->min_voltage_v, 0.01, 5), "min_voltage_v");
    CHECK(in_range(c->max_voltage_v, c->min_voltage_v, 5), "max_voltage_v");
    CHECK(in_range(c->ripple_fraction, 0, 0.5), "ripple_fraction");
    CHECK(in_range(c->ripple_period_ms, 1, 3600000), "ripple_period_ms");
    CHECK(in_range(c->min_power_limit_w, 1, 10000), "min_power_limit_w");
    CHECK(in_range(c->max_power_limit_w, c->min_power_limit_w, 10000), "max_power_limit_w");
    CHECK(in_range(c->default_power_limit_w, c->min_power_limit_w, c->max_power_limit_w), "default_power_limit_w");
    CHECK(derived_or_in_range(c->power_limit_w, c->min_power_limit_w, c->max_power_limit_w), "power_limit_w");
    CHECK(in_range(c->ambient_temp_c, -50, 100), "ambient_temp_c");
    CHECK(in_range(c->thermal_resistance_c_per_w, 0, 10), "thermal_resistance_c_per_w");
    CHECK(in_range(c->thermal_time_constant_s, 0.001, 3600), "thermal_time_constant_s");
    CHECK(in_range(c->instant_power_period_ms, 1, 10000), "instant_power_period_ms");
    CHECK(in_range(c->instant_power_window_ms, 0.001, 10000), "instant_power_window_ms");
    CHECK(in_range(c->average_power_period_ms, 1, 10000), "average_power_period_ms");
    CHECK(in_range(c->average_power_window_ms, 0.001, 10000), "average_power_window_ms");
    CHECK(in_range(c->power_samples_period_ms, 1, 10000), "power_samples_period_ms");
    CHECK(in_range(c->power_samples_window_ms, 0.001, 10000), "power_samples_window_ms");
    CHECK(in_range(c->power_samples_lag_ms, 0, 10000), "power_samples_lag_ms");
    CHECK(c->power_samples_jitter_ms >= 0 && c->power_samples_jitter_ms < c->power_samples_period_ms / 2 &&
              2 * ms_to_ns(c->power_samples_jitter_ms) < ms_to_ns(c->power_samples_period_ms),
          "power_samples_jitter_ms"); /* [0, period / 2): the samples stay in order */
    CHECK(in_range(c->energy_period_ms, 1, 10000), "energy_period_ms");
    CHECK(in_range(c->energy_call_latency_us, 0, 1000000), "energy_call_latency_us");
    CHECK(in_range(c->read_stall_us, 0, 1000000), "read_stall_us");
    CHECK(in_range(c->read_stall_period_ms, 1, 100000), "read_stall_period_ms");
    CHECK(in_range(c->clock_lock_latency_us, 0, 1000000), "clock_lock_latency_us");
    CHECK(derived_or_in_range(c->sensor_phase_ms, 0, 10000), "sensor_phase_ms");
    CHECK(derived_or_in_range(c->initial_energy_j, 0, 1e12), "initial_energy_j");
    CHECK(in_range(c->utilization_pct, 0, 100), "utilization_pct");
    CHECK(c->min_graphics_clock_mhz >= 1, "min_graphics_clock_mhz");
    CHECK(c->max_graphics_clock_mhz >= c->min_graphics_clock_mhz && c->max_graphics_clock_mhz <= 10000,
          "max_graphics_clock_mhz");
    unsigned span = c->max_graphics_clock_mhz - c->min_graphics_clock_mhz;
    CHECK(c->graphics_clock_step_mhz >= 1 && span % c->graphics_clock_step_mhz == 0 &&
              span / c->graphics_clock_step_mhz < GPUPROF_SIM_MAX_GRAPHICS_CLOCKS,
          "graphics_clock_step_mhz");
    CHECK(c->memory_clock_count >= 1 && c->memory_clock_count <= GPUPROF_SIM_MAX_MEMORY_CLOCKS, "memory_clocks_mhz");
    for (unsigned i = 0; i < c->memory_clock_count; i++) {
        CHECK(c->memory_clocks_mhz[i] >= 1 && c->memory_clocks_mhz[i] <= 100000, "memory_clocks_mhz");
        for (unsigned j = 0; j < i; j++)
            CHECK(c->memory_clocks_mhz[i] != c->memory_clocks_mhz[j], "memory_clocks_mhz");
    }
    CHECK(c->instant_power_supported <= 1, "instant_power_supported");
    return NULL;
}

const char *sim_config_problem(const gpuprofSimConfig_t *config) {
    CHECK(config->gpu_count >= 1 && config->gpu_count <= GPUPROF_SIM_MAX_GPUS, "gpu_count");
    CHECK(config->allow_unprivileged_control <= 1, "allow_unprivileged_control");
    CHECK(config->manual_clock_ns >= 0, "manual_clock_ns");
    for (unsigned i = 0; i < config->gpu_count; i++) {
        const char *problem = gpu_config_problem(&config->gpus[i]);
        if (problem)
            return problem;
    }
    return NULL;
}

/* Fills in what the config left to the index, so GPUs differ the way real ones do. */
static void fill_derived(gpuprofSimGpuConfig_t *config, unsigned index) {
    if (!config->uuid[0])
        snprintf(config->uuid, sizeof(config->uuid), "GPU-5140ca1e-0000-4000-8000-%012x", index);
    if (config->sensor_phase_ms < 0) /* so that GPUs' sensors do not refresh together */
        config->sensor_phase_ms = fmod(37.0 * index, config->instant_power_period_ms);
    if (config->initial_energy_j < 0) /* "since driver load": a day idle, an hour more per index */
        config->initial_energy_j = config->idle_power_w * (86400.0 + 3600.0 * index);
    if (config->power_limit_w < 0)
        config->power_limit_w = config->default_power_limit_w;
    for (unsigned i = 1; i < config->memory_clock_count; i++) /* descending: [0] is the top clock */
        for (unsigned j = i; j > 0 && config->memory_clocks_mhz[j] > config->memory_clocks_mhz[j - 1]; j--) {
            unsigned swap = config->memory_clocks_mhz[j];
            config->memory_clocks_mhz[j] = config->memory_clocks_mhz[j - 1];
            config->memory_clocks_mhz[j - 1] = swap;
        }
}

static void derive_timing(struct sim_gpu *gpu, unsigned index) {
    const gpuprofSimGpuConfig_t *c = &gpu->config;
    struct sim_timing *t = &gpu->timing;
    t->instant_period_ns = ms_to_ns(c->instant_power_period_ms);
    t->instant_window_ns = ms_to_ns(c->instant_power_window_ms);
    t->average_period_ns = ms_to_ns(c->average_power_period_ms);
    t->average_window_ns = ms_to_ns(c->average_power_window_ms);
    t->samples_period_ns = ms_to_ns(c->power_samples_period_ms);
    t->samples_window_ns = ms_to_ns(c->power_samples_window_ms);
    t->samples_lag_ns = ms_to_ns(c->power_samples_lag_ms);
    t->samples_jitter_ns = ms_to_ns(c->power_samples_jitter_ms);
    t->energy_period_ns = ms_to_ns(c->energy_period_ms);
    t->phase_ns = ms_to_ns(c->sensor_phase_ms);
    t->ripple_period_ns = ms_to_ns(c->ripple_period_ms);
    t->ripple_phase_ns = llround(0.618034 * index * (double)t->ripple_period_ns) % t->ripple_period_ns;
    t->energy_call_latency_ns = llround(c->energy_call_latency_us * 1e3);
    t->read_stall_ns = llround(c->read_stall_us * 1e3);
    t->read_stall_period_ns = ms_to_ns(c->read_stall_period_ms);
    t->clock_lock_latency_ns = llround(c->clock_lock_latency_us * 1e3);
}

void sim_reset(struct sim_shared *shared, const gpuprofSimConfig_t *config, int64_t now_ns) {
    /* Field by field: `seq` belongs to the caller's write section. */
    shared->magic = SIM_MAGIC;
    shared->layout_version = SIM_LAYOUT_VERSION;
    shared->size = sizeof(struct sim_shared);
    shared->gpu_count = config->gpu_count;
    shared->allow_unprivileged_control = config->allow_unprivileged_control;
    shared->reserved = 0;
    shared->manual_clock_ns = config->manual_clock_ns;
    shared->log_total = 0;
    memset(shared->log, 0, sizeof(shared->log));
    memset(shared->gpus, 0, sizeof(shared->gpus));
    int64_t start_ns = config->manual_clock_ns > 0 ? config->manual_clock_ns : now_ns;
    for (unsigned i = 0; i < config->gpu_count; i++) {
        struct sim_gpu *gpu = &shared->gpus[i];
        gpu->config = config->gpus[i];
        fill_derived(&gpu->config, i);
        derive_timing(gpu, i);
        gpu->utilization_pct = gpu->config.utilization_pct;
        gpu->memory_utilization_pct = gpu->config.utilization_pct;
        gpu->power_limit_w = gpu->config.power_limit_w;
        gpu->app_mem_mhz = gpu->config.memory_clocks_mhz[0];
        gpu->app_graphics_mhz = gpu->config.max_graphics_clock_mhz;
        sim_first_segment(gpu, start_ns);
    }
}

static int sm_lock_valid(const gpuprofSimGpuConfig_t *c, unsigned min_mhz, unsigned max_mhz) {
    return (min_mhz == 0 && max_mhz == 0) ||
           (sim_is_graphics_clock(c, min_mhz) && sim_is_graphics_clock(c, max_mhz) && min_mhz <= max_mhz);
}

static int locks_valid(const struct sim_gpu *gpu) {
    const gpuprofSimGpuConfig_t *c = &gpu->config;
    int sm_ok = sm_lock_valid(c, gpu->locked_sm_min_mhz, gpu->locked_sm_max_mhz) &&
                sm_lock_valid(c, gpu->previous_sm_min_mhz, gpu->previous_sm_max_mhz);
    int mem_ok = (gpu->locked_mem_min_mhz == 0 && gpu->locked_mem_max_mhz == 0) ||
                 (sim_is_memory_clock(c, gpu->locked_mem_min_mhz) && sim_is_memory_clock(c, gpu->locked_mem_max_mhz) &&
                  gpu->locked_mem_min_mhz <= gpu->locked_mem_max_mhz);
    return sm_ok && mem_ok && sim_is_memory_clock(c, gpu->app_mem_mhz) &&
           sim_is_graphics_clock(c, gpu->app_graphics_mhz);
}

/* Whether a GPU's state could have been written by sim_reset and the control calls. */
static int gpu_state_valid(const struct sim_gpu *gpu) {
    const gpuprofSimGpuConfig_t *c = &gpu->config;
    const struct sim_timing *t = &gpu->timing;
    if (gpu_config_problem(c) || !c->uuid[0] || c->sensor_phase_ms < 0 || c->initial_energy_j < 0 ||
        c->power_limit_w < 0)
        return 0;
    for (unsigned i = 1; i < c->memory_clock_count; i++)
        if (c->memory_clocks_mhz[i] > c->memory_clocks_mhz[i - 1])
            return 0;
    if (t->instant_period_ns <= 0 || t->instant_window_ns <= 0 || t->average_period_ns <= 0 ||
        t->average_window_ns <= 0 || t->samples_period_ns <= 0 || t->samples_window_ns <= 0 ||
        t->samples_lag_ns < 0 || t->samples_jitter_ns < 0 || 2 * t->samples_jitter_ns >= t->samples_period_ns ||
        t->energy_period_ns <= 0 || t->ripple_period_ns <= 0 || t->phase_ns < 0 ||
        t->energy_call_latency_ns < 0 || t->energy_call_latency_ns > 1000000000LL || t->read_stall_ns < 0 ||
        t->read_stall_ns > 1000000000LL || t->read_stall_period_ns <= 0 || t->clock_lock_latency_ns < 0 ||
        t->clock_lock_latency_ns > 1000000000LL || gpu->sm_lock_effective_ns < 0)
        return 0;
    if (!in_range(gpu->utilization_pct, 0, 100) || !in_range(gpu->memory_utilization_pct, 0, 100) ||
        !in_range(gpu->power_limit_w, c->min_power_limit_w, c->max_power_limit_w) || !locks_valid(gpu) ||
        gpu->segment_count == 0)
        return 0;
    const struct sim_segment *last = &gpu->segments[(gpu->segment_count - 1) % SIM_SEGMENTS];
    return isfinite(last->energy_j) && in_range(last->base_w, 0, 1e6) && in_range(last->temp_c, -100, 1000);
}

int sim_state_valid(const struct sim_shared *shared) {
    if (shared->gpu_count < 1 || shared->gpu_count > GPUPROF_SIM_MAX_GPUS || shared->allow_unprivileged_control > 1 ||
        shared->manual_clock_ns < 0)
        return 0;
    for (unsigned i = 0; i < shared->gpu_count; i++)
        if (!gpu_state_valid(&shared->gpus[i]))
            return 0;
    return 1;
}
