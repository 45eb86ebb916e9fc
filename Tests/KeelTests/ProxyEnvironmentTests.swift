// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import KeelExtensions
import Testing

/// How repository downloads read the proxy variables (curl's rules); `RepositorySafetyTests.proxyFromEnvironment`
/// runs them through a real proxy.
@Suite("proxy variables", .scheduled)
struct ProxyEnvironmentTests {
    typealias Server = ProxyEnvironment.Server

    @Test("the variable per scheme: http_proxy (lower case only) for http, https_proxy or HTTPS_PROXY for https, all_proxy for either")
    func variablePerScheme() throws {
        let both = ProxyEnvironment(["http_proxy": "http://p1:3128", "HTTPS_PROXY": "p2:8443"])
        #expect(try both.server(scheme: "http", host: "repo.example") == Server(kind: .http, host: "p1", port: 3128, variable: "http_proxy"))
        #expect(try both.server(scheme: "https", host: "repo.example") == Server(kind: .http, host: "p2", port: 8443, variable: "HTTPS_PROXY"))
        // HTTP_PROXY is what a CGI host makes of a request's Proxy: header: never read.
        #expect(try ProxyEnvironment(["HTTP_PROXY": "http://evil:1"]).server(scheme: "http", host: "repo.example") == nil)
        let all = ProxyEnvironment(["ALL_PROXY": "socks5://s:1081", "https_proxy": "  "])
        #expect(try all.server(scheme: "https", host: "r") == Server(kind: .socks5, host: "s", port: 1081, variable: "ALL_PROXY"))
        #expect(try all.server(scheme: "http", host: "r")?.kind == .socks5)
        #expect(try ProxyEnvironment([:]).server(scheme: "https", host: "r") == nil)
    }

    @Test("a value: scheme optional, port 1080 by default, user and password percent-decoded, IPv6 in brackets; anything else refused with the variable and the reason")
    func values() throws {
        func parse(_ value: String) -> Result<Server, ProxyEnvironment.Invalid> { ProxyEnvironment.parse(value, variable: "https_proxy") }
        #expect(try parse("proxy.corp").get() == Server(kind: .http, host: "proxy.corp", port: 1080, variable: "https_proxy"))
        #expect(try parse("http://u%40x:p%3Aw@proxy.corp:8080/").get()
                    == Server(kind: .http, host: "proxy.corp", port: 8080, user: "u@x", password: "p:w", variable: "https_proxy"))
        #expect(try parse("http://[fd00::1]:3128").get().host == "fd00::1")
        #expect(try parse("HTTP://Proxy:1").get().port == 1)
        for (value, why) in [("ftp://p:21", "the scheme ftp is not supported"), ("http://p:0", "port 0 is out of range"),
                             ("http://p:x", "a bad port"), ("http://p:3128/path", "a proxy URL has no path"),
                             ("socks5://u:p@s:1080", "a user for a SOCKS proxy is not supported"), ("http://:8080", "no host name"),
                             ("http://a b:1", "no host name"), ("http://[fd00::1:3128", "an unclosed [")] {
            guard case let .failure(invalid) = parse(value) else { Issue.record("\(value) was taken"); continue }
            let shown = value.replacingOccurrences(of: "u:p@", with: "***@")
            #expect(invalid.reason == "https_proxy=\"\(shown)\" is not a proxy (\(why); expected http://host:port)")
        }
        // A password is never shown: however long, wherever a :// stands.
        let long = String(repeating: "t", count: 250)
        if case let .failure(invalid) = parse("http://svc:\(long)@p:bad") {
            #expect(!invalid.reason.contains("ttt") && invalid.reason.contains(#""http://***@p:bad""#), "\(invalid.reason)")
        } else { Issue.record("a bad port was taken") }
        if case let .failure(invalid) = parse("u:pw@h/x://") {
            #expect(!invalid.reason.contains("pw"), "\(invalid.reason)")
        } else { Issue.record("a path was taken") }
        if case let .failure(invalid) = parse("http://me:s3cret@p:99999") {
            #expect(invalid.reason == #"https_proxy="http://***@p:99999" is not a proxy (port 99999 is out of range; expected http://host:port)"#)
        } else { Issue.record("a port past 65535 was taken") }
        // The download fails with the reason rather than going direct.
        #expect(throws: ProxyEnvironment.Invalid.self) { try ProxyEnvironment(["https_proxy": "ftp://x"]).server(scheme: "https", host: "r") }
    }

    @Test("no_proxy: a name matches itself and the hosts below it, with or without its dot; IPv4 ranges; IPv6 addresses; * for all; ports ignored; no partial labels")
    func noProxy() throws {
        let env = ProxyEnvironment(["https_proxy": "p:1", "no_proxy": " example.com, .corp.local ,10.0.0.0/8,192.168.1.7:8080,[::1],Intra:443"])
        for host in ["example.com", "repo.example.com", "EXAMPLE.COM.", "a.corp.local", "corp.local", "10.2.3.4", "192.168.1.7", "[::1]", "intra"] {
            #expect(env.bypasses(host), "\(host)")
        }
        for host in ["notexample.com", "example.com.evil", "11.0.0.1", "192.168.1.8", "::2", "intranet"] {
            #expect(!env.bypasses(host), "\(host)")
        }
        #expect(try env.server(scheme: "https", host: "repo.example.com") == nil)
        #expect(try env.server(scheme: "https", host: "other.org")?.host == "p")
        #expect(ProxyEnvironment(["NO_PROXY": "*"]).bypasses("anything"))
        #expect(!ProxyEnvironment(["no_proxy": "a.org,*"]).bypasses("anything"), "* within a list is no name")
        #expect(ProxyEnvironment(["no_proxy": "example.com."]).bypasses("repo.example.com"))
        #expect(ProxyEnvironment(["no_proxy": "a", "NO_PROXY": "b"]).bypasses("a"))
        #expect(!ProxyEnvironment(["no_proxy": "a", "NO_PROXY": "b"]).bypasses("b"))
    }
}
