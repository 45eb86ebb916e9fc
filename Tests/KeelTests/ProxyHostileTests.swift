// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// Upstreams that answer what no HTTP library would (Fixtures/upstream/hostile.py writes the crafted bytes on a raw
/// socket), behind a real server: none of them may hang a client or leave a connection open behind it.
@Suite("the proxy against a hostile upstream: unasked 101, informational answers, broken framing, bad WebSocket handshakes", .serialized, .scheduled)
struct ProxyHostileTests {
    /// A server proxying /ext/app/ui/ to `upstream`, whose answer heads are waited for 3 s.
    static func serve(_ upstream: Upstream) throws -> ServerProcess {
        let f = try Upstream.enabledApp(proxying: upstream, timeout: 3)
        return try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
    }

    /// One request with `Connection: close` on a new connection to the server, read until the server closes it or
    /// `seconds` pass without a byte (a hung answer); the status, the whole text and how long it took.
    static func exchange(_ server: ServerProcess, _ path: String, headers: [String] = [], seconds: Int = 8) throws
        -> (status: Int, text: String, elapsed: Duration) {
        let fd = try RawHTTP.connect(port: server.port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let started = ContinuousClock.now
        RawHTTP.send(fd, "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n")
        let text = RawHTTP.readAll(fd)
        let status = text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        return (status, text, ContinuousClock.now - started)
    }

    /// What the upstream counted of the connections it held open (see hostile.py's `report`).
    static func report(_ server: ServerProcess) async throws -> [String: Int] {
        let reply = try await server.request("GET", "/ext/app/ui/report")
        return reply.json as? [String: Int] ?? [:]
    }

    /// Waits up to 5 s for the upstream to see every held connection of `kind` ended.
    static func allClosed(_ server: ServerProcess, _ kind: String) async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for _ in 0..<50 {
            counts = try await report(server)
            if let opened = counts[kind], opened > 0, counts[kind + "-closed"] == opened { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return counts
    }

    @Test("a 101 to a request that asked for no upgrade is 502 upstream-unavailable at once, never a hung client; the upstream connection is closed, not pooled, and what followed the 101 never reaches the client")
    func unaskedSwitch() async throws {
        let upstream = try Upstream(script: "hostile.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }

        for path in ["/ext/app/ui/switch", "/ext/app/ui/switch-smuggle", "/ext/app/ui/switch"] {
            let answer = try Self.exchange(server, path)
            #expect(answer.status == 502 && answer.text.contains("\"upstream-unavailable\""), "\(path): \(answer.text)")
            #expect(answer.elapsed < .seconds(5), "\(path): answered after \(answer.elapsed)")
            #expect(!answer.text.contains("smuggled") && !answer.text.lowercased().contains("x-smuggled"), "\(answer.text)")
        }
        let counts = try await Self.allClosed(server, "switch")
        #expect(counts["switch"] == 3 && counts["switch-closed"] == 3 && counts["switch-reused"] == 0,
                "every connection that answered 101 is closed by the proxy, none reused: \(counts)")
        // The host still proxies the app, on fresh connections.
        for _ in 0..<4 {
            let fine = try await server.request("GET", "/ext/app/ui/fine")
            #expect(fine.status == 200 && (fine.json as? [String: Any])?["path"] as? String == "/fine", "\(fine.status) \(fine.text)")
        }
        #expect(try await Self.report(server)["switch-reused"] == 0)
    }

    @Test("a first request asking for an upgrade Keel does not speak (h2c, an incomplete WebSocket handshake) is served as plain HTTP, never dropped unanswered; the upgrade is not forwarded, so an app's 101 to it is unasked too: 502")
    func foreignUpgrade() async throws {
        let upstream = try Upstream(script: "hostile.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }

        let h2c = ["Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__"]
        let health = try Self.exchange(server, "/healthz", headers: h2c)
        #expect(health.status == 200, "\(health.text)")
        let plain = try Self.exchange(server, "/ext/app/ui/plain", headers: ["Upgrade: foo/2"])
        #expect(plain.status == 200 && plain.text.contains("\"path\": \"/plain\""), "\(plain.text)")
        let switched = try Self.exchange(server, "/ext/app/ui/switch", headers: h2c)
        #expect(switched.status == 502 && switched.text.contains("\"upstream-unavailable\""), "\(switched.text)")
        // A WebSocket handshake without its key, or of another version than 13, is no upgrade either: served plain.
        for incomplete in [["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"],
                           ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 8"],
                           ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                            "Sec-WebSocket-Key: b3RoZXIgc2FtcGxlIG5vbmNl", "Sec-WebSocket-Version: 13"]] {
            let served = try Self.exchange(server, "/healthz", headers: incomplete)
            #expect(served.status == 200, "\(incomplete): \(served.text)")
        }
    }

    @Test("informational answers (100 Continue, 103 Early Hints) before the real one are skipped: the client gets the real answer only, whole or in separate reads")
    func informational() async throws {
        let upstream = try Upstream(script: "hostile.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }

        for path in ["/ext/app/ui/informational", "/ext/app/ui/informational-slow"] {
            let answer = try Self.exchange(server, path)
            let lower = answer.text.lowercased()
            #expect(answer.status == 200 && answer.text.hasSuffix("\r\n\r\nfinal") && lower.contains("x-final: yes"), "\(path): \(answer.text)")
            #expect(answer.text.components(separatedBy: "HTTP/1.1 ").count == 2 && !lower.contains("link:"),
                    "one status line, nothing of the informational answers: \(answer.text)")
        }
    }

    @Test("an answer with broken framing (Content-Length and Transfer-Encoding, a negative, overlong or doubled Content-Length) is 502 upstream-unavailable, none of its body passed on, its connection closed")
    func brokenFraming() async throws {
        let upstream = try Upstream(script: "hostile.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }

        for name in ["both-lengths", "negative-length", "huge-length", "two-lengths"] {
            let answer = try Self.exchange(server, "/ext/app/ui/" + name)
            #expect(answer.status == 502 && answer.text.contains("\"upstream-unavailable\""), "\(name): \(answer.text)")
            #expect(!answer.text.contains("hello") && answer.elapsed < .seconds(5), "\(name) after \(answer.elapsed): \(answer.text)")
        }
        let counts = try await Self.allClosed(server, "framing")
        #expect(counts["framing"] == 4 && counts["framing-closed"] == 4 && counts["framing-reused"] == 0, "\(counts)")
    }

    @Test("a WebSocket handshake the upstream answers wrongly (a wrong or missing Sec-WebSocket-Accept, no Upgrade header, a 200) is 502 upstream-unavailable at once, one it never answers 504 after its timeout; the upstream connection is closed in each case")
    func badHandshakes() async throws {
        let upstream = try Upstream(script: "hostile.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }

        let names = ["ws-bad-accept", "ws-no-accept", "ws-no-upgrade", "ws-200"]
        for name in names {
            let started = ContinuousClock.now
            let answer = try ProxyWebSocketTests.handshake(server.base + "/ext/app/ui/" + name)
            #expect(answer.head.hasPrefix("http/1.1 502") && answer.body.contains("\"upstream-unavailable\""), "\(name): \(answer.head) \(answer.body)")
            #expect(ContinuousClock.now - started < .seconds(5), "\(name): answered after \(ContinuousClock.now - started)")
        }
        // One that never answers: 504 once the declared timeout is over, and its connection closed too.
        let started = ContinuousClock.now
        let silent = try ProxyWebSocketTests.handshake(server.base + "/ext/app/ui/ws-silent")
        #expect(silent.head.hasPrefix("http/1.1 504") && silent.body.contains("\"upstream-timeout\""), "\(silent.head) \(silent.body)")
        #expect(ContinuousClock.now - started < .seconds(8), "answered after \(ContinuousClock.now - started)")
        let counts = try await Self.allClosed(server, "ws")
        #expect(counts["ws"] == names.count + 1 && counts["ws-closed"] == names.count + 1 && counts["ws-reused"] == 0, "\(counts)")
    }
}
