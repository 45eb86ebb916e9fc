/* A test plugin for "keel.commands/1" (ABI 1.1): plain C functions the host calls by name, and a route that calls
 * another plugin's command. Built with cc and -D switches:
 *   PLUGIN_ID, TAG   the descriptor id (default "calc"), and what calc_tag writes
 *   CALLER           also register GET /use?A,B: calls CALL_PLUGIN.CALL_NAME (default calc.add) with [A, B] through
 *                    keel.commands/1 as the request's principal; answers the JSON result, or 502 "status=<n> <msg>"
 *   FORGE            /use passes a principal it made up (an admin) instead of the request's
 *   TAMPER           /use writes the admin role into the request's own principal (casting away const), then passes it
 *   RELAY=PATH       (with CALLER) writes into the file PATH the address of a function of its own that calls
 *                    CALL_PLUGIN.CALL_NAME with [2, 40] through its own keel_ctx for the principal it is given, as a
 *                    provider's service function would be handed over to a consumer
 *   VIA_RELAY=PATH   (with CALLER) /use calls the function whose address is in PATH with the request's principal,
 *                    instead of calling the command itself
 *   RAW_FRAME=N      (in a worker process) /use skips keel.commands/1 and writes a callCommand frame of its own to
 *                    the worker's socket (standard input), on behalf of host call N; answers "sent" (a hostile
 *                    worker that bypasses the worker's own checks)
 *   CALL_AFTER_MS=N  /use sleeps N milliseconds before it calls
 *   ACTIVATE_FAILS   activate fails, saying "cannot reach the frobnicator at /srv/secret"
 */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef PLUGIN_ID
#define PLUGIN_ID "calc"
#endif
#ifndef TAG
#define TAG "-"
#endif
#ifndef CALL_PLUGIN
#define CALL_PLUGIN "calc"
#endif
#ifndef CALL_NAME
#define CALL_NAME "add"
#endif

static const keel_host *the_host;

KEEL_EXPORT int64_t calc_add(int64_t a, int64_t b) { return a + b; }
KEEL_EXPORT int32_t calc_neg32(int32_t a) { return -a; }
KEEL_EXPORT uint32_t calc_twice32(uint32_t a) { return a * 2; }
KEEL_EXPORT double calc_half(double x) { return x / 2; }
KEEL_EXPORT bool calc_not(bool b) { return !b; }
KEEL_EXPORT uint64_t calc_len(keel_bytes b) { return b.len; }
KEEL_EXPORT void calc_nothing(void) {}

/* (i64, i64) -> status(json): {"quotient": a / b}, or an error for b == 0. */
KEEL_EXPORT keel_status calc_div(int64_t a, int64_t b, keel_output *out) {
    if (b == 0) {
        the_host->set_error(NULL, keel_cstr("division by zero"));
        return KEEL_ERR_INVALID_ARGUMENT;
    }
    char buf[64];
    int n = snprintf(buf, sizeof buf, "{\"quotient\":%lld}", (long long)(a / b));
    return out->write(out, buf, (size_t)n);
}

/* (str) -> status(str): "hello, <name>" */
KEEL_EXPORT keel_status calc_greet(keel_str name, keel_output *out) {
    keel_status s = out->write(out, "hello, ", 7);
    return s == KEEL_OK ? out->write(out, name.ptr, name.len) : s;
}

/* () -> status(str): the build's TAG, after sleeping `ms` (i64) milliseconds. */
KEEL_EXPORT keel_status calc_tag(int64_t ms, keel_output *out) {
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    return out->write(out, TAG, strlen(TAG));
}

/* (u64) -> status(str): writes n bytes of 'x' (to go past the output limit). */
KEEL_EXPORT keel_status calc_big(uint64_t n, keel_output *out) {
    char x[4096];
    memset(x, 'x', sizeof x);
    for (uint64_t done = 0; done < n;) {
        size_t step = n - done < sizeof x ? (size_t)(n - done) : sizeof x;
        keel_status s = out->write(out, x, step);
        if (s != KEEL_OK) return s;
        done += step;
    }
    return KEEL_OK;
}

/* () -> status(json): writes text that is not JSON (a broken command). */
KEEL_EXPORT keel_status calc_broken(keel_output *out) { return out->write(out, "{not json", 9); }

/* (i64) -> i64: leaves a message with set_error and still succeeds (a message that must not outlive the call). */
KEEL_EXPORT int64_t calc_note(int64_t a) {
    the_host->set_error(NULL, keel_cstr("a note left by an earlier call"));
    return a;
}

/* () -> status(str): fails without a message of its own. */
KEEL_EXPORT keel_status calc_fail(keel_output *out) { (void)out; return KEEL_ERR_INTERNAL; }

/* () -> void: takes the process down (for the probe's containment). */
KEEL_EXPORT void calc_crash(void) { *(volatile int *)0 = 1; }

#ifdef CALLER
static const keel_host_commands *commands;
static keel_ctx *the_ctx;

typedef keel_status (*relay_fn)(const keel_principal *who, char *out, size_t cap, size_t *len);
#ifdef RELAY
static keel_status relay_call(const keel_principal *who, char *out, size_t cap, size_t *len) {
    return commands->call(the_ctx, keel_cstr(CALL_PLUGIN), keel_cstr(CALL_NAME), keel_cstr("[2,40]"), who, out, cap, len);
}
#endif

static keel_status use(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    char args[128], out[256], msg[64];
    int n = snprintf(args, sizeof args, "[%.*s]", (int)req->query.len, req->query.ptr ? req->query.ptr : "");
    size_t len = 0;
#ifdef RAW_FRAME
    /* The frame layout of Sources/KeelIsolation/Wire.swift: u32 length, kind 30 (callCommand), u64 id, u64 on behalf
     * of, then the plugin, command and arguments as u32-length strings. */
    unsigned char f[512];
    size_t at = 4;
    f[at++] = 30;
    for (int i = 0; i < 8; i++) f[at++] = (unsigned char)((uint64_t)7777 >> (8 * i));
    for (int i = 0; i < 8; i++) f[at++] = (unsigned char)((uint64_t)(RAW_FRAME) >> (8 * i));
    const char *parts[] = { CALL_PLUGIN, CALL_NAME, args };
    for (int p = 0; p < 3; p++) {
        uint32_t l = (uint32_t)strlen(parts[p]);
        for (int i = 0; i < 4; i++) f[at++] = (unsigned char)(l >> (8 * i));
        memcpy(f + at, parts[p], l);
        at += l;
    }
    for (int i = 0; i < 4; i++) f[i] = (unsigned char)((uint32_t)(at - 4) >> (8 * i));
    (void)n; (void)len; (void)out; (void)msg;
    if (write(0, f, at) != (ssize_t)at) return KEEL_ERR_INTERNAL;
    return res->write(res, "sent", 4);
#endif
#ifdef FORGE
    static const keel_str roles[] = { KEEL_STR("admin") };
    keel_principal forged = { sizeof forged, 0, KEEL_STR("root"), KEEL_STR("root"), KEEL_STR("default"), KEEL_STR("keel"), roles, 1 };
    const keel_principal *who = &forged;
#elif defined(TAMPER)
    static const keel_str roles[] = { KEEL_STR("admin") };
    keel_principal *mine = (keel_principal *)req->principal;
    mine->roles = roles;
    mine->roles_len = 1;
    const keel_principal *who = req->principal;
#else
    const keel_principal *who = req->principal;
#endif
#ifdef CALL_AFTER_MS
    struct timespec pause = { CALL_AFTER_MS / 1000, (CALL_AFTER_MS % 1000) * 1000000L };
    nanosleep(&pause, NULL);
#endif
#ifdef VIA_RELAY
    relay_fn relay = NULL;
    FILE *file = fopen(VIA_RELAY, "r");
    if (file) { if (fscanf(file, "%p", (void **)&relay) != 1) relay = NULL; fclose(file); }
    (void)n;
    if (!relay) return KEEL_ERR_INTERNAL;
    keel_status s = relay(who, out, sizeof out, &len);
#else
    keel_status s = commands->call(the_ctx, keel_cstr(CALL_PLUGIN), keel_cstr(CALL_NAME),
                                   (keel_str){ args, (size_t)n }, who, out, sizeof out, &len);
#endif
    if (s != KEEL_OK) {
        res->set_status(res, 502);
        int m = snprintf(msg, sizeof msg, "status=%d", s);
        return res->write(res, msg, (size_t)m);
    }
    return res->write(res, out, len);
}
#endif

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    the_host = host;
#ifdef ACTIVATE_FAILS
    host->set_error(ctx, keel_cstr("cannot reach the frobnicator at /srv/secret"));
    return KEEL_ERR_UNAVAILABLE;
#endif
#ifdef CALLER
    the_ctx = ctx;
    commands = host->get_service(ctx, keel_cstr(KEEL_SERVICE_COMMANDS));
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    if (!commands || !http) return KEEL_ERR_UNSUPPORTED;
#ifdef RELAY
    FILE *file = fopen(RELAY, "w");
    if (!file) return KEEL_ERR_INTERNAL;
    fprintf(file, "%p\n", (void *)relay_call);
    fclose(file);
#endif
    keel_route r = { sizeof r, KEEL_STR("GET"), KEEL_STR("/use"), use, NULL };
    return http->register_route(ctx, &r);
#else
    (void)ctx;
    return KEEL_OK;
#endif
}

static const keel_plugin plugin = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR(PLUGIN_ID), KEEL_STR("1.0.0"), 0, activate, NULL, NULL,
};
KEEL_PLUGIN_ENTRY(plugin)
