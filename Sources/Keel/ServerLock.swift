// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import KeelSystem

/// Marks that a server owns a state file: an exclusive `flock` on `<state>.lock`, held while the server runs and
/// released by the kernel when the process ends, however it ends. Other processes ask `running(stateFile:)` to
/// decide whether to talk to the server instead of loading plugins themselves.
public final class ServerLock: Sendable {
    let fd: Int32
    public let path: String

    /// Takes the lock and writes `info` (e.g. the server's URL) into the file.
    /// - Throws: `KernelError.Code.state` when another server holds it or the file cannot be made.
    public init(stateFile: String, info: String) throws(KernelError) {
        path = stateFile + ".lock"
        if let problem = SystemFile.prepareParent(of: stateFile) {
            throw KernelError(.state, reason: "\(stateFile): cannot be used as the state file: \(problem)")
        }
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw KernelError(.state, reason: "\(stateFile): its lock file \(path) cannot be made: \(SystemFile.describe(errno: errno))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            let other = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            throw KernelError(.state, reason: "\(stateFile): another keel server is using it (\(other.trimmingCharacters(in: .whitespacesAndNewlines)))")
        }
        update(info)
    }

    /// Rewrites the information other processes read.
    public func update(_ info: String) {
        ftruncate(fd, 0)
        let line = "pid \(getpid()) \(info)\n"
        _ = line.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }

    /// The running server's line (`pid N URL`) when a server holds the lock on `stateFile`, else nil.
    public static func running(stateFile: String) -> String? {
        let path = stateFile + ".lock"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return nil
        }
        return ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "running").trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
