// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The console's files (`Sources/KeelHTTP/Console/`), embedded in the binary at build time so that an embedded host
/// needs no resource folder. Edit the files; `swift build` embeds them again.
enum ConsoleAssets {
    static let html = String(decoding: PackageResources.index_html, as: UTF8.self)
    static let style = String(decoding: PackageResources.console_css, as: UTF8.self)
    /// The scripts by the path they are served at, in the order index.html loads them: the core first (console.js:
    /// requests, views and routes, login, the plugin page frame), then icons, the views, and the live updates.
    static let scripts: [(path: String, text: String)] = [
        ("/console.js", PackageResources.console_js), ("/console-icons.js", PackageResources.icons_js),
        ("/console-views.js", PackageResources.views_js), ("/console-plugin.js", PackageResources.plugin_js),
        ("/console-config.js", PackageResources.config_js), ("/console-sections.js", PackageResources.sections_js),
        ("/console-directory.js", PackageResources.directory_js), ("/console-live.js", PackageResources.live_js),
    ].map { ($0.0, String(decoding: $0.1, as: UTF8.self)) }
}
