/* A crash in plugin code inside an appliance, with keel_config.records_crashes: the process dies of the signal, a
 * crash record names the plugin, and the next keel_open's start quarantines it.
 *   embed_crash PLUGINS STATE crash    enables crasher and dispatches a request that crashes it (never returns)
 *   embed_crash PLUGINS STATE after    prints each plugin's status and reason ("crasher failed <reason>")
 *   embed_crash PLUGINS STATE old      opens with a keel_config the size a 1.0 program passes (no new fields)
 *   embed_crash PLUGINS STATE probe KEEL   enables crasher with config.probe = KEEL; prints the outcome */
#include <keel/keel_embed.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 4) return 64;
    const char *mode = argv[3];
    keel_config c = KEEL_CONFIG_INIT;
    c.plugins_dir = argv[1];
    c.state = argv[2];
    c.trust_all = 1;
    c.records_crashes = 1;
    if (strcmp(mode, "old") == 0) {
        c.struct_size = (uint32_t)offsetof(keel_config, records_crashes);
        c.records_crashes = 0x5a5a; /* past the size given: never read (this one would need a state file) */
        c.probe = "/nonexistent/keel"; /* nor this one, which keel_open would refuse */
    }
    if (strcmp(mode, "probe") == 0) c.probe = argc > 4 ? argv[4] : NULL;
    keel *k = NULL;
    if (keel_open(&c, &k) != KEEL_OK) { printf("open failed: %s\n", keel_errmsg()); return 1; }
    keel_start(k);
    if (strcmp(mode, "crash") == 0) {
        if (keel_enable(k, "crasher") != KEEL_OK) { printf("enable failed: %s\n", keel_errmsg()); return 1; }
        keel_request req = KEEL_REQUEST_INIT;
        req.method = "GET";
        req.path = "/ext/crasher/items/segv";
        keel_response *res = NULL;
        keel_dispatch(k, &req, &res);
        printf("survived the crash\n");
        return 2;
    }
    if (strcmp(mode, "probe") == 0) {
        keel_status s = keel_enable(k, "crasher");
        printf("enable crasher: %s %s\n", s == KEEL_OK ? "ok" : "failed", s == KEEL_OK ? "" : keel_errmsg());
    }
    keel_plugin_list *list = NULL;
    if (keel_plugins(k, &list) != KEEL_OK) { printf("plugins failed: %s\n", keel_errmsg()); return 1; }
    for (size_t i = 0; i < list->count; i++) {
        printf("%s %s %s\n", list->items[i].id, list->items[i].status, list->items[i].reason ? list->items[i].reason : "-");
    }
    keel_plugin_list_free(list);
    keel_close(k);
    printf("%s: done\n", mode);
    return 0;
}
