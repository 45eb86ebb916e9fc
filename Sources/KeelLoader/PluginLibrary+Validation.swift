// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI

extension PluginLibrary {
    /// The descriptor's `struct_size` judged against the ABI it claims, for `keel plugins validate`. `open` already
    /// refused a size below what that ABI needs; this also fails a size larger than this host's `sizeof(keel_plugin)`
    /// (fields are only appended and the plugin's minor version is at most the host's, so a larger size is not a
    /// `sizeof`, and a later host would read past the descriptor) and one that is not a multiple of the struct's
    /// alignment. Thread-safe: reads the constant descriptor.
    /// - Returns: whether the size is sane, and a one-line detail (the reason when it is not).
    public func descriptorSizeCheck() -> (passed: Bool, detail: String) {
        let size = Int(UnsafeRawPointer(plugin).loadUnaligned(as: UInt32.self))
        let known = MemoryLayout<keel_plugin>.size, alignment = MemoryLayout<keel_plugin>.alignment
        if size > known {
            return (false, "descriptor struct_size \(size) is larger than keel_plugin of ABI \(descriptor.abi) (\(known) bytes): set it to sizeof(keel_plugin)")
        }
        if size % alignment != 0 {
            return (false, "descriptor struct_size \(size) is not a multiple of \(alignment), so not a sizeof: set it to sizeof(keel_plugin)")
        }
        return (true, "\(size) bytes for ABI \(descriptor.abi)")
    }
}
