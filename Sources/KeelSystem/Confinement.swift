// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem
import Glibc

/// What a `keel worker` process may do to other processes once it runs plugin code.
public enum Confinement {
    /// Confines this process (`keel_confine_worker`): from now on it, and what it starts, may signal only itself and
    /// its own process group, and cannot trace or read another process's memory. Call before loading plugin code.
    /// Returns nil, or the reason it could not (an architecture or kernel without seccomp filters).
    public static func confineWorker() -> String? {
        keel_confine_worker() == 0 ? nil : String(cString: strerror(errno))
    }

    /// Closes this process (the host, once it starts workers) to them: not dumpable, so another process of the same
    /// user cannot open its `/proc/<pid>/mem`, descriptors or environment without `CAP_SYS_PTRACE` (which a worker
    /// drops). No core file is written for it afterwards. Once per process; later calls do nothing.
    public static func closeHostToWorkers() { _ = hostClosed }

    private static let hostClosed: Bool = keel_make_undumpable() == 0
}
