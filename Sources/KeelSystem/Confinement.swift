// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem
import Glibc

/// What a `keel worker` process may do to other processes once it runs plugin code.
public enum Confinement {
    /// Confines this process (`keel_confine_worker`): from now on it, and what it starts, holds no capability, may
    /// signal only itself and its own process group, cannot trace or read another process's memory, change a file's
    /// metadata, open a Unix socket (stream socket pairs aside), use io_uring or type into a terminal; without `network`
    /// it opens no socket at all (no TCP or UDP, IPv4 or IPv6); without `processes` it starts threads only (no fork,
    /// posix_spawn or system: EAGAIN). Call before loading plugin code.
    /// Returns nil, or the reason it could not (an architecture or kernel without seccomp filters).
    public static func confineWorker(network: Bool, processes: Bool) -> String? {
        keel_confine_worker(network ? 1 : 0, processes ? 1 : 0) == 0 ? nil : String(cString: strerror(errno))
    }

    /// Confines this thread, and every thread and process it starts afterwards, to reading and executing below
    /// `readable` and writing (not creating or removing) below `writable`, with Landlock (`keel_restrict_files`):
    /// the rest of the file system is out of reach; from Landlock ABI 4 on binding a TCP port is refused, and
    /// connecting to one too without `network`; from ABI 6 on signals reach only its own processes. Threads that
    /// exist already are not confined: a caller that has some re-executes itself (see `WorkerMain`). Returns the Landlock ABI version applied, or the reason it could not (a kernel without it).
    public static func restrictFiles(readable: [String], writable: [String], network: Bool) -> Result<Int, FileConfinementError> {
        func cStrings(_ paths: [String]) -> [UnsafePointer<CChar>?] { paths.map { UnsafePointer(strdup($0)) } }
        let r = cStrings(readable), w = cStrings(writable)
        defer { for p in r + w { free(UnsafeMutablePointer(mutating: p)) } }
        let abi = keel_restrict_files(r, r.count, w, w.count, network ? 1 : 0)
        guard abi > 0 else { return .failure(FileConfinementError(reason: String(cString: strerror(errno)))) }
        return .success(Int(abi))
    }

    /// The Landlock ABI version this kernel offers, or nil without Landlock.
    public static var landlockABI: Int? { let abi = keel_landlock_abi(); return abi > 0 ? Int(abi) : nil }

    /// Why a process could not be confined to its files.
    public struct FileConfinementError: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// Closes this process (the host, once it starts workers) to them: not dumpable, so another process of the same
    /// user cannot open its `/proc/<pid>/mem`, descriptors or environment without `CAP_SYS_PTRACE` (a worker drops
    /// every capability). No core file is written for it afterwards. Once per process; later calls do nothing.
    public static func closeHostToWorkers() { _ = hostClosed }

    private static let hostClosed: Bool = keel_make_undumpable() == 0
}
