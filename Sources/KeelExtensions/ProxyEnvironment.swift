// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// The proxy a repository download goes through, read from the environment as curl (and so Foundation's URLSession
/// on Linux, which Keel used before) reads it:
/// - `http_proxy` for http locations (lower case only: a CGI host sets `HTTP_PROXY` from a request's `Proxy:`
///   header), `https_proxy` or `HTTPS_PROXY` for https, then `all_proxy` or `ALL_PROXY` for either;
/// - a value is `[http://][user:password@]host[:port][/]` (port 1080 when none is given, as curl's) or
///   `socks5://host[:port]`; anything else is refused with a reason, never silently ignored;
/// - `no_proxy` or `NO_PROXY`: names separated by commas, each matching that host and the hosts below it
///   (`example.com` and `.example.com` both match `repo.example.com`), an IPv4 address or range (`10.0.0.0/8`), an
///   IPv6 address, or `*` alone for every host; a `:port` on an entry is ignored (curl would not match it), a
///   trailing dot too. Matched without regard to case.
///
/// A pure value: `init` reads only the dictionary it is given. [thread-safe]
struct ProxyEnvironment: Sendable, Equatable {
    /// A proxy server, as the environment names it.
    struct Server: Sendable, Hashable {
        enum Kind: Sendable, Hashable { case http, socks5 }
        var kind: Kind
        var host: String
        var port: Int
        /// `user:password` from the value, percent-decoded; only for an http proxy.
        var user: String?
        var password: String?
        /// The variable it came from, for messages.
        var variable: String
    }

    /// A variable whose value is no proxy URL: the download fails with this reason rather than go direct.
    struct Invalid: Error, Sendable, Equatable {
        let reason: String
    }

    private var http: Result<Server, Invalid>?
    private var https: Result<Server, Invalid>?
    private var exempt: [String] = []

    init(_ environment: [String: String]) {
        func read(_ names: [String]) -> Result<Server, Invalid>? {
            for name in names {
                guard let value = environment[name]?.trimmed, !value.isEmpty else { continue }
                return Self.parse(value, variable: name)
            }
            return nil
        }
        http = read(["http_proxy", "all_proxy", "ALL_PROXY"])
        https = read(["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"])
        let list = environment["no_proxy"] ?? environment["NO_PROXY"] ?? ""
        // `*` alone exempts every host; within a list it is no name (as curl reads it).
        if list.trimmed == "*" { exempt = ["*"]; return }
        exempt = list.split(separator: ",").compactMap { entry in
            var name = Substring(entry.trimmed.lowercased())
            if name.hasPrefix("["), let close = name.firstIndex(of: "]") {
                name = name[name.index(after: name.startIndex)..<close]          // [::1]:8080 → ::1
            } else if name.filter({ $0 == ":" }).count == 1, let colon = name.firstIndex(of: ":") {
                name = name[..<colon]                                             // host:8080 → host
            }
            while name.hasPrefix(".") { name = name.dropFirst() }
            while name.hasSuffix(".") { name = name.dropLast() }
            return name.isEmpty || name == "*" ? nil : String(name)
        }
    }

    /// The proxy for a request to `host` over `scheme` ("http" or "https"), nil to connect directly.
    /// - Throws: `Invalid` when the variable that applies holds no proxy URL.
    func server(scheme: String, host: String) throws(Invalid) -> Server? {
        guard let chosen = scheme.lowercased() == "https" ? https : http else { return nil }
        if bypasses(host) { return nil }
        return try chosen.get()
    }

    /// Whether `no_proxy` names `host`.
    func bypasses(_ host: String) -> Bool {
        var name = host.lowercased()
        if name.hasPrefix("["), name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        while name.hasSuffix(".") { name.removeLast() }
        let address = Self.ipv4(Substring(name))
        for entry in exempt {
            if entry == "*" || entry == name { return true }
            if let address, let range = IPv4Range(entry), range.contains(address) { return true }
            if address == nil, !name.contains(":"), name.hasSuffix("." + entry) { return true }
        }
        return false
    }

    /// One variable's value as a server, or the reason it is none.
    static func parse(_ value: String, variable: String) -> Result<Server, Invalid> {
        func invalid(_ why: String) -> Result<Server, Invalid> {
            // A password never reaches a message: everything before the last @ but a leading scheme reads as ***,
            // found in the whole value before it is cut short.
            var shown = Substring(value)
            if let at = shown.lastIndex(of: "@") {
                let scheme = shown.range(of: "://").flatMap { mark in
                    mark.upperBound <= at && shown[..<mark.lowerBound].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) })
                        ? mark.upperBound : nil
                }
                shown = shown[..<(scheme ?? shown.startIndex)] + "***" + shown[at...]
            }
            shown = shown.prefix(200)
            return .failure(Invalid(reason: "\(variable)=\"\(shown)\" is not a proxy (\(why); expected http://host:port)"))
        }
        var rest = Substring(value)
        var kind = Server.Kind.http
        // A scheme only where what precedes :// is one (letters, digits, + - .): a :// later on is in a password.
        if let mark = rest.range(of: "://"), let first = rest.first, first.isLetter,
           rest[..<mark.lowerBound].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) }) {
            switch rest[..<mark.lowerBound].lowercased() {
            case "http": kind = .http
            case "socks5", "socks5h": kind = .socks5
            case let other: return invalid("the scheme \(other) is not supported")
            }
            rest = rest[mark.upperBound...]
        }
        if let slash = rest.firstIndex(of: "/") {
            guard rest[slash...].allSatisfy({ $0 == "/" }) else {
                // A / before the @ is in the user or password, where it must be escaped.
                return invalid(rest[slash...].contains("@") ? "a / in its user or password must be written %2F" : "a proxy URL has no path")
            }
            rest = rest[..<slash]
        }
        var user: String?, password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            guard kind == .http else { return invalid("a user for a SOCKS proxy is not supported") }
            let colon = credentials.firstIndex(of: ":") ?? credentials.endIndex
            guard let u = String(credentials[..<colon]).removingPercentEncoding else { return invalid("its user is badly escaped") }
            user = u
            password = colon == credentials.endIndex ? "" : String(credentials[credentials.index(after: colon)...]).removingPercentEncoding
            guard password != nil else { return invalid("its password is badly escaped") }
        }
        var host = rest, port = 1080
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return invalid("an unclosed [") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = Int(after.dropFirst()) else { return invalid("a bad port") }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let p = Int(rest[rest.index(after: colon)...]) else { return invalid("a bad port") }
            port = p
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || "-.:_".contains($0) }) else { return invalid("no host name") }
        guard (1...65535).contains(port) else { return invalid("port \(port) is out of range") }
        return .success(Server(kind: kind, host: String(host), port: port, user: user, password: password, variable: variable))
    }

    /// A dotted IPv4 address as a number.
    private static func ipv4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, let byte = UInt32(part), byte < 256 else { return nil }
            value = value << 8 | byte
        }
        return value
    }

    private struct IPv4Range {
        let base: UInt32, mask: UInt32
        init?(_ entry: String) {
            let parts = entry.split(separator: "/", maxSplits: 1)
            guard let base = ProxyEnvironment.ipv4(parts[0]) else { return nil }
            let bits = parts.count == 2 ? Int(parts[1]) : 32
            guard let bits, (0...32).contains(bits) else { return nil }
            mask = bits == 0 ? 0 : UInt32.max << (32 - bits)
            self.base = base & mask
        }
        func contains(_ address: UInt32) -> Bool { address & mask == base }
    }

}

private extension StringProtocol {
    var trimmed: String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
