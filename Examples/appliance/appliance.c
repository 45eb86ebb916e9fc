/* An appliance that embeds Keel through libkeel.so (keel/keel_embed.h).
 *
 * Build:  cc appliance.c $(pkg-config --cflags --libs keel) -o appliance
 * Run:    ./appliance PLUGIN_FOLDER [--no-close]
 *
 * It opens a kernel with its state in memory, enables every plugin it finds, answers a request to hello's route
 * without HTTP, calls calc's "add" command when calc is there, disables hello again, and prints what it saw (log
 * lines go to stderr, results and events to stdout). EmbeddingCTests builds and runs it with real plugins.
 * With --no-close it exits without keel_close (allowed: see keel_embed.h, Closing). */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel_embed.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int hello_enabled_events = 0;
static keel *kernel_for_callbacks = NULL;
static keel_status reentry = KEEL_OK;

static void on_log(void *ud, keel_log_level level, const char *plugin_id, const char *message) {
    (void)ud;
    fprintf(stderr, "log %d [%s] %s\n", (int)level, plugin_id ? plugin_id : "-", message);
}

/* Runs on the kernel's event thread. Calling back into the API from here is refused with KEEL_MISUSE. */
static void on_event(void *ud, const keel_event *e) {
    (void)ud;
    keel_plugin_list *list = NULL;
    keel_status again = keel_plugins(kernel_for_callbacks, &list);
    pthread_mutex_lock(&lock);
    reentry = again;
    if (e->kind == KEEL_EVENT_PLUGIN_STATE && strcmp(e->plugin_id, "hello") == 0 && strcmp(e->status, "enabled") == 0)
        hello_enabled_events++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    if (e->kind == KEEL_EVENT_COMMAND)
        printf("event command %s %s%s%s\n", e->command, e->plugin_id ? e->plugin_id : "-",
               e->message ? " failed: " : "", e->message ? e->message : "");
    else if (e->kind == KEEL_EVENT_PLUGIN_STATE)
        printf("event state %s %s\n", e->plugin_id, e->status);
    fflush(stdout);
}

static void get(keel *k, const char *path) {
    keel_header auth = { "Authorization", "Bearer hello-demo-key" };
    keel_request req = KEEL_REQUEST_INIT;
    req.method = "GET";
    req.path = path;
    req.headers = &auth;
    req.header_count = 1;
    keel_response *res = NULL;
    if (keel_dispatch(k, &req, &res) != KEEL_OK) { printf("dispatch failed: %s\n", keel_errmsg()); return; }
    printf("GET %s -> %d %s", path, (int)res->status, (const char *)res->body);
    if (res->body_len == 0 || res->body[res->body_len - 1] != '\n') printf("\n");
    keel_response_free(res);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: appliance PLUGIN_FOLDER [--no-close]\n"); return 2; }
    int close_at_end = !(argc > 2 && strcmp(argv[2], "--no-close") == 0);

    keel_config cfg = KEEL_CONFIG_INIT;
    cfg.plugins_dir = argv[1];
    cfg.state = KEEL_STATE_IN_MEMORY;
    cfg.log = on_log;
    keel *k = NULL;
    if (keel_open(&cfg, &k) != KEEL_OK) { fprintf(stderr, "keel_open: %s\n", keel_errmsg()); return 1; }
    kernel_for_callbacks = k;
    keel_subscribe(k, on_event, NULL, NULL);
    keel_start(k);
    keel_grant(k, "hello", "authenticate");          /* hello's API-key hook needs the operator's grant */

    keel_plugin_list *list = NULL;
    keel_plugins(k, &list);
    for (size_t i = 0; i < list->count; i++) {
        keel_status s = keel_enable(k, list->items[i].id);
        printf("enable %s: %s\n", list->items[i].id, s == KEEL_OK ? "ok" : keel_errmsg());
    }
    keel_plugin_list_free(list);

    get(k, "/ext/hello/greet/ada");

    const char *args[] = { "2", "40" };
    char *json = NULL;
    if (keel_command(k, "calc", "add", 2, args, &json) == KEEL_OK) printf("calc.add 2 40 = %s\n", json);
    else printf("calc.add: %s\n", keel_errmsg());
    keel_free(json);

    /* Wait (at most 10 s) for the event thread to report hello enabled. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&lock);
    while (hello_enabled_events == 0 && pthread_cond_timedwait(&changed, &lock, &until) == 0) {}
    printf("hello enabled event: %s; a call from the callback: %s\n", hello_enabled_events ? "yes" : "no",
           reentry == KEEL_MISUSE ? "KEEL_MISUSE" : "allowed");
    pthread_mutex_unlock(&lock);

    keel_disable(k, "hello", 0);
    get(k, "/ext/hello/greet/ada");
    printf("NULL handle: %s\n", keel_enable(NULL, "hello") == KEEL_MISUSE ? "KEEL_MISUSE" : "accepted");
    fflush(stdout);

    if (!close_at_end) return 0;
    keel_close(k);
    printf("after close: %s\n", keel_enable(k, "hello") == KEEL_MISUSE ? "KEEL_MISUSE" : "accepted");
    printf("close again: %s\n", keel_close(k) == KEEL_MISUSE ? "KEEL_MISUSE" : "accepted");
    return 0;
}
