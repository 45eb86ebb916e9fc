// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc

/// An inotify instance (close-on-exec, non-blocking): watches added by path, events read with a time-out.
/// Thread-safe (the kernel serialises calls on one descriptor); meant for one reading thread.
public final class Inotify: Sendable {
    /// One event: the watch it came from, its mask, and the name inside a watched folder ("" for the folder itself).
    public struct Event: Sendable {
        public var watch: Int32
        public var mask: UInt32
        public var name: String
    }

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    private let fd: Int32

    /// - Throws: `Failure` when inotify is unavailable.
    public init() throws(Failure) {
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw Failure(description: "inotify unavailable: \(SystemFile.lastError)") }
    }

    /// Watches `path` for the events in `mask`; returns the watch, or nil (`errno` says why).
    public func add(_ path: String, mask: UInt32) -> Int32? {
        let wd = inotify_add_watch(fd, path, mask)
        return wd >= 0 ? wd : nil
    }

    /// The events that arrive within `milliseconds` (none when nothing happened).
    public func read(waitingUpTo milliseconds: Int32) -> [Event] {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, milliseconds) > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return [] }
        var events: [Event] = []
        var offset = 0
        let header = 16
        while offset + header <= count {
            let wd = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Int32.self) }
            let mask = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self) }
            let length = Int(buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self) })
            let nameBytes = buffer[(offset + header)..<min(count, offset + header + length)].prefix { $0 != 0 }
            events.append(Event(watch: wd, mask: mask, name: String(decoding: nameBytes, as: UTF8.self)))
            offset += header + length
        }
        return events
    }

    deinit { close(fd) }
}
