/* Mapping the simulated GPUs' state file, the NVML session's refcount, and the writers' lock. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sim_model.h"
#include "sim_state.h"

#define STATE_ENV "GPUPROF_SIM_STATE"

/* Serializes this process's writers: flock() alone would not, its lock belongs to the open file. */
static pthread_mutex_t write_mutex = PTHREAD_MUTEX_INITIALIZER;
/* Guards the session refcount and mapping, and is held through each control access. */
static pthread_mutex_t session_mutex = PTHREAD_MUTEX_INITIALIZER;
static unsigned session_count;
static struct sim_map session_map;
static struct sim_map *session_active; /* read lock-free by every NVML call */

int64_t sim_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int sim_resolve_path(const char *requested, char *path, size_t size) {
    const char *env = getenv(STATE_ENV);
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (requested && *requested)
        snprintf(path, size, "%s", requested);
    else if (env && *env)
        snprintf(path, size, "%s", env);
    else if (runtime && *runtime)
        snprintf(path, size, "%s/gpuprof-sim.state", runtime);
    else
        return snprintf(path, size, "/tmp/gpuprof-sim-%u.state", (unsigned)geteuid()), 1;
    return 0;
}

static void lock_writers(int fd) {
    pthread_mutex_lock(&write_mutex);
    while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {
    }
}

static void unlock_writers(int fd) {
    flock(fd, LOCK_UN);
    pthread_mutex_unlock(&write_mutex);
}

/* Makes the sequence count odd: readers from now on retry until seq_leave. */
static void seq_enter(struct sim_shared *shared) {
    uint32_t seq = __atomic_load_n(&shared->seq, __ATOMIC_RELAXED);
    __atomic_store_n(&shared->seq, (seq + 1u) | 1u, __ATOMIC_RELAXED); /* odd even if a dead writer left it odd */
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void seq_leave(struct sim_shared *shared) {
    __atomic_store_n(&shared->seq, __atomic_load_n(&shared->seq, __ATOMIC_RELAXED) + 1u, __ATOMIC_RELEASE);
}

void sim_write_begin(struct sim_map *map) {
    lock_writers(map->fd);
    seq_enter(map->shared);
}

void sim_write_end(struct sim_map *map) {
    seq_leave(map->shared);
    unlock_writers(map->fd);
}

void sim_repair_stuck_writer(struct sim_map *map) {
    /* Live writers hold the lock, so an odd count seen while holding it was left by a dead writer. */
    lock_writers(map->fd);
    if (__atomic_load_n(&map->shared->seq, __ATOMIC_RELAXED) & 1u)
        seq_leave(map->shared);
    unlock_writers(map->fd);
}

static nvmlReturn_t from_errno(int err) {
    return (err == EACCES || err == EPERM || err == ELOOP || err == EROFS) ? NVML_ERROR_NO_PERMISSION
                                                                           : NVML_ERROR_OPERATING_SYSTEM;
}

static int header_ok(const struct sim_shared *shared) {
    return shared->magic == SIM_MAGIC && shared->layout_version == SIM_LAYOUT_VERSION &&
           shared->size == sizeof(struct sim_shared);
}

/* Gives a missing, short, foreign or corrupt state file the default GPUs. Called with the writers' lock. */
/* Whether a GPU's last change lies after now on CLOCK_MONOTONIC: the state outlived a reboot. */
static int from_before_boot(const struct sim_shared *shared) {
    if (shared->manual_clock_ns > 0)
        return 0;
    int64_t now = sim_monotonic_ns();
    for (unsigned i = 0; i < shared->gpu_count; i++) {
        const struct sim_gpu *gpu = &shared->gpus[i];
        /* A lock not yet in effect has its change point ahead by at most the lock latency. */
        if (gpu->segments[(gpu->segment_count - 1) % SIM_SEGMENTS].start_ns > now + gpu->timing.clock_lock_latency_ns)
            return 1;
    }
    return 0;
}

static nvmlReturn_t map_and_repair(struct sim_map *map) {
    struct stat st;
    if (fstat(map->fd, &st) != 0)
        return from_errno(errno);
    int fresh = st.st_size != (off_t)sizeof(struct sim_shared);
    if (fresh && (ftruncate(map->fd, 0) != 0 || ftruncate(map->fd, sizeof(struct sim_shared)) != 0))
        return from_errno(errno);
    void *mem = mmap(NULL, sizeof(struct sim_shared), PROT_READ | PROT_WRITE, MAP_SHARED, map->fd, 0);
    if (mem == MAP_FAILED)
        return from_errno(errno);
    map->shared = mem;
    if (fresh || !header_ok(map->shared) || !sim_state_valid(map->shared)) {
        static gpuprofSimConfig_t defaults; /* too large for the stack of a small thread; guarded by the lock */
        sim_default_config(&defaults);
        seq_enter(map->shared);
        sim_reset(map->shared, &defaults, sim_monotonic_ns());
        seq_leave(map->shared);
    } else if (from_before_boot(map->shared)) {
        /* CLOCK_MONOTONIC restarted (a reboot): the history is in the future. Like a real GPU after a
         * reboot, keep the configuration and start from idle, unlocked and at the default power limit. */
        static gpuprofSimConfig_t kept; /* too large for the stack of a small thread; guarded by the lock */
        memset(&kept, 0, sizeof(kept));
        kept.gpu_count = map->shared->gpu_count;
        kept.allow_unprivileged_control = map->shared->allow_unprivileged_control;
        for (unsigned i = 0; i < kept.gpu_count; i++)
            kept.gpus[i] = map->shared->gpus[i].config;
        seq_enter(map->shared);
        sim_reset(map->shared, &kept, sim_monotonic_ns());
        seq_leave(map->shared);
    } else if (map->shared->seq & 1u) {
        seq_leave(map->shared); /* its writer died mid-update */
    }
    return NVML_SUCCESS;
}

static nvmlReturn_t map_open(const char *requested, struct sim_map *map) {
    memset(map, 0, sizeof(*map));
    map->fd = -1;
    /* In world-writable /tmp another user could have planted the file, or a symlink in its place. */
    int shared_tmp = sim_resolve_path(requested, map->path, sizeof(map->path));
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (shared_tmp ? O_NOFOLLOW : 0);
    map->fd = open(map->path, flags, 0600);
    if (map->fd < 0)
        return from_errno(errno);
    struct stat st;
    nvmlReturn_t ret = NVML_SUCCESS;
    if (fstat(map->fd, &st) != 0)
        ret = from_errno(errno);
    else if (!S_ISREG(st.st_mode))
        ret = NVML_ERROR_OPERATING_SYSTEM;
    else if (shared_tmp && st.st_uid != geteuid())
        ret = NVML_ERROR_NO_PERMISSION;
    if (ret == NVML_SUCCESS) {
        map->dev = st.st_dev;
        map->ino = st.st_ino;
        lock_writers(map->fd);
        ret = map_and_repair(map);
        unlock_writers(map->fd);
    }
    if (ret != NVML_SUCCESS) {
        if (map->shared)
            munmap(map->shared, sizeof(struct sim_shared));
        close(map->fd);
        map->shared = NULL;
        map->fd = -1;
    }
    return ret;
}

static void map_close(struct sim_map *map) {
    if (map->shared)
        munmap(map->shared, sizeof(struct sim_shared));
    if (map->fd >= 0)
        close(map->fd);
    map->shared = NULL;
    map->fd = -1;
}

nvmlReturn_t sim_session_init(void) {
    nvmlReturn_t ret = NVML_SUCCESS;
    pthread_mutex_lock(&session_mutex);
    if (session_count == 0) {
        /* The environment is read here, so each init can pick a different state file. */
        ret = map_open(NULL, &session_map);
        if (ret == NVML_SUCCESS)
            __atomic_store_n(&session_active, &session_map, __ATOMIC_RELEASE);
    }
    if (ret == NVML_SUCCESS)
        session_count++;
    pthread_mutex_unlock(&session_mutex);
    return ret;
}

nvmlReturn_t sim_session_shutdown(void) {
    nvmlReturn_t ret = NVML_SUCCESS;
    pthread_mutex_lock(&session_mutex);
    if (session_count == 0) {
        ret = NVML_ERROR_UNINITIALIZED;
    } else if (--session_count == 0) {
        __atomic_store_n(&session_active, NULL, __ATOMIC_RELEASE);
        map_close(&session_map);
    }
    pthread_mutex_unlock(&session_mutex);
    return ret;
}

struct sim_map *sim_session(void) { return __atomic_load_n(&session_active, __ATOMIC_ACQUIRE); }

/* Whether `requested` names the file the session mapped (any spelling of its path). */
static int is_session_file(const char *requested) {
    if (session_count == 0)
        return 0;
    if (!requested || !*requested)
        return 1;
    struct stat st;
    return stat(requested, &st) == 0 && st.st_dev == session_map.dev && st.st_ino == session_map.ino;
}

void sim_session_path(const char *requested, char *path, size_t size) {
    pthread_mutex_lock(&session_mutex);
    if (session_count && !(requested && *requested))
        snprintf(path, size, "%s", session_map.path);
    else
        sim_resolve_path(requested, path, size);
    pthread_mutex_unlock(&session_mutex);
}

nvmlReturn_t sim_access_begin(const char *requested, struct sim_access *access) {
    pthread_mutex_lock(&session_mutex);
    if (is_session_file(requested)) {
        access->map = &session_map;
        return NVML_SUCCESS;
    }
    nvmlReturn_t ret = map_open(requested, &access->own);
    if (ret != NVML_SUCCESS) {
        pthread_mutex_unlock(&session_mutex);
        return ret;
    }
    access->map = &access->own;
    return NVML_SUCCESS;
}

void sim_access_end(struct sim_access *access) {
    if (access->map == &access->own)
        map_close(&access->own);
    access->map = NULL;
    pthread_mutex_unlock(&session_mutex);
}
