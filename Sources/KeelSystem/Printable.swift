// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Text from outside (a repository's index, an archive's entry names) made safe for one line of a log, an error or
/// the terminal. Stateless; any thread.
public enum Printable {
    /// `text` with every control character (C0, DEL, C1: `\n`, `\u{1B}`, `\u{9B}`, `\u{85}`) and every invisible
    /// formatting one (bidirectional overrides and isolates, zero-width characters, line and paragraph separators)
    /// written escaped as Swift would (`\n`, `\u{1B}`, `\u{202E}`): a terminal never sees an escape sequence, a line
    /// never breaks or reverses, and the reader sees what is there. Other text, non-ASCII letters included, is kept.
    public static func escapingControls(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isHidden) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            out += isHidden(scalar) ? scalar.escaped(asASCII: true) : String(scalar)
        }
        return out
    }

    /// A control character or an invisible formatting one (Unicode's general category Cf, the separators Zl and Zp).
    public static func isHidden(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: true
        default: false
        }
    }
}
