// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Lowercase hex of bytes: digests, tokens and tickets. One table lookup per nibble; `String(format: "%02x")` per
/// byte cost several microseconds per digest (a tenth of a proxied request, 4 % of an admin request's CPU).
public enum Hex {
    public static func lowercase<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
        let digits: StaticString = "0123456789abcdef"
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        digits.withUTF8Buffer { table in
            for b in bytes {
                out.append(table[Int(b >> 4)])
                out.append(table[Int(b & 0x0f)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
