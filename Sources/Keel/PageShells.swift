// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest

/// Serves the shells of a plugin's console pages (`console.pages` in plugin.yaml) at `/ext/<id>/pages/<path>`: a
/// small HTML document the host writes, loading the host's page bridge (`/keel-page.js`, which defines
/// `window.keel`), then the page's styles and its entry module from the bundle's assets. No plugin code runs.
///
/// The route is published with the plugin's own, like its assets, so it passes the same auth chain and tenant check
/// and disappears when the plugin is disabled. The shell's `Content-Security-Policy` (`policy`) keeps the page in an
/// opaque origin even when opened on its own, and gives it no network of its own beyond loading scripts, styles,
/// images and fonts from this host: it talks to the console only through the bridge. Immutable, thread-safe.
public struct PageShells: Sendable {
    public let pluginID: String
    public let pages: [ConsolePage]

    /// Why each part is there:
    /// - `sandbox allow-scripts allow-forms`: an opaque origin wherever the document is opened (inside the console's
    ///   frame or top-level), so no access to the console's DOM, storage or cookies; scripts and form handling run.
    /// - `default-src 'none'`: nothing that is not listed below (no frames, objects, media, workers from elsewhere).
    /// - `script-src 'self'` / `style-src 'self'`: the bridge and the bundle's assets; no inline script or style,
    ///   no `eval`. (Module scripts from an opaque origin are CORS requests: assets carry `Access-Control-Allow-Origin: *`.)
    /// - `connect-src 'none'`: no `fetch`, XHR, WebSocket or EventSource of its own; requests go through `keel.fetch`.
    /// - `img-src 'self' data:`, `font-src 'self'`: pictures and fonts from the bundle.
    /// - `form-action 'none'`, `base-uri 'none'`: forms are handled by script, no `<base>` tricks.
    /// - `frame-ancestors 'self'`: only the console (this host) may frame it.
    public static let policy = "sandbox allow-scripts allow-forms; default-src 'none'; script-src 'self'; style-src 'self'; "
        + "connect-src 'none'; img-src 'self' data:; font-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'"

    public init(pluginID: String, pages: [ConsolePage]) {
        self.pluginID = pluginID
        self.pages = pages
    }

    /// `GET /pages/*`: the shell of the page at that path, or 404.
    public func serve(_ request: PluginRequest) -> PluginResponse {
        let rest = request.parameters.first { $0.name == "*" }?.value ?? ""
        guard let page = pages.first(where: { $0.path == rest }) else { return BundleAssets.notFound }
        let headers = [HeaderField(name: "content-type", value: "text/html; charset=utf-8"),
                       HeaderField(name: "content-security-policy", value: Self.policy),
                       HeaderField(name: "cache-control", value: "no-cache"),
                       HeaderField(name: "referrer-policy", value: "no-referrer")]
        return PluginResponse(status: 200, headers: headers, body: request.method == "HEAD" ? [] : Array(shell(page).utf8))
    }

    /// The page's HTML: the bridge first (a classic script, so `window.keel` exists before the module runs).
    func shell(_ page: ConsolePage) -> String {
        let base = "/ext/\(pluginID)/"
        let styles = page.styles.map { "  <link rel=\"stylesheet\" href=\"\(Self.escape(base + $0))\">\n" }.joined()
        return """
        <!doctype html>
        <html lang="en">
        <head>
          <meta charset="utf-8">
          <meta name="viewport" content="width=device-width, initial-scale=1">
          <title>\(Self.escape(page.title))</title>
        \(styles)  <script src="/keel-page.js"></script>
          <script type="module" src="\(Self.escape(base + page.entry))"></script>
        </head>
        <body data-plugin="\(Self.escape(pluginID))" data-page="\(Self.escape(page.path))">
          <main id="keel-page"></main>
        </body>
        </html>

        """
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}

extension Kernel {
    /// Adds what the plugin's `console:` declares to the contributions the host registers for it: the page shells'
    /// route (`GET /pages/*`, reserved like `/assets/*`), a menu entry per page that declares one, and the
    /// declaration itself (for the pages' bridge: `GET /api/v1/pages`).
    /// - Throws: `KernelError` (load failed) naming plugin.yaml and the key when an entry or style file is missing.
    nonisolated func seedConsole(_ manifest: Manifest, bundle: Bundle, context: ActivationContext,
                                 into seed: inout Contributions) throws(KernelError) {
        guard let console = manifest.console else { return }
        if let missing = console.missingFile(bundleFolder: bundle.folder, manifestPath: bundle.manifestPath) {
            throw KernelError(.loadFailed, pluginID: manifest.id, reason: missing.description)
        }
        // A host endpoint that changes something runs with the rights of whoever views the page: the operator grants
        // that, as the other capabilities that act for every caller. So does one that reads what is not the
        // plugin's own (another plugin's configuration and its secrets, the audit trail): an admin opening the page
        // would hand it over.
        if let write = console.fetch.first(where: \.isWrite), !context.grants.contains(.consoleWrite) {
            throw KernelError(.loadFailed, pluginID: manifest.id,
                              reason: "console.fetch: \(write) would change the host with the rights of whoever views the page; " +
                                      "ask for console-write under capabilities: and \(context.grantHint.text(id: manifest.id, capability: Capability.consoleWrite.rawValue))")
        }
        if let read = console.fetch.first(where: { !$0.isWrite && !$0.isFreeRead(for: manifest.id) }),
           !context.grants.contains(.consoleRead), !context.grants.contains(.consoleWrite) {
            throw KernelError(.loadFailed, pluginID: manifest.id,
                              reason: "console.fetch: \(read) would read what is not the plugin's own with the rights of whoever views the page " +
                                      "(without a grant a page reads only the session, the menus, the pages and /api/v1/plugins/\(manifest.id)); " +
                                      "ask for console-read under capabilities: and \(context.grantHint.text(id: manifest.id, capability: Capability.consoleRead.rawValue))")
        }
        seed.console = console
        guard !console.pages.isEmpty else { return }
        let shells = PageShells(pluginID: manifest.id, pages: console.pages)
        if let route = RouteRegistration.hostServed("/pages/*", context: context, serve: shells.serve) {
            seed.routes.append(route)
        }
        seed.menus += console.pages.compactMap { $0.menu.map { MenuRegistration(entry: $0, fromManifest: true) } }
    }
}
