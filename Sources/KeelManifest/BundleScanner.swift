// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization

/// Why a plugin folder could not be scanned: one line naming the folder and the reason.
public struct ScanError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}

/// A plugin bundle found on disk: a folder with a `plugin.yaml`, parsed or not.
///
/// Its values sit behind one reference (`storage`), as `Manifest`'s do: a start with a thousand plugins copies each
/// bundle into several tables (by id, by folder, the claimants of an id), and a copy should cost one reference count,
/// not one for each of its strings and arrays.
public struct PluginBundle: Sendable {
    private struct Fields: Sendable {
        var folder: String
        var manifestPath: String
        var manifest: Manifest?
        var warnings: [ManifestWarning]
        var problem: String?
        var knownAs: String?
    }

    /// Copy on write: `mutate` copies it first unless this bundle is its only holder. (Each of Manifest, PluginBundle and
    /// PluginRecord has its own box: one generic box in another module made a start with 1,000 plugins 7–12 % slower.)
    /// `@unchecked Sendable`: `fields` is written only through `mutate`, which first makes sure that no other
    /// bundle holds this storage (`isKnownUniquelyReferenced`), so a storage shared between threads is never written.
    private final class Storage: @unchecked Sendable {
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }
    private var storage: Storage

    private mutating func mutate(_ change: (inout Fields) -> Void) {
        if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.fields) }
        change(&storage.fields)
    }

    public init(folder: String, manifestPath: String, manifest: Manifest?, warnings: [ManifestWarning], problem: String? = nil,
                knownAs: String? = nil) {
        storage = Storage(Fields(folder: folder, manifestPath: manifestPath, manifest: manifest, warnings: warnings,
                                 problem: problem, knownAs: knownAs))
    }

    public var folder: String {
        get { storage.fields.folder }
        set { mutate { $0.folder = newValue } }
    }
    public var manifestPath: String {
        get { storage.fields.manifestPath }
        set { mutate { $0.manifestPath = newValue } }
    }
    public var manifest: Manifest? {
        get { storage.fields.manifest }
        set { mutate { $0.manifest = newValue } }
    }
    public var warnings: [ManifestWarning] {
        get { storage.fields.warnings }
        set { mutate { $0.warnings = newValue } }
    }
    /// Why this bundle cannot be used, when it cannot.
    public var problem: String? {
        get { storage.fields.problem }
        set { mutate { $0.problem = newValue } }
    }

    /// The id a bundle without a usable manifest goes by, when its caller knows better than its folder's name (the
    /// kernel: the id of the plugin that serves from this folder while its plugin.yaml is broken).
    public var knownAs: String? {
        get { storage.fields.knownAs }
        set { mutate { $0.knownAs = newValue } }
    }

    /// The id it is known by: the manifest's, else `knownAs`, else the folder name.
    public var id: String {
        storage.fields.manifest?.id ?? storage.fields.knownAs ?? PluginBundle.fallbackID(storage.fields.folder)
    }

    /// The library's path; nil without a usable manifest or for a manifest-only bundle.
    public var libraryPath: String? { manifest?.library.map { folder + "/" + $0 } }

    /// Why the library plugin.yaml names is not there, in one line, when it is not: the key and the file, and what
    /// the folder most likely is instead: a plugin project whose build put the bundle in `bundle/ID/` (the project
    /// copied where its bundle belongs), or a bundle whose library is named otherwise (`libcountr.so` for the
    /// `libcounter.so` beside it). Nil when the file exists, or plugin.yaml names none.
    public var missingLibrary: String? {
        // Only a name that is not there at all (lstat): a link that loops or dangles, a folder, a file that cannot be
        // read, each gets the loader's own words.
        var st = stat()
        guard let library = manifest?.library, let path = libraryPath, lstat(path, &st) != 0, errno == ENOENT else { return nil }
        var text = "\(manifestPath): key \"library\": \(library) is not in \(folder)"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        let built = folder + "/bundle/" + id
        if access(built + "/" + ManifestLoader.fileName, F_OK) == 0 {
            text += " (this folder is a plugin project, not its bundle: its build made the bundle in \(built); copy that folder here instead, as keel dev does)"
        } else if let near = names.first(where: { $0 == library + ".so" || $0 == "lib" + library + ".so" || $0 == "lib" + library })
                    ?? Spelling.nearest(library, in: names.filter { $0.hasSuffix(".so") || $0.contains(".so.") })
                    ?? Self.onlyLibrary(names) {
            text += " (did you mean \(near)?)"
        } else if !library.contains(".so") {
            text += " (a library file's name ends in .so: lib<name>.so)"
        }
        return text
    }

    /// The one library among a folder's `names`, when there is exactly one: the name a `library:` that is far from
    /// any name most likely meant.
    static func onlyLibrary(_ names: [String]) -> String? {
        let libraries = names.filter { $0.hasSuffix(".so") }
        return libraries.count == 1 ? libraries[0] : nil
    }

    /// The file whose bytes identify a build (its checksum in load history, reload and signature checks): the
    /// library, or plugin.yaml for a manifest-only bundle; nil without a usable manifest.
    public var buildPath: String? {
        guard let manifest else { return nil }
        return manifest.library.map { folder + "/" + $0 } ?? manifestPath
    }

    public static func fallbackID(_ folder: String) -> String {
        let name = (folder as NSString).lastPathComponent.lowercased()
        let cleaned = String(name.map { c -> Character in
            c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_" || c == ".") ? c : "-"
        }.prefix(64))
        return Manifest.isValidID(cleaned) ? cleaned : "bundle-" + String(cleaned.prefix(50))
    }
}

/// Lists the bundles in a plugin folder. Each direct sub-folder is one bundle; files and hidden entries are
/// ignored; a sub-folder without a usable `plugin.yaml` is reported as a bundle with a problem. Two bundles with the
/// same id are both refused, naming each other: the kernel never guesses which one was meant.
public struct BundleScanner: Sendable {
    public var loader = ManifestLoader()

    public init() {}

    /// - Parameters:
    ///   - directory: the plugin folder; one that does not exist holds no bundles.
    ///   - bundleFolders: bundle folders named one by one (an embedder's, from code), scanned after the plugin folder's;
    ///     one that is not a folder is reported as a bundle with a problem.
    ///   - cache: parsed manifests kept from an earlier scan (`ManifestCache`): a bundle whose plugin.yaml is unchanged
    ///     is not parsed again, and the cache is rewritten when anything changed. Nil reads every manifest.
    ///   - log: told, in one line, when the cache cannot be used or written (the scan goes on without it).
    /// - Throws: `ScanError` naming the folder when it cannot be listed.
    ///   - prefetched: the folder's listing and the cache's entries when the caller read them already (`Prefetch`,
    ///     made while it read something else); nil reads them here, both at once.
    public func scan(_ directory: String, bundleFolders: [String] = [], cache: ManifestCache? = nil,
                     prefetched: Prefetch? = nil, log: (String) -> Void = { _ in }) throws(ScanError) -> [PluginBundle] {
        try scan(directory, bundleFolders: bundleFolders, cache: cache, prefetched: prefetched, deferring: false, log: log).bundles
    }

    /// `scan(_:bundleFolders:cache:prefetched:log:)`, except that a cached manifest is used without the `stat` of its
    /// plugin.yaml that tells whether it is still the file the cache recorded: those comparisons are left to the
    /// returned check, which the caller starts and waits for (`StampCheck`), so that they run on another core while
    /// it goes on. An entry that is also checked by its bytes (a file changed just before it was cached) is checked
    /// here as always. A start-up with a thousand installed plugins saves about a millisecond on two cores.
    public func scanDeferringChecks(_ directory: String, bundleFolders: [String] = [], cache: ManifestCache,
                                    prefetched: Prefetch? = nil, log: (String) -> Void = { _ in }) throws(ScanError)
        -> (bundles: [PluginBundle], check: StampCheck) {
        let found = try scan(directory, bundleFolders: bundleFolders, cache: cache, prefetched: prefetched, deferring: true, log: log)
        return (found.bundles, StampCheck(directory: directory, items: found.unchecked))
    }

    private func scan(_ directory: String, bundleFolders: [String], cache: ManifestCache?, prefetched: Prefetch?,
                      deferring: Bool, log: (String) -> Void) throws(ScanError)
        -> (bundles: [PluginBundle], unchecked: [StampCheck.Item]) {
        let read = prefetched ?? Self.prefetch(directory, cache: cache)
        let listed = try read.listing.get().subfolders
        let folders = listed + bundleFolders.filter { !listed.contains($0) }
        // The plugin folder's bundles are stat'ed relative to it: a path of two components to walk, not the whole one.
        let inDirectory = listed.count, directoryFD = listed.isEmpty ? -1 : open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { if directoryFD >= 0 { close(directoryFD) } }
        if cache != nil, let problem = read.cached?.problem { log(problem) }
        let cached: [String: ManifestCache.Entry] = cache == nil ? [:] : read.cached?.entries ?? [:]
        // Manifests are independent: read them on every core.
        // Each worker fills its own slot; the lock is held only to store a finished bundle.
        let found = Mutex([(bundle: PluginBundle, entry: ManifestCache.Entry?, changed: Bool)?](repeating: nil, count: folders.count))
        let unchecked = Mutex([StampCheck.Item?](repeating: nil, count: deferring ? folders.count : 0))
        let loader = self.loader
        DispatchQueue.concurrentPerform(iterations: folders.count) { i in
            let folder = folders[i], manifestPath = folder + "/" + ManifestLoader.fileName
            let relative = i < inDirectory ? String(manifestPath.utf8.dropFirst(directory.utf8.count + 1)) : nil
            // Deferred: the cached manifest as it is, its file compared later (`StampCheck`).
            if deferring, let entry = cached[folder], entry.content == nil, let decoded = ManifestCodec.decode(entry.payload) {
                let bundle = PluginBundle(folder: folder, manifestPath: manifestPath, manifest: decoded.manifest, warnings: decoded.warnings)
                unchecked.withLock { $0[i] = StampCheck.Item(folder: folder, relative: relative, stamp: entry.stamp) }
                found.withLock { $0[i] = (bundle, entry, false) }
                return
            }
            let result: (PluginBundle, ManifestCache.Entry?, Bool)
            do throws(ManifestError) {
                let stamp = cache == nil ? nil : relative != nil && directoryFD >= 0
                    ? ManifestCache.Stamp(at: directoryFD, relative ?? manifestPath)
                    : ManifestCache.Stamp(path: manifestPath)
                if let cache, let stamp {
                    var refresh = false
                    if let entry = cached[folder], let (manifest, warnings) = cache.lookup(entry, stamp: stamp, manifestPath: manifestPath, refresh: &refresh) {
                        let kept = refresh ? ManifestCache.Entry(stamp: stamp, content: nil, payload: entry.payload) : entry
                        result = (PluginBundle(folder: folder, manifestPath: manifestPath, manifest: manifest, warnings: warnings), kept, refresh)
                    } else {
                        let bytes = try loader.readBytes(path: manifestPath)
                        let (manifest, warnings) = try loader.parse(Data(bytes), file: manifestPath)
                        let entry = cache.entry(manifest, warnings: warnings, stamp: stamp, bytes: bytes)
                        result = (PluginBundle(folder: folder, manifestPath: manifestPath, manifest: manifest, warnings: warnings),
                                  entry, true)
                    }
                } else {
                    let (manifest, warnings) = try loader.load(path: manifestPath)
                    result = (PluginBundle(folder: folder, manifestPath: manifestPath, manifest: manifest, warnings: warnings), nil, cached[folder] != nil)
                }
            } catch {
                result = (PluginBundle(folder: folder, manifestPath: manifestPath, manifest: nil, warnings: [], problem: error.description),
                          nil, cached[folder] != nil)
            }
            found.withLock { $0[i] = result }
        }
        // Moved out of the lock, not copied, and the bundles gathered in one pass: each copy of a thousand results
        // retained and released every string in them (a third of the scan's time after the decode).
        let results = found.withLock { all in
            defer { all = [] }
            return all
        }
        var bundles: [PluginBundle] = []
        bundles.reserveCapacity(results.count)
        var anyChanged = false, hits = 0
        for case let r? in results {
            bundles.append(r.bundle)
            if r.entry != nil { hits += 1 }
            if r.changed { anyChanged = true }
        }
        if let cache {
            // Rewritten when a manifest was read, an entry went, or one needs its content no more. Nothing read and
            // every cached entry used (as many distinct folders hit as there are entries): nothing to write.
            let distinctHits = bundleFolders.isEmpty ? hits : Set(results.compactMap { $0?.entry == nil ? nil : $0?.bundle.folder }).count
            if anyChanged || distinctHits != cached.count {
                var entries: [String: ManifestCache.Entry] = [:]
                for case let r? in results { if let entry = r.entry { entries[r.bundle.folder] = entry } }
                if anyChanged || cached.keys.contains(where: { entries[$0] == nil }) {
                    if let problem = cache.save(entries) { log(problem) }
                }
            }
        }
        let left = unchecked.withLock { $0 }.compactMap { $0 }
        Self.refuseDuplicates(&bundles)
        return (bundles, left)
    }
}

extension BundleScanner {
    /// Same id twice: refuses every bundle that claims it, naming the other folders (a bundle refused already keeps
    /// its own problem). Grouped only when some id is claimed twice.
    public static func refuseDuplicates(_ bundles: inout [PluginBundle]) {
        var ids = Set<String>(minimumCapacity: bundles.count)
        guard !bundles.allSatisfy({ ids.insert($0.id).inserted }) else { return }
        let byID = Dictionary(grouping: bundles.indices, by: { bundles[$0].id })
        for (id, indices) in byID where indices.count > 1 {
            let folders = indices.map { bundles[$0].folder }
            for i in indices where bundles[i].problem == nil {
                let others = folders.filter { $0 != bundles[i].folder }.joined(separator: ", ")
                bundles[i].problem = "\(bundles[i].manifestPath): duplicate plugin id \"\(id)\", also declared in \(others)"
            }
        }
    }

    /// One listing of a plugin folder: its bundle folders (sub-folders, hidden ones left out), sorted, as paths, and
    /// the names of its hidden entries (the work folders of installs and upgrades).
    public struct Listing: Sendable {
        public var subfolders: [String] = []
        public var hidden: [String] = []
    }

    /// What a scan reads before it looks at any bundle: the folder's listing and the manifest cache's entries.
    /// Read ahead by a caller that has other reading to do at the same time (the kernel's start reads its records).
    public struct Prefetch: Sendable {
        var listing: Result<Listing, ScanError>
        var cached: (entries: [String: ManifestCache.Entry], problem: String?)?

        /// The listing, when the folder could be listed.
        public var folderListing: Listing? { try? listing.get() }
    }

    /// Lists `directory` and loads `cache` at once, on two cores where there are two (each takes about a
    /// millisecond for a thousand bundles).
    public static func prefetch(_ directory: String, cache: ManifestCache?) -> Prefetch {
        guard let cache else { return Prefetch(listing: Result { () throws(ScanError) in try list(directory) }, cached: nil) }
        let listing = Mutex<Result<Listing, ScanError>?>(nil), cached = Mutex<(entries: [String: ManifestCache.Entry], problem: String?)?>(nil)
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            if i == 0 {
                let result = Result { () throws(ScanError) in try list(directory) }
                listing.withLock { $0 = result }
            } else {
                let loaded = cache.load()
                cached.withLock { $0 = loaded }
            }
        }
        return Prefetch(listing: listing.withLock { $0 } ?? .success(Listing()), cached: cached.withLock { $0 })
    }

    /// Lists `directory` once: a folder that does not exist lists empty. The listing's entry types say which entries
    /// are folders; only a symbolic link, or an entry of unknown type, costs a `stat` (which follows the link).
    /// - Throws: `ScanError` naming the folder when it is a file or cannot be listed.
    public static func list(_ directory: String) throws(ScanError) -> Listing {
        guard let dir = opendir(directory) else {
            if errno == ENOENT { return Listing() }
            if errno == ENOTDIR { throw ScanError(reason: "\(directory): is a file, not a plugin folder") }
            throw ScanError(reason: "\(directory): cannot be listed: \(String(cString: strerror(errno)))")
        }
        defer { closedir(dir) }
        var names: [String] = [], hidden: [String] = []
        while let entry = readdir(dir) {
            let type = entry.pointee.d_type
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix(".") {
                if name != ".", name != ".." { hidden.append(name) }
                continue
            }
            guard type == DT_DIR || type == DT_LNK || type == DT_UNKNOWN else { continue }
            if type != DT_DIR {
                var st = stat()
                guard stat(directory + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { continue }
            }
            names.append(name)
        }
        // `String`'s own order: for ASCII names (as ids are) it compares their bytes in one step, 4-10 times faster
        // than a comparison through `utf8` views (a thousand names are sorted at every start; measured in a release
        // build, 0.1 ms against 0.4-2 ms).
        return Listing(subfolders: names.sorted().map { directory + "/" + $0 }, hidden: hidden)
    }
}

/// The version of the Keel host, as plugins' `host:` ranges and repository indexes see it.
public enum KeelVersion {
    public static let current = "1.0.0"
}
