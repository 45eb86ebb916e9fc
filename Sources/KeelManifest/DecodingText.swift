// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// A decoder's error in plain words (never Foundation's `DecodingError` dump): where it is (the key path, e.g.
/// `plugins.hello[0].version`) and what was wrong (`expected a string`, `missing key apiVersion`); `object` names a
/// keyed value ("an object" in JSON, "a mapping" in YAML). Used for the JSON
/// bodies of the admin API and the YAML of repository indexes.
public enum DecodingText {
    /// The key path of `error` (nil at the top level) and its reason; `corrupt` is the reason for data the decoder
    /// could not read at all (e.g. "not valid JSON"). Nil for an error that is not a `DecodingError`.
    public static func describe(_ error: any Error, corrupt: String, object: String = "an object") -> (key: String?, reason: String)? {
        func path(_ c: DecodingError.Context, adding key: CodingKey? = nil) -> String? {
            let keys = c.codingPath + (key.map { [$0] } ?? [])
            guard !keys.isEmpty else { return nil }
            var text = ""
            for k in keys {
                if let i = k.intValue { text += "[\(i)]" } else { text += (text.isEmpty ? "" : ".") + k.stringValue }
            }
            return text
        }
        switch error as? DecodingError {
        case let .typeMismatch(type, c)?: return (path(c), "expected " + expected(type, object: object))
        case let .valueNotFound(type, c)?: return (path(c), "expected " + expected(type, object: object) + ", found null")
        case let .keyNotFound(key, c)?: return (path(c), "missing key " + key.stringValue)
        case let .dataCorrupted(c)?: return c.codingPath.isEmpty ? (nil, corrupt) : (path(c), "not a valid value")
        default: return nil
        }
    }

    /// What a value of `type` looks like to someone writing JSON or YAML (`object`: what a keyed value is called).
    static func expected(_ type: Any.Type, object: String) -> String {
        switch type {
        case is Bool.Type, is Bool?.Type: "true or false"
        case is String.Type, is String?.Type: "a string"
        case is Int.Type, is Int?.Type, is Int64.Type, is Double.Type, is UInt32.Type: "a number"
        case is [String].Type, is [String]?.Type: "a list of strings"
        default:
            String(describing: type).hasPrefix("Array") ? "a list"
                : String(describing: type).contains("Scalar") ? "a single value" : object
        }
    }
}
