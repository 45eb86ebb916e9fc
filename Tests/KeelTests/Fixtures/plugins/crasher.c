/* A plugin that crashes the host on request, for the crash attribution tests (CrashAttributionTests).
 *   GET /ext/<id>/items/:id    id "segv": writes through NULL; "abort": abort(); "fpe": divides by a volatile zero;
 *                              "hang": never returns; "thread": a thread of the plugin's own faults inside libc's
 *                              memset; anything else: 200 "item <id>"
 *   authorize hook "gate"      the same three, when the resource (the request path) contains "authz-segv",
 *                              "authz-abort" or "authz-fpe"; else abstains
 *   PLUGIN_ID                  the descriptor's id (default "crasher")
 *   CRASHER_NO_GATE            (define) no authorize hook: a plugin that guards nothing
 *   CRASHER_SLOW_ACTIVATE_MS   (environment) activate sleeps this long first: a worker that restarts slowly
 *   CRASHER_REFUSE_ACTIVATE_IF (environment) a path: activate refuses once that file exists (a worker that cannot start again)
 *   CRASHER_SEGV_ACTIVATE_IF   (environment) a path: activate writes through NULL while that file exists (for the probe)
 */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef PLUGIN_ID
#define PLUGIN_ID "crasher"
#endif

static int contains(keel_str s, const char *what) {
    size_t n = strlen(what);
    for (size_t i = 0; i + n <= s.len; i++)
        if (memcmp(s.ptr + i, what, n) == 0) return 1;
    return 0;
}

/* A thread of the plugin's own that writes through NULL inside libc (memset of a size the compiler cannot inline). */
static void *fault_in_libc(void *unused) {
    (void)unused;
    static volatile size_t size = 4096;
    void *volatile nowhere = NULL;
    memset(nowhere, 0, size);
    return NULL;
}

/* Crashes as `mode` says ("segv", "abort", "fpe", "thread"); returns a value otherwise. */
static int crash(keel_str mode, const char *prefix) {
    char name[32];
    snprintf(name, sizeof name, "%sthread", prefix);
    if (contains(mode, name)) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, fault_in_libc, NULL) == 0) pthread_join(thread, NULL);
    }
    snprintf(name, sizeof name, "%ssegv", prefix);
    if (contains(mode, name)) *(volatile int *)0 = 1;
    snprintf(name, sizeof name, "%sabort", prefix);
    if (contains(mode, name)) abort();
    snprintf(name, sizeof name, "%shang", prefix);
    if (contains(mode, name)) for (;;) sleep(1);
    snprintf(name, sizeof name, "%sfpe", prefix);
    if (contains(mode, name)) {
        /* Both volatile: the compiler turns `1 / x` into a comparison, with no division left to trap. */
        volatile int seven = 7, zero = 0;
        return seven / zero;
    }
    return 0;
}

static keel_status item(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data;
    keel_str id = req->params_len > 0 ? req->params[0].value : req->route_path;
    char buf[160];
    int n = snprintf(buf, sizeof buf, "item %.*s %d", (int)id.len, id.ptr, crash(id, ""));
    res->set_status(res, 200);
    return res->write(res, buf, (size_t)n);
}

static keel_status gate(void *user_data, const keel_authz_request *q, keel_auth_decision *out) {
    (void)user_data;
    *out = crash(q->resource, "authz-") ? KEEL_AUTH_DENY : KEEL_AUTH_ABSTAIN;
    return KEEL_OK;
}

#ifdef CRASHER_BUILD_TAG
/* Another build of the same code (another checksum). */
__attribute__((used)) static const char build_tag[] = CRASHER_BUILD_TAG;
#endif

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    const char *slow = getenv("CRASHER_SLOW_ACTIVATE_MS");
    if (slow) {
        int ms = atoi(slow);
        struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };
        nanosleep(&t, NULL);
    }
    /* An activate that does not return while this file exists (a stalled lifecycle). */
    const char *hang = getenv("CRASHER_HANG_ACTIVATE_IF");
    while (hang && access(hang, F_OK) == 0) {
        struct timespec t = { 0, 20 * 1000000L };
        nanosleep(&t, NULL);
    }
    /* A build that crashes while it loads: the probe's child dies of it, never a host that probes first. */
    const char *segv = getenv("CRASHER_SEGV_ACTIVATE_IF");
    if (segv && access(segv, F_OK) == 0) {
        volatile int *nowhere = NULL;
        *nowhere = 1;
    }
    /* A worker that cannot start again: activation refuses once this file exists. */
    const char *refuse = getenv("CRASHER_REFUSE_ACTIVATE_IF");
    if (refuse && access(refuse, F_OK) == 0) return KEEL_ERR_INTERNAL;
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    const keel_host_auth *auth = host->get_service(ctx, keel_cstr(KEEL_SERVICE_AUTH));
    if (!http || !auth) return KEEL_ERR_UNSUPPORTED;
    keel_route r = { sizeof r, KEEL_STR("GET"), KEEL_STR("/items/:id"), item, NULL };
    keel_status s = http->register_route(ctx, &r);
    if (s != KEEL_OK) return s;
#ifdef CRASHER_NO_GATE
    (void)gate;
    return KEEL_OK;
#else
    keel_authorizer h = { sizeof h, KEEL_STR("gate"), gate, NULL };
    return auth->register_authorizer(ctx, &h);
#endif
}

static const keel_plugin descriptor = {
    .struct_size = sizeof(keel_plugin),
    .abi_version = { KEEL_ABI_VERSION_MAJOR, KEEL_ABI_VERSION_MINOR, KEEL_ABI_VERSION_PATCH },
    .id = KEEL_STR(PLUGIN_ID),
    .version = KEEL_STR("1.0.0"),
    .activate = activate,
};

KEEL_PLUGIN_ENTRY(descriptor)
