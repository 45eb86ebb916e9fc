// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import Synchronization

/// Watches a plugin folder with inotify (no polling of the files) and reports which bundle folders changed.
///
/// It watches the folder itself (bundles added, removed, renamed) and each bundle folder (files written, moved in,
/// removed). Events are collected until the folder has been quiet for `quiet` seconds, then `onChange` gets the
/// set of bundle folder names, so a burst of writes (a `cp`, a build) causes one call. Runs its own thread;
/// `onChange` is called on it. `stop()` ends it.
public final class PluginWatcher: Sendable {
    private let fd: Int32
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
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw KernelError(.bundle, reason: "\(directory): inotify unavailable: \(String(cString: strerror(errno)))") }
        let top = inotify_add_watch(fd, directory, Self.topMask)
        guard top >= 0 else {
            close(fd)
            throw KernelError(.bundle, reason: "\(directory): cannot watch: \(String(cString: strerror(errno)))")
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
        let wd = inotify_add_watch(fd, directory + "/" + name, Self.bundleMask)
        if wd >= 0 { watches.withLock { $0[wd] = name } }
    }

    public func stop() { running.store(false, ordering: .releasing) }

    private func loop() {
        var pending = Set<String>()
        var lastEvent = 0.0
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while running.load(ordering: .acquiring) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 50)
            if ready > 0 {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    for name in parse(buffer, count: n) { pending.insert(name) }
                    lastEvent = Self.now()
                }
            }
            if !pending.isEmpty && Self.now() - lastEvent >= quiet {
                let changed = pending
                pending.removeAll()
                onChange(changed)
            }
        }
        close(fd)
    }

    /// Bundle folder names named by the events in `buffer`; new bundle folders get their own watch.
    private func parse(_ buffer: [UInt8], count: Int) -> [String] {
        var names: [String] = []
        var offset = 0
        let header = 16
        while offset + header <= count {
            let wd = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Int32.self) }
            let mask = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self) }
            let length = Int(buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self) })
            let nameBytes = buffer[(offset + header)..<min(count, offset + header + length)].prefix { $0 != 0 }
            let name = String(decoding: nameBytes, as: UTF8.self)
            offset += header + length
            let folder = watches.withLock { $0[wd] }
            guard let folder else { continue }
            if folder.isEmpty {
                // The top folder: a bundle folder appeared, vanished or was renamed.
                guard !name.hasPrefix(".") else { continue }
                if mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 { addBundle(name) }
                names.append(name)
            } else {
                if mask & UInt32(IN_IGNORED) != 0 { watches.withLock { _ = $0.removeValue(forKey: wd) } }
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
