// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import KeelSystem
import Synchronization

/// Watches a plugin folder with inotify (no polling of the files) and reports which bundle folders changed.
///
/// It watches the folder itself (bundles added, removed, renamed) and each bundle folder (files written, moved in,
/// removed). Events are collected until the folder has been quiet for `quiet` seconds, then `onChange` gets the
/// set of bundle folder names, so a burst of writes (a `cp`, a build) causes one call. Runs its own thread;
/// `onChange` is called on it. `stop()` ends it.
public final class PluginWatcher: Sendable {
    private let inotify: Inotify
    private let directory: String
    private let quiet: Double
    private let onChange: @Sendable (Set<String>) -> Void
    private let running = Atomic<Bool>(true)
    private let watches = Mutex<[Int32: String]>([:]) // wd → bundle folder name ("" for the top folder)

    static let bundleMask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB | IN_DELETE_SELF)
    static let topMask = UInt32(IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ONLYDIR)

    /// - Throws: `KernelError.Code.bundle` when inotify is unavailable or the folder cannot be watched.
    public init(directory: String, quiet: Double = 0.25, onChange: @escaping @Sendable (Set<String>) -> Void) throws(KernelError) {
        self.directory = directory
        self.quiet = quiet
        self.onChange = onChange
        do { inotify = try Inotify() } catch { throw KernelError(.bundle, reason: "\(directory): \(error)") }
        guard let top = inotify.add(directory, mask: Self.topMask) else {
            throw KernelError(.bundle, reason: "\(directory): cannot watch: \(SystemFile.describe(errno: errno))")
        }
        watches.withLock { $0[top] = "" }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] { addBundle(name) }
        let thread = Thread { [self] in loop() }
        thread.name = "keel.watcher"
        thread.start()
    }

    private func addBundle(_ name: String) {
        guard !name.hasPrefix(".") else { return }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory + "/" + name, isDirectory: &isDirectory), isDirectory.boolValue else { return }
        if let wd = inotify.add(directory + "/" + name, mask: Self.bundleMask) { watches.withLock { $0[wd] = name } }
    }

    public func stop() { running.store(false, ordering: .releasing) }

    private func loop() {
        var pending = Set<String>()
        var lastEvent = 0.0
        while running.load(ordering: .acquiring) {
            let events = inotify.read(waitingUpTo: 50)
            if !events.isEmpty {
                for name in changedFolders(events) { pending.insert(name) }
                lastEvent = Self.now()
            }
            if !pending.isEmpty && Self.now() - lastEvent >= quiet {
                let changed = pending
                pending.removeAll()
                onChange(changed)
            }
        }
    }

    /// Bundle folder names the events name; new bundle folders get their own watch.
    private func changedFolders(_ events: [Inotify.Event]) -> [String] {
        var names: [String] = []
        for event in events {
            guard let folder = watches.withLock({ $0[event.watch] }) else { continue }
            if folder.isEmpty {
                // The top folder: a bundle folder appeared, vanished or was renamed.
                guard !event.name.hasPrefix(".") else { continue }
                if event.mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 { addBundle(event.name) }
                names.append(event.name)
            } else {
                if event.mask & UInt32(IN_IGNORED) != 0 { watches.withLock { _ = $0.removeValue(forKey: event.watch) } }
                names.append(folder)
            }
        }
        return names
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
