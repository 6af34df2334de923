/* The simulated GPU's physics: operating point under a power cap, power, exact energy, temperature, sensors.
 *
 * The state between two change points is constant, so every quantity is an analytic function of time:
 * the read path computes it from the segment that holds t and never writes.
 */
#ifndef GPUPROF_SIM_MODEL_H
#define GPUPROF_SIM_MODEL_H

#include <stdint.h>

#include "sim_state.h"

void sim_default_config(gpuprofSimConfig_t *config);
const char *sim_config_problem(const gpuprofSimConfig_t *config);
int sim_state_valid(const struct sim_shared *shared);
void sim_reset(struct sim_shared *shared, const gpuprofSimConfig_t *config, int64_t now_ns);
void sim_first_segment(struct sim_gpu *gpu, int64_t start_ns);
void sim_change_point(struct sim_gpu *gpu, int64_t now_ns);

unsigned sim_graphics_clocks(const gpuprofSimGpuConfig_t *config, unsigned *clocks, unsigned capacity);
int sim_is_memory_clock(const gpuprofSimGpuConfig_t *config, unsigned mhz);
int sim_is_graphics_clock(const gpuprofSimGpuConfig_t *config, unsigned mhz);
unsigned sim_nearest_graphics_clock(const gpuprofSimGpuConfig_t *config, unsigned mhz);

const struct sim_segment *sim_segment_at(const struct sim_gpu *gpu, int64_t t_ns);
double sim_power_w(const struct sim_gpu *gpu, int64_t t_ns);
double sim_energy_j(const struct sim_gpu *gpu, int64_t t_ns);
/* The memory's share of the power at t_ns (field 185, memory scope), W. */
double sim_memory_power_w(const struct sim_gpu *gpu, int64_t t_ns);
double sim_temp_c(const struct sim_gpu *gpu, int64_t t_ns);
int64_t sim_sensor_tick(int64_t t_ns, int64_t period_ns, int64_t phase_ns);
double sim_mean_power_w(const struct sim_gpu *gpu, int64_t end_ns, int64_t window_ns);

#endif /* GPUPROF_SIM_MODEL_H */
