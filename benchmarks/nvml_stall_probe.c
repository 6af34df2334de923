/* Read-only probe of NVML call durations: which fast-loop reads stall, how long, how often, and whether a
 * stall in one thread's call holds up the instant-power read in another thread.
 *
 * Usage: nvml_stall_probe LIBRARY GPU SECONDS
 *
 * Prints one JSON object: for each read, its duration statistics when called back to back alone, and the
 * instant-power read's statistics while a second thread calls that read. Built and run by
 * benchmarks/nvml_call_probe.py; it never changes GPU settings.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpuprof_nvml.h"

#define MAX_CALLS 4000000
#define STALL_NS 1000000LL

static nvmlDeviceGetFieldValues_fn get_field_values;
static nvmlDeviceGetPowerUsage_fn get_power_usage;
static nvmlDeviceGetClockInfo_fn get_clock_info;
static nvmlDeviceGetUtilizationRates_fn get_utilization;
static nvmlDeviceGetTemperature_fn get_temperature;
static nvmlDeviceGetCurrentClocksEventReasons_fn get_event_reasons;
static nvmlDevice_t device;
static volatile unsigned long long sink;

static const char *NAMES[] = {"power_field_186", "power_usage", "sm_clock",           "mem_clock",
                              "utilization",     "temperature", "clock_event_reasons"};
#define KINDS 7

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Makes one read of the given kind. */
static void read_once(int kind) {
    nvmlFieldValue_t field;
    nvmlUtilization_t util;
    unsigned int value = 0;
    unsigned long long reasons = 0;
    switch (kind) {
    case 0:
        memset(&field, 0, sizeof(field));
        field.fieldId = NVML_FI_DEV_POWER_INSTANT;
        get_field_values(device, 1, &field);
        value = field.value.uiVal;
        break;
    case 1: get_power_usage(device, &value); break;
    case 2: get_clock_info(device, NVML_CLOCK_SM, &value); break;
    case 3: get_clock_info(device, NVML_CLOCK_MEM, &value); break;
    case 4: get_utilization(device, &util); value = util.gpu; break;
    case 5: get_temperature(device, NVML_TEMPERATURE_GPU, &value); break;
    default: get_event_reasons(device, &reasons); break;
    }
    sink += value + reasons;
}

struct run {
    int kind;
    double seconds;
    volatile int *stop;
    long long *start_ns, *dur_ns;
    long n;
};

/* Calls one read back to back until the time is up or *stop is set, recording start and duration. */
static void *loop(void *arg) {
    struct run *run = arg;
    long long end = now_ns() + (long long)(run->seconds * 1e9);
    run->n = 0;
    while (run->n < MAX_CALLS && now_ns() < end && !(run->stop && *run->stop)) {
        long long t0 = now_ns();
        read_once(run->kind);
        run->start_ns[run->n] = t0;
        run->dur_ns[run->n] = now_ns() - t0;
        run->n++;
    }
    return NULL;
}

static int compare(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Prints the duration statistics of a run as a JSON object. */
static void report(struct run *run) {
    long long *sorted = malloc(sizeof(long long) * (size_t)(run->n ? run->n : 1));
    memcpy(sorted, run->dur_ns, sizeof(long long) * (size_t)run->n);
    qsort(sorted, (size_t)run->n, sizeof(long long), compare);
    long stalls = 0, periods = 0;
    long long stalled = 0, total = 0, last = -1, period_sum = 0;
    for (long i = 0; i < run->n; i++) {
        total += run->dur_ns[i];
        if (run->dur_ns[i] > STALL_NS) {
            stalls++;
            stalled += run->dur_ns[i];
            if (last >= 0) {
                period_sum += run->start_ns[i] - last;
                periods++;
            }
            last = run->start_ns[i];
        }
    }
    long n = run->n ? run->n : 1;
    printf("{\"calls\": %ld, \"p50_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.1f, \"stalls_over_1ms\": %ld, "
           "\"stall_mean_us\": %.1f, \"stall_period_mean_ms\": %.1f, \"share_of_time_stalled\": %.4f}",
           run->n, sorted[n / 2] / 1e3, sorted[(n * 99) / 100] / 1e3, sorted[n - 1] / 1e3, stalls,
           stalls ? stalled / 1e3 / stalls : 0.0, periods ? period_sum / 1e6 / periods : 0.0,
           total ? (double)stalled / total : 0.0);
    free(sorted);
}

static struct run make_run(int kind, double seconds) {
    struct run run = {kind, seconds, NULL, malloc(sizeof(long long) * MAX_CALLS),
                      malloc(sizeof(long long) * MAX_CALLS), 0};
    return run;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s LIBRARY GPU SECONDS\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    nvmlInit_v2_fn init = (nvmlInit_v2_fn)dlsym(lib, "nvmlInit_v2");
    nvmlDeviceGetHandleByIndex_v2_fn handle = (nvmlDeviceGetHandleByIndex_v2_fn)dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    get_field_values = (nvmlDeviceGetFieldValues_fn)dlsym(lib, "nvmlDeviceGetFieldValues");
    get_power_usage = (nvmlDeviceGetPowerUsage_fn)dlsym(lib, "nvmlDeviceGetPowerUsage");
    get_clock_info = (nvmlDeviceGetClockInfo_fn)dlsym(lib, "nvmlDeviceGetClockInfo");
    get_utilization = (nvmlDeviceGetUtilizationRates_fn)dlsym(lib, "nvmlDeviceGetUtilizationRates");
    get_temperature = (nvmlDeviceGetTemperature_fn)dlsym(lib, "nvmlDeviceGetTemperature");
    get_event_reasons = (nvmlDeviceGetCurrentClocksEventReasons_fn)dlsym(lib, "nvmlDeviceGetCurrentClocksEventReasons");
    if (!init || !handle || !get_field_values || !get_power_usage || !get_clock_info || !get_utilization ||
        !get_temperature || !get_event_reasons || init() != NVML_SUCCESS ||
        handle((unsigned)atoi(argv[2]), &device) != NVML_SUCCESS) {
        fprintf(stderr, "NVML could not be initialised\n");
        return 1;
    }
    double seconds = atof(argv[3]);
    printf("{\"alone\": {");
    for (int kind = 0; kind < KINDS; kind++) {
        struct run run = make_run(kind, seconds);
        loop(&run);
        printf("%s\"%s\": ", kind ? ", " : "", NAMES[kind]);
        report(&run);
    }
    printf("}, \"power_field_186_beside\": {");
    for (int kind = 1; kind < KINDS; kind++) {
        volatile int stop = 0;
        struct run other = make_run(kind, seconds + 1.0), power = make_run(0, seconds);
        other.stop = &stop;
        pthread_t thread;
        pthread_create(&thread, NULL, loop, &other);
        loop(&power);
        stop = 1;
        pthread_join(thread, NULL);
        printf("%s\"%s\": ", kind > 1 ? ", " : "", NAMES[kind]);
        report(&power);
    }
    printf("}}\n");
    return 0;
}
