/* A test plugin for "keel.services/1" (ABI 1.1), built with cc and -D switches.
 * Interface "test.echo/1" (table test_echo_v1 below) is what providers provide and consumers consume.
 *   PLUGIN_ID, TAG                  the descriptor id, and a tag in every answer ("tag=<TAG>")
 * Provider switches (PROVIDER defined):
 *   PROVIDE_ID                      the interface id passed to provide (default "test.echo/1")
 *   PROVIDE_TWICE                   provide the same interface twice
 *   NO_PROVIDE                      register no table (the manifest still declares it)
 *   TABLE_SIZE                      the table's struct_size (default sizeof(test_echo_v1))
 *   CALL_SLEEP_US                   echo sleeps this long, so that calls overlap switches
 *   CRASH_IN_CALL                   echo faults when asked for "crash"
 *   UNLOAD_SAFE                     the descriptor sets KEEL_PLUGIN_FLAG_UNLOAD_SAFE (a lazy one may go idle again)
 * Consumer switches (CONSUMER defined):
 *   ACQUIRE_ID                      the interface id passed to acquire (default "test.echo")
 *   LISTEN_ID                       the interface id passed to listen (default ACQUIRE_ID)
 *   MIN_SIZE                        min_size passed to acquire (default sizeof(test_echo_v1))
 *   NO_RELEASE                      /call never releases its lease (a leak)
 *   FORGE                           adds GET /forge: describes and releases the handles 16, 32, ... 65536 (the first
 *                                   numbers a counting host would hand out) and answers "guessed=<n described>"
 *   ACQUIRE_AFTER_MS                /call sleeps this long before it acquires (a call in flight when a disable starts)
 *   DOUBLE_RELEASE                  /call releases its lease twice, and a made-up one
 *   STALE_RELEASE                   /call, after its release, leases again and releases the first (stale) handle
 *                                   once more; its answer ends " second=ok" while the second lease is still held
 *   Routes: GET /call?x  acquire for the caller's tenant, echo(x), describe, release; answers
 *                        "<echo answer> provider=<id> gen=<generation> v=<major.minor.patch>", or 503 "status=<n>"
 *           GET /heard   "notes=<n> last=<provider id or none>[@tenant]" from the listener
 *           GET /dead    "dead=<n>": calls a provider answered as deactivated (must stay 0)
 */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#ifndef PLUGIN_ID
#define PLUGIN_ID "svc"
#endif
#ifndef TAG
#define TAG "-"
#endif

/* The interface "test.echo/1", as its owner would publish it in test_echo.h. */
typedef struct test_echo_v1 {
    uint32_t struct_size;
    /* Writes "<TAG> echo=<x>" into out; returns its length, or -1 when the provider was already deactivated. */
    int (*echo)(keel_str x, char *out, size_t cap);
} test_echo_v1;

static const keel_host *the_host;

#ifdef PROVIDER
#ifndef PROVIDE_ID
#define PROVIDE_ID "test.echo/1"
#endif
#ifndef TABLE_SIZE
#define TABLE_SIZE sizeof(test_echo_v1)
#endif
static atomic_int deactivated;

static int echo(keel_str x, char *out, size_t cap) {
#ifdef CRASH_IN_CALL
    if (x.len == 5 && memcmp(x.ptr, "crash", 5) == 0) *(volatile int *)0 = 1;
#endif
#ifdef CALL_SLEEP_US
    struct timespec ts = { 0, CALL_SLEEP_US * 1000L };
    nanosleep(&ts, NULL);
#endif
    if (atomic_load(&deactivated)) return -1;
    return snprintf(out, cap, "tag=" TAG " echo=%.*s", (int)x.len, x.ptr ? x.ptr : "");
}

static const test_echo_v1 table __attribute__((unused)) = { TABLE_SIZE, echo };
#endif

#ifdef CONSUMER
#ifndef ACQUIRE_ID
#define ACQUIRE_ID "test.echo"
#endif
#ifndef LISTEN_ID
#define LISTEN_ID ACQUIRE_ID
#endif
#ifndef MIN_SIZE
#define MIN_SIZE sizeof(test_echo_v1)
#endif
static const keel_host_services *services;
static keel_ctx *the_ctx;
static atomic_int notes, dead;
static char last[128] = "none";

static void changed(void *ud, keel_str id, keel_str tenant, const keel_service_info *now) {
    (void)ud; (void)id;
    atomic_fetch_add(&notes, 1);
    if (now) snprintf(last, sizeof last, "%.*s%s%.*s", (int)now->provider_id.len, now->provider_id.ptr,
                      tenant.len ? "@" : "", (int)tenant.len, tenant.ptr ? tenant.ptr : "");
    else snprintf(last, sizeof last, "none%s%.*s", tenant.len ? "@" : "", (int)tenant.len, tenant.ptr ? tenant.ptr : "");
}

static keel_status answer(keel_http_response *res, int status, const char *text, int n) {
    res->set_status(res, (uint32_t)status);
    return res->write(res, text, (size_t)n);
}

static keel_status call(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    char buf[512];
    keel_service_lease *lease = NULL;
    const void *t = NULL;
#ifdef ACQUIRE_AFTER_MS
    struct timespec pause = { ACQUIRE_AFTER_MS / 1000, (ACQUIRE_AFTER_MS % 1000) * 1000000L };
    nanosleep(&pause, NULL);
#endif
    keel_status st = services->acquire(the_ctx, keel_cstr(ACQUIRE_ID), req->principal->tenant, MIN_SIZE, &lease, &t);
    if (st != KEEL_OK) return answer(res, 503, buf, snprintf(buf, sizeof buf, "status=%d", st));
    const test_echo_v1 *echo = (const test_echo_v1 *)t;
    int n = echo->echo(req->query, buf, sizeof buf);
    if (n < 0) {
        atomic_fetch_add(&dead, 1);
        services->release(lease);
        return answer(res, 500, "dead", 4);
    }
    keel_service_info info;
    info.struct_size = sizeof info;
    services->describe(lease, &info);
    n += snprintf(buf + n, sizeof buf - (size_t)n, " provider=%.*s gen=%llu v=%u.%u.%u", (int)info.provider_id.len,
                  info.provider_id.ptr, (unsigned long long)info.generation, info.version.major, info.version.minor,
                  info.version.patch);
#ifndef NO_RELEASE
    services->release(lease);
#endif
#ifdef DOUBLE_RELEASE
    services->release(lease);
    services->release((keel_service_lease *)(uintptr_t)0x1234);
#endif
#ifdef STALE_RELEASE
    {
        keel_service_lease *second = NULL;
        const void *t2 = NULL;
        if (services->acquire(the_ctx, keel_cstr(ACQUIRE_ID), req->principal->tenant, MIN_SIZE, &second, &t2) == KEEL_OK) {
            services->release(lease); /* stale: must not end the second lease */
            keel_service_info again;
            again.struct_size = sizeof again;
            n += snprintf(buf + n, sizeof buf - (size_t)n, " second=%s",
                          services->describe(second, &again) == KEEL_OK ? "ok" : "lost");
            services->release(second);
        }
    }
#endif
    return answer(res, 200, buf, n);
}

#ifdef FORGE
/* A hostile consumer: reads and ends leases it never acquired, by guessing their handles. */
static keel_status forge(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    char buf[64];
    keel_service_info info;
    int guessed = 0;
    for (uintptr_t i = 1; i <= 4096; i++) {
        info.struct_size = sizeof info;
        if (services->describe((keel_service_lease *)(i << 4), &info) == KEEL_OK) guessed++;
        services->release((keel_service_lease *)(i << 4));
    }
    return answer(res, 200, buf, snprintf(buf, sizeof buf, "guessed=%d", guessed));
}
#endif

static keel_status heard(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    char buf[256];
    return answer(res, 200, buf, snprintf(buf, sizeof buf, "notes=%d last=%s", atomic_load(&notes), last));
}

static keel_status deadcount(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    char buf[64];
    return answer(res, 200, buf, snprintf(buf, sizeof buf, "dead=%d", atomic_load(&dead)));
}
#endif

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    the_host = host;
#ifdef ACTIVATE_FAILS
    host->set_error(ctx, keel_cstr("the provider's backend is down"));
    return KEEL_ERR_UNAVAILABLE;
#endif
#ifdef PROVIDER
    const keel_host_services *s = (const keel_host_services *)host->get_service(ctx, keel_cstr(KEEL_SERVICE_SERVICES));
    if (!s) return KEEL_ERR_UNSUPPORTED;
#ifndef NO_PROVIDE
    keel_service_provision p = { sizeof p, KEEL_STR(PROVIDE_ID), &table };
    keel_status st = s->provide(ctx, &p);
    if (st != KEEL_OK) return st;
#ifdef PROVIDE_TWICE
    st = s->provide(ctx, &p);
    if (st != KEEL_OK) return st;
#endif
#endif
#endif
#ifdef CONSUMER
    the_ctx = ctx;
    services = (const keel_host_services *)host->get_service(ctx, keel_cstr(KEEL_SERVICE_SERVICES));
    const keel_host_http *http = (const keel_host_http *)host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    if (!services || !http) return KEEL_ERR_UNSUPPORTED;
    keel_service_listener l = { sizeof l, KEEL_STR(LISTEN_ID), changed, NULL };
    keel_status ls = services->listen(ctx, &l);
    if (ls != KEEL_OK) return ls;
    keel_route routes[] = {
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/call"), call, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/heard"), heard, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/dead"), deadcount, NULL },
#ifdef FORGE
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/forge"), forge, NULL },
#endif
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        keel_status rs = http->register_route(ctx, &routes[i]);
        if (rs != KEEL_OK) return rs;
    }
#endif
    return KEEL_OK;
}

static keel_status deactivate(const keel_host *host, keel_ctx *ctx) {
    (void)host; (void)ctx;
#ifdef PROVIDER
    atomic_store(&deactivated, 1);
#endif
    return KEEL_OK;
}

#ifdef UNLOAD_SAFE
#define PLUGIN_FLAGS KEEL_PLUGIN_FLAG_UNLOAD_SAFE
#else
#define PLUGIN_FLAGS 0
#endif
static const keel_plugin plugin = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR(PLUGIN_ID), KEEL_STR("1.0.0"), PLUGIN_FLAGS, activate, deactivate, NULL,
};
KEEL_PLUGIN_ENTRY(plugin)
