// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The one spelling of a request path that routing, the auth hooks and the handlers all see.
///
/// A path is made canonical once, when the request arrives: empty segments (`//`) and a trailing `/` are dropped,
/// and percent-escapes are decoded, so `/ext//hello/greet/root/` and `/ext/hello/greet/%72oot` are the same request
/// as `/ext/hello/greet/root` for everyone who looks at it. A path that cannot be made canonical without changing
/// its meaning is refused: `.` and `..` segments (raw or encoded, alone or before a `;` parameter, as `..;x`), an
/// encoded `/` (`%2F`), an encoded `?` or `#` or
/// control character (decoded, they would end the path or split a request line), a broken escape, a NUL, and bytes
/// that are not UTF-8. Stateless and thread-safe.
public enum CanonicalPath {
    public enum Problem: Error, Sendable, CustomStringConvertible {
        case dotSegment, encodedSlash, encodedDelimiter, badEscape, notUTF8

        public var description: String {
            switch self {
            case .dotSegment: return "the path has a '.' or '..' segment"
            case .encodedSlash: return "the path has an encoded '/' (%2F)"
            case .encodedDelimiter: return "the path has an encoded '?', '#' or control character"
            case .badEscape: return "the path has a broken percent-escape or a NUL"
            case .notUTF8: return "the path is not UTF-8"
            }
        }
    }

    /// The canonical form of `raw` (the path without its query), or why it has none. A path that is already
    /// canonical comes back unchanged, without allocating.
    public static func canonical(_ raw: String) -> Result<String, Problem> {
        if isCanonical(raw) { return .success(raw) }
        var segments: [String] = []
        for part in raw.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(part.count)
            var i = part.startIndex
            while i < part.endIndex {
                let b = part[i]
                if b == UInt8(ascii: "%") {
                    let h = part.index(after: i)
                    guard h < part.endIndex, part.index(after: h) < part.endIndex,
                          let hi = hex(part[h]), let lo = hex(part[part.index(after: h)]) else { return .failure(.badEscape) }
                    let decoded = hi << 4 | lo
                    if decoded == UInt8(ascii: "/") { return .failure(.encodedSlash) }
                    if decoded == 0 { return .failure(.badEscape) }
                    if decoded == UInt8(ascii: "?") || decoded == UInt8(ascii: "#") || decoded < 0x20 || decoded == 0x7F {
                        return .failure(.encodedDelimiter)
                    }
                    bytes.append(decoded)
                    i = part.index(i, offsetBy: 3)
                } else {
                    if b == 0 { return .failure(.badEscape) }
                    bytes.append(b)
                    i = part.index(after: i)
                }
            }
            guard let segment = String(validating: bytes, as: UTF8.self) else { return .failure(.notUTF8) }
            // `..;x` too: servers behind the proxy (Tomcat, Jetty) drop a segment's `;` parameters and then walk `..`.
            let head = segment.utf8.split(separator: UInt8(ascii: ";"), maxSplits: 1, omittingEmptySubsequences: false).first
            if segment == "." || segment == ".." || head.map({ $0.elementsEqual(".".utf8) || $0.elementsEqual("..".utf8) }) == true {
                return .failure(.dotSegment)
            }
            segments.append(segment)
        }
        return .success("/" + segments.joined(separator: "/"))
    }

    /// True when `raw` needs no change: no `%`, no NUL, no empty, `.` or `..` segment, no trailing `/` (but `/`).
    static func isCanonical(_ raw: String) -> Bool {
        var previous: UInt8 = 0, count = 0
        var segmentLength = 0, dotsOnly = true
        for b in raw.utf8 {
            count += 1
            if b == UInt8(ascii: "%") || b == 0 { return false }
            if b == UInt8(ascii: "/") {
                if count > 1 && previous == UInt8(ascii: "/") { return false }
                if segmentLength > 0 && dotsOnly && segmentLength <= 2 { return false }
                segmentLength = 0
                dotsOnly = true
            } else {
                // A `.` or `..` before a `;` parameter: the slow path refuses it.
                if b == UInt8(ascii: ";") && segmentLength > 0 && dotsOnly && segmentLength <= 2 { return false }
                segmentLength += 1
                if b != UInt8(ascii: ".") { dotsOnly = false }
            }
            previous = b
        }
        if count == 0 || raw.utf8.first != UInt8(ascii: "/") { return false }
        if count > 1 && previous == UInt8(ascii: "/") { return false }
        if segmentLength > 0 && dotsOnly && segmentLength <= 2 { return false }
        return true
    }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
