// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// A set of versions, written the way npm and Cargo users expect:
/// `1.2.3` or `=1.2.3` (exactly), `>=1.0.0 <2.0.0` (all comparators must hold), `^1.2` (same major, at least 1.2.0),
/// `~1.2.3` (same minor), `1.x` / `1.2.*` (wildcards), `*` (any), and alternatives joined with `||`.
///
/// Partial versions fill with zeros (`>=1.2` is `>=1.2.0`). Pre-releases match only a comparator that names a
/// pre-release of the same `MAJOR.MINOR.PATCH`, as in npm, so `^1.0.0` does not pick `2.0.0-beta`.
public struct VersionRange: Sendable, Hashable, CustomStringConvertible {
    struct Comparator: Sendable, Hashable {
        enum Op: String, Sendable { case eq = "=", lt = "<", le = "<=", gt = ">", ge = ">=" }
        var op: Op
        var version: Semver

        func matches(_ v: Semver) -> Bool {
            switch op {
            case .eq: return v == version
            case .lt: return v < version
            case .le: return v <= version
            case .gt: return v > version
            case .ge: return v >= version
            }
        }
    }

    /// Alternatives (`||`), each a conjunction of comparators. An empty conjunction matches everything.
    let alternatives: [[Comparator]]
    public let text: String

    public var description: String { text }

    /// Parses `text`. Returns nil when it is not a range this type understands.
    public init?(_ text: String) {
        let trimmed = text.trimmingASCIISpaces()
        guard !trimmed.isEmpty else { return nil }
        var alternatives: [[Comparator]] = []
        for alternative in trimmed.components(separatedBy: "||") {
            let tokens = VersionRange.tokens(alternative)
            guard !tokens.isEmpty else { return nil }
            var all: [Comparator] = []
            for token in tokens {
                guard let expanded = VersionRange.expand(token) else { return nil }
                all += expanded
            }
            alternatives.append(all)
        }
        self.alternatives = alternatives
        self.text = trimmed
    }

    /// The lowest major version the range admits, read from its lower bounds (`^1.2` → 1, `>=2.0.0 <4` → 2); nil
    /// when some alternative has no lower bound (`*`, `<2`).
    public var lowestMajor: Int? {
        var lowest: Int?
        for comparators in alternatives {
            let bounds = comparators.filter { $0.op == .ge || $0.op == .gt || $0.op == .eq }.map(\.version.major)
            guard let m = bounds.max() else { return nil }
            lowest = min(lowest ?? m, m)
        }
        return lowest
    }

    /// True when `version` lies in the range.
    public func contains(_ version: Semver) -> Bool {
        alternatives.contains { comparators in
            guard comparators.allSatisfy({ $0.matches(version) }) else { return false }
            if version.prerelease.isEmpty { return true }
            return comparators.contains {
                !$0.version.prerelease.isEmpty && $0.version.major == version.major && $0.version.minor == version.minor
                    && $0.version.patch == version.patch
            }
        }
    }

    /// Splits on spaces, gluing an operator written apart from its version (`>= 1.0`) back on.
    static func tokens(_ s: String) -> [String] {
        var out: [String] = []
        var pendingOp = ""
        for word in s.split(separator: " ").map(String.init) {
            if word.allSatisfy({ "<>=~^".contains($0) }) {
                pendingOp += word
            } else {
                out.append(pendingOp + word)
                pendingOp = ""
            }
        }
        if !pendingOp.isEmpty { out.append(pendingOp) }
        return out
    }

    /// One written comparator → the comparators it means.
    static func expand(_ token: String) -> [Comparator]? {
        var op = ""
        var rest = Substring(token)
        while let c = rest.first, "<>=~^".contains(c) {
            op.append(c)
            rest = rest.dropFirst()
        }
        if rest == "*" || rest.lowercased() == "x" { return op.isEmpty || op == ">=" ? [] : nil }
        guard let partial = Partial(rest) else { return nil }
        let low = partial.floor
        switch op {
        case "^":
            let high: Semver
            if partial.major > 0 || partial.minor == nil { high = Semver(partial.major + 1, 0, 0, prerelease: ["0"]) }
            else if let minor = partial.minor, minor > 0 || partial.patch == nil {
                high = Semver(0, minor + 1, 0, prerelease: ["0"])
            } else { high = Semver(0, 0, (partial.patch ?? 0) + 1, prerelease: ["0"]) }
            return [.init(op: .ge, version: low), .init(op: .lt, version: high)]
        case "~":
            let high = partial.minor == nil ? Semver(partial.major + 1, 0, 0, prerelease: ["0"])
                : Semver(partial.major, (partial.minor ?? 0) + 1, 0, prerelease: ["0"])
            return [.init(op: .ge, version: low), .init(op: .lt, version: high)]
        case "", "=":
            guard let high = partial.ceiling else { return [.init(op: .eq, version: low)] }
            return [.init(op: .ge, version: low), .init(op: .lt, version: high)]
        case ">=": return [.init(op: .ge, version: low)]
        case ">":
            if let high = partial.ceiling { return [.init(op: .ge, version: high)] }
            return [.init(op: .gt, version: low)]
        case "<": return [.init(op: .lt, version: low)]
        case "<=":
            if let high = partial.ceiling { return [.init(op: .lt, version: high)] }
            return [.init(op: .le, version: low)]
        default: return nil
        }
    }

    /// `1`, `1.2`, `1.2.3-pre`, `1.x`, `1.2.*`.
    struct Partial {
        var major: Int
        var minor: Int?
        var patch: Int?
        var full: Semver?

        init?(_ s: Substring) {
            if let v = Semver(String(s)) {
                major = v.major; minor = v.minor; patch = v.patch; full = v
                return
            }
            var t = s
            if t.first == "v" { t = t.dropFirst() }
            let parts = t.split(separator: ".", omittingEmptySubsequences: false)
            guard (1...3).contains(parts.count) else { return nil }
            func wild(_ p: Substring) -> Bool { p == "x" || p == "X" || p == "*" }
            guard let m = Semver.number(parts[0]) else { return nil }
            major = m
            if parts.count > 1, !wild(parts[1]) {
                guard let n = Semver.number(parts[1]) else { return nil }
                minor = n
            }
            if parts.count > 2, !wild(parts[2]) {
                guard minor != nil, let p = Semver.number(parts[2]) else { return nil }
                patch = p
            }
        }

        var floor: Semver { full ?? Semver(major, minor ?? 0, patch ?? 0) }

        /// The first version above a partial one (`1.2` → `1.3.0-0`); nil for a full version.
        var ceiling: Semver? {
            if full != nil || patch != nil { return nil }
            if let minor { return Semver(major, minor + 1, 0, prerelease: ["0"]) }
            return Semver(major + 1, 0, 0, prerelease: ["0"])
        }
    }
}

extension String {
    func trimmingASCIISpaces() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { $0 != " " && $0 != "\t" }),
              let last = scalars.lastIndex(where: { $0 != " " && $0 != "\t" }) else { return "" }
        return String(scalars[first...last])
    }
}
