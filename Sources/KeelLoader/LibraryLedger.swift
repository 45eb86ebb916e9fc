// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Synchronization

/// What one owner (a kernel) holds mapped of plugin libraries: how many copies it opened that are still open, and
/// their sizes in bytes.
///
/// `PluginLibrary.open` charges a copy once the dynamic loader has mapped it (whatever happens after: a library whose
/// entry point or descriptor is refused stays open too) and `unloadIfSafe` credits it when it closes it. A library
/// that is not unload-safe is never closed, so a kernel that loads a fresh copy at every enable or reload of such a
/// plugin sees this grow; the kernel compares it with the copies it still uses (`Kernel.staleLibraryCopies`).
/// Thread-safe.
public final class LibraryLedger: Sendable {
    private let openCopies = Atomic<Int>(0)
    private let openBytes = Atomic<Int>(0)

    public init() {}

    /// Copies opened and not closed.
    public var copies: Int { openCopies.load(ordering: .relaxed) }
    /// Their sizes (the library files' bytes), summed.
    public var bytes: Int { openBytes.load(ordering: .relaxed) }

    func charge(_ size: Int) {
        openCopies.add(1, ordering: .relaxed)
        openBytes.add(size, ordering: .relaxed)
    }

    func credit(_ size: Int) {
        openCopies.subtract(1, ordering: .relaxed)
        openBytes.subtract(size, ordering: .relaxed)
    }
}
