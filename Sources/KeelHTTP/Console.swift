// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import KeelState

/// The web console: static HTML, CSS and JavaScript served by the host, no build step. One view at a time, by hash
/// route (`#/`, `#/plugins`, `#/plugin/<id>`, `#/services`, `#/commands`, `#/tenants`, `#/repositories`,
/// `#/catalog`, and `#/ext/<id>/...` for a plugin page in the sandboxed frame): the overview (`/api/v1/overview`),
/// the plugin list, a page per plugin with its grants, configuration form and load history, the services and
/// commands, tenants and roles, repositories and trust, and the catalog. `live.js` keeps the open view current
/// through the kernel's change events (`GET /api/v1/events`). `/console-pages.js` (the plugin page bridge) is served
/// by its own code when present.
enum Console {
    static func register(on router: Router<KeelRequestContext>) {
        router.get("/") { _, _ in page() }
        router.get("/console.css") { _, _ in asset(ConsoleAssets.style, "text/css; charset=utf-8") }
        for (path, text) in ConsoleAssets.scripts {
            router.get(RouterPath(path)) { _, _ in asset(text, "text/javascript; charset=utf-8") }
        }
    }

    /// The console's page, its scripts allowed by a nonce made for this answer: `script-src 'self'` would also run a
    /// script any plugin serves under `/ext/<id>/` (same origin) if some text in the console were ever read as a
    /// `<script>` tag, and the console holds the admin token. Only the console's own tags carry the nonce.
    static func page() -> Response {
        var generator = SystemRandomNumberGenerator()
        let nonce = Hex.lowercase((0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) })
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[.init("content-security-policy")!] = "default-src 'self'; frame-src 'self'; style-src 'self'; script-src 'nonce-\(nonce)'; "
            + "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
        let html = pageParts.joined(separator: "<script nonce=\"\(nonce)\" src=")
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    /// The page's text around its script tags.
    static let pageParts = ConsoleAssets.html.split(separator: "<script src=", omittingEmptySubsequences: false).map(String.init)

    static func asset(_ text: String, _ type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        headers[.init("content-security-policy")!] = "default-src 'self'; frame-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
