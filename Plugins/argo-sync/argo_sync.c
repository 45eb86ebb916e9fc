/* argo-sync — an example provider of gitops.sync/1 in C (the interface header ships with the consumer):
 *   cc -std=c11 -shared -fPIC -fvisibility=hidden -I PluginABI/include -I Plugins/deployer \
 *      -o libargo-sync.so Plugins/argo-sync/argo_sync.c
 * It registers no routes: its only contribution is the table below, which consumers reach through leases. */
#include <keel/keel.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include "gitops_sync.h"

static atomic_ullong calls;   /* sync calls served by this activation */
static atomic_bool stopped;   /* set by deactivate */

static keel_str engine(void) {
    static const keel_str name = KEEL_STR("argocd");
    return name;
}

/* Appends `s` at *at when it fits; always advances *at, so the final *at is the size the whole line needs. */
static void append(char *out, size_t cap, size_t *at, keel_str s) {
    if (s.len && *at <= cap && s.len <= cap - *at) memcpy(out + *at, s.ptr, s.len);
    *at += s.len;
}

/* gitops_sync_v1.sync: "argocd synced <app> to <revision>". Nothing is talked to: the example only formats. */
static keel_status sync_app(keel_str app, keel_str revision, char *out, size_t out_cap, size_t *out_len) {
    /* Leases keep this activation alive, so a consumer never gets here after deactivate; refuse anyway. */
    if (atomic_load(&stopped)) return KEEL_ERR_WRONG_STATE;
    if (!out_len || (!out && out_cap) || !app.ptr || !app.len || (!revision.ptr && revision.len))
        return KEEL_ERR_INVALID_ARGUMENT;
    atomic_fetch_add(&calls, 1);
    size_t at = 0;
    append(out, out_cap, &at, engine());
    append(out, out_cap, &at, keel_cstr(" synced "));
    append(out, out_cap, &at, app);
    append(out, out_cap, &at, keel_cstr(" to "));
    append(out, out_cap, &at, revision.len ? revision : keel_cstr("main"));
    *out_len = at;
    return at <= out_cap ? KEEL_OK : KEEL_ERR_LIMIT;
}

/* Constant, in the library's data: valid until deactivate returns, as provide requires. */
static const gitops_sync_v1 table = { sizeof(gitops_sync_v1), engine, sync_app };

static keel_status activate(const keel_host *h, keel_ctx *ctx) {
    atomic_store(&calls, 0);
    atomic_store(&stopped, false);
    const keel_host_services *services = h->get_service(ctx, keel_cstr(KEEL_SERVICE_SERVICES));
    if (!services) {
        h->set_error(ctx, keel_cstr("argo-sync needs keel.services/1 (a Keel host with ABI 1.1 or later)"));
        return KEEL_ERR_UNSUPPORTED;
    }
    keel_service_provision provision = { sizeof provision, KEEL_STR(GITOPS_SYNC_INTERFACE), &table };
    keel_status s = services->provide(ctx, &provision);
    if (s != KEEL_OK) {
        h->set_error(ctx, keel_cstr("argo-sync could not provide " GITOPS_SYNC_INTERFACE));
        return s;
    }
    return KEEL_OK;
}

static keel_status deactivate(const keel_host *h, keel_ctx *ctx) {
    atomic_store(&stopped, true);
    char line[96];
    int n = snprintf(line, sizeof line, "argo-sync served %llu sync call(s)", (unsigned long long)atomic_load(&calls));
    if (n > 0) h->log(ctx, KEEL_LOG_INFO, (keel_str){ line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1 });
    return KEEL_OK;
}

static const keel_plugin descriptor = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR("argo-sync"), KEEL_STR("1.0.0"), 0, activate, deactivate, NULL,
};

KEEL_PLUGIN_ENTRY(descriptor)
