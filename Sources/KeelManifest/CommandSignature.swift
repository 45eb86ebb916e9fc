// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// A command's signature, `(i64, i64) -> i64`: the types of its arguments and of its result, in the small type
/// language of "keel.commands/1" (PluginABI/include/keel/commands.h). Parsed once, when the manifest is read.
public struct CommandSignature: Sendable, Hashable, CustomStringConvertible {
    /// An argument type and the C type the function takes for it.
    public enum ArgumentType: String, Sendable, Hashable, CaseIterable {
        case i32, i64, u32, u64, f64, bool, str, bytes
    }

    /// A result type. `statusText` and `statusJSON` return a `keel_status` and write their result through a
    /// trailing `keel_output *` parameter.
    public enum ResultType: Sendable, Hashable, CustomStringConvertible {
        case void, value(ArgumentType), status, statusText, statusJSON

        public var description: String {
            switch self {
            case .void: "void"
            case let .value(t): t.rawValue
            case .status: "status"
            case .statusText: "status(str)"
            case .statusJSON: "status(json)"
            }
        }

        /// True when the function takes a trailing `keel_output *`.
        public var writesOutput: Bool { self == .statusText || self == .statusJSON }
    }

    public var arguments: [ArgumentType]
    public var result: ResultType

    public init(arguments: [ArgumentType], result: ResultType) {
        self.arguments = arguments
        self.result = result
    }

    /// Parses `(i64, str) -> status(json)`; spaces are free. Throws a reason (without the file) when it does not parse.
    public init(parsing text: String) throws(SignatureError) {
        let t = text.filter { !$0.isWhitespace }
        guard t.hasPrefix("("), let close = t.firstIndex(of: ")") else {
            throw SignatureError("\"\(text)\" does not start with an argument list such as (i64, i64)")
        }
        let list = t[t.index(after: t.startIndex)..<close]
        let rest = t[t.index(after: close)...]
        guard rest.hasPrefix("->") else { throw SignatureError("\"\(text)\" has no result: write -> TYPE (or -> void)") }
        var arguments: [ArgumentType] = []
        if !list.isEmpty {
            for (i, part) in list.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
                guard let type = ArgumentType(rawValue: String(part)) else {
                    throw SignatureError("argument \(i + 1) type \"\(part)\" is not one of \(ArgumentType.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                arguments.append(type)
            }
        }
        guard arguments.count <= 16 else { throw SignatureError("\(arguments.count) arguments: at most 16") }
        let r = String(rest.dropFirst(2))
        switch r {
        case "void": result = .void
        case "status": result = .status
        case "status(str)": result = .statusText
        case "status(json)": result = .statusJSON
        case "str", "bytes":
            throw SignatureError("a result of type \(r) cannot be returned by value: use status(str) and write it to the keel_output")
        default:
            guard let type = ArgumentType(rawValue: r) else {
                throw SignatureError("result type \"\(r)\" is not one of void, i32, i64, u32, u64, f64, bool, status, status(str), status(json)")
            }
            result = .value(type)
        }
        self.arguments = arguments
    }

    public var description: String { "(\(arguments.map(\.rawValue).joined(separator: ", "))) -> \(result)" }
}

/// Why a signature does not parse.
public struct SignatureError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// A command a plugin declares (`commands:` in plugin.yaml).
public struct CommandDeclaration: Sendable, Hashable {
    /// `[a-z][a-z0-9_-]*`, at most 64; unique in the plugin.
    public var name: String
    /// The exported C function.
    public var symbol: String
    public var signature: CommandSignature
    public var description: String
    /// A permission item `key:action` the plugin declares; empty: admins only.
    public var permission: String
    /// Sample arguments the probe calls it with (JSON values as text), or nil.
    public var probe: [String]?

    public init(name: String, symbol: String, signature: CommandSignature, description: String = "", permission: String = "",
                probe: [String]? = nil) {
        self.name = name
        self.symbol = symbol
        self.signature = signature
        self.description = description
        self.permission = permission
        self.probe = probe
    }

    /// True for a valid command name.
    public static func isValidName(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard (1...64).contains(b.count), let first = b.first, first >= 97 && first <= 122 else { return false }
        return b.allSatisfy { Manifest.isLowerAlnum($0) || $0 == 45 || $0 == 95 }
    }

    /// True for a C identifier.
    public static func isValidSymbol(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard (1...256).contains(b.count), let first = b.first, !(48...57).contains(first) else { return false }
        return b.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) || $0 == 95 }
    }
}
