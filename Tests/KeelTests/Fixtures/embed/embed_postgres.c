/* The C embedding API on a shared PostgreSQL state: embed_postgres PLUGIN_FOLDER STATE_URL enable|check.
 * "enable" grants hello its hook, enables it and asks its route; "check" (a second process, later) finds hello
 * enabled from the stored state alone and asks the route again. Prints one line per step. */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel_embed.h>
#include <stdio.h>
#include <string.h>

static int get(keel *k) {
    keel_header auth = { "Authorization", "Bearer hello-demo-key" };
    keel_request req = KEEL_REQUEST_INIT;
    req.method = "GET";
    req.path = "/ext/hello/greet/ada";
    req.headers = &auth;
    req.header_count = 1;
    keel_response *res = NULL;
    if (keel_dispatch(k, &req, &res) != KEEL_OK) { printf("dispatch failed: %s\n", keel_errmsg()); return 1; }
    printf("GET /ext/hello/greet/ada -> %d %.*s\n", (int)res->status, (int)res->body_len, (const char *)res->body);
    keel_response_free(res);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: embed_postgres PLUGIN_FOLDER STATE_URL enable|check\n"); return 2; }
    keel_config cfg = KEEL_CONFIG_INIT;
    cfg.plugins_dir = argv[1];
    cfg.state = argv[2];
    keel *k = NULL;
    if (keel_open(&cfg, &k) != KEEL_OK) { printf("keel_open: %s\n", keel_errmsg()); return 1; }
    if (keel_start(k) != KEEL_OK) { printf("keel_start: %s\n", keel_errmsg()); return 1; }
    if (strcmp(argv[3], "enable") == 0) {
        if (keel_grant(k, "hello", "authenticate") != KEEL_OK) { printf("grant: %s\n", keel_errmsg()); return 1; }
        if (keel_enable(k, "hello") != KEEL_OK) { printf("enable: %s\n", keel_errmsg()); return 1; }
        printf("enable hello: ok\n");
    }
    keel_plugin_list *list = NULL;
    if (keel_plugins(k, &list) != KEEL_OK) { printf("plugins: %s\n", keel_errmsg()); return 1; }
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->items[i].id, "hello") == 0) printf("hello is %s\n", list->items[i].status);
    keel_plugin_list_free(list);
    int failed = get(k);
    keel_close(k);
    return failed;
}
