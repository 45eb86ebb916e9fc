// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import Glibc
import KeelLoader
import KeelManifest
import KeelState
import KeelSystem
import Synchronization

/// Serves a bundle's `assets/` folder under `/ext/<id>/assets/...`: the files a plugin's pages load (scripts, styles,
/// images), without plugin code. The route is published with the plugin's own, so it passes the same auth chain and
/// sandboxing headers, and it comes and goes with the plugin's generation. It serves callers of every tenant while the
/// plugin is enabled for any (`everyTenant`): console pages load assets from an opaque origin, which sends no cookie.
///
/// - Strong ETags from the content's SHA-256; `If-None-Match` answers 304. A file whose name carries a content hash
///   (`app.3f2a9c1e.js`: a `.` or `-` then 8 or more hex digits before the extension) is `immutable` for a year; any
///   other is `no-cache` (revalidated each time, so a changed file is served at once).
/// - gzip when the client accepts it and it makes the file smaller (text types); `Vary: Accept-Encoding`.
/// - `Access-Control-Allow-Origin: *`: they are public static files, loaded by console pages from an opaque origin.
/// - Refused (404): hidden names (a segment starting with `.`), anything whose real path leaves the folder
///   (symbolic links out), anything that is not a regular file. Files over `maxFileSize` are refused with 403. An
///   `assets` that leads outside the bundle serves nothing.
/// - A file is read once and kept while its inode, size and modification time stay the same, within `cacheBudget`
///   bytes (its body and gzipped body) for the bundle: past it the least recently served files are let go and read
///   again when asked for. (Assets are public: unbounded, any client could make the host hold every file of every
///   bundle in memory, up to 256 MiB of files per installed package and more in the plugin folder.)
/// Thread-safe.
final class BundleAssets: Sendable {
    /// The real path of the bundle's `assets/` folder.
    let root: String
    /// Bytes of file contents kept in memory at most (bodies and gzipped bodies).
    let cacheBudget: Int
    private let cache = Mutex(Cache())

    /// Largest asset served (bytes).
    static let maxFileSize = 16 * 1024 * 1024
    /// The default `cacheBudget`: four of the largest files, gzipped or not.
    static let defaultCacheBudget = 64 * 1024 * 1024

    struct Entry {
        let stamp: [Int]
        let etag: String
        let body: [UInt8]
        let gzipped: [UInt8]?
        var cost: Int { body.count + (gzipped?.count ?? 0) }
    }

    /// The files kept, each with the tick of its last use, and their costs summed.
    private struct Cache {
        var entries: [String: (entry: Entry, used: UInt64)] = [:]
        var bytes = 0
        var tick: UInt64 = 0

        mutating func hit(_ path: String, stamp: [Int]) -> Entry? {
            guard let kept = entries[path], kept.entry.stamp == stamp else { return nil }
            tick += 1
            entries[path]?.used = tick
            return kept.entry
        }

        /// Keeps `entry` for `path`, then lets the least recently used others go until the total is within `budget`.
        mutating func keep(_ path: String, _ entry: Entry, budget: Int) {
            tick += 1
            if let old = entries.updateValue((entry, tick), forKey: path) { bytes -= old.entry.cost }
            bytes += entry.cost
            while bytes > budget, entries.count > 1,
                  let oldest = entries.lazy.filter({ $0.key != path }).min(by: { $0.value.used < $1.value.used }) {
                bytes -= oldest.value.entry.cost
                entries[oldest.key] = nil
            }
        }
    }

    /// The files and bytes kept in memory now.
    var cached: (files: Int, bytes: Int) { cache.withLock { ($0.entries.count, $0.bytes) } }

    /// The assets of the bundle at `folder`, or nil when it has no `assets/` folder, or its `assets` leads outside the
    /// bundle (a symbolic link to /etc, /proc/self or the state's folder served those files to anyone, the admin token
    /// in the server's environment included; a security review, 2026-12-07). A link within the bundle
    /// (`assets -> web/dist`) is followed. `Kernel` logs why one is not served (`refusal`).
    init?(bundleFolder folder: String, cacheBudget: Int = BundleAssets.defaultCacheBudget) {
        // One `stat` first: every activation asks, and most bundles have no assets.
        var st = stat()
        guard stat(folder + "/assets", &st) == 0, st.st_mode & S_IFMT == S_IFDIR,
              let root = ConsoleDeclaration.assetsRoot(bundleFolder: folder) else { return nil }
        self.root = root
        self.cacheBudget = cacheBudget
    }

    /// Why the bundle at `folder` has an `assets` that is not served, when it has one: a symbolic link that leads
    /// outside the bundle, to something that is not a folder, or nowhere. Nil otherwise.
    static func refusal(bundleFolder folder: String) -> String? {
        var st = stat()
        guard lstat(folder + "/assets", &st) == 0, st.st_mode & S_IFMT == S_IFLNK else { return nil }
        var target = stat()
        if stat(folder + "/assets", &target) == 0, target.st_mode & S_IFMT == S_IFDIR, ConsoleDeclaration.assetsRoot(bundleFolder: folder) != nil { return nil }
        return "\(folder)/assets is a symbolic link that leads outside the bundle, or to no folder: its files are not served (make it a folder of the bundle's)"
    }

    func serve(_ request: PluginRequest) -> PluginResponse {
        let rest = request.parameters.first { $0.name == "*" }?.value ?? ""
        guard !rest.isEmpty, !rest.split(separator: "/").contains(where: { $0.hasPrefix(".") }) else { return Self.notFound }
        guard let real = realpath(root + "/" + rest, nil) else { return Self.notFound }
        let path = String(cString: real)
        free(real)
        guard path.hasPrefix(root + "/") else { return Self.notFound }
        var st = stat()
        guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return Self.notFound }
        guard Int(st.st_size) <= Self.maxFileSize else {
            return PluginResponse(status: 403, headers: [HeaderField(name: "content-type", value: "text/plain; charset=utf-8")],
                                  body: Array("\(rest): over the \(Self.maxFileSize / (1 << 20)) MiB limit for an asset\n".utf8))
        }
        let stamp = [Int(st.st_ino), Int(st.st_size), Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec)]
        guard let entry = entry(path, stamp: stamp) else { return Self.notFound }

        let name = (rest as NSString).lastPathComponent
        let type = Self.contentType(name)
        var headers = [HeaderField(name: "etag", value: entry.etag),
                       HeaderField(name: "cache-control", value: Self.isHashed(name) ? "public, max-age=31536000, immutable" : "no-cache"),
                       HeaderField(name: "vary", value: "accept-encoding"),
                       // Public static files: console pages run in an opaque origin, and their module scripts are
                       // CORS requests. No credential is needed or sent for them (see PageShells).
                       HeaderField(name: "access-control-allow-origin", value: "*")]
        let match = request.headers.first { $0.name == "if-none-match" }?.value
        if let match, match.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == entry.etag || $0 == "*" }) {
            return PluginResponse(status: 304, headers: headers)
        }
        headers.append(HeaderField(name: "content-type", value: type))
        let gzipOK = request.headers.contains { $0.name == "accept-encoding" && $0.value.lowercased().contains("gzip") }
        var body = entry.body
        if gzipOK, let gz = entry.gzipped {
            body = gz
            headers.append(HeaderField(name: "content-encoding", value: "gzip"))
        }
        return PluginResponse(status: 200, headers: headers, body: request.method == "HEAD" ? [] : body)
    }

    /// The cached file, re-read when its stamp changed.
    private func entry(_ path: String, stamp: [Int]) -> Entry? {
        if let hit = cache.withLock({ $0.hit(path, stamp: stamp) }) { return hit }
        // Opened again without waiting (a FIFO swapped in since the `stat` is refused) and read to the size `fstat`
        // gives, at most the limit (a file of /proc says it is empty).
        guard let body = try? SystemFile.read(path, limit: Self.maxFileSize) else { return nil }
        let digest = Hex.lowercase(SHA256.hash(data: body))
        let compressible = Self.contentType(path).hasPrefix("text/") || Self.contentType(path).contains("javascript")
            || Self.contentType(path).contains("json") || Self.contentType(path).contains("svg")
        let entry = Entry(stamp: stamp, etag: "\"\(digest.prefix(32))\"", body: body,
                          gzipped: compressible && body.count > 256 ? SystemFile.gzip(body) : nil)
        let budget = cacheBudget
        cache.withLock { $0.keep(path, entry, budget: budget) }
        return entry
    }

    static let notFound = PluginResponse(status: 404, headers: [HeaderField(name: "content-type", value: "text/plain; charset=utf-8")],
                                         body: Array("no such asset\n".utf8))

    /// `app.3f2a9c1e.js`, `logo-0123abcd.svg`: a content hash in the name.
    static func isHashed(_ name: String) -> Bool {
        let stem = (name as NSString).deletingPathExtension
        guard let cut = stem.lastIndex(where: { $0 == "." || $0 == "-" }) else { return false }
        let hash = stem[stem.index(after: cut)...]
        return hash.count >= 8 && hash.allSatisfy(\.isHexDigit)
    }

    static func contentType(_ name: String) -> String {
        switch (name as NSString).pathExtension.lowercased() {
        case "html", "htm": "text/html; charset=utf-8"
        case "js", "mjs": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "json", "map": "application/json"
        case "svg": "image/svg+xml"
        case "png": "image/png"
        case "jpg", "jpeg": "image/jpeg"
        case "gif": "image/gif"
        case "webp": "image/webp"
        case "ico": "image/x-icon"
        case "woff2": "font/woff2"
        case "woff": "font/woff"
        case "txt", "md": "text/plain; charset=utf-8"
        case "wasm": "application/wasm"
        default: "application/octet-stream"
        }
    }
}
