// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// An existing web app a plugin brings into the host (`proxy:` in plugin.yaml): requests under
/// `/ext/<id>/<prefix>/...` pass the auth chain and are forwarded to `upstream` with the caller's identity.
public struct ProxyDeclaration: Sendable, Hashable {
    /// Below `/ext/<id>`, e.g. `/app`: plain segments, no trailing `/`.
    public var prefix: String
    /// `http://host:port[/base]` (or https).
    public var upstream: String
    public var scheme: String
    public var host: String
    public var port: Int
    /// The upstream path requests are forwarded under ("" for the root).
    public var basePath: String
    /// Seconds an upstream has to answer (the whole response head); default 30.
    public var timeout: Double

    /// True when the upstream is on this machine (127.0.0.0/8, ::1, localhost); anything else needs the operator's
    /// grant of `proxy-remote`.
    /// Only an IPv4 literal counts for 127.0.0.0/8: a name such as `127.x.example.org` is looked up in DNS and may
    /// point anywhere.
    public var isLoopback: Bool { host == "localhost" || host == "::1" || Self.isIPv4Loopback(host) }

    /// Whether `text` is an IPv4 literal in 127.0.0.0/8 (four decimal parts of at most three digits, each up to 255).
    public static func isIPv4Loopback(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "127" else { return false }
        return parts.allSatisfy { part in
            (1...3).contains(part.utf8.count) && part.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
                && (Int(part) ?? 256) <= 255
        }
    }

    /// Parses `upstream`; nil reason on success.
    public init(prefix: String, upstream: String, timeout: Double = 30) throws(SignatureError) {
        self.prefix = prefix
        self.upstream = upstream
        self.timeout = timeout
        guard let schemeEnd = upstream.range(of: "://") else { throw SignatureError("\"\(upstream)\" is not an http:// or https:// URL") }
        scheme = String(upstream[..<schemeEnd.lowerBound]).lowercased()
        guard scheme == "http" || scheme == "https" else { throw SignatureError("\"\(upstream)\": only http:// and https:// upstreams are proxied") }
        var rest = upstream[schemeEnd.upperBound...]
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        var authority = String(rest[..<slash])
        rest = rest[slash...]
        basePath = rest.hasSuffix("/") ? String(rest.dropLast()) : String(rest)
        guard !authority.contains("@"), !basePath.contains("?"), !basePath.contains("#") else {
            throw SignatureError("\"\(upstream)\": no user, query or fragment in an upstream")
        }
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw SignatureError("\"\(upstream)\": unclosed IPv6 address") }
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() }
            authority = String(authority[authority.index(after: authority.startIndex)..<close])
        } else if let colon = authority.lastIndex(of: ":") {
            portText = authority[authority.index(after: colon)...]
            authority = String(authority[..<colon])
        }
        guard !authority.isEmpty else { throw SignatureError("\"\(upstream)\" names no host") }
        host = authority.lowercased()
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw SignatureError("\"\(upstream)\": bad port") }
            port = p
        } else {
            port = scheme == "https" ? 443 : 80
        }
    }
}
