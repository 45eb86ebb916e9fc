// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// Which redirects a repository transfer follows (`HTTPTransfer`): only to http(s), and to this machine's own or
/// private addresses (loopback, link-local such as a cloud's metadata service at 169.254.169.254, RFC 1918, 100.64/10,
/// unique-local IPv6) only from a repository that is itself at one, by its IP literal or `localhost`. A repository on
/// another machine must not make the host fetch what only the host can reach.
///
/// The target is judged by its IP literal, `localhost`, and, for any other name, every address the name resolves to
/// here (a name of the attacker's that resolves to 127.0.0.1 or 169.254.169.254 is refused as the literal is). The
/// repository's own name is never looked up for this: a hostile one could give its name a private address beside its
/// public one (or a TTL of 0) and so pass for internal. A repository inside a private network that redirects within
/// it is named by its address. The target's name is looked up again when the connection is made: a name that resolves
/// differently the second time (DNS rebinding within a few milliseconds) is not caught. A location the host reaches
/// through a proxy is not looked up here (the proxy resolves and connects; its own rules apply).
///
/// Stateless and thread-safe; `addresses` blocks on the system's resolver (never call it on an event loop).
enum RedirectPolicy {
    /// Why a redirect from `origin` (the repository's location) to `target` is not followed, or nil.
    /// - Parameter resolve: the numeric addresses a host name resolves to (`addresses`; empty when it does not).
    static func refusal(from origin: String, to target: String, resolve: (String) -> [String] = addresses) -> String? {
        guard let url = URL(string: target), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host(percentEncoded: false) else {
            return "redirected to \(target), which is not an http(s) location: not followed"
        }
        guard let reached = internalAddress(host, resolve: resolve) else { return nil }
        let originHost = URL(string: origin)?.host(percentEncoded: false) ?? ""
        if isInternal(originHost) { return nil }
        let resolved = reached == host ? "" : " (\(host) is \(reached))"
        return "redirected to \(target)\(resolved), an address of this machine or its private network, from a repository outside it: not followed"
    }

    /// `host` itself when it names this machine or a private network (`isInternal`), else the first address it
    /// resolves to that does; nil when neither.
    static func internalAddress(_ host: String, resolve: (String) -> [String]) -> String? {
        if isInternal(host) { return host }
        guard !isLiteral(host) else { return nil }
        return resolve(host).first(where: isInternal)
    }

    /// Whether `host` names this machine or a private network: `localhost`, and IP literals that are loopback,
    /// link-local, private (RFC 1918, 100.64/10) or unspecified (IPv4, or IPv6 loopback, link-local, unique-local,
    /// IPv4-mapped). A name is not looked up here.
    static func isInternal(_ host: String) -> Bool {
        let h = bare(host)
        if h == "localhost" || h.hasSuffix(".localhost") { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, h, &v4) == 1 {
            let a = UInt32(bigEndian: v4.s_addr), b0 = a >> 24, b1 = (a >> 16) & 0xff
            return b0 == 127 || b0 == 10 || b0 == 0 || (b0 == 169 && b1 == 254) || (b0 == 172 && (16...31).contains(b1))
                || (b0 == 192 && b1 == 168) || (b0 == 100 && (64...127).contains(b1))
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, h, &v6) == 1 {
            let bytes = withUnsafeBytes(of: v6) { Array($0) }
            if bytes[0..<15].allSatisfy({ $0 == 0 }) { return true }  // :: and ::1
            if bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80 { return true }  // fe80::/10
            if bytes[0] & 0xfe == 0xfc { return true }  // fc00::/7
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                return isInternal(bytes[12...].map(String.init).joined(separator: "."))
            }
        }
        return false
    }

    /// Whether `host` is an IPv4 or IPv6 literal (nothing to look up).
    static func isLiteral(_ host: String) -> Bool {
        let h = bare(host)
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, h, &v4) == 1 || inet_pton(AF_INET6, h, &v6) == 1
    }

    /// The numeric addresses `host` resolves to through the system's resolver (`/etc/hosts`, DNS), IPv4 and IPv6;
    /// empty when it resolves to none. Blocks for as long as the resolver takes.
    static func addresses(_ host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(bare(host), nil, &hints, &list) == 0 else { return [] }
        defer { freeaddrinfo(list) }
        var found: [String] = []
        var next = list
        while let info = next {
            var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if let address = info.pointee.ai_addr,
               getnameinfo(address, info.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0 {
                let numeric = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !found.contains(numeric) { found.append(numeric) }
            }
            next = info.pointee.ai_next
        }
        return found
    }

    /// `host` lower-cased, without the brackets of an IPv6 literal, its zone (`fe80::1%eth0`, as the resolver writes a
    /// link-local address) or a trailing dot.
    private static func bare(_ host: String) -> String {
        let h = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]."))
        return h.firstIndex(of: "%").map { String(h[..<$0]) } ?? h
    }
}
