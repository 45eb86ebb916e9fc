/* Test-only declarations live in include/keel_grown.h; this file gives the target a source. */
#include "keel_grown.h"
_Static_assert(sizeof(keel_route_grown) == sizeof(keel_route) + 8, "the grown route is the 1.0 route plus one field");

#include <stdio.h>

typedef struct test_echo_v1 {
    uint32_t struct_size;
    int (*echo)(keel_str x, char *out, size_t cap);
} test_echo_v1;

static int host_echo(keel_str x, char *out, size_t cap) {
    return snprintf(out, cap, "tag=host echo=%.*s", (int)x.len, x.ptr ? x.ptr : "");
}

static const test_echo_v1 host_echo_table = { sizeof(test_echo_v1), host_echo };

const void *keel_test_host_echo_table(void) { return &host_echo_table; }
