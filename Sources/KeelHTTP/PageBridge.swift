// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird

/// The two halves of the plugin page bridge, embedded in the binary like the console's own files:
/// `/console-pages.js` (Console/pages.js) runs in the console and answers attached page frames; `/keel-page.js`
/// (Console/keel-page.js) runs inside each page's sandboxed frame and defines `window.keel`. The page shells that
/// load the latter are served with the plugin's routes (`PageShells`), their page list by `GET /api/v1/pages`.
enum PageBridge {
    static let consoleScript = String(decoding: PackageResources.pages_js, as: UTF8.self)
    static let pageScript = String(decoding: PackageResources.keel_page_js, as: UTF8.self)

    static func register(on router: Router<KeelRequestContext>) {
        router.get("/console-pages.js") { _, _ in Console.asset(consoleScript, "text/javascript; charset=utf-8") }
        router.get("/keel-page.js") { _, _ in Console.asset(pageScript, "text/javascript; charset=utf-8") }
    }
}
