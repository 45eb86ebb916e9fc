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

    /// The bytes of hex text (either case); nil for an odd length or a character that is not a hex digit.
    public static func bytes(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let high = nibble(chars[i]), let low = nibble(chars[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }
}
