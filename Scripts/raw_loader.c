/* The load benchmark's baseline: dlopen, dlsym and call the entry of every file named on stdin, and nothing else.
 * Prints the elapsed nanoseconds. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int main(void) {
    char path[4096];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int loaded = 0;
    while (fgets(path, sizeof path, stdin)) {
        path[strcspn(path, "\n")] = 0;
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        const void *(*entry)(void) = (const void *(*)(void))dlsym(h, "keel_plugin_entry");
        if (!entry || !entry()) return 1;
        loaded++;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%lld %d\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec), loaded);
    return 0;
}
