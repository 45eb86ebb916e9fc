/* A plugin built against the frozen ABI 1.0 headers. Never edit: it is the promise that 1.0 plugins keep loading. */
#include <keel/keel.h>

static keel_status handle(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    res->set_status(res, 200);
    res->add_header(res, keel_cstr("content-type"), keel_cstr("text/plain"));
    res->write(res, "abi10 ", 6);
    return res->write(res, req->route_path.ptr, req->route_path.len);
}

static keel_status authn(void *ud, const keel_http_request *req, keel_principal_builder *out) {
    (void)ud; (void)req; (void)out;
    return KEEL_OK;
}

static keel_status authz(void *ud, const keel_authz_request *q, keel_auth_decision *out) {
    (void)ud; (void)q;
    *out = KEEL_AUTH_ABSTAIN;
    return KEEL_OK;
}

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    if (host->abi_version.major != 1) return KEEL_ERR_UNSUPPORTED;
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    const keel_host_menu *menu = host->get_service(ctx, keel_cstr(KEEL_SERVICE_MENU));
    const keel_host_auth *auth = host->get_service(ctx, keel_cstr(KEEL_SERVICE_AUTH));
    if (!http || !menu || !auth) return KEEL_ERR_UNSUPPORTED;
    keel_status s;
    keel_route r = { sizeof r, KEEL_STR("*"), KEEL_STR("/v1/*"), handle, NULL };
    if ((s = http->register_route(ctx, &r)) != KEEL_OK) return s;
    keel_menu_entry e = { sizeof e, KEEL_STR("abi10.main"), KEEL_STR("ABI 1.0"), KEEL_STR_EMPTY,
                          KEEL_STR("/ext/abi10/v1/"), 1, KEEL_STR_EMPTY, KEEL_STR_EMPTY };
    if ((s = menu->add_entry(ctx, &e)) != KEEL_OK) return s;
    keel_authenticator a = { sizeof a, KEEL_STR("noop"), authn, NULL };
    if ((s = auth->register_authenticator(ctx, &a)) != KEEL_OK) return s;
    keel_authorizer z = { sizeof z, KEEL_STR("noop"), authz, NULL };
    if ((s = auth->register_authorizer(ctx, &z)) != KEEL_OK) return s;
    host->log(ctx, KEEL_LOG_INFO, keel_cstr("abi 1.0 plugin up"));
    return KEEL_OK;
}

static keel_status deactivate(const keel_host *host, keel_ctx *ctx) {
    (void)host; (void)ctx;
    return KEEL_OK;
}

static const keel_plugin descriptor = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR("abi10"), KEEL_STR("1.0.0"), 0, activate, deactivate, NULL,
};

KEEL_PLUGIN_ENTRY(descriptor)
