// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem
import Glibc

/// The running program, to start a child of the very same build (a worker, a probe, a validation run).
///
/// A child is started from `execPath`, the kernel's link to the file this process runs, not from the file's name: a
/// `keel` binary replaced in place while a server runs (a package upgrade renames a new file over it) leaves the
/// running server's file alive under that link, so its workers, probes and validation runs are always its own
/// build, speaking its own protocol. The name is for messages and the child's `argv[0]` only.
/// Stateless; safe from any thread.
public enum OwnExecutable {
    /// What to execute for a child of this build (Linux's `/proc/self/exe`; /proc must be mounted).
    public static let execPath = "/proc/self/exe"

    /// The running program's path as the kernel knows it, without the ` (deleted)` the kernel appends once the file
    /// was replaced or removed; nil when /proc is not mounted.
    public static var path: String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(execPath, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.hasSuffix(" (deleted)") ? String(text.dropLast(" (deleted)".count)) : text
    }

    /// How to name `executable` in a message and in a child's `argv[0]`: the running program's path when it is
    /// `execPath`, else itself.
    public static func shown(_ executable: String) -> String { executable == execPath ? path ?? "keel" : executable }

    /// Names this process `name` (as `ps` and /proc/<pid>/comm show it, through /proc/self/comm, which a confined
    /// worker may not write: call it on the main thread too) and the calling thread, whose name the threads it starts
    /// inherit; at most 15 bytes are kept. A program started from `execPath` is called `exe` by the kernel until it
    /// names itself.
    public static func nameProcess(_ name: String) { _ = keel_name_process(name) }
}
