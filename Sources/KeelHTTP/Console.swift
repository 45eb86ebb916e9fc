// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird

/// The web console: static HTML, CSS and JavaScript served by the host, no build step. It renders the navigation
/// from `/api/v1/menus`, opens plugin pages in a frame, and gives an admin the plugin list with switches and the
/// services between plugins with the choice of provider (`/api/v1/services`), and the plugins' commands with a form
/// per signature that runs one (`POST /api/v1/plugins/<id>/commands/<name>`). `live.js` keeps it current through the
/// kernel's change events (`GET /api/v1/events`).
enum Console {
    static func register(on router: Router<KeelRequestContext>) {
        router.get("/") { _, _ in asset(ConsoleAssets.html, "text/html; charset=utf-8") }
        router.get("/console.js") { _, _ in asset(ConsoleAssets.script, "text/javascript; charset=utf-8") }
        router.get("/console.css") { _, _ in asset(ConsoleAssets.style, "text/css; charset=utf-8") }
        router.get("/console-live.js") { _, _ in asset(ConsoleAssets.live, "text/javascript; charset=utf-8") }
    }

    static func asset(_ text: String, _ type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        headers[.init("content-security-policy")!] = "default-src 'self'; frame-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
