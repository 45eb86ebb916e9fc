/* A kernel on a state file owns it, as `keel serve` does (keel/keel_embed.h). Usage:
 *   embed_owner PLUGIN_FOLDER STATE_FILE KEEL_BINARY
 * Opens a kernel on STATE_FILE, then checks that a second kernel and a `keel serve` on that state are refused, that
 * the `keel` CLI's commands reach the open kernel (grant and enable hello from the CLI; the kernel has it enabled),
 * that a refused grant is KEEL_ERR_INVALID_ARGUMENT, and that once closed the state opens again. Prints "ok <check>"
 * or "FAIL <check>: ..." per check; the exit status is the number of failures. Run by EmbeddingCTests. */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel_embed.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures = 0;
static void check(int ok, const char *name, const char *detail) {
    if (ok) printf("ok %s\n", name);
    else { printf("FAIL %s: %s\n", name, detail ? detail : ""); failures++; }
    fflush(stdout);
}

/* hello's status as the open kernel has it ("" when not listed). */
static void status_of(keel *k, const char *id, char *out, size_t cap) {
    keel_plugin_list *list = NULL;
    out[0] = 0;
    if (keel_plugins(k, &list) != KEEL_OK) return;
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->items[i].id, id) == 0) snprintf(out, cap, "%s", list->items[i].status);
    keel_plugin_list_free(list);
}

/* Runs the CLI with `args` on this state and plugin folder; returns its exit status, its output in `out`. */
static int cli(const char *keel_bin, const char *args, const char *state, const char *plugins, char *out, size_t cap) {
    char command[4096];
    snprintf(command, sizeof command, "timeout 30 '%s' %s --state '%s' --plugins '%s' 2>&1", keel_bin, args, state, plugins);
    FILE *p = popen(command, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv) {
    if (argc < 4) return 100;
    const char *plugins = argv[1], *state = argv[2], *keel_bin = argv[3];
    char out[8192], status[64];

    keel_config cfg = KEEL_CONFIG_INIT;
    cfg.plugins_dir = plugins;
    cfg.state = state;
    keel *k = NULL;
    check(keel_open(&cfg, &k) == KEEL_OK && keel_start(k) == KEEL_OK, "open and start on a state file", keel_errmsg());

    keel *second = NULL;
    keel_status s = keel_open(&cfg, &second);
    check(s == KEEL_ERR_INTERNAL && second == NULL && strstr(keel_errmsg(), state) && strstr(keel_errmsg(), "another keel server is using it")
          && strstr(keel_errmsg(), "embedded"), "a second kernel on the same state is refused, naming the holder", keel_errmsg());

    /* Through another name of the same file: the lock is the file's, not the name's. */
    char link[4096];
    snprintf(link, sizeof link, "%s.link", state);
    unlink(link);
    check(symlink(state, link) == 0, "a link to the state", NULL);
    keel_config linked = cfg;
    linked.state = link;
    s = keel_open(&linked, &second);
    check(s == KEEL_ERR_INTERNAL && second == NULL && strstr(keel_errmsg(), "another keel server is using it"),
          "a second kernel on a link to the state is refused too", keel_errmsg());

    int rc = cli(keel_bin, "serve --port 0", state, plugins, out, sizeof out);
    check(rc == 1 && strstr(out, "another keel server is using it"), "keel serve on the same state is refused", out);

    s = keel_grant(k, "hello", "no-such-capability");
    check(s == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "unknown capability"), "a refused grant is KEEL_ERR_INVALID_ARGUMENT", keel_errmsg());
    s = keel_grant(k, "hello", "processes");
    check(s == KEEL_ERR_INVALID_ARGUMENT && strstr(keel_errmsg(), "does not ask for"), "a grant the plugin does not ask for is KEEL_ERR_INVALID_ARGUMENT", keel_errmsg());

    /* The CLI reaches the open kernel through the state's command queue, as it reaches `keel serve`. */
    rc = cli(keel_bin, "plugins grant hello authenticate", state, plugins, out, sizeof out);
    check(rc == 0, "keel plugins grant from the CLI", out);
    rc = cli(keel_bin, "plugins enable hello", state, plugins, out, sizeof out);
    check(rc == 0, "keel plugins enable from the CLI", out);
    status_of(k, "hello", status, sizeof status);
    check(strcmp(status, "enabled") == 0, "the open kernel enabled hello for the CLI", status);
    rc = cli(keel_bin, "plugins list", state, plugins, out, sizeof out);
    check(rc == 0 && strstr(out, "hello") && strstr(out, "enabled"), "keel plugins list shows the open kernel's plugins", out);
    keel_request req = KEEL_REQUEST_INIT;
    req.method = "GET";
    req.path = "/ext/hello/greet/ada";
    keel_response *res = NULL;
    check(keel_dispatch(k, &req, &res) == KEEL_OK && res && res->status == 200, "the enabled plugin answers", keel_errmsg());
    keel_response_free(res);

    check(keel_close(k) == KEEL_OK, "close", keel_errmsg());
    k = NULL;
    check(keel_open(&cfg, &k) == KEEL_OK && keel_start(k) == KEEL_OK, "once closed, the state opens again", keel_errmsg());
    status_of(k, "hello", status, sizeof status);
    check(strcmp(status, "enabled") == 0, "and keeps what the CLI changed", status);
    keel_close(k);

    /* A file that is not a Keel state is refused, and nothing is left beside it (no lock file). */
    char notes[4096], notes_lock[4200];
    snprintf(notes, sizeof notes, "%s.notes", state);
    snprintf(notes_lock, sizeof notes_lock, "%s.lock", notes);
    FILE *f = fopen(notes, "w");
    for (int i = 0; f && i < 64; i++) fputs("not a database ", f);
    if (f) fclose(f);
    keel_config other = cfg;
    other.state = notes;
    keel *refused = NULL;
    s = keel_open(&other, &refused);
    check(s != KEEL_OK && refused == NULL && strstr(keel_errmsg(), "is not a Keel state file") && access(notes_lock, F_OK) != 0,
          "a file that is not a state is refused, and no lock file is left beside it", keel_errmsg());
    return failures;
}
