// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc

/// The identity of a regular file as `stat` gives it: device, inode, size, and modification and change times to the
/// nanosecond. Any write to a file changes its change time, which no program can set back (only the clock can), so
/// while a file's stamp is unchanged its bytes are those read when the stamp was taken, with one exception: a second
/// write within the same clock tick as the first (timestamps are as coarse as the kernel's tick, or a second or two
/// on some file systems). `isSettled(readAt:margin:)` rules that case out. Plain data; thread-safe.
public struct FileStamp: Hashable, Sendable {
    public var device: UInt64, inode: UInt64, size: Int64
    public var modified: Int64, modifiedNanos: Int64, changed: Int64, changedNanos: Int64

    /// The stamp of the file at `path` (a link is followed); nil when it cannot be read or is not a regular file.
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        self.init(st)
    }

    /// The stamp of the file at `relativePath` in the folder open as `directoryFD` (a link is followed).
    public init?(at directoryFD: Int32, _ relativePath: String) {
        var st = stat()
        guard fstatat(directoryFD, relativePath, &st, 0) == 0 else { return nil }
        self.init(st)
    }

    /// Nil unless `st` describes a regular file.
    public init?(_ st: stat) {
        guard st.st_mode & S_IFMT == S_IFREG else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        modified = Int64(st.st_mtim.tv_sec)
        modifiedNanos = Int64(st.st_mtim.tv_nsec)
        changed = Int64(st.st_ctim.tv_sec)
        changedNanos = Int64(st.st_ctim.tv_nsec)
    }

    public init(device: UInt64, inode: UInt64, size: Int64, modified: Int64, modifiedNanos: Int64, changed: Int64, changedNanos: Int64) {
        (self.device, self.inode, self.size) = (device, inode, size)
        (self.modified, self.modifiedNanos, self.changed, self.changedNanos) = (modified, modifiedNanos, changed, changedNanos)
    }

    /// The later of the modification and change times (seconds since the epoch).
    public var latest: Double {
        max(Double(modified) + Double(modifiedNanos) / 1e9, Double(changed) + Double(changedNanos) / 1e9)
    }

    /// True when the file's last change was more than `margin` seconds before `readAt` (seconds since the epoch,
    /// taken before its bytes were read): then a later write cannot leave the same stamp.
    public func isSettled(readAt: Double, margin: Double = 2) -> Bool { readAt - latest > margin }

    /// This stamp when `isSettled(readAt:margin:)`, else nil: the stamp to remember for bytes read at `readAt`.
    public func ifSettled(readAt: Double, margin: Double = 2) -> FileStamp? { isSettled(readAt: readAt, margin: margin) ? self : nil }

    /// The wall clock now, in seconds since the epoch: the time to give `isSettled(readAt:)`.
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}
