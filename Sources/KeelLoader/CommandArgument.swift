// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// An argument as a caller gave it, before it is checked against a command's signature: a word from the command
/// line, or a JSON value from the admin API or another plugin.
public enum CommandArgument: Sendable, Hashable, Decodable, CustomStringConvertible {
    /// Untyped text (the CLI): read as the declared type.
    case text(String)
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case null

    public init(from decoder: any Decoder) throws {
        // Most arguments are integers: tried first, so that the common case costs no failed attempt.
        let c = try decoder.singleValueContainer()
        if let i = try? c.decode(Int64.self) { self = .int(i) } else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) } else if let u = try? c.decode(UInt64.self) { self = .uint(u) }
        else if let d = try? c.decode(Double.self) { self = .double(d) } else if c.decodeNil() { self = .null }
        else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected a number, true/false, a string or null") }
    }

    /// As the caller wrote it, for messages.
    public var description: String {
        switch self {
        case let .text(s), let .string(s): "\"\(s.count > 64 ? s.prefix(64) + "…" : s)\""
        case let .bool(b): "\(b)"
        case let .int(i): "\(i)"
        case let .uint(u): "\(u)"
        case let .double(d): "\(d)"
        case .null: "null"
        }
    }
}
