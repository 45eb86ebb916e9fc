/* deployer — an example consumer of gitops.sync/1 (gitops_sync.h, next to this file), in C:
 *   cc -std=c11 -shared -fPIC -fvisibility=hidden -I PluginABI/include -I Plugins/deployer \
 *      -o libdeployer.so Plugins/deployer/deployer.c
 * Whichever plugin the operator chose serves it (`keel services use gitops.sync/1 flux-sync`); the deployer takes
 * a lease per request, so a switch reaches the next request and never cuts one short.
 *   GET /ext/deployer/sync/:app?rev=R  → "argocd synced shop to main (provider argo-sync 1.0.0 generation 3, ...)"
 *   GET /ext/deployer/provider         → {"provider":"argo-sync","version":"1.0.0",...} */
#include <keel/keel.h>
#include <stdbool.h>
#include <stdio.h>
#include "gitops_sync.h"

/* Set in activate, read by handlers and the listener: activate returns before either runs, and both stay valid
 * until deactivate returns. */
static const keel_host *host;
static keel_ctx *plugin_ctx;
static const keel_host_services *services;

static const char *status_name(keel_status s) {
    static const char *const names[] = {
        "KEEL_OK", "KEEL_ERR_INTERNAL", "KEEL_ERR_INVALID_ARGUMENT", "KEEL_ERR_CONFLICT", "KEEL_ERR_DENIED",
        "KEEL_ERR_NOT_FOUND", "KEEL_ERR_UNSUPPORTED", "KEEL_ERR_WRONG_STATE", "KEEL_ERR_LIMIT", "KEEL_ERR_NO_MEMORY",
        "KEEL_ERR_UNAVAILABLE",
    };
    return s >= 0 && (size_t)s < sizeof names / sizeof names[0] ? names[s] : "KEEL_ERR_INTERNAL";
}

/* printf arguments for a keel_str under "%.*s" (a NULL pointer prints as empty). */
#define STR_ARG(s) ((s).len > 4096 ? 4096 : (int)(s).len), ((s).ptr ? (s).ptr : "")

static keel_status answer(keel_http_response *res, uint32_t status, const char *type, const char *body, int n) {
    if (n < 0) return KEEL_ERR_INTERNAL;
    keel_status s = res->set_status(res, status);
    if (s == KEEL_OK) s = res->add_header(res, keel_cstr("content-type"), keel_cstr(type));
    if (s == KEEL_OK) s = res->write(res, body, (size_t)n);
    return s;
}

static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Sets *rev to the value of `rev` in a raw query string, percent-decoded into buf, or to "main" when absent or
 * empty. False when the value does not fit in cap bytes. */
static bool revision(keel_str query, char *buf, size_t cap, keel_str *rev) {
    *rev = keel_cstr("main");
    const char *p = query.ptr, *end = query.ptr ? query.ptr + query.len : NULL;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop - p > 4 && memcmp(p, "rev=", 4) == 0) {
            size_t n = 0;
            for (const char *c = p + 4; c < stop; c++) {
                if (n == cap) return false;
                int hi = stop - c > 2 ? hex(c[1]) : -1, lo = hi >= 0 ? hex(c[2]) : -1;
                if (*c == '%' && lo >= 0) {
                    buf[n++] = (char)(hi << 4 | lo);
                    c += 2;
                } else {
                    buf[n++] = *c == '+' ? ' ' : *c;
                }
            }
            if (n) *rev = (keel_str){ buf, n };
        }
        p = stop + 1;
    }
    return true;
}

/* Leases gitops.sync/1 for the caller's tenant. Returns true with the lease and table set, or false after
 * answering 503 naming why not; the handler then returns *reply. */
static bool lease(const keel_http_request *req, keel_http_response *res, bool json, keel_service_lease **out_lease,
                  const gitops_sync_v1 **out_table, keel_status *reply) {
    const void *table = NULL;
    keel_status s = services->acquire(plugin_ctx, keel_cstr(GITOPS_SYNC_INTERFACE), req->principal->tenant,
                                      GITOPS_SYNC_V1_0_SIZE, out_lease, &table);
    if (s == KEEL_OK) {
        *out_table = table;
        return true;
    }
    if (s == KEEL_ERR_UNAVAILABLE) res->add_header(res, keel_cstr("retry-after"), keel_cstr("1"));
    char body[160];
    int n = json ? snprintf(body, sizeof body, "{\"provider\":null,\"status\":\"%s\"}\n", status_name(s))
                 : snprintf(body, sizeof body, GITOPS_SYNC_INTERFACE " unavailable: %s\n", status_name(s));
    *reply = answer(res, 503, json ? "application/json" : "text/plain; charset=utf-8", body, n);
    return false;
}

static keel_service_info describe(const keel_service_lease *l) {
    keel_service_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (services->describe(l, &info) != KEEL_OK) {
        memset(&info, 0, sizeof info);
        info.provider_id = keel_cstr("?");
    }
    return info;
}

/* GET /sync/:app?rev=R: one lease for the whole unit of work (sync + describe), released before answering. */
static keel_status sync_route(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data;
    keel_str app = KEEL_STR_EMPTY;
    for (size_t i = 0; i < req->params_len; i++)
        if (req->params[i].name.len == 3 && memcmp(req->params[i].name.ptr, "app", 3) == 0) app = req->params[i].value;
    char rev_buf[128], body[768];
    keel_str rev;
    if (app.len == 0 || app.len > 128 || !revision(req->query, rev_buf, sizeof rev_buf, &rev)) {
        int n = snprintf(body, sizeof body, "app and rev take 1 to 128 bytes each\n");
        return answer(res, 400, "text/plain; charset=utf-8", body, n);
    }

    keel_service_lease *l = NULL;
    const gitops_sync_v1 *gitops = NULL;
    keel_status reply;
    if (!lease(req, res, false, &l, &gitops, &reply)) return reply;

    char line[512];
    size_t line_len = 0;
    keel_status s = gitops->sync(app, rev, line, sizeof line, &line_len);
    keel_service_info info = describe(l); /* its strings are valid until release: format before */
    int n;
    uint32_t code = 200;
    if (s == KEEL_OK) {
        n = snprintf(body, sizeof body, "%.*s (provider %.*s %.*s generation %llu, " GITOPS_SYNC_NAME " %u.%u.%u)\n",
                     STR_ARG(((keel_str){ line, line_len })), STR_ARG(info.provider_id), STR_ARG(info.provider_version),
                     (unsigned long long)info.generation, info.version.major, info.version.minor, info.version.patch);
    } else {
        keel_str engine = gitops->engine();
        code = 502;
        n = snprintf(body, sizeof body, "%.*s could not sync %.*s: %s (provider %.*s)\n", STR_ARG(engine),
                     STR_ARG(app), status_name(s), STR_ARG(info.provider_id));
    }
    services->release(l);
    if (n >= (int)sizeof body) n = (int)sizeof body - 1;
    return answer(res, code, "text/plain; charset=utf-8", body, n);
}

/* Writes `s` as a JSON string (quotes and escapes included) into out; returns the bytes written. */
static size_t json_string(char *out, size_t cap, keel_str s) {
    size_t n = 0;
    if (cap < 3) return 0;
    out[n++] = '"';
    for (size_t i = 0; i < s.len && n + 7 < cap; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') { out[n++] = '\\'; out[n++] = (char)c; }
        else if (c < 0x20) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    out[n++] = '"';
    return n;
}

/* GET /provider: who serves gitops.sync/1 for the caller's tenant right now. */
static keel_status provider_route(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data;
    keel_service_lease *l = NULL;
    const gitops_sync_v1 *gitops = NULL;
    keel_status reply;
    if (!lease(req, res, true, &l, &gitops, &reply)) return reply;
    keel_service_info info = describe(l);
    char id[200], version[200], body[512];
    size_t id_len = json_string(id, sizeof id, info.provider_id);
    size_t version_len = json_string(version, sizeof version, info.provider_version);
    int n = snprintf(body, sizeof body,
                     "{\"provider\":%.*s,\"version\":%.*s,\"interface_version\":\"%u.%u.%u\",\"generation\":%llu}\n",
                     (int)id_len, id, (int)version_len, version, info.version.major, info.version.minor,
                     info.version.patch, (unsigned long long)info.generation);
    services->release(l);
    return answer(res, 200, "application/json", body, n);
}

/* Logs every change of provider. [lifecycle] */
static void provider_changed(void *user_data, keel_str interface_id, keel_str tenant, const keel_service_info *now) {
    (void)user_data;
    char line[400];
    const char *scope = tenant.len ? "tenant " : "host-wide";
    int n;
    if (now && KEEL_HAS_FIELD(now, keel_service_info, provider_version)) {
        n = snprintf(line, sizeof line, "%.*s now served by %.*s %.*s (%s%.*s)", STR_ARG(interface_id),
                     STR_ARG(now->provider_id), STR_ARG(now->provider_version), scope, STR_ARG(tenant));
    } else {
        n = snprintf(line, sizeof line, "%.*s: no provider (%s%.*s)", STR_ARG(interface_id), scope, STR_ARG(tenant));
    }
    if (n <= 0) return;
    host->log(plugin_ctx, KEEL_LOG_INFO, (keel_str){ line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1 });
}

static keel_status activate(const keel_host *h, keel_ctx *ctx) {
    host = h;
    plugin_ctx = ctx;
    const keel_host_http *http = h->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    services = h->get_service(ctx, keel_cstr(KEEL_SERVICE_SERVICES));
    if (!http || !services) {
        h->set_error(ctx, keel_cstr("deployer needs keel.http/1 and keel.services/1 (a Keel host with ABI 1.1)"));
        return KEEL_ERR_UNSUPPORTED;
    }
    keel_status s;
    keel_route sync = { sizeof sync, KEEL_STR("GET"), KEEL_STR("/sync/:app"), sync_route, NULL };
    if ((s = http->register_route(ctx, &sync)) != KEEL_OK) return s;
    keel_route provider = { sizeof provider, KEEL_STR("GET"), KEEL_STR("/provider"), provider_route, NULL };
    if ((s = http->register_route(ctx, &provider)) != KEEL_OK) return s;
    keel_service_listener listener = { sizeof listener, KEEL_STR(GITOPS_SYNC_INTERFACE), provider_changed, NULL };
    return services->listen(ctx, &listener);
}

static const keel_plugin descriptor = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR("deployer"), KEEL_STR("1.0.0"), 0, activate, NULL, NULL,
};

KEEL_PLUGIN_ENTRY(descriptor)
