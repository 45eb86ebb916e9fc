/* Bad input and the less common calls of the embedding API (keel/keel_embed.h), checked from C against the real
 * libkeel.so. Usage: embed_check PLUGIN_FOLDER. The folder holds hello (Plugins/hello-c), calc (commands.c) and
 * user (services.c, a consumer of test.echo/1). Prints "ok <check>" or "FAIL <check>: ..." per check; the exit
 * status is the number of failures. Run by EmbeddingCTests. */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel_embed.h>
#include <math.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void pause_ms(long ms) {
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int failures = 0;
static void check(int ok, const char *name, const char *detail) {
    if (ok) printf("ok %s\n", name);
    else { printf("FAIL %s: %s\n", name, detail ? detail : ""); failures++; }
    fflush(stdout);
}

static keel *the_kernel = NULL;
static atomic_int log_reentry = 0;      /* what a keel_ call from inside the log callback returned */
static atomic_int log_lines = 0;

static void on_log(void *ud, keel_log_level level, const char *plugin_id, const char *message) {
    (void)ud; (void)plugin_id;
    atomic_fetch_add(&log_lines, 1);
    /* The HTTP server's own lines come here too (KEEL_HTTP_LOG=info shows its start). */
    if (message && strncmp(message, "keel.http: ", 11) == 0) fprintf(stderr, "http-log %d %s\n", (int)level, message);
    /* keel_command's own lines, as the audit trail has them. */
    if (message && strstr(message, "embedder: call ")) fprintf(stderr, "call-log %d [%s] %s\n", (int)level, plugin_id ? plugin_id : "", message);
    if (the_kernel && atomic_load(&log_reentry) == 0) atomic_store(&log_reentry, keel_disable(the_kernel, "hello", 0) + 1000);
}

/* The interface test.echo/1 (Tests/KeelTests/Fixtures/plugins/services.c), provided by this program. */
typedef struct test_echo_v1 {
    uint32_t struct_size;
    int (*echo)(keel_str x, char *out, size_t cap);
} test_echo_v1;
static void on_event_ignored(void *ud, const keel_event *event) { (void)ud; (void)event; }

static keel *echo_kernel = NULL;
static atomic_int echo_reentry = 0;   /* what a keel_ call from inside the table's function returned (+1000) */
static int echo(keel_str x, char *out, size_t cap) {
    /* Called by a plugin, here on the thread of keel_dispatch: a call back into the API is refused. */
    keel_plugin_list *list = NULL;
    if (echo_kernel) atomic_store(&echo_reentry, keel_plugins(echo_kernel, &list) + 1000);
    keel_plugin_list_free(list);
    return snprintf(out, cap, "tag=appliance echo=%.*s", (int)x.len, x.ptr);
}
static const test_echo_v1 echo_table = { sizeof(test_echo_v1), echo };

static keel_response *get(keel *k, const char *path, keel_status *out_status) {
    keel_request req = KEEL_REQUEST_INIT;
    req.method = "GET";
    req.path = path;
    keel_response *res = NULL;
    *out_status = keel_dispatch(k, &req, &res);
    return res;
}

/* Dispatches in a loop until the handle is closed under it: every call returns KEEL_OK or KEEL_MISUSE. */
static atomic_int racing_bad = 0, racing_misuse = 0;
static void *race(void *arg) {
    keel *k = arg;
    for (int i = 0; i < 1000000; i++) {
        keel_status s;
        keel_response *res = get(k, "/ext/hello/greet/race", &s);
        keel_response_free(res);
        if (s == KEEL_MISUSE) { atomic_store(&racing_misuse, 1); break; }
        if (s != KEEL_OK) { atomic_store(&racing_bad, s); break; }
    }
    return NULL;
}

/* GET `path` on 127.0.0.1:`port`, with `header` ("Name: value") when not NULL; the whole answer in `out`. */
static int http_get_with(int port, const char *path, const char *header, char *out, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return -1; }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s%s\r\n", path,
                     header ? header : "", header ? "\r\n" : "");
    if (write(fd, req, (size_t)n) != n) { close(fd); return -1; }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, out + got, cap - 1 - got)) > 0) got += (size_t)r;
    out[got] = 0;
    close(fd);
    return (int)got;
}

static int http_get(int port, const char *path, char *out, size_t cap) { return http_get_with(port, path, NULL, out, cap); }

int main(int argc, char **argv) {
    if (argc < 2) return 100;
    keel_status s;
    char detail[512];

    check(keel_libversion() && strcmp(keel_libversion(), "1.1.0") == 0, "version: the header's", keel_libversion());
    check(strcmp(keel_errmsg(), "") == 0, "errmsg empty before any failure", keel_errmsg());

    /* Opening with bad configuration. */
    keel *k = (keel *)&s;
    check(keel_open(NULL, &k) == KEEL_ERR_INVALID_ARGUMENT && k == NULL, "open with NULL config", keel_errmsg());
    keel_config small = KEEL_CONFIG_INIT;
    small.struct_size = 4;
    s = keel_open(&small, &k);
    check(s == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "struct_size"), "open with a short struct_size", keel_errmsg());
    keel_config bad_state = KEEL_CONFIG_INIT;
    bad_state.state = "/proc/keel-no-such-folder/state.db";
    s = keel_open(&bad_state, &k);
    check(s == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "/proc/keel-no-such-folder/state.db: its folder /proc/keel-no-such-folder does not exist")
          && k == NULL, "open with a state file in a folder that is not there (a typo would start an empty state)", keel_errmsg());
    bad_state.state = "/proc/version";
    s = keel_open(&bad_state, &k);
    check(s == KEEL_ERR_INTERNAL && strstr(keel_errmsg(), "/proc/version") && k == NULL, "open with an unusable state file names it", keel_errmsg());
    /* A URL other than postgres:// is a typo, not a file name: no folder "sqlite:" is made. */
    bad_state.state = "sqlite:///tmp/keel-embed-check.db";
    s = keel_open(&bad_state, &k);
    check(s == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "a URL (sqlite:), not a file path") && access("sqlite:", F_OK) != 0,
          "open with a sqlite: URL as the state", keel_errmsg());
    bad_state.state = "postgres:/keel";
    s = keel_open(&bad_state, &k);
    check(s == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "two slashes"), "open with postgres:/ (one slash)", keel_errmsg());
    keel_config bad_bundle = KEEL_CONFIG_INIT;
    const char *no_bundle[] = { "/proc/keel-no-such-bundle" };
    bad_bundle.bundles = no_bundle;
    bad_bundle.bundle_count = 1;
    s = keel_open(&bad_bundle, &k);
    check(s == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "config.bundles[0] /proc/keel-no-such-bundle: no such folder") && k == NULL,
          "open with a bundle folder that is not there", keel_errmsg());

    /* NULL, made-up handles. */
    check(keel_enable(NULL, "hello") == KEEL_MISUSE && strstr(keel_errmsg(), "NULL"), "NULL handle", keel_errmsg());
    check(keel_start((keel *)(uintptr_t)0x12345670) == KEEL_MISUSE && strstr(keel_errmsg(), "keel_start: not an open keel handle"),
          "made-up handle", keel_errmsg());
    check(keel_close(NULL) == KEEL_OK, "closing NULL is a no-op", keel_errmsg());
    keel_response_free(NULL);
    keel_plugin_list_free(NULL);
    keel_free(NULL);

    keel_config negative = KEEL_CONFIG_INIT;
    negative.hook_budget_s = -1;
    check(keel_open(&negative, &k) == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "budget"), "open with a negative budget", keel_errmsg());
    /* An infinite budget was taken, and trapped later (an auth hook's enable, a reload's drain): the process died. */
    keel_config endless = KEEL_CONFIG_INIT;
    endless.hook_budget_s = INFINITY;
    check(keel_open(&endless, &k) == KEEL_ERR_INVALID_ARGUMENT && k == NULL && strstr(keel_errmsg(), "config.hook_budget_s is inf"),
          "open with an infinite hook budget", keel_errmsg());
    endless = (keel_config)KEEL_CONFIG_INIT;
    endless.drain_timeout_s = 1e300;
    check(keel_open(&endless, &k) == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "config.drain_timeout_s"), "open with a huge drain time", keel_errmsg());
    endless = (keel_config)KEEL_CONFIG_INIT;
    endless.handler_budget_s = NAN;
    check(keel_open(&endless, &k) == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "config.handler_budget_s is nan"), "open with a NaN budget", keel_errmsg());
    /* A struct_size that ends inside `probe` (a pointer cut in two was followed, and the process died): that field is
     * left out, the rest is served. */
    keel_config cut = KEEL_CONFIG_INIT;
    cut.probe = "/proc/keel-no-such-probe";
    cut.struct_size = (uint32_t)(offsetof(keel_config, probe) + 4);
    check(keel_open(&cut, &k) == KEEL_OK && k != NULL, "open with a struct_size that ends inside a field", keel_errmsg());
    keel_close(k);
    keel_config missing = KEEL_CONFIG_INIT;
    missing.plugins_dir = "/proc/keel-no-such-plugins";
    check(keel_open(&missing, &k) == KEEL_ERR_INVALID_ARGUMENT && k == NULL && strstr(keel_errmsg(), "/proc/keel-no-such-plugins: no such folder"),
          "open with a plugin folder that is not there (a typo would serve nothing, without a word)", keel_errmsg());
    /* A probe that is not a keel binary of this version (another program "passed" nothing and failed every plugin
     * with a reason about the plugin), or a folder, is refused at open. */
    keel_config probed = KEEL_CONFIG_INIT;
    probed.probe = "/bin/true";
    check(keel_open(&probed, &k) == KEEL_ERR_INVALID_ARGUMENT && k == NULL && strstr(keel_errmsg(), "not a keel of this library's version"),
          "open with a probe that is not keel", keel_errmsg());
    probed.probe = "/tmp";
    check(keel_open(&probed, &k) == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "/tmp: not an executable file"),
          "open with a folder as the probe", keel_errmsg());
    /* An empty state is NULL's, in memory: two at once (as a file named "", both claimed ./.lock; the second was refused). */
    keel_config blank = KEEL_CONFIG_INIT;
    blank.state = "";
    keel *b1 = NULL, *b2 = NULL;
    check(keel_open(&blank, &b1) == KEEL_OK && keel_open(&blank, &b2) == KEEL_OK, "an empty state is in memory", keel_errmsg());
    keel_close(b1);
    keel_close(b2);
    /* Out pointers are cleared on every failure, a bad handle's too. */
    keel_plugin_list *stale = (keel_plugin_list *)&s;
    check(keel_plugins((keel *)(uintptr_t)0x12345670, &stale) == KEEL_MISUSE && stale == NULL, "a bad handle leaves no stale list pointer", keel_errmsg());

    /* Without trust_all, a sensitive capability needs keel_grant, and the refusal names that call, not the CLI
     * (which cannot reach a state in memory). */
    keel_config untrusting = KEEL_CONFIG_INIT;
    untrusting.plugins_dir = argv[1];
    keel *u = NULL;
    check(keel_open(&untrusting, &u) == KEEL_OK && keel_start(u) == KEEL_OK, "open and start without trust_all", keel_errmsg());
    s = keel_enable(u, "hello");
    check(s != KEEL_OK && strstr(keel_errmsg(), "grant it with keel_grant(k, \"hello\", \"authenticate\")")
          && !strstr(keel_errmsg(), "keel plugins grant"), "a capability not granted names keel_grant", keel_errmsg());
    check(keel_grant(u, "hello", "authenticate") == KEEL_OK && keel_enable(u, "hello") == KEEL_OK, "granted, it enables", keel_errmsg());
    keel_close(u);

    keel_config cfg = KEEL_CONFIG_INIT;
    cfg.plugins_dir = argv[1];
    cfg.hook_budget_s = 1;
    cfg.drain_timeout_s = 2;
    cfg.log = on_log;
    cfg.trust_all = 1;
    check(keel_open(&cfg, &k) == KEEL_OK && k != NULL, "open in memory", keel_errmsg());
    check(keel_start(k) == KEEL_OK, "start", keel_errmsg());
    check(keel_start(k) == KEEL_ERR_WRONG_STATE, "start twice", keel_errmsg());
    check(keel_enable(k, NULL) == KEEL_ERR_INVALID_ARGUMENT, "enable NULL id", keel_errmsg());
    check(keel_enable(k, "") == KEEL_ERR_INVALID_ARGUMENT, "enable an empty id", keel_errmsg());
    s = keel_enable(k, "nope");
    check(s == KEEL_ERR_NOT_FOUND && strstr(keel_errmsg(), "nope"), "enable an unknown plugin", keel_errmsg());
    check(keel_enable(k, "hello") == KEEL_OK && keel_enable(k, "calc") == KEEL_OK, "enable hello and calc", keel_errmsg());
    check(keel_reload(k, "hello") == KEEL_OK, "reload hello", keel_errmsg());
    check(keel_reload(k, NULL) == KEEL_ERR_INVALID_ARGUMENT, "reload NULL id", keel_errmsg());
    s = keel_reload(k, "nope");
    check(s == KEEL_ERR_NOT_FOUND && strstr(keel_errmsg(), "nope"), "reload an unknown plugin", keel_errmsg());

    /* A call from inside the log callback is refused and does nothing: hello stays enabled. */
    the_kernel = k;
    keel_grant(k, "hello", "authenticate");   /* logs a line (the audit line) */
    the_kernel = NULL;
    snprintf(detail, sizeof detail, "got %d", atomic_load(&log_reentry) - 1000);
    check(atomic_load(&log_reentry) == KEEL_MISUSE + 1000, "a call from the log callback returns KEEL_MISUSE", detail);
    keel_response *res = get(k, "/ext/hello/greet/ada", &s);
    check(s == KEEL_OK && res && res->status == 200, "hello still enabled after the refused call", keel_errmsg());
    keel_response_free(res);

    /* Dispatch: bad requests. */
    check(keel_dispatch(k, NULL, &res) == KEEL_ERR_INVALID_ARGUMENT, "dispatch NULL request", keel_errmsg());
    keel_request req = KEEL_REQUEST_INIT;
    req.method = "GET";
    req.path = "/ext/hello/greet/ada";
    req.header_count = 2;
    res = (keel_response *)&s;
    check(keel_dispatch(k, &req, &res) == KEEL_ERR_INVALID_ARGUMENT && res == NULL, "dispatch with NULL headers and a count", keel_errmsg());
    req.header_count = 0;
    check(keel_dispatch(k, &req, NULL) == KEEL_ERR_INVALID_ARGUMENT, "dispatch with NULL out_response", keel_errmsg());
    req.path = NULL;
    check(keel_dispatch(k, &req, &res) == KEEL_ERR_INVALID_ARGUMENT, "dispatch with NULL path", keel_errmsg());
    res = get(k, "/ext/hello/%2e%2e/x", &s);
    check(s == KEEL_OK && res && res->status == 400, "a dot segment is 400", NULL);
    keel_response_free(res);
    res = get(k, "ext/hello/greet/ada", &s);
    check(s == KEEL_OK && res && res->status == 400 && strstr((const char *)res->body, "does not start with /"), "a relative path is 400", NULL);
    keel_response_free(res);
    req.path = "/ext/hello/greet/ada";
    const char *methods[] = { "BREW COFFEE", "", "GET\r\n" };
    for (int i = 0; i < 3; i++) {
        req.method = methods[i];
        res = NULL;
        check(keel_dispatch(k, &req, &res) == KEEL_OK && res && res->status == 400 && strstr((const char *)res->body, "bad-request"),
              "a method that is no token is 400", methods[i]);
        keel_response_free(res);
    }
    req.method = "GET";
    res = get(k, "/ext/ghost/x", &s);
    check(s == KEEL_OK && res && res->status == 404 && strstr((const char *)res->body, "not-found"), "no route is 404", NULL);
    keel_response_free(res);

    /* Commands. */
    char *json = NULL;
    const char *two[] = { "2", "40" };
    check(keel_command(k, "calc", "add", 2, two, &json) == KEEL_OK && json && strcmp(json, "42") == 0, "command calc.add", keel_errmsg());
    keel_free(json);
    const char *words[] = { "two", "forty" };
    s = keel_command(k, "calc", "add", 2, words, &json);
    check(s == KEEL_ERR_INVALID_ARGUMENT && json == NULL, "command with a bad argument", keel_errmsg());
    check(keel_command(k, "calc", "ghost", 0, NULL, &json) == KEEL_ERR_NOT_FOUND, "unknown command", keel_errmsg());
    check(keel_command(k, "calc", "add", 2, NULL, &json) == KEEL_ERR_INVALID_ARGUMENT, "command with NULL argv", keel_errmsg());

    /* Events. */
    check(keel_subscribe(k, NULL, NULL, NULL) == KEEL_ERR_INVALID_ARGUMENT, "subscribe NULL", keel_errmsg());
    check(keel_unsubscribe(k, 987654) == KEEL_ERR_NOT_FOUND, "unsubscribe an unknown token", keel_errmsg());
    {
        /* A token of another handle names nothing here (tokens were counted per handle: one ended another's). */
        keel_config other_cfg = KEEL_CONFIG_INIT;
        keel *other = NULL;
        int64_t mine = 0, theirs = 0;
        check(keel_open(&other_cfg, &other) == KEEL_OK, "open a second kernel", keel_errmsg());
        check(keel_subscribe(other, on_event_ignored, NULL, &theirs) == KEEL_OK && keel_subscribe(k, on_event_ignored, NULL, &mine) == KEEL_OK,
              "subscribe on both", keel_errmsg());
        check(mine != theirs && keel_unsubscribe(k, theirs) == KEEL_ERR_NOT_FOUND, "another handle's token is unknown here", keel_errmsg());
        check(keel_unsubscribe(k, mine) == KEEL_OK && keel_unsubscribe(other, theirs) == KEEL_OK, "each unsubscribes its own", keel_errmsg());
        keel_close(other);
    }
    /* An id with a line break: the error is one line (escaped), never a forged second one. */
    s = keel_enable(k, "x\nkeel: error: [hello] forged");
    check(s != KEEL_OK && strchr(keel_errmsg(), '\n') == NULL && strstr(keel_errmsg(), "x\\nkeel"), "an error naming an id with a line break is one line", keel_errmsg());

    /* A service the appliance provides to plugins. */
    check(keel_provide_service(k, "test.echo/1", "1.0.0", &echo_table) == KEEL_OK, "provide test.echo/1", keel_errmsg());
    check(keel_provide_service(k, "test.echo/1", NULL, &echo_table) == KEEL_ERR_CONFLICT, "provide twice", keel_errmsg());
    check(keel_provide_service(k, "not an id", NULL, &echo_table) == KEEL_ERR_INVALID_ARGUMENT, "provide a malformed id", keel_errmsg());
    check(keel_enable(k, "user") == KEEL_OK, "a consumer of the appliance's service enables", keel_errmsg());
    echo_kernel = k;
    res = get(k, "/ext/user/call?gpio", &s);
    echo_kernel = NULL;
    snprintf(detail, sizeof detail, "got %d", atomic_load(&echo_reentry) - 1000);
    check(atomic_load(&echo_reentry) == KEEL_MISUSE + 1000, "a call from plugin code keel_dispatch runs returns KEEL_MISUSE", detail);
    snprintf(detail, sizeof detail, "%s", res ? (const char *)res->body : keel_errmsg());
    check(s == KEEL_OK && res && strcmp((const char *)res->body, "tag=appliance echo=gpio provider=keel gen=0 v=1.0.0") == 0,
          "the plugin calls the appliance's table", detail);
    keel_response_free(res);
    /* The program's choice of provider, as `keel services use` makes it. */
    check(keel_use_provider(k, "test.echo/1", "keel") == KEEL_OK, "use the appliance's own table", keel_errmsg());
    check(keel_use_provider(k, "test.echo/1", NULL) == KEEL_OK, "back to the ranking rule", keel_errmsg());
    check(keel_use_provider(k, "test.echo/1", "nope") == KEEL_ERR_NOT_FOUND && strstr(keel_errmsg(), "nope"), "use a provider not installed", keel_errmsg());
    check(keel_use_provider(k, "test.echo/1", "hello") == KEEL_ERR_CONFLICT, "use a plugin that does not provide it", keel_errmsg());
    check(keel_use_provider(k, NULL, "keel") == KEEL_ERR_INVALID_ARGUMENT, "use with a NULL interface", keel_errmsg());
    check(keel_use_provider(k, "", "keel") == KEEL_ERR_INVALID_ARGUMENT, "use with an empty interface", keel_errmsg());
    s = keel_use_provider(k, "test.other/1", "keel");
    check(s == KEEL_ERR_CONFLICT && strstr(keel_errmsg(), "the host offers no table for test.other/1"), "use the program's table before offering it", keel_errmsg());
    check(keel_grant(k, "", "routes") == KEEL_ERR_INVALID_ARGUMENT, "grant to an empty id", keel_errmsg());
    check(keel_serve(k, "", 0, NULL) == KEEL_ERR_INVALID_ARGUMENT, "serve on an empty host", keel_errmsg());

    /* HTTP on a free port, the process's signals left alone; an address that is none is said in words. */
    int32_t port = 0;
    check(keel_serve(k, "256.1.1.1", 0, &port) == KEEL_ERR_UNAVAILABLE && strstr(keel_errmsg(), "is not an address or a name this machine resolves")
          && !strstr(keel_errmsg(), "SocketAddressError"), "serve on an address that is none", keel_errmsg());
    setenv("KEEL_ADMIN_TOKEN", "c-admin-token-0123456789", 1);
    check(keel_serve(k, "127.0.0.1", 0, &port) == KEEL_OK && port > 0, "serve", keel_errmsg());
    char page[4096];
    http_get(port, "/ext/hello/greet/web", page, sizeof page);
    check(strstr(page, "HTTP/1.1 200") && strstr(page, "hello, web (as anonymous)"), "a request over HTTP", page);
    check(keel_serve(k, "127.0.0.1", 0, &port) == KEEL_ERR_WRONG_STATE, "serve twice", keel_errmsg());
    /* $KEEL_ADMIN_TOKEN set after keel_open and before keel_serve (a state in memory holds no token) opens the admin API. */
    http_get_with(port, "/api/v1/plugins", "Authorization: Bearer c-admin-token-0123456789", page, sizeof page);
    check(strstr(page, "HTTP/1.1 200") != NULL, "the admin token set before keel_serve is taken", page);

    /* keel_plugins. */
    keel_plugin_list *list = NULL;
    check(keel_plugins(k, NULL) == KEEL_ERR_INVALID_ARGUMENT, "plugins with NULL out_list", keel_errmsg());
    check(keel_plugins(k, &list) == KEEL_OK && list->count == 3 && strcmp(list->items[0].id, "calc") == 0 &&
          strcmp(list->items[1].status, "enabled") == 0, "plugins", keel_errmsg());
    keel_plugin_list_free(list);

    /* Close while another thread dispatches: its calls end with KEEL_MISUSE, none crashes. */
    pthread_t racer;
    pthread_create(&racer, NULL, race, k);
    pause_ms(20);
    check(keel_close(k) == KEEL_OK, "close under calls", keel_errmsg());
    pthread_join(racer, NULL);
    snprintf(detail, sizeof detail, "bad=%d misuse=%d", atomic_load(&racing_bad), atomic_load(&racing_misuse));
    check(atomic_load(&racing_bad) == 0 && atomic_load(&racing_misuse) == 1, "calls racing close get KEEL_MISUSE", detail);
    int lines = atomic_load(&log_lines);
    check(keel_enable(k, "hello") == KEEL_MISUSE && strstr(keel_errmsg(), "not an open keel handle"), "a call after close", keel_errmsg());
    check(keel_close(k) == KEEL_MISUSE, "close twice", keel_errmsg());
    pause_ms(100);
    check(atomic_load(&log_lines) == lines, "no log callback after close", NULL);
    check(http_get(port, "/healthz", page, sizeof page) <= 0, "the server stopped with close", page);
    return failures;
}
