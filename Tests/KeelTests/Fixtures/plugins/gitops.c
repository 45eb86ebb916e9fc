/* A test plugin for gitops.sync/1 across processes (Plugins/deployer/gitops_sync.h), built with cc and -D switches.
 *   PLUGIN_ID                      the descriptor id
 * PROVIDER: provides gitops.sync/1 with engine "ENGINE" (default "fixture"); sync writes
 *   "<engine> synced <app> to <revision>", and faults when app is "crash".
 * CONSUMER: GET /sync/:app?cap=N acquires gitops.sync for the caller's tenant and calls sync(app, "main") with a
 *   buffer of N bytes (default 256, at most 256); answers 200 "<line> engine=<engine>" or 502
 *   "status=<n> len=<out_len> engine=<engine>", or 503 "acquire=<n>" when acquire failed.
 *   RAW_FRAMES (in a worker): GET /raw writes a serviceRelease and a serviceInvoke frame for lease 1, which it does
 *   not hold, to the host itself, and answers "sent".
 *   FORGE_ANSWERS (a provider in a worker): sync of app "forge" first writes, to the host itself, a serviceResult
 *   frame for every call id from 1 to 512 (the host's call is among them) claiming KEEL_OK with 1,000 bytes of 'X',
 *   more than any caller's buffer here; then answers as usual.
 *   FANOUT=N (a consumer): GET /fan acquires once, then calls sync("fan", "main") from N threads at once and answers
 *   "ok=<n> unavailable=<n> other=<n>" (in a worker: more host calls at once than the host admits).
 *   SYNC_SLEEP_MS=N (a provider): sync sleeps N milliseconds first.
 * The consumer's buffer is followed by a canary: a host that wrote past out_cap would show as "canary=broken". */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "gitops_sync.h"

#ifndef PLUGIN_ID
#define PLUGIN_ID "gitops"
#endif
#ifndef ENGINE
#define ENGINE "fixture"
#endif

#ifdef PROVIDER
static keel_str engine(void) { return keel_cstr(ENGINE); }

#ifdef FORGE_ANSWERS
static void forge_answers(void) {
    enum { BYTES = 1000, SIZE = 4 + 1 + 8 + 4 + 4 + 1 + 8 + 8 + 4 + BYTES };
    static unsigned char frame[SIZE];
    for (uint64_t id = 1; id <= 512; id++) {
        unsigned char *p = frame;
        uint32_t len = SIZE - 4;
        for (int i = 0; i < 4; i++) *p++ = (unsigned char)(len >> (8 * i));
        *p++ = 28;                                              /* serviceResult */
        for (int i = 0; i < 8; i++) *p++ = (unsigned char)(id >> (8 * i));
        for (int i = 0; i < 8; i++) *p++ = 0;                   /* outcome: KEEL_OK, no message */
        *p++ = 0;                                               /* outcome: not a refusal passed on */
        for (int i = 0; i < 8; i++) *p++ = 0;                   /* value: the status KEEL_OK */
        for (int i = 0; i < 8; i++) *p++ = (unsigned char)((uint64_t)BYTES >> (8 * i)); /* length */
        for (int i = 0; i < 4; i++) *p++ = (unsigned char)((uint32_t)BYTES >> (8 * i));
        memset(p, 'X', BYTES);
        /* Every byte, waiting while the host's end is full (the socket may not block). */
        for (size_t done = 0; done < SIZE;) {
            ssize_t n = write(0, frame + done, SIZE - done);
            if (n > 0) { done += (size_t)n; continue; }
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) { struct pollfd w = { 0, POLLOUT, 0 }; poll(&w, 1, 1000); continue; }
            return;
        }
    }
}
#endif

static keel_status sync_app(keel_str app, keel_str revision, char *out, size_t out_cap, size_t *out_len) {
    if (!out_len || (!out && out_cap) || !app.len) return KEEL_ERR_INVALID_ARGUMENT;
#ifdef SYNC_SLEEP_MS
    struct timespec pause = { SYNC_SLEEP_MS / 1000, (SYNC_SLEEP_MS % 1000) * 1000000L };
    nanosleep(&pause, NULL);
#endif
#ifdef FORGE_ANSWERS
    if (app.len == 5 && memcmp(app.ptr, "forge", 5) == 0) forge_answers();
#endif
    if (app.len == 5 && memcmp(app.ptr, "crash", 5) == 0) *(volatile int *)0 = 1;
    char line[512];
    int n = snprintf(line, sizeof line, ENGINE " synced %.*s to %.*s", (int)app.len, app.ptr,
                     revision.len ? (int)revision.len : 4, revision.len ? revision.ptr : "main");
    if (n < 0) return KEEL_ERR_INTERNAL;
    *out_len = (size_t)n;
    if ((size_t)n > out_cap) return KEEL_ERR_LIMIT;
    memcpy(out, line, (size_t)n);
    return KEEL_OK;
}

static const gitops_sync_v1 table = { sizeof(gitops_sync_v1), engine, sync_app };
#endif

#ifdef CONSUMER
static const keel_host_services *services;
static keel_ctx *the_ctx;

static keel_status answer(keel_http_response *res, int status, const char *text, int n) {
    res->set_status(res, (uint32_t)status);
    return res->write(res, text, (size_t)n);
}

#ifdef RAW_FRAMES
static void put(unsigned char *at, uint64_t v, int n) { for (int i = 0; i < n; i++) at[i] = (unsigned char)(v >> (8 * i)); }

static keel_status raw_route(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    unsigned char release[21], invoke[41];
    put(release, 17, 4); release[4] = 33; put(release + 5, 4241, 8); put(release + 13, 1, 8);
    put(invoke, 37, 4); invoke[4] = 34; put(invoke + 5, 4242, 8); put(invoke + 13, 1, 8); put(invoke + 21, 0, 8);
    put(invoke + 29, 0, 4); put(invoke + 33, 64, 8);
    if (write(0, release, sizeof release) != (ssize_t)sizeof release || write(0, invoke, sizeof invoke) != (ssize_t)sizeof invoke)
        return answer(res, 500, "write", 5);
    return answer(res, 200, "sent", 4);
}
#endif

#ifdef FANOUT
static const gitops_sync_v1 *fan_table;

static void *fan_one(void *arg) {
    char line[256];
    size_t len = 0;
    *(keel_status *)arg = fan_table->sync(keel_cstr("fan"), keel_cstr("main"), line, sizeof line, &len);
    return NULL;
}

static keel_status fan_route(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    char body[128];
    keel_service_lease *lease = NULL;
    const void *t = NULL;
    keel_status st = services->acquire(the_ctx, keel_cstr(GITOPS_SYNC_INTERFACE), req->principal->tenant,
                                       GITOPS_SYNC_V1_0_SIZE, &lease, &t);
    if (st != KEEL_OK) return answer(res, 503, body, snprintf(body, sizeof body, "acquire=%d", st));
    fan_table = t;
    keel_status statuses[FANOUT];
    pthread_t threads[FANOUT];
    int started = 0, ok = 0, unavailable = 0, other = 0;
    for (int i = 0; i < FANOUT; i++) {
        statuses[i] = KEEL_ERR_INTERNAL;
        if (pthread_create(&threads[i], NULL, fan_one, &statuses[i]) != 0) break;
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
        if (statuses[i] == KEEL_OK) ok++;
        else if (statuses[i] == KEEL_ERR_UNAVAILABLE) unavailable++;
        else other++;
    }
    services->release(lease);
    return answer(res, 200, body, snprintf(body, sizeof body, "ok=%d unavailable=%d other=%d", ok, unavailable,
                                           other + FANOUT - started));
}
#endif

static keel_status sync_route(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    char body[700];
    struct { char line[256]; char canary[64]; } buffer;
    char *line = buffer.line;
    memset(buffer.canary, 'c', sizeof buffer.canary);
    keel_str app = KEEL_STR_EMPTY;
    for (size_t i = 0; i < req->params_len; i++)
        if (req->params[i].name.len == 3 && memcmp(req->params[i].name.ptr, "app", 3) == 0) app = req->params[i].value;
    size_t cap = sizeof buffer.line;
    if (req->query.len > 4 && memcmp(req->query.ptr, "cap=", 4) == 0) {
        char digits[16] = { 0 };
        memcpy(digits, req->query.ptr + 4, req->query.len - 4 < 15 ? req->query.len - 4 : 15);
        cap = (size_t)strtoul(digits, NULL, 10);
        if (cap > sizeof buffer.line) cap = sizeof buffer.line;
    }
    keel_service_lease *lease = NULL;
    const void *t = NULL;
    keel_status st = services->acquire(the_ctx, keel_cstr(GITOPS_SYNC_INTERFACE), req->principal->tenant,
                                       GITOPS_SYNC_V1_0_SIZE, &lease, &t);
    if (st != KEEL_OK) return answer(res, 503, body, snprintf(body, sizeof body, "acquire=%d", st));
    const gitops_sync_v1 *gitops = t;
    size_t len = 0;
    st = gitops->sync(app, keel_cstr("main"), line, cap, &len);
    keel_str e = gitops->engine();
    int n = st == KEEL_OK
        ? snprintf(body, sizeof body, "%.*s engine=%.*s", (int)len, line, (int)e.len, e.ptr ? e.ptr : "")
        : snprintf(body, sizeof body, "status=%d len=%zu engine=%.*s", st, len, (int)e.len, e.ptr ? e.ptr : "");
    services->release(lease);
    for (size_t i = 0; i < sizeof buffer.canary; i++)
        if (buffer.canary[i] != 'c') return answer(res, 500, "canary=broken", 13);
    return answer(res, st == KEEL_OK ? 200 : 502, body, n);
}
#endif

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    const keel_host_services *s = host->get_service(ctx, keel_cstr(KEEL_SERVICE_SERVICES));
    if (!s) return KEEL_ERR_UNSUPPORTED;
#ifdef PROVIDER
    keel_service_provision p = { sizeof p, KEEL_STR(GITOPS_SYNC_INTERFACE), &table };
    keel_status st = s->provide(ctx, &p);
    if (st != KEEL_OK) return st;
#endif
#ifdef CONSUMER
    services = s;
    the_ctx = ctx;
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    if (!http) return KEEL_ERR_UNSUPPORTED;
    keel_route route = { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/sync/:app"), sync_route, NULL };
    keel_status rs = http->register_route(ctx, &route);
    if (rs != KEEL_OK) return rs;
#ifdef RAW_FRAMES
    keel_route raw = { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/raw"), raw_route, NULL };
    if ((rs = http->register_route(ctx, &raw)) != KEEL_OK) return rs;
#endif
#ifdef FANOUT
    keel_route fan = { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/fan"), fan_route, NULL };
    if ((rs = http->register_route(ctx, &fan)) != KEEL_OK) return rs;
#endif
#endif
    return KEEL_OK;
}

static keel_status deactivate(const keel_host *host, keel_ctx *ctx) {
    (void)host; (void)ctx;
    return KEEL_OK;
}

static const keel_plugin plugin = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR(PLUGIN_ID), KEEL_STR("1.0.0"), 0, activate, deactivate, NULL,
};
KEEL_PLUGIN_ENTRY(plugin)
