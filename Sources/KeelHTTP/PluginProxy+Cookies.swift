// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Keel

extension PluginProxy {
    /// An app's `Set-Cookie`, kept to the app's own mount (`/ext/<id><prefix>`, the client's view of it). Every plugin
    /// shares the host's origin, and a browser sends a cookie with every request under its `Path`: an app's cookie
    /// for `/` would reach every other plugin's routes and apps (its session in their `Cookie` header), and one for
    /// `/ext/<other>` would plant a cookie in another plugin's requests. So the `Path` is rewritten as the app sees
    /// its own paths, and never leaves the mount:
    /// - a `Path` already below the mount is kept;
    /// - one below the upstream's base path is moved below the mount (`/` for an app at the root, or the base path
    ///   itself, becomes the mount; `/x` becomes `<mount>/x`);
    /// - any other (outside the base path, not a path) becomes the mount;
    /// - without a `Path`, the browser's default (the folder of `requestPath`, RFC 6265 5.1.4) is written out,
    ///   clipped to the mount.
    /// `Domain` is dropped (a host-only cookie: no other host under the same domain receives it). The name, value and
    /// every other attribute are kept as they came. A cookie whose name requires `Path=/` (`__Host-`) is then refused
    /// by the browser: an app behind the proxy cannot own the whole origin.
    /// - Parameters:
    ///   - mount: `/ext/<id><prefix>`, as `mount(of:pluginID:)` makes it.
    ///   - basePath: the upstream's base path ("" for the root).
    ///   - requestPath: the path the client asked for (below `mount`, as the browser sent it).
    static func scopedCookie(_ value: String, mount: String, basePath: String, requestPath: String) -> String {
        var parts = asSent(value).split(separator: ";", omittingEmptySubsequences: false)
        guard !parts.isEmpty else { return value }
        let pair = parts.removeFirst()
        var kept: [Substring] = [], path: Substring?
        for part in parts {
            let attribute = part.drop { $0 == " " || $0 == "\t" }
            let name = attribute.prefix { $0 != "=" }.trimmingTrailingBlanks.lowercased()
            switch name {
            case "path":
                // The last one counts, as browsers read it.
                path = attribute.drop { $0 != "=" }.dropFirst().drop { $0 == " " || $0 == "\t" }.trimmingTrailingBlanks
            case "domain":
                continue
            default:
                kept.append(attribute)
            }
        }
        var scoped = scope(path.map(String.init) ?? defaultPath(requestPath), mount: mount, basePath: basePath, given: path != nil)
        // A browser ignores a `Path` longer than it takes (RFC 6265bis: 1,024 bytes) and would then use the default
        // path, the request's folder (`/ext` for `/ext/<id>`, `/` for a route at `/legacy`), not the mount.
        // Nor one holding a `;`, which ends the attribute there (a default path is the request's folder, and a browser
        // sends `/ext/<id>/x;Path=/;/y` as it is: written out, the last attribute was `Path=/`).
        if scoped.utf8.count > maxPathLength || scoped.contains(";") { scoped = mount }
        return ([String(pair)] + kept.map(String.init) + ["Path=" + scoped]).joined(separator: "; ")
    }

    /// The longest attribute value browsers take (RFC 6265bis 5.6: a longer one is ignored).
    static let maxPathLength = 1024

    /// A header value as the client receives it: the header field turns every control character but the tab into a
    /// space (`HTTPField`'s lenient clean-up) after the value was read here, so a cookie is read after that too (a
    /// `Path\u{1}=/` or `\u{1}Domain=` that was no attribute here reached the browser as `Path =/`, ` Domain=`, which
    /// it reads as `Path`, `Domain`).
    static func asSent(_ value: String) -> String {
        guard value.utf8.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) else { return value }
        return String(String.UnicodeScalarView(value.unicodeScalars.map { ($0.value < 0x20 && $0.value != 0x09) || $0.value == 0x7F ? " " : $0 }))
    }

    /// `/ext/<id><prefix>`: where the browser sees `proxy`'s app.
    static func mount(of proxy: ProxyDeclaration, pluginID: String) -> String {
        "/ext/" + pluginID + (proxy.prefix == "/" ? "" : proxy.prefix)
    }

    /// `path` as a cookie path below `mount` (see `scopedCookie`); `given`: the app wrote it (in its own paths),
    /// else it is the browser's default, already in the client's paths.
    private static func scope(_ path: String, mount: String, basePath: String, given: Bool) -> String {
        func below(_ path: String, _ root: String) -> Bool { path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/") }
        if below(path, mount) { return path }
        guard given, path.hasPrefix("/") else { return mount }
        if basePath.isEmpty { return path == "/" ? mount : mount + path }
        guard below(path, basePath) else { return mount }
        let rest = path.dropFirst(basePath.count)
        return rest.isEmpty ? mount : mount + rest
    }

    /// RFC 6265 5.1.4: the request path up to, not including, its last `/` ("/" when that is the first one).
    private static func defaultPath(_ requestPath: String) -> String {
        guard requestPath.hasPrefix("/"), let last = requestPath.lastIndex(of: "/"), last != requestPath.startIndex else { return "/" }
        return String(requestPath[..<last])
    }
}

extension Substring {
    /// Without the spaces and tabs at its end.
    fileprivate var trimmingTrailingBlanks: Substring {
        var s = self
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return s
    }
}
