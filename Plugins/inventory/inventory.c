/* inventory — an example Keel plugin with a console page, in plain C:
 *   cc -std=c11 -shared -fPIC -fvisibility=hidden -I PluginABI/include -o libinventory.so inventory.c
 * The C part is a JSON back end; the page (assets/items.js, a plain ES module, no build step) is declared under
 * `console:` in plugin.yaml, served by the host in a sandboxed frame, and reads the route through `keel.fetch`.
 *   GET /ext/inventory/items → {"viewer":"<caller id>","tenant":"<tenant>","items":[{"sku":..,"name":..,"quantity":..},..]} */
#include <keel/keel.h>
#include <stdio.h>

struct item { const char *sku, *name; int quantity; };
static const struct item items[] = {
    { "BLT-100", "Hex bolts M8", 240 },
    { "NUT-080", "Nuts M8", 1180 },
    { "WSH-008", "Washers 8 mm", 75 },
    { "BRK-220", "Angle brackets", 12 },
};

/* Appends `s` as a JSON string body (without quotes) to `out`: quotes, backslashes and control characters escaped. */
static size_t json_text(char *out, size_t room, keel_str s) {
    size_t n = 0;
    for (size_t i = 0; i < s.len && n + 7 < room; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') { out[n++] = '\\'; out[n++] = (char)c; }
        else if (c < 0x20) n += (size_t)snprintf(out + n, room - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    return n;
}

static keel_status list_items(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data;
    char body[2048];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"viewer\":\"");
    n += json_text(body + n, sizeof body - n, req->principal->id);
    n += (size_t)snprintf(body + n, sizeof body - n, "\",\"tenant\":\"");
    n += json_text(body + n, sizeof body - n, req->principal->tenant);
    n += (size_t)snprintf(body + n, sizeof body - n, "\",\"items\":[");
    for (size_t i = 0; i < sizeof items / sizeof items[0] && n < sizeof body; i++) {
        n += (size_t)snprintf(body + n, sizeof body - n, "%s{\"sku\":\"%s\",\"name\":\"%s\",\"quantity\":%d}",
                              i ? "," : "", items[i].sku, items[i].name, items[i].quantity);
    }
    if (n + 3 > sizeof body) return KEEL_ERR_INTERNAL;
    n += (size_t)snprintf(body + n, sizeof body - n, "]}");
    keel_status s = res->add_header(res, keel_cstr("content-type"), keel_cstr("application/json"));
    return s == KEEL_OK ? res->write(res, body, n) : s;
}

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    if (!http) {
        host->set_error(ctx, keel_cstr("inventory needs keel.http/1"));
        return KEEL_ERR_UNSUPPORTED;
    }
    keel_route route = { sizeof route, KEEL_STR("GET"), KEEL_STR("/items"), list_items, NULL };
    return http->register_route(ctx, &route);
}

static const keel_plugin descriptor = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR("inventory"), KEEL_STR("1.0.0"), 0, activate, NULL, NULL,
};

KEEL_PLUGIN_ENTRY(descriptor)
