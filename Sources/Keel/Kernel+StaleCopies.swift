// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc
import KeelLoader

/// How much of stopped plugins' libraries may stay mapped in the host before a plugin is refused another copy.
///
/// A library that is not unload-safe is never unmapped (`PluginLibrary`), and each enable or reload of such a plugin
/// loads a fresh copy (unless the plugin is reactivatable and unchanged: `ResidentLibraries`). Each copy costs its
/// file's size in memory (a private copy lives in a memory file) and about five of the process's memory mappings, of
/// which Linux allows 65,530 by default: a script toggling an ordinary plugin took a host to that limit in about
/// 13,000 enables (40 minutes at a few a second), after which nothing could be loaded and any further mapping (a
/// thread's stack, a large allocation) failed. Past either limit, a plugin that already had a copy opened in this
/// process is refused another one, with `KernelError.Code.staleCopyLimit` and a reason that says why; a first load,
/// a reactivatable plugin enabled again on its kept copy and a plugin one of whose copies was closed since (an
/// unload-safe one that activated and deactivated cleanly) are never refused.
public struct StaleCopyLimits: Sendable, Equatable {
    /// Copies at most.
    public var copies: Int
    /// Their library files' sizes, summed, at most (bytes).
    public var bytes: Int

    public init(copies: Int, bytes: Int) {
        self.copies = copies
        self.bytes = bytes
    }

    /// 4,096 copies (about a third of the default mapping limit for five mappings each) and 1 GiB, or an eighth of
    /// the machine's memory when that is less.
    public static var `default`: StaleCopyLimits {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        let memory = pages > 0 && pageSize > 0 ? pages * pageSize : 8 << 30
        return StaleCopyLimits(copies: 4096, bytes: min(1 << 30, memory / 8))
    }
}

extension Kernel {
    /// The copies of plugin libraries this kernel opened that stay mapped although no active plugin uses them and
    /// none is kept for a plugin's next activation (a library stopped, replaced by a reload, or refused after it was
    /// mapped), and their library files' sizes summed. A generation still draining after a reload counts already.
    public func staleLibraryCopies() -> (copies: Int, bytes: Int) {
        var copies = libraryLedger.copies, bytes = libraryLedger.bytes
        for plugin in active.values {
            guard let library = plugin.library else { continue }
            copies -= 1
            bytes -= library.mappedBytes
        }
        for library in residents.libraries {
            copies -= 1
            bytes -= library.mappedBytes
        }
        return (max(0, copies), max(0, bytes))
    }

    /// Why plugin `id` may not have another copy of its library opened now, or nil when it may: nil for a plugin
    /// that has had none mapped in this process or whose copy was closed since its last was mapped (not merely one
    /// that declares itself unload-safe: a copy whose activation failed is never closed), and while the stale copies are within
    /// `configuration.staleCopies`. Cheap unless the kernel holds that many copies in all.
    func staleCopyRefusal(_ id: String, shownPath: String) -> String? {
        let limits = configuration.staleCopies
        guard copiesOpened[id] == false,
              libraryLedger.copies >= limits.copies || libraryLedger.bytes >= limits.bytes else { return nil }
        let stale = staleLibraryCopies()
        guard stale.copies >= limits.copies || stale.bytes >= limits.bytes else { return nil }
        let size = stale.bytes >= 1 << 20 ? "\(stale.bytes >> 20) MiB" : "\(stale.bytes >> 10) KiB"
        return "plugin \"\(id)\" (\(shownPath)): not loaded again: the copies of stopped plugins' libraries that stay "
            + "mapped in this host (\(stale.copies), \(size)) reached the limit (keel serve --max-stale-copies \(limits.copies), "
            + "--max-stale-copy-mib \(limits.bytes >> 20)); a library that is not unload-safe is never unmapped, so each "
            + "enable or reload maps a new copy (one that declares KEEL_PLUGIN_FLAG_REACTIVATABLE is enabled again on "
            + "its copy while unchanged): restart the host to free them"
    }
}
