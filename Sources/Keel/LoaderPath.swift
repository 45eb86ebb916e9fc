// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc
import Synchronization

/// Names under which the dynamic loader opens a library through a descriptor this process holds, each name used once.
///
/// glibc's `dlopen` hands back an already-loaded library whose name is the one asked for, before it opens anything:
/// `/proc/self/fd/7` names a different library each time descriptor 7 is reused, so that name cannot be given twice.
/// Each name here is `/proc/<pid>/fd/<fd>` spelled with a run of `./` and `/` before `proc` that no other name has: the
/// binary digits of a process-wide count of names, `./` for a one and `/` for a zero, most significant first (always
/// a one). The kernel resolves every spelling to the descriptor; no two are the same string. Nothing is made in the
/// file system (the names were symbolic links in `/dev/shm` before: a `symlink` and an `unlink` per load). A
/// million loads make a name at most 40 characters longer.
///
/// Such a name means something only while the descriptor is open: the loader opens it in `dlopen`, after which the
/// descriptor can be closed (the mapping stays). It names this process's descriptor by pid, not `self`, so that a
/// child the host starts on the library (the load probe, `PluginProbe`) opens the same file.
/// Thread-safe: the count is atomic.
enum LoaderPath {
    private static let made = Atomic<UInt64>(0)

    /// A name for descriptor `fd` that no earlier call returned.
    static func make(_ fd: Int32) -> String {
        let n = made.add(1, ordering: .relaxed).newValue
        var path = "/"
        for bit in stride(from: 63 - n.leadingZeroBitCount, through: 0, by: -1) {
            path += (n >> UInt64(bit)) & 1 == 1 ? "./" : "/"
        }
        return path + "proc/\(getpid())/fd/\(fd)"
    }
}
