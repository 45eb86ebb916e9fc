/* Keel — a microkernel plugin host. Licensed under Apache-2.0. CPU affinity for the benchmark (not for plugins). */
#define _GNU_SOURCE
#include <sched.h>
#include "bench_plugin.h"

int keel_bench_pin_thread(int tid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(tid, sizeof set, &set);
}
