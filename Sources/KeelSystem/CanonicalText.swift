// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// Names compared as identities (principal ids, the roles and tenant a hook names). Swift's `String` compares by
/// canonical equivalence: "\u{212A}ate" (the Kelvin sign) equals "Kate", and a decomposed "José" the composed one,
/// although the bytes differ and SQLite (and every plugin, and a proxied app) tells them apart. Keel takes only such
/// names in Unicode Normalization Form C: two different NFC strings are never canonically equivalent, so `==` and
/// dictionary look-ups then agree with the bytes. Pure; any thread.
public enum CanonicalText {
    /// True when `text` is in NFC (all ASCII is; the rest is checked through Foundation).
    public static func isNFC(_ text: String) -> Bool {
        if text.utf8.allSatisfy({ $0 < 0x80 }) { return true }
        return Array(text.utf8) == Array(text.precomposedStringWithCanonicalMapping.utf8)
    }

    /// `text` with every scalar outside ASCII written as `\u{212A}`: for a message about a name whose spelling is
    /// the problem (the Kelvin sign reads as K on every terminal).
    public static func scalars(_ text: String) -> String {
        text.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value != 0x7F ? String($0) : "\\u{" + String($0.value, radix: 16, uppercase: true) + "}" }
            .joined()
    }
}
