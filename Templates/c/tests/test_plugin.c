/* `make test`: calls the route handler of src/plugin.c directly, with a request and a response built here. */
#include "../src/plugin.c"
#include <stdlib.h>

static char body[1024];
static size_t body_len;

static keel_status write_body(keel_http_response *res, const void *data, size_t len) {
    (void)res;
    if (body_len + len > sizeof body) return KEEL_ERR_LIMIT;
    memcpy(body + body_len, data, len);
    body_len += len;
    return KEEL_OK;
}
static keel_status add_header(keel_http_response *res, keel_str name, keel_str value) {
    (void)res; (void)name; (void)value;
    return KEEL_OK;
}
static keel_status set_status(keel_http_response *res, uint32_t status) {
    (void)res; (void)status;
    return KEEL_OK;
}

int main(void) {
    keel_http_header params[] = { { KEEL_STR("name"), KEEL_STR("ada") } };
    keel_principal anonymous;
    memset(&anonymous, 0, sizeof anonymous);
    keel_http_request req;
    memset(&req, 0, sizeof req);
    req.struct_size = sizeof req;
    req.method = keel_cstr("GET");
    req.route_path = keel_cstr("/hello/ada");
    req.params = params;
    req.params_len = 1;
    req.principal = &anonymous;
    keel_http_response res = { sizeof res, NULL, set_status, add_header, write_body };

    const char *want = "hello, ada, from {{id}}\n";
    if (hello(NULL, &req, &res) != KEEL_OK || body_len != strlen(want) || memcmp(body, want, body_len) != 0) {
        fprintf(stderr, "FAIL: GET /hello/ada answered \"%.*s\", want \"%s\"\n", (int)body_len, body, want);
        return EXIT_FAILURE;
    }
    const keel_plugin *d = keel_plugin_entry();
    if (d->id.len != 0 || d->version.len != 0 || d->activate == NULL) {
        fprintf(stderr, "FAIL: the descriptor should leave id and version to plugin.yaml and have an activate\n");
        return EXIT_FAILURE;
    }
    printf("ok: GET /hello/ada; the descriptor leaves id and version to plugin.yaml\n");
    return EXIT_SUCCESS;
}
