/* The C floor of the sampler's cost: the fast loop's NVML reads in a plain C loop, nothing else.
 *
 * Usage: c_floor LIBRARY SECONDS GPU [GPU ...]
 *
 * dlopen()s LIBRARY (the driver's libnvidia-ml.so.1 or gpuprof's simulated one), then for SECONDS of wall
 * time reads, per GPU and iteration, exactly what the samplers' fast loop reads: a CLOCK_MONOTONIC
 * timestamp, instant power (field 186, or nvmlDeviceGetPowerUsage where 186 is unsupported, as the
 * samplers fall back), SM clock, memory clock, utilization, temperature and clock-event reasons.
 * Prints one JSON object with the thread CPU time (CLOCK_THREAD_CPUTIME_ID) per GPU-sample.
 * Built by benchmarks/sampler_bench.py with `cc -O2`; only reads, never changes GPU settings.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpuprof_nvml.h"

#define MAX_GPUS 64

struct nvml {
    nvmlInit_v2_fn init;
    nvmlShutdown_fn shutdown;
    nvmlDeviceGetCount_v2_fn get_count;
    nvmlDeviceGetHandleByIndex_v2_fn get_handle;
    nvmlDeviceGetFieldValues_fn get_field_values;
    nvmlDeviceGetPowerUsage_fn get_power_usage;
    nvmlDeviceGetClockInfo_fn get_clock_info;
    nvmlDeviceGetUtilizationRates_fn get_utilization;
    nvmlDeviceGetTemperature_fn get_temperature;
    nvmlDeviceGetCurrentClocksEventReasons_fn get_event_reasons;
};

/* What one read stores; volatile so that the compiler keeps every call and store. */
struct reading {
    long long t_ns;
    unsigned long long reasons;
    unsigned int power_mw, sm_mhz, mem_mhz, util_pct, temp_c;
};

static volatile struct reading sink;

/* Prints an error as JSON on stdout (the caller parses stdout) and exits 1. */
static void fail(const char *what, const char *detail, int code) {
    printf("{\"error\": \"%s: ", what);
    for (const char *c = detail ? detail : ""; *c; c++)
        if (*c >= ' ' && *c != '"' && *c != '\\')
            putchar(*c);
    printf("\", \"nvml_return\": %d}\n", code);
    exit(1);
}

static long long clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *symbol(void *lib, const char *name) {
    void *address = dlsym(lib, name);
    if (!address)
        fail("symbol not found", name, NVML_ERROR_FUNCTION_NOT_FOUND);
    return address;
}

static void resolve(struct nvml *nvml, void *lib) {
    nvml->init = (nvmlInit_v2_fn)symbol(lib, "nvmlInit_v2");
    nvml->shutdown = (nvmlShutdown_fn)symbol(lib, "nvmlShutdown");
    nvml->get_count = (nvmlDeviceGetCount_v2_fn)symbol(lib, "nvmlDeviceGetCount_v2");
    nvml->get_handle = (nvmlDeviceGetHandleByIndex_v2_fn)symbol(lib, "nvmlDeviceGetHandleByIndex_v2");
    nvml->get_field_values = (nvmlDeviceGetFieldValues_fn)symbol(lib, "nvmlDeviceGetFieldValues");
    nvml->get_power_usage = (nvmlDeviceGetPowerUsage_fn)symbol(lib, "nvmlDeviceGetPowerUsage");
    nvml->get_clock_info = (nvmlDeviceGetClockInfo_fn)symbol(lib, "nvmlDeviceGetClockInfo");
    nvml->get_utilization = (nvmlDeviceGetUtilizationRates_fn)symbol(lib, "nvmlDeviceGetUtilizationRates");
    nvml->get_temperature = (nvmlDeviceGetTemperature_fn)symbol(lib, "nvmlDeviceGetTemperature");
    nvml->get_event_reasons =
        (nvmlDeviceGetCurrentClocksEventReasons_fn)symbol(lib, "nvmlDeviceGetCurrentClocksEventReasons");
}

/* Instant power in mW (field 186); non-zero when the call or the field failed. */
static nvmlReturn_t instant_power(const struct nvml *nvml, nvmlDevice_t handle, unsigned int *mw) {
    nvmlFieldValue_t field;
    memset(&field, 0, sizeof(field));
    field.fieldId = NVML_FI_DEV_POWER_INSTANT;
    nvmlReturn_t code = nvml->get_field_values(handle, 1, &field);
    if (code != NVML_SUCCESS)
        return code;
    *mw = field.value.uiVal;
    return field.nvmlReturn;
}

/* One fast-loop sample of a GPU; the number of reads that failed. */
static int read_gpu(const struct nvml *nvml, nvmlDevice_t handle, int instant) {
    struct reading r;
    nvmlUtilization_t util = {0, 0};
    int failed = 0;
    r.t_ns = clock_ns(CLOCK_MONOTONIC);
    failed += (instant ? instant_power(nvml, handle, &r.power_mw)
                       : nvml->get_power_usage(handle, &r.power_mw)) != NVML_SUCCESS;
    failed += nvml->get_clock_info(handle, NVML_CLOCK_SM, &r.sm_mhz) != NVML_SUCCESS;
    failed += nvml->get_clock_info(handle, NVML_CLOCK_MEM, &r.mem_mhz) != NVML_SUCCESS;
    failed += nvml->get_utilization(handle, &util) != NVML_SUCCESS;
    r.util_pct = util.gpu;
    failed += nvml->get_temperature(handle, NVML_TEMPERATURE_GPU, &r.temp_c) != NVML_SUCCESS;
    failed += nvml->get_event_reasons(handle, &r.reasons) != NVML_SUCCESS;
    sink.t_ns = r.t_ns;
    sink.reasons = r.reasons;
    sink.power_mw = r.power_mw;
    sink.sm_mhz = r.sm_mhz;
    sink.mem_mhz = r.mem_mhz;
    sink.util_pct = r.util_pct;
    sink.temp_c = r.temp_c;
    return failed;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc - 3 > MAX_GPUS) {
        fprintf(stderr, "usage: %s LIBRARY SECONDS GPU [GPU ...] (at most %d GPUs)\n", argv[0], MAX_GPUS);
        return 2;
    }
    double seconds = atof(argv[2]);
    int n_gpus = argc - 3;
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        fail("cannot load NVML library", dlerror(), NVML_ERROR_LIBRARY_NOT_FOUND);
    struct nvml nvml;
    resolve(&nvml, lib);
    nvmlReturn_t code = nvml.init();
    if (code != NVML_SUCCESS)
        fail("nvmlInit_v2 failed", "", code);
    unsigned int count = 0;
    nvml.get_count(&count);
    nvmlDevice_t handles[MAX_GPUS];
    int instant[MAX_GPUS];
    for (int i = 0; i < n_gpus; i++) {
        unsigned int index = (unsigned int)atoi(argv[3 + i]);
        if (index >= count)
            fail("no such GPU", argv[3 + i], NVML_ERROR_NOT_FOUND);
        code = nvml.get_handle(index, &handles[i]);
        if (code != NVML_SUCCESS)
            fail("nvmlDeviceGetHandleByIndex_v2 failed", argv[3 + i], code);
        unsigned int mw;
        instant[i] = instant_power(&nvml, handles[i], &mw) == NVML_SUCCESS;
    }
    for (int warm = 0; warm < 100; warm++)
        for (int i = 0; i < n_gpus; i++)
            read_gpu(&nvml, handles[i], instant[i]);

    long long failed = 0, iterations = 0;
    long long wall0 = clock_ns(CLOCK_MONOTONIC);
    long long end = wall0 + (long long)(seconds * 1e9);
    long long cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    do {
        for (int i = 0; i < n_gpus; i++)
            failed += read_gpu(&nvml, handles[i], instant[i]);
        iterations++;
    } while (sink.t_ns < end);
    long long cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    long long wall_ns = clock_ns(CLOCK_MONOTONIC) - wall0;
    nvml.shutdown();

    long long samples = iterations * n_gpus;
    printf("{\"gpus\": %d, \"iterations\": %lld, \"samples\": %lld, \"cpu_ns\": %lld, "
           "\"wall_ns\": %lld, \"failed_reads\": %lld, \"instant_power\": %d, \"us_per_sample\": %.4f}\n",
           n_gpus, iterations, samples, cpu_ns, wall_ns, failed, instant[0],
           samples ? cpu_ns / 1000.0 / samples : 0.0);
    return 0;
}
