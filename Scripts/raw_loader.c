/* The load benchmark's baselines, in plain C, for the libraries named on stdin (one path per line).
 *   raw_loader          dlopen, dlsym and call the entry of every file, and nothing else.
 *   raw_loader --copy   the same, plus the file work a safe host cannot skip: read the bundle's plugin.yaml (beside
 *                       the library), read the library, copy it into a memfd and open it through a one-use link.
 * Prints the elapsed nanoseconds, the number loaded, and the process's resident memory afterwards (KiB) and before
 * the first load (KiB): the footprint a plain C program pays for the same plugins. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char *slurp(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return NULL; }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (n < 0) { free(buf); return NULL; }
    *len = (size_t)n;
    return buf;
}

/* VmRSS of this process in KiB (0 when /proc cannot be read; its files report no size, so read into a buffer). */
static long rss_kib(void) {
    char status[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, status, sizeof status - 1);
    close(fd);
    if (n <= 0) return 0;
    status[n] = 0;
    const char *line = strstr(status, "VmRSS:");
    return line ? strtol(line + 6, NULL, 10) : 0;
}

int main(int argc, char **argv) {
    long bare = rss_kib();
    int copy = argc > 1 && strcmp(argv[1], "--copy") == 0;
    char path[4096], manifest[4096], link[256], target[64];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int loaded = 0;
    while (fgets(path, sizeof path, stdin)) {
        path[strcspn(path, "\n")] = 0;
        const char *open_path = path;
        int fd = -1;
        if (copy) {
            size_t mlen = 0, llen = 0;
            strcpy(manifest, path);
            snprintf(manifest, sizeof manifest, "%s/plugin.yaml", dirname(manifest));
            free(slurp(manifest, &mlen));
            char *image = slurp(path, &llen);
            if (!image) { fprintf(stderr, "%s: cannot read\n", path); return 1; }
            fd = memfd_create("raw", MFD_CLOEXEC);
            if (fd < 0 || write(fd, image, llen) != (ssize_t)llen) return 1;
            free(image);
            snprintf(target, sizeof target, "/proc/%d/fd/%d", getpid(), fd);
            snprintf(link, sizeof link, "/dev/shm/.raw-%d-%d.so", getpid(), loaded);
            if (symlink(target, link) != 0) return 1;
            open_path = link;
        }
        void *h = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
        if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        const void *(*entry)(void) = (const void *(*)(void))dlsym(h, "keel_plugin_entry");
        if (!entry || !entry()) return 1;
        if (copy) { unlink(link); close(fd); }
        loaded++;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%lld %d %ld %ld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec), loaded,
           rss_kib(), bare);
    return 0;
}
