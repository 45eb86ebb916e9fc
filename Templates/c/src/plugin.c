/* {{id}} — a Keel plugin in C. `make` builds bundle/{{id}}/ (plugin.yaml + lib{{ident}}.so); the headers come from
 * the Keel plugin SDK through pkg-config (`keel sdk install`).
 *
 * GET /ext/{{id}}/hello/:name answers "hello, <name>, from {{id}}". */
#include <keel/keel.h>
#include <stdio.h>

/* GET /hello/:name. Runs on the host's request threads, possibly concurrently: it keeps no state. */
static keel_status hello(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data;
    keel_str name = KEEL_STR("world");
    for (size_t i = 0; i < req->params_len; i++) {
        if (req->params[i].name.len == 4 && memcmp(req->params[i].name.ptr, "name", 4) == 0) name = req->params[i].value;
    }
    char buf[512];
    int n = snprintf(buf, sizeof buf, "hello, %.*s, from {{id}}\n", (int)name.len, name.ptr);
    if (n < 0) return KEEL_ERR_INTERNAL;
    keel_status s = res->add_header(res, keel_cstr("content-type"), keel_cstr("text/plain; charset=utf-8"));
    if (s != KEEL_OK) return s;
    return res->write(res, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    if (!http) {
        host->set_error(ctx, keel_cstr("{{id}} needs keel.http/1"));
        return KEEL_ERR_UNSUPPORTED;
    }
    keel_route route = { sizeof route, KEEL_STR("GET"), KEEL_STR("/hello/:name"), hello, NULL };
    return http->register_route(ctx, &route);
}

/* The id and the version are left empty: the host takes plugin.yaml's, the one place they are written. */
static const keel_plugin plugin = {
    sizeof plugin, KEEL_ABI_VERSION_INIT, KEEL_STR_EMPTY, KEEL_STR_EMPTY, 0, activate, NULL, NULL,
};
KEEL_PLUGIN_ENTRY(plugin)
