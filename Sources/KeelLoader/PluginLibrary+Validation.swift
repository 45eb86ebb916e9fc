// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelSystem

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

extension PluginLibrary {
    /// The tables one activation of this library provided (`provisions`), judged against the `functions:` their
    /// plugin.yaml entries declare, for `keel plugins validate`. A declared table must hold every declared function
    /// (`struct_size` at least 8 + 8 per function) and none of them NULL, outside every loaded object or outside its
    /// executable segments (a consumer calling it crashes); a function in another loaded object than this library is named, not failed. A
    /// `() -> str` function (a getter by the ABI's convention) is called once, and its text must be valid UTF-8 of
    /// at most 64 KiB (what crosses a process boundary). A table without `functions:` has only its size reported.
    /// Call while the activation that provided the tables is active: they are the plugin's until its deactivate.
    /// - Returns: whether every table passed, and a one-line detail (the first reason when one did not).
    public func tableCheck(_ provisions: [ServiceProvision]) -> (passed: Bool, detail: String) {
        guard !provisions.isEmpty else { return (true, "provides no interface") }
        var notes: [String] = []
        for p in provisions {
            let what = "\(p.interface)"
            guard !p.functions.isEmpty else {
                notes.append("\(what): \(p.tableSize) bytes, its functions not declared (functions:), so not checked")
                continue
            }
            let holds = max(0, (p.tableSize - 8) / 8)
            if holds < p.functions.count {
                let missing = p.functions.dropFirst(holds).map(\.name).joined(separator: ", ")
                return (false, "\(what): a table of \(p.tableSize) bytes holds \(holds) of the \(p.functions.count) functions plugin.yaml declares (no \(missing)): declare only the table's functions, in its order, or set struct_size = sizeof the table")
            }
            var elsewhere: [String] = []
            for (i, f) in p.functions.enumerated() {
                guard let function = p.table.loadUnaligned(fromByteOffset: 8 + 8 * i, as: UnsafeRawPointer?.self) else {
                    return (false, "\(what): function \(f.name) (number \(i + 1) after struct_size) is NULL: a consumer calling it crashes")
                }
                guard let object = Self.loadedObject(containing: function) else {
                    return (false, "\(what): function \(f.name) points at \(function), in no loaded library: a consumer calling it crashes")
                }
                guard object.code else {
                    return (false, "\(what): function \(f.name) points at \(function), into data of \(object.name), not its code: a consumer calling it crashes")
                }
                if object.base != Self.loadedObject(containing: code)?.base { elsewhere.append("\(f.name) in \(object.name)") }
                if f.signature.arguments.isEmpty, f.signature.result == .str {
                    let text = unsafeBitCast(function, to: (@convention(c) () -> keel_str).self)()
                    if let problem = Self.strProblem(text) { return (false, "\(what): \(f.name)() returned \(problem)") }
                }
            }
            notes.append("\(what): \(p.functions.count) declared function(s) in the table" +
                         (elsewhere.isEmpty ? "" : " (\(elsewhere.joined(separator: ", ")))"))
        }
        return (true, notes.joined(separator: "; "))
    }

    /// The loaded object whose mapping holds `address`: its base address, file name, and whether the address lies
    /// in one of its executable segments.
    static func loadedObject(containing address: UnsafeRawPointer) -> (base: UnsafeRawPointer?, name: String, code: Bool)? {
        var base: UnsafeRawPointer?, name: UnsafePointer<CChar>?
        var code: Int32 = 0
        guard keel_loaded_object(address, &base, &name, &code) == 0 else { return nil }
        return (base, name.map { String(cString: $0) } ?? "?", code != 0)
    }

    /// Why a `keel_str` a table function returned would be refused across a process boundary, or nil.
    static func strProblem(_ s: keel_str) -> String? {
        guard s.len != 0 else { return nil }
        // size_t reaches Swift as Int: a length past Int.max reads as negative.
        guard s.len > 0 else { return "a length of \(UInt(bitPattern: s.len)) bytes" }
        guard let ptr = s.ptr else { return "a NULL pointer with a length of \(s.len)" }
        guard s.len <= ServiceCall.stringLimit else { return "\(s.len) bytes, over the \(ServiceCall.stringLimit / 1024) KiB a str may have across processes" }
        let bytes = UnsafeRawBufferPointer(start: ptr, count: s.len)
        guard String(validating: bytes, as: UTF8.self) != nil else { return "\(s.len) bytes that are not UTF-8" }
        return nil
    }
}
