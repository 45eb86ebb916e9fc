/* The benchmark plugin. The same source is built twice: into the benchmark binary (the "compiled into the host"
 * baseline) and, by Scripts/bench.sh, as a plugin .so (the Keel path). BENCH_ID and BENCH_TAG vary the plugin build. */
#define _POSIX_C_SOURCE 200809L
#include "bench_plugin.h"
#include <stdio.h>
#include <string.h>

#define KEEL_STR_EMPTY_VALUE ((keel_str){ NULL, 0 })

#ifndef BENCH_ID
#define BENCH_ID "bench"
#endif
#ifndef BENCH_TAG
#define BENCH_TAG "A"
#endif

/* A trivial function: the ABI call benchmark calls it through a function pointer into the plugin, and directly. */
KEEL_EXPORT int keel_bench_add(int a, int b) { return a + b; }

/* The ABI call benchmark's loop, built into every copy of the plugin: n calls of f, as the host's own loop makes them,
 * from code that lies among the loaded libraries instead of in the host's executable. Returns the sum of the results. */
KEEL_EXPORT int keel_bench_call_loop(long n, int (*f)(int, int)) {
    int sink = 0;
    for (long i = 0; i < n; i++) sink += f((int)i, 1);
    return sink;
}

/* GET /ping → "pong A\n" */
KEEL_EXPORT keel_status keel_bench_ping(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data; (void)req;
    return res->write(res, "pong " BENCH_TAG "\n", 7);
}

/* POST /add with {"args": [A, B]} → {"result": A+B}: the work of the command bench.add, as a route. */
static keel_status add_route(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data;
    long long a = 0, b = 0;
    const char *p = req->body ? memchr(req->body, '[', req->body_len) : NULL;
    if (!p) { res->set_status(res, 400); return KEEL_OK; }
    char buf[64];
    size_t n = req->body_len - (size_t)(p - (const char *)req->body);
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    if (sscanf(buf, "[%lld , %lld", &a, &b) != 2) { res->set_status(res, 400); return KEEL_OK; }
    int len = snprintf(buf, sizeof buf, "{\"result\":%d}", keel_bench_add((int)a, (int)b));
    res->add_header(res, keel_cstr("content-type"), keel_cstr("application/json"));
    return res->write(res, buf, (size_t)len);
}

/* Abstains on everything: three of them make the auth chain longer without changing its outcome. */
static keel_status abstain(void *ud, const keel_authz_request *q, keel_auth_decision *out) {
    (void)ud; (void)q;
    *out = KEEL_AUTH_ABSTAIN;
    return KEEL_OK;
}

/* Interface "bench.add/1": one function. BENCH_PROVIDER builds a provider of it, BENCH_CONSUMER a consumer. */
typedef struct bench_add_v1 {
    uint32_t struct_size;
    int (*add)(int a, int b);
} bench_add_v1;

#ifdef BENCH_PROVIDER
static const bench_add_v1 add_table = { sizeof(bench_add_v1), keel_bench_add };
#endif

#ifdef BENCH_CONSUMER
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static const keel_host_services *services;
static keel_ctx *consumer_ctx;

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* GET /call: acquire, one call, release: what a consumer does per request. */
static keel_status call(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    keel_service_lease *lease;
    const void *t;
    if (services->acquire(consumer_ctx, keel_cstr("bench.add"), req->principal->tenant, sizeof(bench_add_v1), &lease, &t) != KEEL_OK) {
        res->set_status(res, 503);
        return KEEL_OK;
    }
    int sum = ((const bench_add_v1 *)t)->add(2, 40);
    services->release(lease);
    return res->write(res, sum == 42 ? "42\n" : "??\n", 3);
}

/* GET /loop?N: N calls through a held lease's table, N through a plain function pointer to the same function, and
 * N/10 acquire+call+release; answers "lease=<ns> plain=<ns> acquire=<ns>" per call. */
static keel_status loop(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    char text[32] = { 0 };
    memcpy(text, req->query.ptr, req->query.len < 31 ? req->query.len : 31);
    long n = atol(text);
    if (n <= 0) n = 1000000;
    keel_service_lease *lease;
    const void *t;
    if (services->acquire(consumer_ctx, keel_cstr("bench.add"), KEEL_STR_EMPTY_VALUE, sizeof(bench_add_v1), &lease, &t) != KEEL_OK)
        return KEEL_ERR_NOT_FOUND;
    const bench_add_v1 *volatile table = t;
    int (*volatile plain)(int, int) = ((const bench_add_v1 *)t)->add;
    volatile int sink = 0;
    double a = seconds();
    for (long i = 0; i < n; i++) sink += table->add((int)i, 1);
    double b = seconds();
    for (long i = 0; i < n; i++) sink += plain((int)i, 1);
    double c = seconds();
    services->release(lease);
    long m = n / 10;
    double d = seconds();
    for (long i = 0; i < m; i++) {
        keel_service_lease *l;
        const void *tt;
        services->acquire(consumer_ctx, keel_cstr("bench.add"), KEEL_STR_EMPTY_VALUE, sizeof(bench_add_v1), &l, &tt);
        sink += ((const bench_add_v1 *)tt)->add((int)i, 1);
        services->release(l);
    }
    double e = seconds();
    char out[128];
    int len = snprintf(out, sizeof out, "lease=%.3f plain=%.3f acquire=%.3f", (b - a) / n * 1e9, (c - b) / n * 1e9, (e - d) / m * 1e9);
    return res->write(res, out, (size_t)len);
}
#endif

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    keel_route r = { sizeof r, KEEL_STR("GET"), KEEL_STR("/ping"), keel_bench_ping, NULL };
    keel_status s = http->register_route(ctx, &r);
    keel_route add = { sizeof add, KEEL_STR("POST"), KEEL_STR("/add"), add_route, NULL };
    if (s == KEEL_OK) s = http->register_route(ctx, &add);
#ifdef BENCH_PROVIDER
    const keel_host_services *svc = host->get_service(ctx, keel_cstr(KEEL_SERVICE_SERVICES));
    keel_service_provision p = { sizeof p, KEEL_STR("bench.add/1"), &add_table };
    if (s == KEEL_OK) s = svc->provide(ctx, &p);
#endif
#ifdef BENCH_CONSUMER
    consumer_ctx = ctx;
    services = host->get_service(ctx, keel_cstr(KEEL_SERVICE_SERVICES));
    keel_route rc = { sizeof rc, KEEL_STR("GET"), KEEL_STR("/call"), call, NULL };
    keel_route rl = { sizeof rl, KEEL_STR("GET"), KEEL_STR("/loop"), loop, NULL };
    if (s == KEEL_OK) s = http->register_route(ctx, &rc);
    if (s == KEEL_OK) s = http->register_route(ctx, &rl);
#endif
#ifdef BENCH_ROUTES
    /* The scaling plugin: 48 more routes, half of them with a parameter, so that each plugin has 50. */
    static char paths[48][24];
    for (int i = 0; i < 48 && s == KEEL_OK; i++) {
        int len = snprintf(paths[i], sizeof paths[i], i % 2 ? "/items/:id/v%d" : "/static/v%d", i);
        keel_route extra = { sizeof extra, KEEL_STR("GET"), { paths[i], (size_t)len }, keel_bench_ping, NULL };
        s = http->register_route(ctx, &extra);
    }
#endif
#ifdef BENCH_AUTHZ
    const keel_host_auth *auth = host->get_service(ctx, keel_cstr(KEEL_SERVICE_AUTH));
    keel_authorizer z = { sizeof z, KEEL_STR("abstain"), abstain, NULL };
    if (s == KEEL_OK) s = auth->register_authorizer(ctx, &z);
#else
    (void)abstain;
#endif
    return s;
}

#ifndef BENCH_FLAGS
#define BENCH_FLAGS 0
#endif
static const keel_plugin descriptor = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR(BENCH_ID), KEEL_STR("1.0.0"), BENCH_FLAGS, activate, NULL, NULL,
};

#ifdef BENCH_PLUGIN
KEEL_PLUGIN_ENTRY(descriptor)
#else
const keel_plugin *keel_bench_descriptor(void) { return &descriptor; }
#endif
