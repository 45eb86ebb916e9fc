// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird

/// The web console: static HTML, CSS and JavaScript served by the host, no build step. One view at a time, by hash
/// route (`#/`, `#/plugins`, `#/plugin/<id>`, `#/services`, `#/commands`, `#/tenants`, `#/repositories`,
/// `#/catalog`, and `#/ext/<id>/...` for a plugin page in the sandboxed frame): the overview (`/api/v1/overview`),
/// the plugin list, a page per plugin with its grants, configuration form and load history, the services and
/// commands, tenants and roles, repositories and trust, and the catalog. `live.js` keeps the open view current
/// through the kernel's change events (`GET /api/v1/events`). `/console-pages.js` (the plugin page bridge) is served
/// by its own code when present.
enum Console {
    static func register(on router: Router<KeelRequestContext>) {
        router.get("/") { _, _ in asset(ConsoleAssets.html, "text/html; charset=utf-8") }
        router.get("/console.css") { _, _ in asset(ConsoleAssets.style, "text/css; charset=utf-8") }
        for (path, text) in ConsoleAssets.scripts {
            router.get(RouterPath(path)) { _, _ in asset(text, "text/javascript; charset=utf-8") }
        }
    }

    static func asset(_ text: String, _ type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        headers[.init("content-security-policy")!] = "default-src 'self'; frame-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
