/* The simulated GPU's physics: DVFS under the power cap, power with ripple, its exact integral, temperature. */
#include <math.h>

#include "sim_model.h"

static const double TWO_PI = 6.283185307179586;

unsigned sim_graphics_clocks(const gpuprofSimGpuConfig_t *config, unsigned *clocks, unsigned capacity) {
    unsigned step = config->graphics_clock_step_mhz ? config->graphics_clock_step_mhz : 1;
    unsigned count = (config->max_graphics_clock_mhz - config->min_graphics_clock_mhz) / step + 1;
    for (unsigned i = 0; clocks && i < count && i < capacity; i++)
        clocks[i] = config->max_graphics_clock_mhz - i * step; /* descending, as NVML lists them */
    return count;
}

int sim_is_memory_clock(const gpuprofSimGpuConfig_t *config, unsigned mhz) {
    for (unsigned i = 0; i < config->memory_clock_count && i < GPUPROF_SIM_MAX_MEMORY_CLOCKS; i++)
        if (config->memory_clocks_mhz[i] == mhz)
            return 1;
    return 0;
}

int sim_is_graphics_clock(const gpuprofSimGpuConfig_t *config, unsigned mhz) {
    unsigned step = config->graphics_clock_step_mhz ? config->graphics_clock_step_mhz : 1;
    return mhz >= config->min_graphics_clock_mhz && mhz <= config->max_graphics_clock_mhz &&
           (mhz - config->min_graphics_clock_mhz) % step == 0;
}

unsigned sim_nearest_graphics_clock(const gpuprofSimGpuConfig_t *config, unsigned mhz) {
    unsigned step = config->graphics_clock_step_mhz ? config->graphics_clock_step_mhz : 1;
    if (mhz <= config->min_graphics_clock_mhz)
        return config->min_graphics_clock_mhz;
    if (mhz >= config->max_graphics_clock_mhz)
        return config->max_graphics_clock_mhz;
    unsigned steps = (mhz - config->min_graphics_clock_mhz + step / 2) / step;
    return config->min_graphics_clock_mhz + steps * step;
}

/* Core voltage rises linearly with the graphics clock, as on a DVFS curve's upper part. */
static double voltage_v(const gpuprofSimGpuConfig_t *config, unsigned sm_mhz) {
    double span = (double)config->max_graphics_clock_mhz - config->min_graphics_clock_mhz;
    double x = span > 0 ? ((double)sm_mhz - config->min_graphics_clock_mhz) / span : 1.0;
    x = x < 0 ? 0 : (x > 1 ? 1 : x);
    return config->min_voltage_v + (config->max_voltage_v - config->min_voltage_v) * x;
}

/* Mean power: idle + utilization x (core f.V^2 + memory f), each scaled to its value at the top clocks. */
static double base_power_w(const gpuprofSimGpuConfig_t *config, double util_pct, unsigned sm_mhz,
                           unsigned mem_mhz) {
    double v = voltage_v(config, sm_mhz) / config->max_voltage_v;
    double core = config->core_dynamic_power_w * ((double)sm_mhz / config->max_graphics_clock_mhz) * v * v;
    double memory = config->memory_dynamic_power_w * ((double)mem_mhz / config->memory_clocks_mhz[0]);
    return config->idle_power_w + util_pct / 100.0 * (core + memory);
}

struct operating_point {
    unsigned sm_mhz;
    unsigned mem_mhz;
    uint64_t reasons;
    double base_w;
};

/* What the GPU's own DVFS picks at t: the highest allowed clock whose power, ripple peaks included, fits the
 * limit, under the graphics clock lock in effect at t. The cap may go below a lock's minimum, as on real GPUs. */
static struct operating_point choose_operating_point(const struct sim_gpu *gpu, int64_t t_ns) {
    const gpuprofSimGpuConfig_t *config = &gpu->config;
    struct operating_point op = {0};
    op.mem_mhz = gpu->locked_mem_max_mhz ? gpu->locked_mem_max_mhz : gpu->app_mem_mhz;
    int in_effect = t_ns >= gpu->sm_lock_effective_ns; /* else the lock before it still holds */
    unsigned lock_min = in_effect ? gpu->locked_sm_min_mhz : gpu->previous_sm_min_mhz;
    unsigned lock_max = in_effect ? gpu->locked_sm_max_mhz : gpu->previous_sm_max_mhz;
    int locked = lock_max != 0;
    if (!(gpu->utilization_pct > 0)) {
        op.sm_mhz = locked ? lock_min : config->min_graphics_clock_mhz;
        op.reasons = NVML_CLOCKS_EVENT_REASON_GPU_IDLE;
    } else {
        unsigned ceiling = locked ? lock_max : gpu->app_graphics_mhz;
        unsigned step = config->graphics_clock_step_mhz ? config->graphics_clock_step_mhz : 1;
        double allowed_w = gpu->power_limit_w / (1.0 + config->ripple_fraction);
        op.sm_mhz = ceiling;
        while (op.sm_mhz >= config->min_graphics_clock_mhz + step &&
               base_power_w(config, gpu->utilization_pct, op.sm_mhz, op.mem_mhz) > allowed_w)
            op.sm_mhz -= step;
        if (op.sm_mhz < ceiling || base_power_w(config, gpu->utilization_pct, op.sm_mhz, op.mem_mhz) > allowed_w)
            op.reasons = NVML_CLOCKS_EVENT_REASON_SW_POWER_CAP;
        else if (ceiling < config->max_graphics_clock_mhz)
            op.reasons = NVML_CLOCKS_EVENT_REASON_APPLICATIONS_CLOCKS_SETTING;
    }
    op.base_w = base_power_w(config, gpu->utilization_pct, op.sm_mhz, op.mem_mhz);
    return op;
}

const struct sim_segment *sim_segment_at(const struct sim_gpu *gpu, int64_t t_ns) {
    uint64_t count = gpu->segment_count ? gpu->segment_count : 1;
    uint64_t oldest = count > SIM_SEGMENTS ? count - SIM_SEGMENTS : 0;
    uint64_t i = count - 1;
    const struct sim_segment *segment = &gpu->segments[i % SIM_SEGMENTS];
    /* Before the oldest kept change point, its state is extrapolated backwards. */
    while (segment->start_ns > t_ns && i > oldest)
        segment = &gpu->segments[--i % SIM_SEGMENTS];
    return segment;
}

/* Phase of the ripple at t, from integer ns so it stays exact however long the clock has run. */
static double ripple_angle(const struct sim_gpu *gpu, int64_t t_ns) {
    int64_t period = gpu->timing.ripple_period_ns;
    if (period <= 0)
        return 0;
    int64_t r = (t_ns + gpu->timing.ripple_phase_ns) % period;
    return TWO_PI * (double)(r < 0 ? r + period : r) / (double)period;
}

double sim_power_w(const struct sim_gpu *gpu, int64_t t_ns) {
    const struct sim_segment *segment = sim_segment_at(gpu, t_ns);
    return segment->base_w * (1.0 + gpu->config.ripple_fraction * sin(ripple_angle(gpu, t_ns)));
}

/* The integral of 1 + a.sin(wt + phi) from t0 to t1, in s: the energy in J per W of mean power. */
static double ripple_seconds(const struct sim_gpu *gpu, int64_t t0_ns, int64_t t1_ns) {
    double seconds = (double)(t1_ns - t0_ns) * 1e-9;
    double amplitude = gpu->config.ripple_fraction;
    if (amplitude > 0 && gpu->timing.ripple_period_ns > 0) {
        double omega = TWO_PI / ((double)gpu->timing.ripple_period_ns * 1e-9);
        seconds += amplitude / omega * (cos(ripple_angle(gpu, t0_ns)) - cos(ripple_angle(gpu, t1_ns)));
    }
    return seconds;
}

double sim_energy_j(const struct sim_gpu *gpu, int64_t t_ns) {
    const struct sim_segment *segment = sim_segment_at(gpu, t_ns);
    return segment->energy_j + segment->base_w * ripple_seconds(gpu, segment->start_ns, t_ns);
}

/* The memory's power: a standing 30 W (an H100 read ~32 W idle) and its dynamic part at the memory clock and
 * utilization, as in the mean power's model. */
double sim_memory_power_w(const struct sim_gpu *gpu, int64_t t_ns) {
    const struct sim_segment *segment = sim_segment_at(gpu, t_ns);
    const gpuprofSimGpuConfig_t *config = &gpu->config;
    double utilization = gpu->memory_utilization_pct >= 0 ? gpu->memory_utilization_pct : gpu->utilization_pct;
    return 30.0 + config->memory_dynamic_power_w * ((double)segment->mem_mhz / config->memory_clocks_mhz[0]) *
                      utilization / 100.0;
}

/* First-order thermal model driven by the mean power: T relaxes to ambient + R.P with time constant tau. */
double sim_temp_c(const struct sim_gpu *gpu, int64_t t_ns) {
    const struct sim_segment *segment = sim_segment_at(gpu, t_ns);
    double steady = gpu->config.ambient_temp_c + gpu->config.thermal_resistance_c_per_w * segment->base_w;
    double dt = (double)(t_ns - segment->start_ns) * 1e-9;
    if (dt < 0)
        dt = 0;
    return steady + (segment->temp_c - steady) * exp(-dt / gpu->config.thermal_time_constant_s);
}

int64_t sim_sensor_tick(int64_t t_ns, int64_t period_ns, int64_t phase_ns) {
    if (period_ns <= 0)
        return t_ns;
    int64_t since = t_ns - phase_ns;
    int64_t ticks = since / period_ns - (since % period_ns < 0);
    return phase_ns + ticks * period_ns;
}

double sim_mean_power_w(const struct sim_gpu *gpu, int64_t end_ns, int64_t window_ns) {
    if (window_ns <= 0)
        return sim_power_w(gpu, end_ns);
    return (sim_energy_j(gpu, end_ns) - sim_energy_j(gpu, end_ns - window_ns)) / ((double)window_ns * 1e-9);
}

/* Before the ring overwrites its oldest change point, folds it into the next one with the mean power of both,
 * so the energy stays exact at every change point still kept and monotonic in between. */
static void merge_oldest_segments(struct sim_gpu *gpu) {
    uint64_t oldest = gpu->segment_count - SIM_SEGMENTS;
    const struct sim_segment *first = &gpu->segments[oldest % SIM_SEGMENTS];
    struct sim_segment *second = &gpu->segments[(oldest + 1) % SIM_SEGMENTS];
    const struct sim_segment *third = &gpu->segments[(oldest + 2) % SIM_SEGMENTS];
    double per_watt = ripple_seconds(gpu, first->start_ns, third->start_ns);
    if (per_watt > 0)
        second->base_w = (third->energy_j - first->energy_j) / per_watt;
    second->start_ns = first->start_ns;
    second->energy_j = first->energy_j;
    second->temp_c = first->temp_c;
}

static void add_change_point(struct sim_gpu *gpu, int64_t now_ns) {
    uint64_t count = gpu->segment_count ? gpu->segment_count : 1;
    struct sim_segment *last = &gpu->segments[(count - 1) % SIM_SEGMENTS];
    /* Never before the last change: the energy counter must not run backwards. */
    int64_t t = now_ns > last->start_ns ? now_ns : last->start_ns;
    struct operating_point op = choose_operating_point(gpu, t);
    struct sim_segment next = {
        .start_ns = t,
        .energy_j = sim_energy_j(gpu, t),
        .base_w = op.base_w,
        .temp_c = sim_temp_c(gpu, t),
        .reasons = op.reasons,
        .sm_mhz = op.sm_mhz,
        .mem_mhz = op.mem_mhz,
    };
    /* At the same instant, replace, so bursts of calls do not push history out; but never the first
     * segment, which also stands for the time before it. */
    if (gpu->segment_count > 1 && t == last->start_ns) {
        *last = next;
        return;
    }
    if (gpu->segment_count >= SIM_SEGMENTS)
        merge_oldest_segments(gpu);
    gpu->segments[count % SIM_SEGMENTS] = next;
    __atomic_store_n(&gpu->segment_count, gpu->segment_count + 1, __ATOMIC_RELAXED);
}

/* Forgets the latest change point. Its slot held the oldest one, already merged into the next (a full ring):
 * that slot, the oldest again, gets a copy of the next, which stands for the same time. */
static void drop_last_change_point(struct sim_gpu *gpu) {
    uint64_t count = gpu->segment_count;
    if (count > SIM_SEGMENTS)
        gpu->segments[(count - 1) % SIM_SEGMENTS] = gpu->segments[count % SIM_SEGMENTS];
    __atomic_store_n(&gpu->segment_count, count - 1, __ATOMIC_RELAXED);
}

void sim_change_point(struct sim_gpu *gpu, int64_t now_ns) {
    /* A graphics clock lock not yet in effect holds a change point of its own ahead of now: it is made again
     * after now's, with the state as it is now (a later lock supersedes it, a utilization change alters it).
     * Readers take the segment that holds their time, so none sees it early. */
    uint64_t count = gpu->segment_count;
    if (count > 1 && gpu->segments[(count - 1) % SIM_SEGMENTS].start_ns > now_ns)
        drop_last_change_point(gpu);
    add_change_point(gpu, now_ns);
    if (gpu->sm_lock_effective_ns > now_ns)
        add_change_point(gpu, gpu->sm_lock_effective_ns);
}

void sim_first_segment(struct sim_gpu *gpu, int64_t start_ns) {
    struct operating_point op = choose_operating_point(gpu, start_ns);
    gpu->segments[0] = (struct sim_segment){
        .start_ns = start_ns,
        .energy_j = gpu->config.initial_energy_j,
        .base_w = op.base_w,
        .temp_c = gpu->config.ambient_temp_c + gpu->config.thermal_resistance_c_per_w * op.base_w,
        .reasons = op.reasons,
        .sm_mhz = op.sm_mhz,
        .mem_mhz = op.mem_mhz,
    };
    gpu->segment_count = 1;
}
