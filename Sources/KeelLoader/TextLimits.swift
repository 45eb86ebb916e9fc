// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// How much of a plugin's text the host keeps: a log line, an error message, a worker's refusal.
public enum TextLimits {
    /// Bytes of UTF-8 of one plugin log line, whether the plugin runs in the host or in a worker: a longer line is
    /// cut there and ends in "…". The host keeps each plugin's last lines (`PluginLogs`), so this bounds them in
    /// bytes, not only in lines.
    public static let logLineBytes = 4096

    /// `line` cut to `logLineBytes` (plus the "…" that ends a cut line): a line already cut (by the worker, or
    /// `string(upTo:)`) is not cut again unless it is longer.
    public static func logLine(_ line: String) -> String { cut(line, to: logLineBytes) }

    /// `text` cut to `bytes` of UTF-8 plus a "…" that ends it; a text already cut that way is left alone.
    public static func cut(_ text: String, to bytes: Int) -> String {
        let ellipsis = "…"
        guard text.utf8.count > bytes + (text.hasSuffix(ellipsis) ? ellipsis.utf8.count : 0) else { return text }
        return text.prefix(utf8Bytes: bytes) + ellipsis
    }
}

extension String {
    /// The longest prefix of whole Unicode scalars that is at most `limit` bytes of UTF-8. Not `prefix(_:)`, which
    /// counts Characters: one grapheme cluster ("a" and a million combining accents) can fill a whole frame.
    public func prefix(utf8Bytes limit: Int) -> String {
        guard utf8.count > limit else { return self }
        var scalars = String.UnicodeScalarView()
        var used = 0
        for scalar in unicodeScalars {
            used += UTF8.width(scalar)
            guard used <= limit else { break }
            scalars.append(scalar)
        }
        return String(scalars)
    }
}
