#pragma once
#include <keel/keel.h>

int keel_bench_add(int a, int b);
keel_status keel_bench_ping(void *user_data, const keel_http_request *req, keel_http_response *res);
const keel_plugin *keel_bench_descriptor(void);
