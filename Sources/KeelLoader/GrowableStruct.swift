// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI

/// Reading a struct a plugin filled in, by the ABI's growth rule.
///
/// Every struct that may grow starts with `uint32_t struct_size`: the size the plugin was compiled with. A later 1.x
/// host declares the same struct with more fields at its end, so it must neither refuse a plugin whose struct is
/// shorter than the host's declaration (a 1.0 plugin in a 1.3 host) nor read past the plugin's struct. `read` copies
/// only the bytes `struct_size` covers (never more than the host's declaration) into a zeroed value: fields beyond
/// the plugin's struct read as zero, which every later field must treat as "not given". Stateless.
public enum GrowableStruct {
    /// The sizes of the ABI 1.0 declarations (and of 1.1's new ones), frozen (PluginABI/layout_check.c asserts the same numbers): the least a
    /// plugin's struct_size may say.
    static let v1_0: [ObjectIdentifier: Int] = [
        ObjectIdentifier(keel_plugin.self): 80,
        ObjectIdentifier(keel_route.self): 56,
        ObjectIdentifier(keel_menu_entry.self): 112,
        ObjectIdentifier(keel_authenticator.self): 40,
        ObjectIdentifier(keel_authorizer.self): 40,
        // Published in 1.1: their 1.1 sizes.
        ObjectIdentifier(keel_service_provision.self): 32,
        ObjectIdentifier(keel_service_listener.self): 40,
    ]

    /// The least struct_size accepted for `T`: its 1.0 size (its current size for a struct not published in 1.0).
    public static func minimumSize<T>(of type: T.Type) -> Int {
        v1_0[ObjectIdentifier(type)] ?? MemoryLayout<T>.size
    }

    /// The struct at `pointer` as this host declares `T`, and the struct_size the plugin gave; nil when that size is
    /// below `minimum`. Reads only `min(struct_size, MemoryLayout<T>.size)` bytes at `pointer`.
    public static func read<T>(_ pointer: UnsafeRawPointer, as type: T.Type, minimum: Int) -> (value: T, size: Int)? {
        let size = Int(pointer.loadUnaligned(as: UInt32.self))
        guard size >= minimum, size >= MemoryLayout<UInt32>.size else { return nil }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
        defer { copy.deallocate() }
        copy.initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<T>.size)
        copy.copyMemory(from: pointer, byteCount: min(size, MemoryLayout<T>.size))
        return (copy.load(as: T.self), size)
    }
}
