/* Keel — a microkernel plugin host. Licensed under Apache-2.0.
 * A marker for the instruction-count gate (Scripts/icount.sh): callgrind runs with --dump-before=keel_bench_icount_mark,
 * so every call closes one measured phase. Out of line and with a side effect the compiler must keep. */
#include "bench_plugin.h"

static const char *volatile last_phase;

__attribute__((noinline)) void keel_bench_icount_mark(const char *phase) {
    last_phase = phase;
    __asm__ volatile("" ::: "memory");
}
