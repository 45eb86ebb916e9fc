/* hello — an example Keel plugin in plain C, built against PluginABI/ alone:
 *   cc -std=c11 -shared -fPIC -fvisibility=hidden -I PluginABI/include -o libhello-c.so hello.c
 * It registers a route, a menu entry and an authenticate hook whose API key comes from its configuration
 * (`keel plugins config hello FILE` with `api_key: ...`; "hello-demo-key" without one). */
#include <keel/keel.h>
#include <stdio.h>

static keel_host_http const *http;

/* "Bearer <api key>": set in activate, read by the hook (activate and hook calls never overlap). */
static char expected[160] = "Bearer hello-demo-key";
static size_t expected_len = sizeof "Bearer hello-demo-key" - 1;

/* GET /ext/hello/greet/:name → "hello, <name> (as <principal>)" */
static keel_status greet(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data;
    keel_str name = KEEL_STR("world");
    for (size_t i = 0; i < req->params_len; i++) {
        if (req->params[i].name.len == 4 && memcmp(req->params[i].name.ptr, "name", 4) == 0) name = req->params[i].value;
    }
    const keel_principal *who = req->principal;
    char buf[512];
    int n = snprintf(buf, sizeof buf, "hello, %.*s (as %.*s)\n", (int)name.len, name.ptr,
                     (int)(who->id.len ? who->id.len : 9), who->id.len ? who->id.ptr : "anonymous");
    if (n < 0) return KEEL_ERR_INTERNAL;
    res->add_header(res, keel_cstr("content-type"), keel_cstr("text/plain; charset=utf-8"));
    return res->write(res, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Recognises "Authorization: Bearer <api key>" as the principal "demo". Abstains otherwise. */
static keel_status authenticate(void *user_data, const keel_http_request *req, keel_principal_builder *out) {
    (void)user_data;
    for (size_t i = 0; i < req->headers_len; i++) {
        keel_http_header h = req->headers[i];
        if (h.name.len == 13 && memcmp(h.name.ptr, "authorization", 13) == 0 && h.value.len == expected_len &&
            memcmp(h.value.ptr, expected, expected_len) == 0) {
            keel_status s = out->set_identity(out, keel_cstr("demo"), keel_cstr("Demo User"), keel_cstr(""));
            if (s == KEEL_OK) s = out->add_role(out, keel_cstr("viewer"));
            return s;
        }
    }
    return KEEL_OK; /* abstain */
}

/* Reads "api_key" from the configuration JSON the host hands over (already checked against config.schema.yaml, so
 * it is an object whose api_key, if present, is a string). Escaped characters are refused rather than decoded. */
static keel_status read_api_key(const keel_host *host, keel_ctx *ctx) {
    const keel_host_config *config = host->get_service(ctx, keel_cstr(KEEL_SERVICE_CONFIG));
    keel_str json = KEEL_STR_EMPTY;
    if (config) json = config->get(ctx);
    static const char key[] = "\"api_key\"";
    const char *p = json.ptr, *end = json.ptr ? json.ptr + json.len : NULL;
    for (; p && p + sizeof key - 1 <= end; p++) {
        if (memcmp(p, key, sizeof key - 1) != 0) continue;
        p += sizeof key - 1;
        while (p < end && (*p == ' ' || *p == ':')) p++;
        if (p >= end || *p != '"') break;
        const char *start = ++p;
        while (p < end && *p != '"' && *p != '\\') p++;
        if (p >= end || *p == '\\' || p == start || p - start > 150) {
            host->set_error(ctx, keel_cstr("api_key must be 1 to 150 characters, without quotes or backslashes"));
            return KEEL_ERR_INVALID_ARGUMENT;
        }
        expected_len = (size_t)snprintf(expected, sizeof expected, "Bearer %.*s", (int)(p - start), start);
        return KEEL_OK;
    }
    expected_len = (size_t)snprintf(expected, sizeof expected, "Bearer hello-demo-key");
    return KEEL_OK;
}

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    const keel_host_menu *menu = host->get_service(ctx, keel_cstr(KEEL_SERVICE_MENU));
    const keel_host_auth *auth = host->get_service(ctx, keel_cstr(KEEL_SERVICE_AUTH));
    if (!http || !menu || !auth) {
        host->set_error(ctx, keel_cstr("hello needs keel.http/1, keel.menu/1 and keel.auth/1"));
        return KEEL_ERR_UNSUPPORTED;
    }
    keel_status s;
    if ((s = read_api_key(host, ctx)) != KEEL_OK) return s;
    keel_route route = { sizeof route, KEEL_STR("GET"), KEEL_STR("/greet/:name"), greet, NULL };
    if ((s = http->register_route(ctx, &route)) != KEEL_OK) return s;

    keel_menu_entry entry = { sizeof entry, KEEL_STR("hello.greet"), KEEL_STR("Say hello"), KEEL_STR("hello.main"),
                              KEEL_STR("/ext/hello/greet/world"), 10, KEEL_STR("wave"), KEEL_STR_EMPTY };
    if ((s = menu->add_entry(ctx, &entry)) != KEEL_OK) return s;

    keel_authenticator hook = { sizeof hook, KEEL_STR("demo-key"), authenticate, NULL };
    if ((s = auth->register_authenticator(ctx, &hook)) != KEEL_OK) return s;

    host->log(ctx, KEEL_LOG_INFO, keel_cstr("hello activated"));
    return KEEL_OK;
}

static const keel_plugin descriptor = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR("hello"), KEEL_STR("1.0.0"), 0, activate, NULL, NULL,
};

KEEL_PLUGIN_ENTRY(descriptor)
