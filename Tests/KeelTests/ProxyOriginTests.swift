// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// A proxied app shares the host's origin with the console and every other plugin: what it answers must not reach
/// past its own mount. (The browser's side of it, in Chromium: `BrowserTests.proxiedApp`.)
@Suite("a proxied app's answers stay inside its mount", .serialized, .scheduled)
struct ProxyOriginTests {
    /// The `Set-Cookie` values of a raw answer, in order.
    static func cookies(_ text: String) -> [String] {
        let head = text.components(separatedBy: "\r\n\r\n").first ?? ""
        return head.components(separatedBy: "\r\n").compactMap { line in
            line.lowercased().hasPrefix("set-cookie:") ? String(line.dropFirst("set-cookie:".count)).trimmingCharacters(in: .whitespaces) : nil
        }
    }

    @Test("an app's cookies are kept to its mount (a Path for the whole origin or another plugin's paths is moved below it, Domain dropped); Clear-Site-Data and the origin-wide reporting headers are dropped; a CSP asking for allow-same-origin cannot loosen the sandbox")
    func cookiesAndOrigin() async throws {
        let upstream = try Upstream()
        defer { upstream.stop() }
        let f = try Upstream.enabledApp(proxying: upstream, more: ["{prefix: /based, upstream: \"http://127.0.0.1:\(upstream.port)/base/\"}"])
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }

        let root = try RawHTTP.request(port: server.port, "GET", "/ext/app/ui/x/cookies")
        #expect(root.status == 200, "\(root.text)")
        #expect(Self.cookies(root.text) == [
            "root=1; HttpOnly; Path=/ext/app/ui",
            "other=2; Path=/ext/app/ui/ext/other",
            "own=3; Secure; Path=/ext/app/ui/deep",
            "dom=4; SameSite=Lax; Path=/ext/app/ui/x",
            "bare=5; Path=/ext/app/ui/x",
            "based=6; Path=/ext/app/ui/base/sub",
            "__Host-whole=7; Secure; Path=/ext/app/ui",
        ], "\(root.text)")
        let head = root.text.components(separatedBy: "\r\n\r\n").first?.lowercased() ?? ""
        #expect(!head.contains("clear-site-data") && !head.contains("service-worker-allowed"), "\(head)")
        #expect(!head.contains("\r\nnel:") && !head.contains("report-to") && !head.contains("reporting-endpoints"), "\(head)")
        #expect(!head.contains("strict-transport-security") && !head.contains("alt-svc") && !head.contains("accept-ch"), "\(head)")
        // The app's own policy stays (browsers enforce every policy), and the host's sandbox, without
        // allow-same-origin, is there too: the page's origin stays opaque.
        #expect(head.contains("content-security-policy: sandbox allow-scripts allow-forms allow-popups allow-downloads\r\n"), "\(head)")

        // An upstream under a base path: its paths below the base map below the mount, any other to the mount.
        let based = try RawHTTP.request(port: server.port, "GET", "/ext/app/based/cookies")
        let seen = Self.cookies(based.text)
        #expect(seen.first == "root=1; HttpOnly; Path=/ext/app/based" && seen.contains("based=6; Path=/ext/app/based/sub")
                && seen.contains("bare=5; Path=/ext/app/based"), "\(seen)")
        for cookie in Self.cookies(root.text) + seen {
            let path = cookie.components(separatedBy: "; ").last ?? ""
            #expect(path == "Path=/ext/app/ui" || path.hasPrefix("Path=/ext/app/ui/") || path == "Path=/ext/app/based"
                    || path.hasPrefix("Path=/ext/app/based/"), "\(cookie)")
            #expect(!cookie.lowercased().contains("domain="), "\(cookie)")
        }
    }
}
