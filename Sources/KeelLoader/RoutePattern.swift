// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// A route path pattern below a plugin's prefix: literal segments, `:name` parameters, and a final `*` that takes
/// the rest of the path. Two patterns conflict when they have the same shape (parameter names do not count).
public struct RoutePattern: Sendable, Hashable, CustomStringConvertible {
    public enum Segment: Sendable, Hashable {
        case literal(String)
        case parameter(String)
        case rest
    }

    public let segments: [Segment]
    public let text: String
    /// Per segment, how specific it is (literal 3, parameter 2, `*` 1): computed once, compared per request.
    public let specificity: [UInt8]
    /// The pattern with parameter names erased: equal shapes conflict. Computed once: registration compares each new
    /// route with every earlier one of its plugin.
    public let shape: String

    init(segments: [Segment], text: String) {
        self.segments = segments
        self.text = text
        // Appended by hand: `joined(separator:)` here instantiated generic metadata by name on a process's first
        // route (about 0.3 ms of a lazy plugin's first request).
        var shape = ""
        for s in segments {
            shape += "/"
            switch s {
            case let .literal(l): shape += l
            case .parameter: shape += ":"
            case .rest: shape += "*"
            }
        }
        self.shape = segments.isEmpty ? "/" : shape
        specificity = segments.map { s -> UInt8 in
            switch s {
            case .literal: return 3
            case .parameter: return 2
            case .rest: return 1
            }
        }
    }

    /// Parses `text`; returns a reason when it is not a valid pattern.
    public static func parse(_ text: String) -> Result<RoutePattern, PatternError> {
        guard text.hasPrefix("/") else { return .failure(PatternError(reason: "\"\(text)\" must start with '/'")) }
        guard text.utf8.count <= 1024 else { return .failure(PatternError(reason: "pattern longer than 1024 bytes")) }
        let parts = text.split(separator: "/", omittingEmptySubsequences: true)
        var segments: [Segment] = []
        for (i, part) in parts.enumerated() {
            if part == "*" {
                guard i == parts.count - 1 else {
                    return .failure(PatternError(reason: "\"\(text)\": '*' may only be the last segment"))
                }
                segments.append(.rest)
            } else if part.hasPrefix(":") {
                let name = String(part.dropFirst())
                guard !name.isEmpty, name.utf8.allSatisfy({ $0 == 95 || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || ($0 >= 48 && $0 <= 57) }) else {
                    return .failure(PatternError(reason: "\"\(text)\": parameter \"\(part)\" needs a name of letters, digits or '_'"))
                }
                segments.append(.parameter(name))
            } else {
                guard part != "..", part != "." else {
                    return .failure(PatternError(reason: "\"\(text)\": segment \"\(part)\" would leave the plugin's own prefix"))
                }
                guard !part.contains(where: { $0 == "?" || $0 == "#" || $0.isWhitespace }) else {
                    return .failure(PatternError(reason: "\"\(text)\": segment \"\(part)\" has a character not allowed in a path"))
                }
                segments.append(.literal(String(part)))
            }
        }
        return .success(RoutePattern(segments: segments, text: text))
    }

    public var description: String { text }

    /// What is legal in this pattern but likely not what its author meant, for `pluginID`'s routes: a segment written
    /// as another router writes a parameter (`{id}`, `<id>`), which is matched as it is written; the plugin's own
    /// `/ext/<id>` prefix written out (routes are below it already: it is served twice over); a parameter named twice.
    /// Refusing these would fail plugins built against 1.0 that register them (the ABI's promise): they are said
    /// (`keel plugins inspect`, `enable`), not refused. Nil when there is nothing to say.
    public func likelyMistake(pluginID: String) -> String? {
        var names: Set<String> = []
        for segment in segments {
            switch segment {
            case let .literal(l) where (l.hasPrefix("{") && l.hasSuffix("}")) || (l.hasPrefix("<") && l.hasSuffix(">")):
                return "\"\(l)\" is matched as it is written; a path parameter is written \":\(l.dropFirst().dropLast())\""
            case let .parameter(name):
                if !names.insert(name).inserted { return "the parameter \":\(name)\" is named twice (the handler sees one of them)" }
            default: continue
            }
        }
        if case .literal("ext") = segments.first, segments.count > 1, case .literal(pluginID) = segments[1] {
            let below = segments.dropFirst(2).map { s -> String in
                switch s {
                case let .literal(l): "/" + l
                case let .parameter(name): "/:" + name
                case .rest: "/*"
                }
            }.joined()
            return "it is served at /ext/\(pluginID)\(text): every route is below /ext/\(pluginID) already (register \"\(below.isEmpty ? "/" : below)\")"
        }
        return nil
    }

    public struct PatternError: Error, Sendable {
        public var reason: String
    }
}
