// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelSystem

/// Where a loaded library's bytes came from: the bundle's library file and its stamp when they were read (taken only
/// when the file had settled by then, see `FileStamp.isSettled`).
struct LibrarySource: Sendable, Equatable {
    let path: String
    let stamp: FileStamp
}

/// The libraries of reactivatable plugins (`KEEL_PLUGIN_FLAG_REACTIVATABLE`) that were stopped in an orderly way
/// (disabled, or left idle by a lazy plugin's time-out), kept for their next activation.
///
/// A library that is not unload-safe stays mapped after its plugin stops (see `PluginLibrary`). Loading a fresh copy
/// at every enable or lazy wake maps one more copy each time, for the life of the process, and pays the copy,
/// checksum and dynamic loader again. A plugin that declares it can be activated again on the same copy is spared
/// that: its next activation uses the library it already has, if the bundle's library file still has the stamp it
/// had when that library was read (same device, inode, size and times: the same bytes). The entry point is not called
/// again (the ABI calls it once per loaded copy). A plugin stopped any other way (taken down after faults, its
/// bundle gone, uninstalled, disabled by another host sharing the state) gets a fresh copy, and so does every
/// activation after a reload and every activation at start-up or of another host's change. Without the flag every
/// activation gets a fresh copy, with fresh globals: a plugin that sets a global in deactivate and never resets it
/// (a natural way to write one) would otherwise find it set.
///
/// Each activation of a kept copy adds one closed `ActivationContext` to its `PluginLibrary`, which keeps them all so
/// that a stray `ctx` from plugin code finds a closed context rather than freed memory: a few hundred bytes per
/// activation, against a mapped copy of the library per activation without the flag.
///
/// Kernel-isolated (a stored property of the kernel actor).
struct ResidentLibraries {
    struct Entry {
        let library: PluginLibrary
        let checksum: String
        let source: LibrarySource
    }

    private var entries: [String: Entry] = [:]

    /// Activations of one copy after which it is no longer kept: each leaves a closed context in its library (a few
    /// hundred bytes), so a lazy plugin woken every few seconds for months would otherwise grow without end. The next
    /// activation loads a fresh copy (which counts as a stale copy, `StaleCopyLimits`).
    static let activationsPerCopy = 4096

    /// Keeps the library of `plugin`, just deactivated without a problem, for plugin `id`'s next activation; or
    /// forgets the plugin's entry when there is nothing to keep (no library, one that does not declare
    /// `KEEL_PLUGIN_FLAG_REACTIVATABLE`, an unload-safe one, no settled source, or one activated `activationsPerCopy` times).
    mutating func keep(_ id: String, _ plugin: Kernel.ActivePlugin) {
        guard let library = plugin.library, library.descriptor.reactivatable, !library.descriptor.unloadSafe,
              let source = plugin.source, library.activations < Self.activationsPerCopy else {
            entries[id] = nil
            return
        }
        entries[id] = Entry(library: library, checksum: plugin.checksum, source: source)
    }

    /// Forgets plugin `id`'s library: its next activation loads a fresh copy.
    mutating func forget(_ id: String) { entries[id] = nil }

    /// Takes plugin `id`'s kept library out if the file at `path` is still the one it was read from (one `stat`).
    /// Either way the entry is gone: a library is activated by at most one generation at a time.
    mutating func take(_ id: String, path: String) -> Entry? {
        guard let entry = entries.removeValue(forKey: id), entry.source.path == path,
              FileStamp(path: path) == entry.source.stamp else { return nil }
        return entry
    }

    var count: Int { entries.count }

    /// The libraries kept.
    var libraries: some Sequence<PluginLibrary> { entries.values.lazy.map(\.library) }
}
