// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Lowercase hex of bytes: digests, tokens and tickets. One table lookup per nibble; `String(format: "%02x")` per
/// byte cost several microseconds per digest (a tenth of a proxied request, 4 % of an admin request's CPU).
public enum Hex {
    /// Inlinable, so that it is specialised for the caller's byte sequence (a digest, an array): called through the
    /// generic witness tables, every byte cost a protocol call, about 10 µs for a SHA-256 digest.
    @inlinable
    public static func lowercase<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
        let input = Array(bytes)
        return String(unsafeUninitializedCapacity: input.count * 2) { out in
            let digits: StaticString = "0123456789abcdef"
            digits.withUTF8Buffer { table in
                for (i, b) in input.enumerated() {
                    out[2 * i] = table[Int(b >> 4)]
                    out[2 * i + 1] = table[Int(b & 0x0f)]
                }
            }
            return input.count * 2
        }
    }
}
