/* Test-only: keel_route as a later 1.x host might declare it. The ABI 1.0 fields, unchanged, then one more field at
 * the end (the only way a published struct may grow). The tests read a 1.0 plugin's route as this declaration. */
#pragma once
#include <keel/keel.h>

typedef struct keel_route_grown {
    uint32_t struct_size;
    keel_str method;
    keel_str path;
    keel_http_handler_fn handler;
    void *user_data;
    uint64_t added_in_a_later_minor; /* zero when the plugin's struct is a 1.0 one */
} keel_route_grown;

/* A table the host provides for interface "test.echo/1" (the layout of Fixtures/plugins/services.c): its echo answers
 * "tag=host echo=<x>". Static, valid for the life of the process. */
const void *keel_test_host_echo_table(void);
