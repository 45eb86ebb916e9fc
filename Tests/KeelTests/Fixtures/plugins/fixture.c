/* A configurable test plugin. Each test builds it with cc and -D switches to produce exactly the defect it needs.
 *   PLUGIN_ID, PLUGIN_VERSION       strings for the descriptor (default "fixture", "1.0.0")
 *   ABI_MAJOR, ABI_MINOR            override the descriptor's ABI version
 *   STRUCT_SIZE                     override the descriptor's struct_size
 *   ENTRY_RETURNS_NULL              keel_plugin_entry returns NULL
 *   NO_ENTRY                        export no entry symbol
 *   ACTIVATE_FAILS                  activate registers a route, then fails with a message
 *   ROUTE_PATH, ROUTE_METHOD        the route registered (default GET "/ping")
 *   MENU_ID                         also add this menu entry (MENU_PERMISSION: the permission it needs; MENU_LINK:
 *                                   its link, default "/ext/<id>/ping")
 *   AUTH_EXTRA_ROLE                 with AUTH_MODE 1, a role the hook claims beside admin
 *   AUTH_MODE                       1: authenticate "Bearer <id>" headers (tenant acme, role admin); 2: an
 *                                   authenticate hook that errors; 3: "Bearer <id>" with no tenant and no role
 *   AUTHZ_MODE                      1: allow everything; 2: deny resources containing "secret"; 3: error;
 *                                   4: abstain, but never return for a resource containing "hang"
 *   CONFIG_REQUIRED                 with CONFIG_ECHO: activate refuses when it has no configuration
 *   REGISTER_TWICE                  register ROUTE_PATH twice
 *   IGNORES_REFUSAL                 first register a route the host refuses ("no-slash" and a terminal escape), and go on regardless
 *   USE_MISSING_SYMBOL              call a function no library defines (fails under RTLD_NOW)
 *   HANDLER_FAILS                   the route handler returns an error
 *   HANDLER_FAILS_NO_CTX            the same, reporting its message with set_error(NULL, ...)
 *   HANDLER_UNAVAILABLE="path"      the route handler appends a byte to path, then returns KEEL_ERR_UNAVAILABLE ("the
 *                                   item store is down", or UNAVAILABLE_MESSAGE="...")
 *   HANDLER_STATUS=N                the route handler returns status N, its message "refused with status N"; with
 *                                   HANDLER_ASKS_BADLY, it first asks the host for status 42, which the host refuses
 *                                   (KEEL_ERR_INVALID_ARGUMENT); with THEN_WELL, then for 200, which it grants
 *   EXTRA_ROUTES=N                  register N extra routes "/r<i>"
 *   ROUTE_SET                       also register overlapping patterns under /items and /things, each answering
 *                                   "via=<label>", to check which one a path reaches
 *   TAG                             a string added to every response ("tag=<TAG>"), to tell builds apart
 *   UNLOAD_SAFE                     declare KEEL_PLUGIN_FLAG_UNLOAD_SAFE
 *   REACTIVATABLE                   declare KEEL_PLUGIN_FLAG_REACTIVATABLE
 *   SLOW_MS                         the handler sleeps this long first
 *   FAIL_GATE="path"                with HANDLER_FAILS: the handler appends a byte to path.entered, then waits until
 *                                   the file path exists before it fails
 *   SLOW_HOOK_MS                    the authenticate hook sleeps this long first
 *   CONFIG_ECHO                     the handler appends " config=<the plugin's configuration JSON>"; activate
 *                                   refuses a configuration whose JSON holds the word "refused"
 *   HUGE_WRITE                      the handler first writes one byte, then asks to write (size_t)INT64_MAX and
 *                                   (size_t)-1 more bytes, and appends " huge=<status> <status>" (the limit's refusals)
 *   ENV_ECHO                        the handler appends " env=<KEEL_ADMIN_TOKEN>,<PGPASSWORD>,path" as its
 *                                   environment has them ("-" for one it lacks; "path" when PATH is set)
 *   CTOR_MODE                       a constructor that 1: raises SIGSEGV, 2: calls _exit(7), 3: never returns,
 *                                   4: prints a line with printf and writes 32 MiB to stdout, 5: starts a process
 *                                   that sleeps 60 s holding stdout and stderr, its pid written to CTOR_PIDFILE,
 *                                   6: in the probe, writes KEEL_ADMIN_TOKEN's and PGPASSWORD's values (or "-") to
 *                                   CTOR_PIDFILE
 *   CRASH_IN_HOST                   activate raises SIGSEGV unless KEEL_PROBE is set (passes the probe, then takes
 *                                   the host down)
 *   HANDLER_LOGS                    the handler logs "handling <route path>" (warning) through host->log
 *   HANDLER_LOG_BYTES               the handler logs one line of this many bytes: "a", then "é" (2 bytes) repeated,
 *                                   or HANDLER_LOG_BYTE (e.g. 0xFF, not UTF-8) repeated when that is defined too
 *   HEALTH_MODE                     offer "keel.health/1": 1 healthy, 2 unhealthy ("database unreachable"),
 *                                   3 sleeps HEALTH_SLOW_MS (default 3000) then healthy
 */
#define _POSIX_C_SOURCE 200809L
#define FIXTURE_STR_(x) #x
#define FIXTURE_STR(x) FIXTURE_STR_(x)
#include <keel/keel.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PLUGIN_ID
#define PLUGIN_ID "fixture"
#endif
#ifndef PLUGIN_VERSION
#define PLUGIN_VERSION "1.0.0"
#endif
#ifndef ROUTE_PATH
#define ROUTE_PATH "/ping"
#endif
#ifndef TAG
#define TAG "-"
#endif
#ifdef UNLOAD_SAFE
#define FIXTURE_UNLOAD_FLAG KEEL_PLUGIN_FLAG_UNLOAD_SAFE
#else
#define FIXTURE_UNLOAD_FLAG 0
#endif
#ifdef REACTIVATABLE
#define FIXTURE_FLAGS (FIXTURE_UNLOAD_FLAG | KEEL_PLUGIN_FLAG_REACTIVATABLE)
#else
#define FIXTURE_FLAGS FIXTURE_UNLOAD_FLAG
#endif
#ifndef ROUTE_METHOD
#define ROUTE_METHOD "GET"
#endif
#ifndef ABI_MAJOR
#define ABI_MAJOR KEEL_ABI_VERSION_MAJOR
#endif
#ifndef ABI_MINOR
#define ABI_MINOR KEEL_ABI_VERSION_MINOR
#endif
#ifndef STRUCT_SIZE
#define STRUCT_SIZE sizeof(keel_plugin)
#endif

#ifdef USE_MISSING_SYMBOL
extern int keel_fixture_symbol_that_does_not_exist(void);
#endif

#if defined(CTOR_MODE) || defined(CRASH_IN_HOST)
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#endif
#ifdef CTOR_MODE
__attribute__((constructor)) static void hostile_constructor(void) {
#if CTOR_MODE == 1
    *(volatile int *)0 = 1; /* a real fault, not raise(): runtimes may catch a raised signal */
#elif CTOR_MODE == 2
    _exit(7);
#elif CTOR_MODE == 4
    if (!getenv("KEEL_PROBE")) return;
    printf("hello from the constructor\n");
    static char block[1 << 16];
    memset(block, 'x', sizeof block);
    for (int i = 0; i < 512; i++) {
        if (write(1, block, sizeof block) < 0) break;
    }
#elif CTOR_MODE == 5
    if (getenv("KEEL_PROBE")) {
        pid_t child = fork();
        if (child == 0) { sleep(60); _exit(0); }
        FILE *f = fopen(CTOR_PIDFILE, "w");
        if (f) { fprintf(f, "%d", (int)child); fclose(f); }
    }
#elif CTOR_MODE == 6
    if (getenv("KEEL_PROBE")) {
        const char *token = getenv("KEEL_ADMIN_TOKEN"), *password = getenv("PGPASSWORD");
        FILE *f = fopen(CTOR_PIDFILE, "w");
        if (f) { fprintf(f, "%s %s", token ? token : "-", password ? password : "-"); fclose(f); }
    }
#else
    for (;;) pause();
#endif
}
#endif

static const keel_host *the_host;
#ifdef CONFIG_ECHO
static keel_str the_config;
#endif
static keel_ctx *the_ctx;

static keel_status ping(void *user_data, const keel_http_request *req, keel_http_response *res) {
#if defined(HANDLER_FAILS)
    (void)req; (void)res;
#ifdef FAIL_GATE
    /* Says it is in (a byte appended to FAIL_GATE.entered), then fails only once the file FAIL_GATE exists. */
    int entered = open(FAIL_GATE ".entered", O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (entered >= 0) {
        if (write(entered, "x", 1) != 1) { /* the test then waits in vain, and says so */ }
        close(entered);
    }
    while (access(FAIL_GATE, F_OK) != 0) {
        struct timespec pause = { 0, 10 * 1000000L };
        nanosleep(&pause, NULL);
    }
#endif
    the_host->set_error(the_ctx, keel_cstr("handler failed on purpose"));
    return KEEL_ERR_INTERNAL;
#elif defined(HANDLER_FAILS_NO_CTX)
    (void)req; (void)res;
    the_host->set_error(NULL, keel_cstr("failed without a ctx"));
    return KEEL_ERR_INTERNAL;
#elif defined(HANDLER_STATUS)
    (void)req;
#ifdef HANDLER_ASKS_BADLY
    (void)res->set_status(res, 42);
#ifdef THEN_WELL
    (void)res->set_status(res, 200);
#endif
#else
    (void)res;
#endif
    the_host->set_error(the_ctx, keel_cstr("refused with status " FIXTURE_STR(HANDLER_STATUS)));
    return HANDLER_STATUS;
#elif defined(HANDLER_UNAVAILABLE)
    (void)req; (void)res;
    int called = open(HANDLER_UNAVAILABLE, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (called >= 0) {
        if (write(called, "x", 1) != 1) { /* the test then counts one call fewer, and says so */ }
        close(called);
    }
#ifndef UNAVAILABLE_MESSAGE
#define UNAVAILABLE_MESSAGE "the item store is down"
#endif
    the_host->set_error(the_ctx, keel_cstr(UNAVAILABLE_MESSAGE));
    return KEEL_ERR_UNAVAILABLE;
#else
#ifdef HANDLER_LOGS
    char line[300];
    int len = snprintf(line, sizeof line, "handling %.*s", (int)req->route_path.len, req->route_path.ptr);
    the_host->log(the_ctx, KEEL_LOG_WARN, (keel_str){ line, len > 0 && (size_t)len < sizeof line ? (size_t)len : 0 });
#endif
#ifdef HANDLER_LOG_BYTES
    char *big = malloc(HANDLER_LOG_BYTES);
    if (big) {
#ifdef HANDLER_LOG_BYTE
        memset(big, HANDLER_LOG_BYTE, HANDLER_LOG_BYTES);
#else
        memset(big, 'z', HANDLER_LOG_BYTES);
        big[0] = 'a';
        for (size_t i = 1; i + 1 < (size_t)HANDLER_LOG_BYTES; i += 2) { big[i] = (char)0xC3; big[i + 1] = (char)0xA9; }
#endif
        the_host->log(the_ctx, KEEL_LOG_INFO, (keel_str){ big, (size_t)HANDLER_LOG_BYTES });
        free(big);
    }
#endif
#ifdef SLOW_MS
    struct timespec ts = { SLOW_MS / 1000, (SLOW_MS % 1000) * 1000000L };
    nanosleep(&ts, NULL);
#endif
    char buf[512];
    const keel_principal *p = req->principal;
    int n = snprintf(buf, sizeof buf, "%s %s tag=" TAG " route=%.*s who=%.*s tenant=%.*s anon=%d params=%zu",
                     PLUGIN_ID, PLUGIN_VERSION, (int)req->route_path.len, req->route_path.ptr, (int)p->id.len,
                     p->id.ptr ? p->id.ptr : "", (int)p->tenant.len, p->tenant.ptr ? p->tenant.ptr : "",
                     (p->flags & KEEL_PRINCIPAL_ANONYMOUS) ? 1 : 0, req->params_len);
    for (size_t i = 0; i < req->params_len && n > 0 && (size_t)n < sizeof buf; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, " %.*s=%.*s", (int)req->params[i].name.len,
                      req->params[i].name.ptr, (int)req->params[i].value.len, req->params[i].value.ptr);
    if (user_data && n > 0 && (size_t)n < sizeof buf)
        n += snprintf(buf + n, sizeof buf - (size_t)n, " via=%s", (const char *)user_data);
#ifdef CONFIG_ECHO
    if (n > 0 && (size_t)n < sizeof buf)
        n += snprintf(buf + n, sizeof buf - (size_t)n, " config=%.*s", (int)the_config.len, the_config.ptr ? the_config.ptr : "");
#endif
#ifdef ENV_ECHO
    if (n > 0 && (size_t)n < sizeof buf) {
        const char *token = getenv("KEEL_ADMIN_TOKEN"), *password = getenv("PGPASSWORD"), *path = getenv("PATH");
        n += snprintf(buf + n, sizeof buf - (size_t)n, " env=%s,%s,%s", token ? token : "-", password ? password : "-",
                      path ? "path" : "-");
    }
#endif
#ifdef HUGE_WRITE
    res->write(res, "<", 1);
    keel_status huge = res->write(res, buf, (size_t)INT64_MAX), wrapped = res->write(res, buf, (size_t)-1);
    if (n > 0 && (size_t)n < sizeof buf)
        n += snprintf(buf + n, sizeof buf - (size_t)n, " huge=%d %d", (int)huge, (int)wrapped);
#endif
    res->set_status(res, 200);
    res->add_header(res, keel_cstr("x-plugin"), keel_cstr(PLUGIN_ID));
    return res->write(res, buf, (size_t)n);
#endif
}

#if defined(AUTH_MODE)
static keel_status authn(void *ud, const keel_http_request *req, keel_principal_builder *out) {
    (void)ud;
#ifdef SLOW_HOOK_MS
    struct timespec ts = { SLOW_HOOK_MS / 1000, (SLOW_HOOK_MS % 1000) * 1000000L };
    nanosleep(&ts, NULL);
#endif
#if AUTH_MODE == 2
    (void)req; (void)out;
    the_host->set_error(the_ctx, keel_cstr("authenticate hook broke"));
    return KEEL_ERR_INTERNAL;
#else
    for (size_t i = 0; i < req->headers_len; i++) {
        keel_http_header h = req->headers[i];
        if (h.name.len == 13 && memcmp(h.name.ptr, "authorization", 13) == 0 && h.value.len > 7 &&
            memcmp(h.value.ptr, "Bearer ", 7) == 0) {
            keel_str id = { h.value.ptr + 7, h.value.len - 7 };
#if AUTH_MODE == 3
            return out->set_identity(out, id, id, keel_cstr(""));
#else
            out->set_identity(out, id, id, keel_cstr("acme"));
#ifdef AUTH_EXTRA_ROLE
            out->add_role(out, keel_cstr(AUTH_EXTRA_ROLE));
#endif
            return out->add_role(out, keel_cstr("admin"));
#endif
        }
    }
    return KEEL_OK;
#endif
}
#endif

#if defined(AUTHZ_MODE)
static keel_status authz(void *ud, const keel_authz_request *q, keel_auth_decision *out) {
    (void)ud;
#if AUTHZ_MODE == 1
    (void)q;
    *out = KEEL_AUTH_ALLOW;
#elif AUTHZ_MODE == 2
    *out = KEEL_AUTH_ABSTAIN;
    for (size_t i = 0; i + 6 <= q->resource.len; i++)
        if (memcmp(q->resource.ptr + i, "secret", 6) == 0) *out = KEEL_AUTH_DENY;
#elif AUTHZ_MODE == 4
    *out = KEEL_AUTH_ABSTAIN;
    for (size_t i = 0; i + 4 <= q->resource.len; i++)
        if (memcmp(q->resource.ptr + i, "hang", 4) == 0) for (;;) pause();
#else
    (void)q; (void)out;
    return KEEL_ERR_INTERNAL;
#endif
    return KEEL_OK;
}
#endif

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    the_host = host;
    the_ctx = ctx;
#ifdef CRASH_IN_HOST
    if (!getenv("KEEL_PROBE")) *(volatile int *)0 = 1;
#endif
#ifdef USE_MISSING_SYMBOL
    if (keel_fixture_symbol_that_does_not_exist()) return KEEL_ERR_INTERNAL;
#endif
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    if (!http) return KEEL_ERR_UNSUPPORTED;
#ifdef CONFIG_ECHO
    const keel_host_config *cfg = host->get_service(ctx, keel_cstr(KEEL_SERVICE_CONFIG));
    if (!cfg) return KEEL_ERR_UNSUPPORTED;
    the_config = cfg->get(ctx);
#ifdef CONFIG_REQUIRED
    /* Checks its own configuration, as many plugins do: without one it refuses to start. */
    if (the_config.len <= 2) {
        host->set_error(ctx, keel_cstr("no configuration: it needs one"));
        return KEEL_ERR_INVALID_ARGUMENT;
    }
#endif
    for (size_t i = 0; the_config.ptr && i + 7 <= the_config.len; i++) {
        if (memcmp(the_config.ptr + i, "refused", 7) == 0) {
            host->set_error(ctx, keel_cstr("this configuration is refused"));
            return KEEL_ERR_INVALID_ARGUMENT;
        }
    }
#endif
#ifdef IGNORES_REFUSAL
    keel_route bad = { sizeof bad, KEEL_STR("GET"), KEEL_STR("no-slash\033[2J"), ping, NULL };
    (void)http->register_route(ctx, &bad);
#endif
    keel_route r = { sizeof r, KEEL_STR(ROUTE_METHOD), KEEL_STR(ROUTE_PATH), ping, NULL };
    keel_status s = http->register_route(ctx, &r);
    if (s != KEEL_OK) return s;
#ifdef REGISTER_TWICE
    s = http->register_route(ctx, &r);
    if (s != KEEL_OK) return s;
#endif
#ifdef ROUTE_SET
    static const struct { const char *method, *path, *label; } set[] = {
        { "GET", "/items/:id", "param" },      { "GET", "/items/special", "literal" },
        { "GET", "/items/*", "rest" },         { "GET", "/items/:id/:part", "two-params" },
        { "*", "/things/:id", "any-method" },  { "POST", "/things/special", "post-literal" },
    };
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++) {
        keel_route extra = { sizeof extra, keel_cstr(set[i].method), keel_cstr(set[i].path), ping, (void *)set[i].label };
        if ((s = http->register_route(ctx, &extra)) != KEEL_OK) return s;
    }
#endif
#ifdef EXTRA_ROUTES
    for (int i = 0; i < EXTRA_ROUTES; i++) {
        char path[32];
        int n = snprintf(path, sizeof path, "/r%d", i);
        keel_route extra = { sizeof extra, KEEL_STR("GET"), { path, (size_t)n }, ping, NULL };
        if ((s = http->register_route(ctx, &extra)) != KEEL_OK) return s;
    }
#endif
#ifndef MENU_PERMISSION
#define MENU_PERMISSION ""
#endif
#ifndef MENU_LINK
#define MENU_LINK "/ext/" PLUGIN_ID "/ping"
#endif
#ifdef MENU_ID
    const keel_host_menu *menu = host->get_service(ctx, keel_cstr(KEEL_SERVICE_MENU));
    keel_menu_entry e = { sizeof e, KEEL_STR(MENU_ID), KEEL_STR("Fixture"), KEEL_STR_EMPTY, KEEL_STR(MENU_LINK),
                          5, KEEL_STR_EMPTY, KEEL_STR(MENU_PERMISSION) };
    if ((s = menu->add_entry(ctx, &e)) != KEEL_OK) return s;
#endif
#if defined(AUTH_MODE) || defined(AUTHZ_MODE)
    const keel_host_auth *auth = host->get_service(ctx, keel_cstr(KEEL_SERVICE_AUTH));
#endif
#ifdef AUTH_MODE
    keel_authenticator a = { sizeof a, KEEL_STR("bearer"), authn, NULL };
    if ((s = auth->register_authenticator(ctx, &a)) != KEEL_OK) return s;
#endif
#ifdef AUTHZ_MODE
    keel_authorizer z = { sizeof z, KEEL_STR("rules"), authz, NULL };
    if ((s = auth->register_authorizer(ctx, &z)) != KEEL_OK) return s;
#endif
#ifdef ACTIVATE_FAILS
    host->set_error(ctx, keel_cstr("cannot reach the frobnicator"));
    return KEEL_ERR_UNAVAILABLE;
#endif
    return KEEL_OK;
}

#ifdef HEALTH_MODE
#ifndef HEALTH_SLOW_MS
#define HEALTH_SLOW_MS 3000
#endif
static keel_status health_check(keel_ctx *ctx) {
#if HEALTH_MODE == 2
    the_host->set_error(ctx, keel_cstr("database unreachable"));
    return KEEL_ERR_UNAVAILABLE;
#else
    (void)ctx;
#if HEALTH_MODE == 3
    struct timespec ts = { HEALTH_SLOW_MS / 1000, (HEALTH_SLOW_MS % 1000) * 1000000L };
    nanosleep(&ts, NULL);
#endif
    return KEEL_OK;
#endif
}
static const keel_health_v1 health = { sizeof health, health_check };
static const void *get_extension(keel_str id) {
    return id.len == sizeof KEEL_EXTENSION_HEALTH - 1 && memcmp(id.ptr, KEEL_EXTENSION_HEALTH, id.len) == 0 ? &health : NULL;
}
#define FIXTURE_EXTENSIONS get_extension
#else
#define FIXTURE_EXTENSIONS NULL
#endif

#ifndef NO_ENTRY
static const keel_plugin descriptor = {
    STRUCT_SIZE, { ABI_MAJOR, ABI_MINOR, 0 }, KEEL_STR(PLUGIN_ID), KEEL_STR(PLUGIN_VERSION), FIXTURE_FLAGS, activate, NULL,
    FIXTURE_EXTENSIONS,
};
#ifdef ENTRY_RETURNS_NULL
KEEL_EXPORT const keel_plugin *keel_plugin_entry(void);
KEEL_EXPORT const keel_plugin *keel_plugin_entry(void) { (void)descriptor; return NULL; }
#else
KEEL_PLUGIN_ENTRY(descriptor)
#endif
#else
KEEL_EXPORT int not_the_entry(void);
KEEL_EXPORT int not_the_entry(void) { return activate(NULL, NULL) == KEEL_OK; }
#endif
