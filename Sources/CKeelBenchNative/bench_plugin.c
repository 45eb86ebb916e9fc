/* The benchmark plugin. The same source is built twice: into the benchmark binary (the "compiled into the host"
 * baseline) and, by Scripts/bench.sh, as a plugin .so (the Keel path). BENCH_ID and BENCH_TAG vary the plugin build. */
#include "bench_plugin.h"

#ifndef BENCH_ID
#define BENCH_ID "bench"
#endif
#ifndef BENCH_TAG
#define BENCH_TAG "A"
#endif

/* A trivial function: the ABI call benchmark calls it through a function pointer into the plugin, and directly. */
KEEL_EXPORT int keel_bench_add(int a, int b) { return a + b; }

/* GET /ping → "pong A\n" */
KEEL_EXPORT keel_status keel_bench_ping(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data; (void)req;
    return res->write(res, "pong " BENCH_TAG "\n", 7);
}

/* Abstains on everything: three of them make the auth chain longer without changing its outcome. */
static keel_status abstain(void *ud, const keel_authz_request *q, keel_auth_decision *out) {
    (void)ud; (void)q;
    *out = KEEL_AUTH_ABSTAIN;
    return KEEL_OK;
}

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    keel_route r = { sizeof r, KEEL_STR("GET"), KEEL_STR("/ping"), keel_bench_ping, NULL };
    keel_status s = http->register_route(ctx, &r);
#ifdef BENCH_AUTHZ
    const keel_host_auth *auth = host->get_service(ctx, keel_cstr(KEEL_SERVICE_AUTH));
    keel_authorizer z = { sizeof z, KEEL_STR("abstain"), abstain, NULL };
    if (s == KEEL_OK) s = auth->register_authorizer(ctx, &z);
#else
    (void)abstain;
#endif
    return s;
}

static const keel_plugin descriptor = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR(BENCH_ID), KEEL_STR("1.0.0"), 0, activate, NULL, NULL,
};

#ifdef BENCH_PLUGIN
KEEL_PLUGIN_ENTRY(descriptor)
#else
const keel_plugin *keel_bench_descriptor(void) { return &descriptor; }
#endif
