// Keel — a microkernel plugin host. Licensed under Apache-2.0.

internal import CKeelABI

/// Packs Swift strings into one buffer and lends them to a C call as `keel_str`s, valid only inside `body`.
enum StringPack {
    static func with<R>(_ strings: [String], _ body: ([keel_str]) -> R) -> R {
        var bytes: [UInt8] = []
        var slots: [(Int, Int)] = []
        for s in strings {
            let start = bytes.count
            bytes.append(contentsOf: s.utf8)
            slots.append((start, bytes.count - start))
        }
        return bytes.withUnsafeBufferPointer { buffer in
            let base = buffer.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }
            return body(slots.map { slot in
                guard slot.1 > 0, let base else { return keel_str(ptr: nil, len: 0) }
                return keel_str(ptr: base + slot.0, len: slot.1)
            })
        }
    }

    /// A copy of a borrowed string (invalid UTF-8 repaired).
    static func copy(_ s: keel_str) -> String {
        guard let ptr = s.ptr, s.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: s.len), as: UTF8.self)
    }

    /// A `keel_str` over a copy of `s` that is never freed: for the descriptor, which lives as long as the library.
    static func leaked(_ s: String) -> keel_str {
        let bytes = Array(s.utf8)
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
        for (i, b) in bytes.enumerated() { buffer[i] = CChar(bitPattern: b) }
        return keel_str(ptr: UnsafePointer(buffer), len: bytes.count)
    }
}
