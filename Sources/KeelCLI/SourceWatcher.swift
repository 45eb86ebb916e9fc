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
/// triggers a rebuild. A save counts when a file is written and closed, moved in, moved away or removed; editor
/// droppings (hidden files, `~` backups, `.swp`, vim's `4913` probe) do not, nor anything under `excluded` (absolute
/// paths: the host's plugin folder and state files, when they lie inside the project). New folders get their own watch.
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

    /// Watches `folder` (relative) and the folders below it that are not skipped; false when `folder` itself fails.
    @discardableResult
    private func addTree(_ folder: String) -> Bool {
        let path = folder.isEmpty ? root : root + "/" + folder
        guard let wd = inotify.add(path, mask: Self.mask) else { return false }
        watches.withLock { $0[wd] = folder }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] where isWatchedFolder(folder, name) {
            addTree(folder.isEmpty ? name : folder + "/" + name)
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
            if let start = first, clock.now - last >= quiet {
                let saved = changed.filter { !created.contains($0) || FileManager.default.fileExists(atPath: root + "/" + $0) }
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
            if event.mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 { addTree(path) }
            return isCreate ? nil : (path, false)
        }
        return (path, isCreate)
    }
}
