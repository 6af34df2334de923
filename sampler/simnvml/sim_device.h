/* NVML device handles of the simulated GPUs: addresses in a static array, so a handle is never dereferenced. */
#ifndef GPUPROF_SIM_DEVICE_H
#define GPUPROF_SIM_DEVICE_H

#include <stdint.h>

#include "sim_state.h"

struct nvmlDevice_st {
    unsigned char unused;
};

extern struct nvmlDevice_st sim_devices[GPUPROF_SIM_MAX_GPUS];

/* The GPU index a handle stands for; INVALID_ARGUMENT for a foreign handle or one past the GPU count. */
static inline nvmlReturn_t sim_device_index(nvmlDevice_t device, const struct sim_shared *shared,
                                            unsigned *index) {
    uintptr_t address = (uintptr_t)device, base = (uintptr_t)sim_devices;
    if (address < base || address >= base + sizeof(sim_devices))
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned i = (unsigned)((address - base) / sizeof(sim_devices[0]));
    if (i >= __atomic_load_n(&shared->gpu_count, __ATOMIC_RELAXED))
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = i;
    return NVML_SUCCESS;
}

#endif /* GPUPROF_SIM_DEVICE_H */
