// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The console's files (`Sources/KeelHTTP/Console/`), embedded in the binary at build time so that an embedded host
/// needs no resource folder. Edit the files; `swift build` embeds them again.
enum ConsoleAssets {
    static let html = String(decoding: PackageResources.index_html, as: UTF8.self)
    static let script = String(decoding: PackageResources.console_js, as: UTF8.self)
    static let style = String(decoding: PackageResources.console_css, as: UTF8.self)
    static let live = String(decoding: PackageResources.live_js, as: UTF8.self)
}
