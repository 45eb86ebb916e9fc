#pragma once
#include <keel/keel.h>

int keel_bench_add(int a, int b);
int keel_bench_call_loop(long n, int (*f)(int, int));
keel_status keel_bench_ping(void *user_data, const keel_http_request *req, keel_http_response *res);
const keel_plugin *keel_bench_descriptor(void);

/* Keeps thread `tid` of this process on CPU `cpu` (sched_setaffinity). Returns 0, or -1 with errno. */
int keel_bench_pin_thread(int tid, int cpu);

/* Closes one phase of the instruction-count run (Scripts/icount.sh dumps callgrind's counters on every call). */
void keel_bench_icount_mark(const char *phase);
