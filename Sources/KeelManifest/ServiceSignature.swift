// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// One function of a service table, as a `provides:` or `consumes:` entry declares it under `functions:`
/// (`{name: sync, signature: "(str, str) -> status(buf)"}`), so that calls through the table can cross a process
/// boundary (`isolation: process`). Declared in the table's order, after `struct_size`.
public struct ServiceFunction: Sendable, Hashable {
    /// A name for messages (`[a-z][a-z0-9_-]*`, at most 64).
    public var name: String
    public var signature: ServiceSignature

    public init(name: String, signature: ServiceSignature) {
        self.name = name
        self.signature = signature
    }
}

/// A service table function's signature: the argument types of `CommandSignature`, and a result that may also be a
/// `keel_str` returned by value (`-> str`) or a status with a caller-owned output buffer (`-> status(buf)`: the
/// function takes three trailing parameters `char *out, size_t out_cap, size_t *out_len`, and returns
/// KEEL_ERR_LIMIT with `*out_len` set to the size it needs when out_cap is too small).
public struct ServiceSignature: Sendable, Hashable, CustomStringConvertible {
    public typealias ArgumentType = CommandSignature.ArgumentType

    public enum ResultType: Sendable, Hashable, CustomStringConvertible {
        case void, value(ArgumentType), status, str, statusBuffer

        public var description: String {
            switch self {
            case .void: "void"
            case let .value(t): t.rawValue
            case .status: "status"
            case .str: "str"
            case .statusBuffer: "status(buf)"
            }
        }
    }

    public var arguments: [ArgumentType]
    public var result: ResultType

    public init(arguments: [ArgumentType], result: ResultType) {
        self.arguments = arguments
        self.result = result
    }

    /// Parses `(str, str) -> status(buf)`, `() -> str`, or any command signature but `status(str)` and
    /// `status(json)` (those write to a host object, which a table function has no way to reach).
    public init(parsing text: String) throws(SignatureError) {
        let t = text.filter { !$0.isWhitespace }
        let forms: [(suffix: String, result: ResultType)] = [("->str", .str), ("->status(buf)", .statusBuffer)]
        if let form = forms.first(where: { t.hasSuffix($0.suffix) }) {
            // The argument list is a command's: parse it with a result commands know, then put this one in.
            let command = try CommandSignature(parsing: String(t.dropLast(form.suffix.count)) + "->void")
            self.init(arguments: command.arguments, result: form.result)
            return
        }
        let command = try CommandSignature(parsing: text)
        switch command.result {
        case .void: self.init(arguments: command.arguments, result: .void)
        case let .value(v): self.init(arguments: command.arguments, result: .value(v))
        case .status: self.init(arguments: command.arguments, result: .status)
        case .statusText, .statusJSON:
            throw SignatureError("a service function cannot return \(command.result): use status(buf) (trailing char *out, size_t out_cap, size_t *out_len) or str")
        }
    }

    public var description: String { "(\(arguments.map(\.rawValue).joined(separator: ", "))) -> \(result)" }
}

extension Array where Element == ServiceFunction {
    /// Where `consumer` (what a consumer declared) first differs from these (what the provider declared), as a
    /// phrase for a log line; nil when the provider's functions start with the consumer's (same signatures, in order).
    public func firstDifference(from consumer: [ServiceFunction]) -> String? {
        for (i, wanted) in consumer.enumerated() {
            guard i < count else { return "function \(i + 1) \"\(wanted.name)\" is not declared by the provider" }
            if self[i].signature != wanted.signature {
                return "function \(i + 1) \"\(wanted.name)\" is \(wanted.signature) for the consumer but \"\(self[i].name)\" \(self[i].signature) for the provider"
            }
        }
        return nil
    }
}
