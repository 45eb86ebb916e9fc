// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// A semantic version (semver.org 2.0): `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`.
///
/// Ordering follows semver precedence: build metadata is ignored, a pre-release sorts before its release, and
/// pre-release identifiers compare numerically when both are numeric. A leading `v` is accepted on parsing
/// (`v1.30.0-tke.1` parses) because vendor tags use it.
public struct Semver: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int
    public var prerelease: [String]
    public var build: [String]

    public init(_ major: Int, _ minor: Int, _ patch: Int, prerelease: [String] = [], build: [String] = []) {
        self.major = major
        self.minor = minor
        self.patch = patch
        self.prerelease = prerelease
        self.build = build
    }

    /// Parses `text`; returns nil when it is not a full `MAJOR.MINOR.PATCH` version.
    public init?(_ text: String) {
        // The common case, "1.2.3", byte by byte (start-up parses one per plugin and descriptor); else the full rules.
        if let (a, b, c) = Semver.plain(text.utf8) {
            self.init(a, b, c)
            return
        }
        var rest = Substring(text)
        if rest.first == "v" { rest = rest.dropFirst() }
        var build: [String] = []
        if let plus = rest.firstIndex(of: "+") {
            build = rest[rest.index(after: plus)...].split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            rest = rest[..<plus]
            guard build.allSatisfy(Semver.isIdentifier) else { return nil }
        }
        var prerelease: [String] = []
        if let dash = rest.firstIndex(of: "-") {
            prerelease = rest[rest.index(after: dash)...].split(separator: ".", omittingEmptySubsequences: false)
                .map(String.init)
            rest = rest[..<dash]
            guard prerelease.allSatisfy(Semver.isIdentifier) else { return nil }
        }
        let parts = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let a = Semver.number(parts[0]), let b = Semver.number(parts[1]),
              let c = Semver.number(parts[2]) else { return nil }
        self.init(a, b, c, prerelease: prerelease, build: build)
    }

    public var description: String {
        var s = "\(major).\(minor).\(patch)"
        if !prerelease.isEmpty { s += "-" + prerelease.joined(separator: ".") }
        if !build.isEmpty { s += "+" + build.joined(separator: ".") }
        return s
    }

    public static func < (lhs: Semver, rhs: Semver) -> Bool {
        if lhs.major != rhs.major { return lhs.major < rhs.major }
        if lhs.minor != rhs.minor { return lhs.minor < rhs.minor }
        if lhs.patch != rhs.patch { return lhs.patch < rhs.patch }
        switch (lhs.prerelease.isEmpty, rhs.prerelease.isEmpty) {
        case (true, true), (true, false): return false
        case (false, true): return true
        case (false, false): break
        }
        for (a, b) in zip(lhs.prerelease, rhs.prerelease) where a != b {
            switch (Int(a), Int(b)) {
            case let (x?, y?): return x < y
            case (_?, nil): return true
            case (nil, _?): return false
            case (nil, nil): return a < b
            }
        }
        return lhs.prerelease.count < rhs.prerelease.count
    }

    /// Equality is precedence equality: build metadata does not count.
    public static func == (lhs: Semver, rhs: Semver) -> Bool {
        lhs.major == rhs.major && lhs.minor == rhs.minor && lhs.patch == rhs.patch && lhs.prerelease == rhs.prerelease
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(major)
        hasher.combine(minor)
        hasher.combine(patch)
        hasher.combine(prerelease)
    }

    /// MAJOR.MINOR.PATCH of plain decimal numbers (at most 9 digits, no leading zero), or nil for anything else:
    /// the same numbers `number` accepts, without a prerelease or build part.
    static func plain(_ bytes: String.UTF8View) -> (Int, Int, Int)? {
        var parts = (0, 0, 0), index = 0, value = 0, digits = 0, leadingZero = false
        for byte in bytes {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, index < 2 else { return nil }
                if index == 0 { parts.0 = value } else { parts.1 = value }
                index += 1
                value = 0
                digits = 0
                leadingZero = false
                continue
            }
            guard byte >= 48, byte <= 57, digits < 9, !leadingZero else { return nil }
            leadingZero = digits == 0 && byte == 48
            value = value * 10 + Int(byte - 48)
            digits += 1
        }
        guard index == 2, digits > 0 else { return nil }
        parts.2 = value
        return parts
    }

    static func number(_ s: Substring) -> Int? {
        guard !s.isEmpty, s.count <= 9, s.allSatisfy(\.isASCIIDigit), s == "0" || s.first != "0" else { return nil }
        return Int(s)
    }

    static func isIdentifier(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { $0 == UInt8(ascii: "-") || ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) }
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
