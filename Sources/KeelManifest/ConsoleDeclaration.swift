// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Yams

/// What a plugin contributes to the web console (`console:` in plugin.yaml): pages the console opens in its
/// sandboxed frame, and the host endpoints those pages may call through the bridge (`keel.fetch`) besides the
/// plugin's own routes. ABI-neutral: no plugin code is involved, the host serves each page's shell.
public struct ConsoleDeclaration: Sendable, Hashable {
    public var pages: [ConsolePage]
    /// Host endpoints the pages may call through the console, as exact method and path.
    public var fetch: [EndpointGrant]

    public init(pages: [ConsolePage] = [], fetch: [EndpointGrant] = []) {
        self.pages = pages
        self.fetch = fetch
    }

    /// Most pages one plugin may declare.
    public static let maxPages = 32

    /// The `console.fetch` list as an operator reads it before enabling the plugin: each endpoint with what it does
    /// with the viewer's rights ("GET /api/v1/session", "GET /api/v1/audit (reads beyond its own: console-read)",
    /// "POST ... (changes the host: console-write)").
    public func fetchText(pluginID: String) -> [String] {
        fetch.map { e in
            e.isWrite ? "\(e) (changes the host: console-write)" : e.isFreeRead(for: pluginID) ? "\(e)" : "\(e) (reads beyond its own: console-read)"
        }
    }

    /// The real path of the bundle's `assets`, when it resolves to a place within the bundle's own real path (a link
    /// within the bundle, `assets -> web/dist`, is followed; one leading out is not, nor is anything of a bundle that
    /// is `/` itself: "//" begins no real path); nil otherwise. What `BundleAssets` serves from. Any thread.
    public static func assetsRoot(bundleFolder folder: String) -> String? {
        guard let real = realpath(folder + "/assets", nil) else { return nil }
        defer { free(real) }
        guard let bundle = realpath(folder, nil) else { return nil }
        defer { free(bundle) }
        let assets = String(cString: real)
        return assets.hasPrefix(String(cString: bundle) + "/") ? assets : nil
    }

    /// The first entry or style file that is not a regular file inside the bundle's `assets/` folder (symbolic
    /// links leaving it count as missing), as a one-line error naming `manifestPath` and the key; nil when all exist.
    public func missingFile(bundleFolder: String, manifestPath: String) -> ManifestError? {
        guard !pages.isEmpty else { return nil }
        guard FileManager.default.fileExists(atPath: bundleFolder + "/assets") else {
            return ManifestError(file: manifestPath, key: "console.pages[0].entry", reason: "the bundle has no assets/ folder for \(pages[0].entry)")
        }
        // An `assets` that leads outside the bundle is never served (`BundleAssets`): its pages would be blank.
        guard let root = Self.assetsRoot(bundleFolder: bundleFolder) else {
            return ManifestError(file: manifestPath, key: "console.pages[0].entry",
                                 reason: "the bundle's assets/ leads outside the bundle (a symbolic link), which is never served: make it a folder of the bundle's")
        }
        for (i, page) in pages.enumerated() {
            for (key, file) in [("entry", page.entry)] + page.styles.enumerated().map({ ("styles[\($0.offset)]", $0.element) }) {
                var st = stat()
                let resolved = realpath(bundleFolder + "/" + file, nil)
                let path = resolved.map { String(cString: $0) } ?? ""
                free(resolved)
                guard path.hasPrefix(root + "/"), stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
                    return ManifestError(file: manifestPath, key: "console.pages[\(i)].\(key)", reason: "\(file) is not a file in the bundle")
                }
            }
        }
        return nil
    }
}

/// One console page: the host serves its shell at `/ext/<id>/pages/<path>`, loading `entry` (an ES module) and
/// `styles` from the bundle's assets.
public struct ConsolePage: Sendable, Hashable {
    /// Below `/ext/<id>/pages/`: plain segments (`items`, `reports/daily`).
    public var path: String
    public var title: String
    /// `assets/...js` (or `.mjs`), relative to the bundle folder.
    public var entry: String
    /// `assets/...css` files, relative to the bundle folder.
    public var styles: [String]
    /// The menu entry that opens the page, when declared.
    public var menu: MenuDeclaration?

    public init(path: String, title: String, entry: String, styles: [String] = [], menu: MenuDeclaration? = nil) {
        self.path = path
        self.title = title
        self.entry = entry
        self.styles = styles
        self.menu = menu
    }

    /// Where the host serves the page's shell for plugin `id`.
    public static func url(plugin id: String, path: String) -> String { "/ext/\(id)/pages/\(path)" }

    /// True when `text` is a plain relative path: segments of letters, digits and `-._~` between single slashes,
    /// none of them empty, `.`, `..` or hidden (starting with `.`).
    public static func isPlain(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 256 else { return false }
        return text.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { segment in
            !segment.isEmpty && !segment.hasPrefix(".")
                && segment.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-._~".unicodeScalars.contains($0)) }
        }
    }
}

/// A host endpoint a plugin's pages may call through the console: `GET /api/v1/session`.
public struct EndpointGrant: Sendable, Hashable, CustomStringConvertible {
    public var method: String
    public var path: String

    public static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

    /// Parses `METHOD /api/v1/...`; nil when it is not that shape.
    public init?(_ text: String) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, Self.methods.contains(String(parts[0])), parts[1].hasPrefix("/api/v1/"),
              ConsolePage.isPlain(String(parts[1].dropFirst())) else { return nil }
        method = String(parts[0])
        path = String(parts[1])
    }

    public var description: String { "\(method) \(path)" }

    /// Whether it changes something: any method but GET and HEAD (needs the `console-write` grant).
    public var isWrite: Bool { method != "GET" && method != "HEAD" }

    /// Whether a page of plugin `pluginID` may read it without the operator's grant: the viewer's own session, the
    /// console's menus and pages, and the plugin's own info, configuration and logs (`/api/v1/plugins/<id>` and
    /// below). Anything else a GET could read (another plugin's configuration and its secrets, the audit trail,
    /// tenants, trusted keys) needs `console-read`.
    public func isFreeRead(for pluginID: String) -> Bool {
        guard !isWrite else { return false }
        let own = "/api/v1/plugins/" + pluginID
        return Self.freeReads.contains(path) || path == own || path.hasPrefix(own + "/")
    }

    /// Host endpoints every page may read (GET, HEAD) with the viewer's rights: nothing in them is another plugin's.
    public static let freeReads: Set<String> = ["/api/v1/session", "/api/v1/menus", "/api/v1/pages"]
}

extension NodeReader {
    static let consoleKeys: Set<String> = ["pages", "fetch"]
    static let pageKeys: Set<String> = ["path", "title", "entry", "styles", "menu"]
    static let pageMenuKeys: Set<String> = ["id", "parent", "order", "icon", "permission"]

    /// `console:`: {pages: [{path, title, entry, styles, menu}], fetch: ["METHOD /api/v1/..."]}.
    mutating func console(_ node: Node?, pluginID: String) throws(ManifestError) -> ConsoleDeclaration? {
        guard let node else { return nil }
        guard let map = node.mapping else { throw fail(node, "console", "expected a mapping with pages and fetch, found \(Self.kind(node))") }
        let f = try entries(map, known: Self.consoleKeys, path: "console.")
        var out = ConsoleDeclaration()
        if let pages = f["pages"] {
            guard let seq = pages.sequence else { throw fail(pages, "console.pages", "expected a list of {path, title, entry}, found \(Self.kind(pages))") }
            guard seq.count <= ConsoleDeclaration.maxPages else {
                throw fail(pages, "console.pages", "\(seq.count) pages is over the limit of \(ConsoleDeclaration.maxPages)")
            }
            for (i, item) in seq.enumerated() {
                let page = try consolePage(item, path: "console.pages[\(i)]", pluginID: pluginID)
                guard !out.pages.contains(where: { $0.path == page.path }) else {
                    throw fail(item, "console.pages[\(i)].path", "page \"\(page.path)\" is declared twice")
                }
                out.pages.append(page)
            }
        }
        if let fetch = f["fetch"] {
            guard let seq = fetch.sequence else { throw fail(fetch, "console.fetch", "expected a list such as [\"GET /api/v1/session\"], found \(Self.kind(fetch))") }
            for (i, item) in seq.enumerated() {
                guard let text = item.scalar?.string, let grant = EndpointGrant(text) else {
                    throw fail(item, "console.fetch[\(i)]", "expected \"METHOD /api/v1/PATH\" (GET, HEAD, POST, PUT, PATCH or DELETE; a plain path, no query), found \(Self.kind(item))")
                }
                if !out.fetch.contains(grant) { out.fetch.append(grant) }
            }
        }
        return out
    }

    private mutating func consolePage(_ item: Node, path key: String, pluginID: String) throws(ManifestError) -> ConsolePage {
        guard let map = item.mapping else { throw fail(item, key, "expected a mapping with path, title and entry, found \(Self.kind(item))") }
        let f = try entries(map, known: Self.pageKeys, path: key + ".")
        let path = try string(f, "path", in: item, prefix: key + ".")
        guard ConsolePage.isPlain(path) else {
            throw fail(f["path"], key + ".path", "\"\(path)\" must be a plain path: segments of letters, digits and -._~ between single slashes (no leading '/', '..' or '%')")
        }
        let title = try string(f, "title", in: item, prefix: key + ".")
        let entry = try string(f, "entry", in: item, prefix: key + ".")
        guard Self.isAsset(entry, extensions: ["js", "mjs"]) else {
            throw fail(f["entry"], key + ".entry", "\"\(entry)\" must be an ES module inside the bundle's assets/ folder, such as assets/page.js")
        }
        var styles: [String] = []
        if let node = f["styles"] {
            guard let seq = node.sequence else { throw fail(node, key + ".styles", "expected a list such as [assets/page.css], found \(Self.kind(node))") }
            for (j, s) in seq.enumerated() {
                guard let text = s.scalar?.string, Self.isAsset(text, extensions: ["css"]) else {
                    throw fail(s, "\(key).styles[\(j)]", "expected a .css file inside the bundle's assets/ folder, such as assets/page.css, found \(Self.kind(s))")
                }
                styles.append(text)
            }
        }
        var menu: MenuDeclaration?
        if let node = f["menu"] {
            guard let m = node.mapping else { throw fail(node, key + ".menu", "expected a mapping such as {parent: x, order: 10}, found \(Self.kind(node))") }
            let mf = try entries(m, known: Self.pageMenuKeys, path: key + ".menu.")
            let id = try optionalString(mf, "id", prefix: key + ".menu.") ?? "\(pluginID).page.\(path.replacingOccurrences(of: "/", with: "."))"
            guard MenuDeclaration.isValidID(id) else {
                throw fail(mf["id"] ?? node, key + ".menu.id", "\"\(id)\" is not a valid menu id (letters, digits, '.', '_', '-'; at most 128)")
            }
            var order = 0
            if let o = mf["order"] {
                guard let value = o.scalar.flatMap({ Int($0.string) }) else { throw fail(o, key + ".menu.order", "expected an integer, found \(Self.kind(o))") }
                order = value
            }
            menu = MenuDeclaration(id: id, title: title, parent: try optionalString(mf, "parent", prefix: key + ".menu.") ?? "",
                                   link: ConsolePage.url(plugin: pluginID, path: path), order: order,
                                   icon: try optionalString(mf, "icon", prefix: key + ".menu.") ?? "",
                                   permission: try optionalString(mf, "permission", prefix: key + ".menu.") ?? "")
        }
        return ConsolePage(path: path, title: title, entry: entry, styles: styles, menu: menu)
    }

    /// `assets/<plain path>.<one of extensions>`.
    static func isAsset(_ text: String, extensions: Set<String>) -> Bool {
        guard text.hasPrefix("assets/"), ConsolePage.isPlain(text),
              let ext = text.split(separator: ".").last.map({ String($0).lowercased() }) else { return false }
        return extensions.contains(ext) && text.split(separator: "/").count >= 2
    }
}
