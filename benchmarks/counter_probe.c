/* Read-only probe of the energy counter: every read of it, back to back, with the call's start and end on
 * CLOCK_MONOTONIC and the thread CPU time it used; beside it, a second thread reads the instant-power field
 * (186), the clock-event reasons and, where NVML has it, the memory power (field 185, memory scope) at 1 kHz.
 *
 * Usage: counter_probe LIBRARY GPU SECONDS ENERGY_CSV POWER_CSV [MODE]
 *   MODE "energy" (default): nvmlDeviceGetTotalEnergyConsumption; "field": field 83 through
 *   nvmlDeviceGetFieldValues, with the field's timestamp and latencyUsec.
 * Writes the two CSV files and prints one JSON line of call statistics. Built and run by
 * benchmarks/counter_probe.py; it never changes GPU settings.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpuprof_nvml.h"

#define MAX_READS 200000
#define MAX_POWER 200000
#define FIELD_POWER_AVERAGE 185
#define SCOPE_MEMORY 2

static nvmlDeviceGetFieldValues_fn get_field_values;
static nvmlDeviceGetTotalEnergyConsumption_fn get_total_energy;
static nvmlDeviceGetCurrentClocksEventReasons_fn get_event_reasons;
static nvmlDevice_t device;
static volatile int stop;

struct energy_read {
    long long t_start, t_end, cpu_ns, field_ts_us, field_latency_us;
    unsigned long long mj;
    int ret;
};
struct power_read {
    long long t, t_reasons_end;
    unsigned mw, mem_mw;
    int mem_ret;
};
static struct energy_read reads[MAX_READS];
static struct power_read powers[MAX_POWER];
static int n_reads, n_powers, field_mode;

static long long clock_of(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *energy_thread(void *arg) {
    (void)arg;
    while (!stop && n_reads < MAX_READS) {
        struct energy_read *r = &reads[n_reads];
        long long cpu0 = clock_of(CLOCK_THREAD_CPUTIME_ID);
        r->t_start = clock_of(CLOCK_MONOTONIC);
        if (field_mode) {
            nvmlFieldValue_t field;
            memset(&field, 0, sizeof(field));
            field.fieldId = NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION;
            r->ret = get_field_values(device, 1, &field);
            if (r->ret == 0)
                r->ret = field.nvmlReturn;
            r->mj = field.value.ullVal;
            r->field_ts_us = field.timestamp;
            r->field_latency_us = field.latencyUsec;
        } else {
            r->ret = get_total_energy(device, &r->mj);
        }
        r->t_end = clock_of(CLOCK_MONOTONIC);
        r->cpu_ns = clock_of(CLOCK_THREAD_CPUTIME_ID) - cpu0;
        n_reads++;
    }
    return NULL;
}

static void *power_thread(void *arg) {
    (void)arg;
    long long next = clock_of(CLOCK_MONOTONIC);
    while (!stop && n_powers < MAX_POWER) {
        struct power_read *p = &powers[n_powers];
        nvmlFieldValue_t fields[2];
        memset(fields, 0, sizeof(fields));
        fields[0].fieldId = NVML_FI_DEV_POWER_INSTANT;
        fields[1].fieldId = FIELD_POWER_AVERAGE;
        fields[1].scopeId = SCOPE_MEMORY;
        p->t = clock_of(CLOCK_MONOTONIC);
        get_field_values(device, 2, fields);
        p->mw = fields[0].value.uiVal;
        p->mem_ret = fields[1].nvmlReturn;
        p->mem_mw = fields[1].value.uiVal;
        unsigned long long reasons = 0;
        get_event_reasons(device, &reasons);
        p->t_reasons_end = clock_of(CLOCK_MONOTONIC);
        n_powers++;
        next += 1000000LL;
        long long now = clock_of(CLOCK_MONOTONIC);
        if (next > now) {
            struct timespec ts = {next / 1000000000LL, next % 1000000000LL};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        } else {
            next = now;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: counter_probe LIBRARY GPU SECONDS ENERGY_CSV POWER_CSV [energy|field]\n");
        return 2;
    }
    field_mode = argc > 6 && strcmp(argv[6], "field") == 0;
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
        return 1;
    }
    nvmlInit_v2_fn init = (nvmlInit_v2_fn)dlsym(lib, "nvmlInit_v2");
    nvmlDeviceGetHandleByIndex_v2_fn get_handle =
        (nvmlDeviceGetHandleByIndex_v2_fn)dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    get_field_values = (nvmlDeviceGetFieldValues_fn)dlsym(lib, "nvmlDeviceGetFieldValues");
    get_total_energy = (nvmlDeviceGetTotalEnergyConsumption_fn)dlsym(lib, "nvmlDeviceGetTotalEnergyConsumption");
    get_event_reasons =
        (nvmlDeviceGetCurrentClocksEventReasons_fn)dlsym(lib, "nvmlDeviceGetCurrentClocksEventReasons");
    if (!init || init() != 0 || get_handle(atoi(argv[2]), &device) != 0) {
        fprintf(stderr, "NVML init or handle failed\n");
        return 1;
    }
    double seconds = atof(argv[3]);
    pthread_t e, p;
    pthread_create(&e, NULL, energy_thread, NULL);
    pthread_create(&p, NULL, power_thread, NULL);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    stop = 1;
    pthread_join(e, NULL);
    pthread_join(p, NULL);
    FILE *out = fopen(argv[4], "w");
    fprintf(out, "t_start_ns,t_end_ns,cpu_ns,energy_mj,ret,field_ts_us,field_latency_us\n");
    for (int i = 0; i < n_reads; i++)
        fprintf(out, "%lld,%lld,%lld,%llu,%d,%lld,%lld\n", reads[i].t_start, reads[i].t_end, reads[i].cpu_ns,
                reads[i].mj, reads[i].ret, reads[i].field_ts_us, reads[i].field_latency_us);
    fclose(out);
    out = fopen(argv[5], "w");
    fprintf(out, "t_ns,power_mw,memory_power_mw,memory_ret,reasons_end_ns\n");
    for (int i = 0; i < n_powers; i++)
        fprintf(out, "%lld,%u,%u,%d,%lld\n", powers[i].t, powers[i].mw, powers[i].mem_mw, powers[i].mem_ret,
                powers[i].t_reasons_end);
    fclose(out);
    printf("{\"energy_reads\": %d, \"power_reads\": %d}\n", n_reads, n_powers);
    return 0;
}
