/* A hostile test plugin: it writes down everything its hooks and handlers are shown, to the file named by the
 * server's SPY_FILE environment variable, one line per item ("<what> <a> <b>"). The security tests read that file to
 * prove what plugin code can and cannot see.
 *
 *   authenticate hook "spy":  notes every header and the path; "Authorization: Bearer spy-<name>" is <name>
 *   authorize hook "spy-rules": notes the resource, the action and the request's headers; denies
 *                             "/ext/spy/denied/root"
 *   GET and POST /echo, GET /denied/:name: notes headers, path and parameters; answers "<principal id> <tenant>"
 *   GET /page:                a page whose script tries to read the console's token and sends what it got to /loot
 *   GET /loot:                notes the query
 *   GET /plant:               tries to set the host's page-session cookie, spelt as browsers still read it (and
 *                             one of its own)
 *   GET /split, /split304:    a body longer than the response may carry (a Content-Length of 2; a 304), whose
 *                             rest is a second response, to be read as the answer to the connection's next request
 *   SPY_FOREIGN               also registers the full path "=//console.js" (needs a granted route prefix)
 */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void note(const char *what, keel_str a, keel_str b) {
    const char *path = getenv("SPY_FILE");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s %.*s %.*s\n", what, (int)a.len, a.ptr ? a.ptr : "", (int)b.len, b.ptr ? b.ptr : "");
    fclose(f);
}

static void note_request(const char *what, const keel_http_request *req) {
    for (size_t i = 0; i < req->headers_len; i++) note(what, req->headers[i].name, req->headers[i].value);
}

static int is(keel_str s, const char *text) { return s.len == strlen(text) && memcmp(s.ptr, text, s.len) == 0; }

static keel_status authn(void *ud, const keel_http_request *req, keel_principal_builder *out) {
    (void)ud;
    note_request("authn-header", req);
    note("authn-path", req->path, keel_cstr(""));
    for (size_t i = 0; i < req->headers_len; i++) {
        keel_http_header h = req->headers[i];
        if (is(h.name, "authorization") && h.value.len > 11 && memcmp(h.value.ptr, "Bearer spy-", 11) == 0) {
            keel_str id = { h.value.ptr + 11, h.value.len - 11 };
            return out->set_identity(out, id, id, keel_cstr(""));
        }
    }
    return KEEL_OK;
}

static keel_status authz(void *ud, const keel_authz_request *q, keel_auth_decision *out) {
    (void)ud;
    note("authz-resource", q->resource, q->action);
    if (q->http) note_request("authz-header", q->http);
    *out = is(q->resource, "/ext/spy/denied/root") ? KEEL_AUTH_DENY : KEEL_AUTH_ABSTAIN;
    return KEEL_OK;
}

static keel_status echo(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    note_request("handler-header", req);
    note("handler-path", req->path, req->route_path);
    for (size_t i = 0; i < req->params_len; i++) note("handler-param", req->params[i].name, req->params[i].value);
    const keel_principal *p = req->principal;
    res->write(res, p->id.ptr, p->id.len);
    res->write(res, " ", 1);
    return res->write(res, p->tenant.ptr, p->tenant.len);
}

static const char page_html[] =
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>spy</title></head><body><h1 id=\"who\">";
static const char page_script[] =
    "</h1><script>\n"
    "const r = [];\n"
    "try { r.push('parent=' + parent.sessionStorage.getItem('keel.token')); } catch (e) { r.push('parent=blocked'); }\n"
    "try { r.push('top=' + top.document.title); } catch (e) { r.push('top=blocked'); }\n"
    "try { r.push('own=' + sessionStorage.getItem('keel.token')); } catch (e) { r.push('own=blocked'); }\n"
    "try { r.push('cookie=' + document.cookie); } catch (e) { r.push('cookie=blocked'); }\n"
    "new Image().src = '/ext/spy/loot?' + encodeURIComponent(r.join('|'));\n"
    "document.body.dataset.done = 'true';\n"
    "</script></body></html>";

static keel_status page(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    note_request("page-header", req);
    res->add_header(res, keel_cstr("content-type"), keel_cstr("text/html; charset=utf-8"));
    res->write(res, page_html, sizeof page_html - 1);
    const keel_principal *p = req->principal;
    if (p->flags & KEEL_PRINCIPAL_ANONYMOUS) res->write(res, "anonymous", 9);
    else res->write(res, p->id.ptr, p->id.len);
    return res->write(res, page_script, sizeof page_script - 1);
}

static keel_status loot(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud;
    note("loot", req->query, keel_cstr(""));
    return res->write(res, "thanks", 6);
}

static keel_status plant(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("keel_page=planted; Path=/ext/spy"));
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("keel_page =planted; Path=/ext/spy/a"));
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("\tkeel_page=planted; Path=/ext/spy/b"));
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("\001keel_page=planted; Path=/ext/spy/c"));
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("spy_own=1; Path=/ext/spy"));
    /* Cookies for more than its own paths, and a header that would clear the whole origin's storage. */
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("spy_root=1; Path=/; Domain=127.0.0.1; HttpOnly"));
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("spy_other=1; Path=/ext/victim"));
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("spy_rel=1; Path=/notes"));
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("spy_default=1"));
    res->add_header(res, keel_cstr("clear-site-data"), keel_cstr("\"cookies\", \"storage\""));
    /* A service worker of its own paths that would claim the whole origin. */
    res->add_header(res, keel_cstr("service-worker-allowed"), keel_cstr("/"));
    /* HTTPS pinned for the whole host and its subdomains, the origin's traffic sent elsewhere, the framing changed. */
    res->add_header(res, keel_cstr("strict-transport-security"), keel_cstr("max-age=31536000; includeSubDomains"));
    res->add_header(res, keel_cstr("alt-svc"), keel_cstr("h2=\":8712\""));
    res->add_header(res, keel_cstr("connection"), keel_cstr("close, x-foo"));
    res->add_header(res, keel_cstr("keep-alive"), keel_cstr("timeout=1"));
    /* Spellings the header field's clean-up turns into attributes only after the cookie was read (a control
       character next to a name becomes a space), and a last Path too long for a browser to take (it then takes
       the one before). */
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("spy_dom=1; \001Domain=127.0.0.1"));
    {
        static char longPath[1200];
        size_t n = (size_t)snprintf(longPath, sizeof longPath, "spy_long=1; Path\001=/; Path=/ext/spy/");
        while (n < sizeof longPath - 1) longPath[n++] = 'a';
        longPath[n] = 0;
        res->add_header(res, keel_cstr("set-cookie"), keel_cstr(longPath));
    }
    return res->write(res, "planted", 7);
}

static const char smuggled[] = "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 8\r\n\r\nsmuggled";

static keel_status split(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    res->add_header(res, keel_cstr("content-length"), keel_cstr("2"));
    res->write(res, "ok", 2);
    return res->write(res, smuggled, sizeof smuggled - 1);
}

/* A cookie with no Path from a route that takes any path: its default path is read from the request's. */
static keel_status jar(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    res->add_header(res, keel_cstr("set-cookie"), keel_cstr("spy_jar=1"));
    return res->write(res, "jar", 3);
}

static keel_status split304(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    res->set_status(res, 304);
    return res->write(res, smuggled, sizeof smuggled - 1);
}

/* An interim status as the final answer: the client would read the connection's next answer as this one's. */
static keel_status early(void *ud, const keel_http_request *req, keel_http_response *res) {
    (void)ud; (void)req;
    res->set_status(res, 103);
    return res->write(res, "early", 5);
}

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    const keel_host_auth *auth = host->get_service(ctx, keel_cstr(KEEL_SERVICE_AUTH));
    if (!http || !auth) return KEEL_ERR_UNSUPPORTED;
    keel_status s;
    keel_route routes[] = {
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/echo"), echo, NULL },
        { sizeof(keel_route), KEEL_STR("POST"), KEEL_STR("/echo"), echo, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/denied/:name"), echo, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/page"), page, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/loot"), loot, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/plant"), plant, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/split"), split, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/split304"), split304, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/early"), early, NULL },
        { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("/jar/*"), jar, NULL },
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if ((s = http->register_route(ctx, &routes[i])) != KEEL_OK) return s;
#ifdef SPY_FOREIGN
    keel_route foreign = { sizeof(keel_route), KEEL_STR("GET"), KEEL_STR("=//console.js"), page, NULL };
    if ((s = http->register_route(ctx, &foreign)) != KEEL_OK) return s;
#endif
    keel_authenticator a = { sizeof a, KEEL_STR("spy"), authn, NULL };
    if ((s = auth->register_authenticator(ctx, &a)) != KEEL_OK) return s;
    keel_authorizer z = { sizeof z, KEEL_STR("spy-rules"), authz, NULL };
    return auth->register_authorizer(ctx, &z);
}

static const keel_plugin plugin = {
    sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR("spy"), KEEL_STR("1.0.0"), 0, activate, NULL, NULL,
};
KEEL_PLUGIN_ENTRY(plugin)
