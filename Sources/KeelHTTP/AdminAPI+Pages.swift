// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import Keel
import KeelManifest

/// The admin API's part for plugin console pages: `GET /api/v1/pages` (anyone the auth chain lets through) lists
/// the pages of the plugins visible to the caller (enabled, and serving the caller's tenant), each plugin with the
/// host endpoints its pages may call through the console's bridge (`console.fetch` in plugin.yaml). The console's
/// bridge (`/console-pages.js`) reads it to decide which `keel.fetch` requests it makes for a page.
extension AdminAPI {
    func registerPages(open: RouterGroup<KeelRequestContext>) {
        open.get("pages") { _, context -> Response in
            let snapshot = kernel.registry.snapshot
            let tenant = context.principal.tenant
            let plugins = snapshot.order.compactMap { id -> PagesBody? in
                guard let console = snapshot.plugins[id]?.console, kernel.access.isVisible(id, tenant: tenant) else { return nil }
                return PagesBody(plugin: id, fetch: console.fetch.map(\.description), pages: console.pages.map {
                    PagesBody.Page(path: $0.path, title: $0.title, url: ConsolePage.url(plugin: id, path: $0.path), menu: $0.menu?.id)
                })
            }
            return JSONBody.response(plugins)
        }
    }
}

struct PagesBody: Encodable {
    var plugin: String
    /// `METHOD /api/v1/...` the plugin's pages may call through the bridge, besides `/ext/<plugin>/...`.
    var fetch: [String]
    var pages: [Page]

    struct Page: Encodable {
        var path, title, url: String
        var menu: String?
    }
}
