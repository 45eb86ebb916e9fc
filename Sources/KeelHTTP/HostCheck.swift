// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest

/// Which names a request's `Host` may give: the defence against DNS rebinding. A page of another site whose name an
/// attacker points at 127.0.0.1 after it loaded can send requests to a host listening there, with that site's name
/// in `Host`, and read the answers as its own (anonymous endpoints, plugin routes, proxied loopback apps). So a
/// server listening on a loopback address answers only to loopback names (`localhost` and `*.localhost`, 127.x.y.z,
/// `[::1]`), and to the names the operator adds (`--allowed-host`); a server listening on another address checks
/// only once names are added (its own address is then allowed too). A request without `Host` (HTTP/1.0; no browser
/// sends one) is not refused. Immutable; read from any thread.
struct HostCheck: Sendable {
    /// Whether any name is refused.
    let active: Bool
    /// The names allowed besides the loopback ones, lowercased, without a port.
    let allowed: Set<String>
    let listenHost: String

    init(listenHost: String, allowedHosts: [String]) {
        self.listenHost = listenHost
        let added = Set(allowedHosts.map { Self.name(of: $0) })
        let loopback = Self.isLoopbackName(Self.name(of: listenHost))
        active = loopback || !added.isEmpty
        allowed = loopback || ["0.0.0.0", "::", ""].contains(listenHost) ? added : added.union([Self.name(of: listenHost)])
    }

    /// The refusal for a request whose `Host` is `authority` (nil when it has none), or nil when it may be answered.
    func refusal(_ authority: String?) -> APIError? {
        guard active, let authority, !authority.isEmpty, !Self.isCommonLoopback(authority) else { return nil }
        let name = Self.name(of: authority)
        if Self.isLoopbackName(name) || allowed.contains(name) { return nil }
        return APIError(.misdirectedRequest, "host-not-allowed",
                        "\"\(name)\" is not a name of this server (it listens on \(listenHost)); a page of another site that "
                        + "points its name here is refused (DNS rebinding). To serve this name, start keel serve with --allowed-host \(name)")
    }

    /// Whether `authority` is `127.0.0.1` or `localhost`, with or without a port, as nearly every request to a host on
    /// loopback gives it: read in place, nothing made (every request asks).
    static func isCommonLoopback(_ authority: String) -> Bool {
        var text = authority
        return text.withUTF8 { bytes in
            for name in [ipv4Loopback, localhost] where bytes.starts(with: name) {
                let rest = bytes[name.count...]
                if rest.isEmpty { return true }
                if rest.first == UInt8(ascii: ":"), rest.count > 1, rest.dropFirst().allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
                    return true
                }
            }
            return false
        }
    }
    private static let ipv4Loopback = Array("127.0.0.1".utf8), localhost = Array("localhost".utf8)

    /// `authority` without its port and brackets, lowercased: `LocalHost:8470` → `localhost`, `[::1]:80` → `::1`.
    static func name(of authority: String) -> String {
        var text = Substring(authority)
        if text.hasPrefix("[") {
            text = text.dropFirst().prefix { $0 != "]" }
        } else if let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") {
            text = text[..<colon]
        }
        if text.hasSuffix(".") { text = text.dropLast() }
        return text.lowercased()
    }

    /// Names that always mean this machine, whatever DNS says: `localhost` and below it (browsers resolve those to
    /// loopback themselves), IPv4 literals in 127.0.0.0/8, and `::1`.
    static func isLoopbackName(_ name: String) -> Bool {
        name == "localhost" || name.hasSuffix(".localhost") || name == "::1" || ProxyDeclaration.isIPv4Loopback(name)
    }
}
