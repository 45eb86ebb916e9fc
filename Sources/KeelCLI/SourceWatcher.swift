// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import KeelSystem
import Synchronization

/// Watches a plugin project's source tree with inotify (no polling of the files) for `keel dev`, and reports each
/// burst of saves once: when nothing has changed for `quiet`, `onBurst` gets the moment of the burst's first change
/// and the changed paths (relative to the root), on the watcher's own thread.
///
/// It watches the root and every folder below it except build outputs and tool folders (`bundle`, `build`,
/// `target`, `node_modules`, and hidden ones such as `.build` and `.git`), so the project's own build never
/// triggers a rebuild. A save counts when a file is written and closed, moved in, moved away or removed, and its
/// bytes differ from those it had when last seen (a build that writes an object file beside its source, or copies
/// plugin.yaml into a folder of its own, writes the same bytes again at the next build: counted every time, each
/// build started another, for ever); editor droppings (hidden files, `~` backups, `.swp`, vim's `4913` probe) and
/// build artifacts (`.o`, `.so`, `.a`, `.d`, ...) do not count, nor anything under `excluded` (absolute paths: the
/// host's plugin folder and state files, when they lie inside the project). New folders get their own watch, and the
/// files already in them when it is added count as saved (they may have arrived before it).
/// `stop()` ends the thread within 50 ms.
final class SourceWatcher: Sendable {
    static let skippedFolders: Set<String> = ["bundle", "build", "target", "node_modules"]
    private static let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF)

    private let inotify: Inotify
    private let root: String
    private let excluded: Set<String> // relative to the root
    private let quiet: Duration
    private let onBurst: @Sendable (ContinuousClock.Instant, [String]) -> Void
    private let running = Atomic<Bool>(true)
    private let watches = Mutex<[Int32: String]>([:]) // wd → folder relative to the root ("" for the root)
    /// Each source file's bytes as last seen (`FileDigest`), by path relative to the root.
    private let digests = Mutex<[String: FileDigest]>([:])
    /// Files found in folders whose watch was added after they were made (the watcher thread takes them).
    private let foundInNewFolders = Mutex<[String]>([])

    /// - Throws: `CLIError` naming the folder when inotify is unavailable or the root cannot be watched.
    init(root: String, excluding excluded: [String] = [], quiet: Duration = .milliseconds(60),
         onBurst: @escaping @Sendable (ContinuousClock.Instant, [String]) -> Void) throws {
        self.root = root
        self.excluded = Set(excluded.compactMap { path in path.hasPrefix(root + "/") ? String(path.dropFirst(root.count + 1)) : nil })
        self.quiet = quiet
        self.onBurst = onBurst
        do { inotify = try Inotify() } catch { throw CLIError("\(root): \(error.description)") }
        guard addTree("") else { throw CLIError("\(root): cannot watch: \(SystemFile.lastError)") }
        let thread = Thread { [self] in loop() }
        thread.name = "keel.dev.watcher"
        thread.start()
    }

    func stop() { running.store(false, ordering: .releasing) }

    /// Whether a file or folder name is an editor's or a tool's, not a source.
    static func ignored(_ name: String) -> Bool {
        name.hasPrefix(".") || name.hasSuffix("~") || name.hasSuffix(".swp") || name.hasSuffix(".swx")
            || name.hasSuffix(".tmp") || name == "4913"
    }

    /// What compilers and linkers write, never a source: an object, a library, a dependency file, a precompiled header.
    static func isArtifact(_ name: String) -> Bool {
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return false }
        let ext = name[name.index(after: dot)...]
        return artifactExtensions.contains(String(ext)) || name.contains(".so.")
    }
    static let artifactExtensions: Set<String> = ["o", "obj", "a", "so", "dylib", "d", "lo", "la", "gch", "pch", "rlib", "rmeta", "pyc", "class"]

    /// A file's bytes, told apart: an FNV-1a hash of them with their count (files up to 16 MiB; a larger one by its
    /// size and modification time). Nil for a file that cannot be read (gone).
    struct FileDigest: Equatable, Sendable {
        let size: Int
        let hash: UInt64

        init?(path: String) {
            var st = stat()
            guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
            if st.st_size > 16 << 20 {
                (size, hash) = (Int(st.st_size), UInt64(bitPattern: Int64(st.st_mtim.tv_sec)) &* 1_000_000_007 &+ UInt64(st.st_mtim.tv_nsec))
                return
            }
            guard let bytes = try? SystemFile.read(path, limit: 16 << 20) else { return nil }
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            (size, hash) = (bytes.count, h)
        }
    }

    /// Whether `path` (relative) differs from its bytes when last seen, remembering them now: a file not seen
    /// before counts, and so does one that is gone. A path that is no file now (a folder removed, or made again) counts
    /// only when a file seen below it is gone: a build that removes its output folder and writes the same files into
    /// it again changed nothing.
    private func differs(_ path: String) -> Bool {
        let full = root + "/" + path
        if let now = FileDigest(path: full) {
            return digests.withLock { known in
                defer { known[path] = now }
                return known[path] != now
            }
        }
        return digests.withLock { known in
            if known.removeValue(forKey: path) != nil { return true }
            let below = known.keys.filter { $0.hasPrefix(path + "/") }
            let gone = below.filter { FileDigest(path: root + "/" + $0) == nil }
            for file in gone { known[file] = nil }
            return !gone.isEmpty
        }
    }

    /// Watches `folder` (relative) and the folders below it that are not skipped, and notes the bytes of the files
    /// in them; false when `folder` itself fails. With `late` (a folder made after the watch of its parent), its
    /// files are also reported as saved: they may have been written before its watch was added.
    @discardableResult
    private func addTree(_ folder: String, late: Bool = false) -> Bool {
        let path = folder.isEmpty ? root : root + "/" + folder
        guard let wd = inotify.add(path, mask: Self.mask) else { return false }
        watches.withLock { $0[wd] = folder }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            let relative = folder.isEmpty ? name : folder + "/" + name
            if isWatchedFolder(folder, name) {
                addTree(relative, late: late)
            } else if !Self.ignored(name), !Self.isArtifact(name), !excluded.contains(relative) {
                // Found late: a save not seen yet (its bytes are noted when the burst is taken). Else the bytes the
                // file starts with.
                if late { foundInNewFolders.withLock { $0.append(relative) } } else if let digest = FileDigest(path: path + "/" + name) {
                    digests.withLock { $0[relative] = digest }
                }
            }
        }
        return true
    }

    private func isWatchedFolder(_ parent: String, _ name: String) -> Bool {
        let relative = parent.isEmpty ? name : parent + "/" + name
        guard !Self.ignored(name), !(parent.isEmpty && Self.skippedFolders.contains(name)), !excluded.contains(relative) else { return false }
        var isDirectory: ObjCBool = false
        let path = root + "/" + (parent.isEmpty ? name : parent + "/" + name)
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    private func loop() {
        let clock = ContinuousClock()
        var first: ContinuousClock.Instant?
        var last = clock.now
        var changed: [String] = []
        var created = Set<String>() // files made during the burst: a gone one was an editor's temporary file
        while running.load(ordering: .acquiring) {
            // While a burst is open, wake up when its quiet time is over, not up to 50 ms later.
            var wait: Int32 = 50
            if first != nil {
                let left = quiet - (clock.now - last)
                wait = Int32(max(1, min(50, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)))
            }
            for event in inotify.read(waitingUpTo: wait) {
                guard let found = relevant(event) else { continue }
                let (path, isCreate) = found
                if isCreate { created.insert(path); continue }
                if first == nil { first = clock.now }
                last = clock.now
                if !changed.contains(path) { changed.append(path) }
            }
            for path in foundInNewFolders.withLock({ found in defer { found = [] }; return found }) where !changed.contains(path) {
                if first == nil { first = clock.now }
                last = clock.now
                changed.append(path)
            }
            if let start = first, clock.now - last >= quiet {
                // Files that were made and are gone again were an editor's temporary ones; files written with the
                // bytes they had are no change.
                let saved = changed.filter { !created.contains($0) || FileManager.default.fileExists(atPath: root + "/" + $0) }
                    .filter { differs($0) }
                if !saved.isEmpty { onBurst(start, saved) }
                first = nil
                changed.removeAll()
                created.removeAll()
            }
        }
    }

    /// The path an event names and whether it is a file's creation (which alone is no save yet); nil for an event
    /// that concerns no source. New folders get their own watch.
    private func relevant(_ event: Inotify.Event) -> (String, Bool)? {
        if event.mask & UInt32(IN_IGNORED) != 0 { watches.withLock { _ = $0.removeValue(forKey: event.watch) } }
        guard let folder = watches.withLock({ $0[event.watch] }), !event.name.isEmpty, !Self.ignored(event.name) else { return nil }
        let path = folder.isEmpty ? event.name : folder + "/" + event.name
        guard !excluded.contains(path) else { return nil }
        let isCreate = event.mask & UInt32(IN_CREATE) != 0
        if event.mask & UInt32(IN_ISDIR) != 0 {
            if folder.isEmpty && Self.skippedFolders.contains(event.name) { return nil }
            if event.mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 { addTree(path, late: true) }
            return isCreate ? nil : (path, false)
        }
        // What compilers write is never a source (a folder may be named like one: conf.d/).
        if Self.isArtifact(event.name) { return nil }
        return (path, isCreate)
    }
}
