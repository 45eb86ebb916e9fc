/* Keel — a microkernel plugin host. Licensed under Apache-2.0. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <malloc.h>
#include "keel_system.h"
#include <string.h>

int keel_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING); }

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

int keel_open_beneath(const char *root, const char *relative) {
#ifdef SYS_openat2
    int dir = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return -1;
    struct open_how how = {
        /* O_NONBLOCK: a FIFO there is found by the caller's fstat, not waited on (a regular file ignores it). */
        .flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    int fd = (int)syscall(SYS_openat2, dir, relative, &how, sizeof how);
    int saved = errno;
    close(dir);
    errno = saved;
    return fd;
#else
    (void)root; (void)relative;
    errno = ENOSYS;
    return -1;
#endif
}

int keel_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

#include <zlib.h>

size_t keel_gzip(const uint8_t *in, size_t len, uint8_t *out, size_t cap) {
    z_stream z;
    memset(&z, 0, sizeof z);
    /* 15 + 16: a gzip header and trailer around the deflate stream. */
    if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return 0;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int r = deflate(&z, Z_FINISH);
    size_t n = z.total_out;
    deflateEnd(&z);
    return r == Z_STREAM_END ? n : 0;
}

int keel_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int keel_slots_enter(uint64_t *slots, int count, uint64_t now, uint64_t stuck_before, int stuck_limit, int max_in_flight) {
    /* slots[0] counts the calls in flight; the stuck ones are counted only when enough others run to be. */
    uint64_t others = __atomic_fetch_add(&slots[0], 1, __ATOMIC_ACQ_REL);
    if (others >= (uint64_t)max_in_flight) {
        __atomic_fetch_sub(&slots[0], 1, __ATOMIC_ACQ_REL);
        return -3;
    }
    if (others >= (uint64_t)stuck_limit) {
        int stuck = 0;
        for (int i = 1; i <= count; i++) {
            uint64_t started = __atomic_load_n(&slots[i], __ATOMIC_RELAXED);
            if (started != 0 && started < stuck_before) stuck++;
        }
        if (stuck >= stuck_limit) {
            __atomic_fetch_sub(&slots[0], 1, __ATOMIC_ACQ_REL);
            return -2;
        }
    }
    for (int i = 1; i <= count; i++) {
        uint64_t expected = 0;
        if (__atomic_load_n(&slots[i], __ATOMIC_RELAXED) == 0
            && __atomic_compare_exchange_n(&slots[i], &expected, now, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) return i;
    }
    return -1;
}

void keel_slots_leave(uint64_t *slots, int index) {
    if (index > 0) __atomic_store_n(&slots[index], 0, __ATOMIC_RELEASE);
    __atomic_fetch_sub(&slots[0], 1, __ATOMIC_RELEASE);
}

int keel_return_large_blocks(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The pids listed in `path` (one per line), into a buffer the caller frees; -1 when it cannot be read. */
static long listed_pids(const char *path, pid_t **out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t cap = 4096, used = 0;
    char *text = malloc(cap + 1);
    if (!text) { close(fd); return -1; }
    for (;;) {
        if (used == cap) {
            char *grown = cap < (1u << 24) ? realloc(text, cap * 2 + 1) : NULL;
            if (!grown) { free(text); close(fd); return -1; }
            text = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, text + used, cap - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { free(text); close(fd); return -1; }
        if (n == 0) break;
        used += (size_t)n;
    }
    close(fd);
    text[used] = 0;
    long count = 0;
    pid_t *pids = malloc(sizeof(pid_t) * (used / 2 + 1));
    if (!pids) { free(text); return -1; }
    for (char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) { p++; continue; }
        if (v > 0) pids[count++] = (pid_t)v;
        p = end;
    }
    free(text);
    *out = pids;
    return count;
}

static int compare_pids(const void *a, const void *b) {
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

int keel_cgroup_kill_members(const char *procs) {
    pid_t *before = NULL, *after = NULL;
    long n = listed_pids(procs, &before);
    if (n < 0) return -1;
    int *fds = malloc(sizeof(int) * (size_t)(n + 1));
    if (!fds) { free(before); return -1; }
    int no_pidfd = 0;
    for (long i = 0; i < n; i++) {
        fds[i] = (int)syscall(SYS_pidfd_open, before[i], 0);
        /* Not there (before Linux 5.3) or refused (a container's seccomp profile answers EPERM for calls it does
         * not know): signalled by number below. ESRCH: the process has ended. */
        if (fds[i] < 0 && errno != ESRCH) no_pidfd = 1;
    }
    /* Listed again now that each is held: one still listed is the member it was (a pidfd cannot change process). */
    long m = listed_pids(procs, &after);
    if (m < 0) {
        int saved = errno;
        for (long i = 0; i < n; i++) if (fds[i] >= 0) close(fds[i]);
        free(fds);
        free(before);
        errno = saved;
        return -1;
    }
    qsort(after, (size_t)m, sizeof(pid_t), compare_pids);
    int signalled = 0;
    for (long i = 0; i < n; i++) {
        int member = bsearch(&before[i], after, (size_t)m, sizeof(pid_t), compare_pids) != NULL;
        if (fds[i] >= 0) {
            if (member && syscall(SYS_pidfd_send_signal, fds[i], SIGKILL, NULL, 0) == 0) signalled++;
            close(fds[i]);
        } else if (no_pidfd && member && kill(before[i], SIGKILL) == 0) {
            /* No pidfd_open (before Linux 5.3, or refused): a pid listed both times is a member now, whatever process
             * holds it, and is signalled by number; only one that ends and is reused within the next instant escapes. */
            signalled++;
        }
    }
    free(fds);
    free(before);
    free(after);
    return signalled;
}

__thread int32_t keel_host_refusal_last __attribute__((tls_model("initial-exec"))) = 0;
__thread uint8_t keel_host_refusal_response __attribute__((tls_model("initial-exec"))) = 0;
