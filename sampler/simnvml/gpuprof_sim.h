/* gpuprof's own control API of the simulated NVML library (the gpuprofSim* exports).
 *
 * Python mirrors these structs with ctypes (sampler/sim.py) and checks their sizes against
 * gpuprofSimStructSizes() before use, so any change here must be made there too and bump
 * GPUPROF_SIM_API_VERSION. Every function takes the state file to act on; NULL means the one that
 * nvmlInit mapped in this process, or else $GPUPROF_SIM_STATE / the per-user default.
 */
#ifndef GPUPROF_SIM_H
#define GPUPROF_SIM_H

#include "gpuprof_nvml.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GPUPROF_SIM_API_VERSION 3
#define GPUPROF_SIM_MAX_GPUS 16
#define GPUPROF_SIM_MAX_MEMORY_CLOCKS 8
#define GPUPROF_SIM_MAX_GRAPHICS_CLOCKS 512
#define GPUPROF_SIM_LOG_ENTRIES 256
#define GPUPROF_SIM_CALL_NAME_SIZE 48

/* One simulated GPU: what it is, its power model and its sensors. Sentinels (< 0 or "") ask for the
 * value derived from the GPU's index. */
typedef struct gpuprofSimGpuConfig_st {
    char name[NVML_DEVICE_NAME_BUFFER_SIZE];
    char uuid[NVML_DEVICE_UUID_BUFFER_SIZE]; /* "": GPU-...-<index> */
    double idle_power_w;
    double core_dynamic_power_w;   /* at the top graphics clock and voltage, utilization 100 */
    double memory_dynamic_power_w; /* at the top memory clock, utilization 100 */
    double min_voltage_v;          /* at the lowest graphics clock */
    double max_voltage_v;          /* at the highest graphics clock */
    double ripple_fraction;        /* amplitude of the sinusoidal power ripple, fraction of power */
    double ripple_period_ms;
    double power_limit_w; /* < 0: default_power_limit_w */
    double default_power_limit_w;
    double min_power_limit_w;
    double max_power_limit_w;
    double ambient_temp_c;
    double thermal_resistance_c_per_w;
    double thermal_time_constant_s;
    double instant_power_period_ms; /* field 186 refresh */
    double instant_power_window_ms; /* field 186 averages this much before each refresh */
    double average_power_period_ms; /* nvmlDeviceGetPowerUsage refresh */
    double average_power_window_ms;
    double power_samples_period_ms; /* nvmlDeviceGetSamples' total-power buffer: one sample this often */
    double power_samples_window_ms; /* a sample is the mean power of this long, */
    double power_samples_lag_ms;    /* ending this long before its timestamp */
    double power_samples_jitter_ms; /* each sample is taken up to this long off its tick; < period / 2 */
    double energy_period_ms; /* energy counter refresh */
    double energy_call_latency_us;
    double read_stall_us;        /* a power read blocks this long once per read_stall_period_ms; 0: never */
    double read_stall_period_ms;
    double clock_lock_latency_us; /* a graphics clock lock (or its reset) takes effect this long after the call */
    double sensor_phase_ms;  /* < 0: derived from the index */
    double initial_energy_j; /* < 0: derived from the index */
    double utilization_pct;  /* at configure */
    unsigned int min_graphics_clock_mhz;
    unsigned int max_graphics_clock_mhz;
    unsigned int graphics_clock_step_mhz;
    unsigned int memory_clock_count;
    unsigned int memory_clocks_mhz[GPUPROF_SIM_MAX_MEMORY_CLOCKS];
    unsigned int instant_power_supported; /* 0: field 186 answers NVML_ERROR_NOT_SUPPORTED */
    unsigned int reserved;
} gpuprofSimGpuConfig_t;

/* The whole simulated node. */
typedef struct gpuprofSimConfig_st {
    unsigned int gpu_count;
    unsigned int allow_unprivileged_control; /* non-zero: control calls need no root */
    long long manual_clock_ns;               /* > 0: the model's clock stands still here (tests) */
    gpuprofSimGpuConfig_t gpus[GPUPROF_SIM_MAX_GPUS];
} gpuprofSimConfig_t;

/* One GPU as the model sees it at time_ns. Lock fields are 0 when unlocked. */
typedef struct gpuprofSimGpuStatus_st {
    long long time_ns;
    unsigned int index;
    int failing_code; /* 0: healthy */
    char name[NVML_DEVICE_NAME_BUFFER_SIZE];
    char uuid[NVML_DEVICE_UUID_BUFFER_SIZE];
    double utilization_pct;
    double memory_utilization_pct;
    double power_w;  /* true modelled power at time_ns, ripple included */
    double energy_j; /* exact integral (the counter before its 1 mJ / 100 ms quantization) */
    double temp_c;
    double power_limit_w;
    double default_power_limit_w;
    unsigned long long clock_event_reasons;
    unsigned int sm_clock_mhz;
    unsigned int mem_clock_mhz;
    unsigned int locked_sm_min_mhz;
    unsigned int locked_sm_max_mhz;
    unsigned int locked_mem_min_mhz;
    unsigned int locked_mem_max_mhz;
    unsigned int applications_mem_clock_mhz;
    unsigned int applications_graphics_clock_mhz;
} gpuprofSimGpuStatus_t;

/* One NVML control call, allowed or not. */
typedef struct gpuprofSimControlCall_st {
    unsigned long long seq; /* 0 for the first call since configure */
    long long time_ns;      /* model time */
    int pid;
    unsigned int uid; /* effective uid */
    unsigned int gpu; /* 0xFFFFFFFF: the handle was invalid */
    int result;       /* nvmlReturn_t */
    unsigned int arg_count;
    unsigned int args[2];
    char call[GPUPROF_SIM_CALL_NAME_SIZE]; /* e.g. "nvmlDeviceSetGpuLockedClocks" */
    unsigned int reserved;
} gpuprofSimControlCall_t;


/* The control API. Each returns an nvmlReturn_t: INVALID_ARGUMENT for a bad index or value,
 * NO_PERMISSION or OPERATING_SYSTEM when the state file cannot be opened. */
unsigned int gpuprofSimVersion(void);
nvmlReturn_t gpuprofSimStructSizes(unsigned int *config, unsigned int *gpu_config, unsigned int *status,
                                   unsigned int *control_call);
nvmlReturn_t gpuprofSimDefaultConfig(gpuprofSimConfig_t *config);
nvmlReturn_t gpuprofSimStatePath(const char *state_path, char *path, unsigned int size);
nvmlReturn_t gpuprofSimConfigure(const char *state_path, const gpuprofSimConfig_t *config);
nvmlReturn_t gpuprofSimGetStatus(const char *state_path, gpuprofSimGpuStatus_t *status, unsigned int capacity,
                                 unsigned int *count);
nvmlReturn_t gpuprofSimSetUtilization(const char *state_path, unsigned int gpu, double utilization_pct,
                                      double memory_utilization_pct);
nvmlReturn_t gpuprofSimSetFailure(const char *state_path, unsigned int gpu, nvmlReturn_t code);
nvmlReturn_t gpuprofSimSetClock(const char *state_path, long long time_ns);
/* The exact energy (J, the integral the counter quantizes) GPU `gpu` had used at each of `count` instants
 * (CLOCK_MONOTONIC ns, none after now), for checking a window's estimate against the truth. Exact back to
 * the oldest of the last 1,024 utilization changes; before that, a mean. */
nvmlReturn_t gpuprofSimEnergyAt(const char *state_path, unsigned int gpu, const long long *time_ns,
                                unsigned int count, double *energy_j);
nvmlReturn_t gpuprofSimReadControlLog(const char *state_path, gpuprofSimControlCall_t *calls,
                                      unsigned int capacity, unsigned int *count, unsigned long long *total);

#ifdef __cplusplus
}
#endif

#endif /* GPUPROF_SIM_H */
