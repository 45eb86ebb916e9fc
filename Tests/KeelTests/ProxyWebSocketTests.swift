// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import HTTPTypes
import Logging
import NIOCore
import Testing
import WSClient

/// WebSockets through the proxy: a real upstream (Fixtures/upstream/ws_echo.py) and a real client (WSClient).
@Suite("WebSockets through the proxy", .serialized, .scheduled)
struct ProxyWebSocketTests {
    /// A manifest-only bundle `ws` proxying /app to `upstream`, served with an `idle` timeout. It is long by default
    /// (short only for the test of it): this test process's two-thread cooperative pool can be held for tens of
    /// seconds by the suite's tests that wait on child processes, and a client that cannot send meanwhile must not be
    /// taken for an idle one (a full parallel run once lost the relay test that way after 30 s).
    static func serve(_ upstream: Upstream, timeout: Double = 30, idle: Int = 300, extra: [String] = []) throws -> ServerProcess {
        let f = KernelFixture()
        _ = try TestEnvironment.makeBundle(in: f.plugins, folder: "ws", manifest: """
            id: ws
            name: WebSocket app
            version: 1.0.0
            abi: "1.0"
            proxy:
              - {prefix: /app, upstream: "http://127.0.0.1:\(upstream.port)/base", timeout: \(timeout)}

            """, library: nil)
        let keel = TestEnvironment.binPath + "/keel"
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "ws", "--plugins", f.plugins, "--state", f.state]).status == 0)
        return try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "--idle-timeout", "\(idle)"] + extra)
    }

    static var logger: Logger {
        var logger = Logger(label: "test.ws")
        logger.logLevel = .critical
        return logger
    }

    /// What a client saw on one WebSocket: the upstream's greeting (JSON), the echoes, and how it was closed.
    struct Seen {
        var greeting: [String: Any] = [:]
        var echoes: [String] = []
        var close: Int?
    }

    /// Connects to `path` on `server`, then runs `talk` with the first (greeting) message already read.
    static func session(_ server: ServerProcess, _ path: String, headers: [String: String] = [:],
                        talk: @escaping @Sendable (inout WebSocketInboundStream.AsyncIterator, WebSocketOutboundWriter) async throws -> [String] = { _, _ in [] }) async throws -> Seen {
        var fields = HTTPFieldsBuilder()
        for (k, v) in headers { fields.add(k, v) }
        let box = LockedBox()
        let close = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(server.port)\(path)",
                                                      configuration: .init(maxFrameSize: 1 << 20, additionalHeaders: fields.fields), logger: logger) { inbound, outbound, _ in
            var frames = inbound.makeAsyncIterator()
            guard let first = try await frames.next() else { return }
            box.set(greeting: String(buffer: first.data))
            box.set(echoes: try await talk(&frames, outbound))
        }
        var seen = Seen()
        seen.greeting = (try? JSONSerialization.jsonObject(with: Data(box.greeting.utf8)) as? [String: Any]) ?? [:]
        seen.echoes = box.echoes
        seen.close = close.map { Int(UInt16(webSocketErrorCode: $0.closeCode)) }
        return seen
    }

    /// A WebSocket handshake by curl (which stops at the answer when it is not 101).
    static func handshake(_ url: String, _ extra: [String] = []) throws -> (head: String, body: String) {
        let r = try curl(url, ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
                               "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "--max-time", "10"] + extra)
        return (r.head, String(decoding: r.body, as: UTF8.self))
    }

    @Test("a WebSocket handshake as the first request wakes the idle lazy plugin proxying its path")
    func wakesLazyPlugin() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        // A plugin with code (a manifest-only bundle loads none, so it cannot be lazy) that also proxies /app.
        let f = KernelFixture()
        try f.fixtureBundle("ws", capabilities: ["routes"], extra: """
            activation: lazy
            proxy:
              - {prefix: /app, upstream: "http://127.0.0.1:\(upstream.port)/base"}

            """)
        #expect(try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "enable", "ws", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        #expect(try await Lazy.shown(server, "ws") == "enabled (idle)")
        let seen = try await Self.session(server, "/ext/ws/app/first") { frames, out in
            try await out.write(.text("hi"))
            return [String(buffer: try #require(try await frames.next()).data)]
        }
        #expect(seen.greeting["path"] as? String == "/base/first")
        #expect(seen.echoes == ["hi"])
        #expect(try await Lazy.shown(server, "ws") == "enabled (active)")
    }

    @Test("an open WebSocket outlives a reload that keeps its upstream, and is closed (1008) once its plugin is disabled")
    func disableCloses() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }
        let keel = TestEnvironment.binPath + "/keel", at = ["--plugins", server.plugins, "--state", server.state]
        let seen = try await Self.session(server, "/ext/ws/app/live") { frames, out in
            var echoes: [String] = []
            let reload = try TestEnvironment.run(keel, ["plugins", "reload", "ws"] + at)
            #expect(reload.status == 0, "\(reload.stderr)")
            try await out.write(.text("after reload"))
            echoes.append(String(buffer: try #require(try await frames.next()).data))
            let disable = try TestEnvironment.run(keel, ["plugins", "disable", "ws"] + at)
            #expect(disable.status == 0, "\(disable.stderr)")
            let disabled = ContinuousClock.now
            while try await frames.next() != nil {}
            echoes.append(ContinuousClock.now - disabled < .seconds(10) ? "closed" : "closed late")
            return echoes
        }
        #expect(seen.echoes == ["after reload", "closed"])
        #expect(seen.close == 1008)
    }

    @Test("an open WebSocket is in use, never the idle connection closed to make room: a flood of idle connections past the limit leaves it open")
    func notClosedForRoom() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream, extra: ["--max-connections", "8"])
        defer { server.stop() }
        let port = server.port
        let seen = try await Self.session(server, "/ext/ws/app/live") { frames, out in
            // Twelve bare connections, each past the limit closing the one idle for longest.
            var flood: [Int32] = []
            defer { flood.forEach { close($0) } }
            for _ in 0..<12 { flood.append(try RawHTTP.connect(port: port)) }
            try await Task.sleep(for: .milliseconds(300))
            try await out.write(.text("still here"))
            return [String(buffer: try #require(try await frames.next()).data)]
        }
        #expect(seen.echoes == ["still here"], "\(seen.echoes) closed with \(String(describing: seen.close))")
    }

    @Test("WebSockets filling the connection limit cannot lock out /healthz: the oldest is closed to make room, as the last resort")
    func webSocketsDoNotLockOut() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream, extra: ["--max-connections", "3"])
        defer { server.stop() }
        let open = LockedCounter()
        let sessions = (0..<3).map { _ in
            Task { () async throws -> Void in
                _ = try await Self.session(server, "/ext/ws/app/live") { frames, out in
                    open.increment()
                    // Held open, quiet, until the server closes it or 8 s pass.
                    let deadline = ContinuousClock.now + .seconds(8)
                    while ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(200))
                        if (try? await out.write(.text("ping"))) == nil { break }
                        guard (try? await frames.next()) ?? nil != nil else { break }
                    }
                    return []
                }
            }
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while open.value < 3, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(open.value == 3, "three WebSockets open")
        // Before: all three busy for ever, and every new connection closed at once.
        let health = try? RawHTTP.request(port: server.port, "GET", "/healthz")
        #expect(health?.status == 200, "\(String(describing: health))")
        for s in sessions { _ = try? await s.value }
    }

    @Test("a WebSocket opened with the admin token is closed (1008) when the token is reset: a leaked token's socket does not outlive it")
    func tokenResetCloses() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }
        let keel = TestEnvironment.binPath + "/keel"
        let seen = try await Self.session(server, "/ext/ws/app/live", headers: ["Authorization": "Bearer \(ServerProcess.token)"]) { frames, out in
            try await out.write(.text("before"))
            var echoes = [String(buffer: try #require(try await frames.next()).data)]
            let reset = try TestEnvironment.run(keel, ["token", "reset", "--state", server.state], environment: ["KEEL_ADMIN_TOKEN": ""])
            #expect(reset.status == 0, "\(reset.stderr)")
            let done = ContinuousClock.now
            while try await frames.next() != nil {}
            echoes.append(ContinuousClock.now - done < .seconds(10) ? "closed" : "closed late")
            return echoes
        }
        #expect((seen.greeting["headers"] as? [String: String])?["x-keel-user"] == "admin", "opened as the admin: \(seen.greeting)")
        #expect(seen.echoes == ["before", "closed"], "\(seen.echoes)")
        #expect(seen.close == 1008)
    }

    @Test("a WebSocket whose caller's tenant the plugin stops serving is closed (1008); the plugin serves its other tenants on")
    func tenantDisableCloses() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }
        let keel = TestEnvironment.binPath + "/keel", at = ["--plugins", server.plugins, "--state", server.state]
        // Served to default and beta (not acme); an anonymous caller is in default.
        for args in [["tenants", "create", "acme"], ["tenants", "create", "beta"], ["plugins", "disable", "ws", "--tenant", "acme"]] {
            let r = try TestEnvironment.run(keel, args + at)
            #expect(r.status == 0, "\(args): \(r.stderr)")
        }
        let seen = try await Self.session(server, "/ext/ws/app/tenant") { frames, _ in
            let r = try TestEnvironment.run(keel, ["plugins", "disable", "ws", "--tenant", "default"] + at)
            #expect(r.status == 0, "\(r.stderr)")
            while try await frames.next() != nil {}
            return []
        }
        #expect(seen.close == 1008)
        let info = try await server.request("GET", "/api/v1/plugins/ws", admin: true).json as? [String: Any]
        #expect(info?["status"] as? String == "enabled" && info?["tenants"] as? [String] == ["beta"], "\(String(describing: info))")
    }

    @Test("frames both ways with the caller's identity and forged X-Keel-* headers dropped; a client close reaches the app with its code; the app's close reaches the client")
    func relay() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }

        var seen = try await Self.session(server, "/ext/ws/app/chat?room=1",
                                          headers: ["Authorization": "Bearer \(ServerProcess.token)", "X-Keel-User": "mallory",
                                                    "X-Keel-Roles": "admin", "X-Other": "kept"]) { frames, out in
            var echoes: [String] = []
            try await out.write(.text("hi"))
            echoes.append(String(buffer: try #require(try await frames.next()).data))
            let big = String(repeating: "x", count: 200_000)
            try await out.write(.binary(ByteBuffer(string: big)))
            var total = 0
            while total < big.utf8.count, let frame = try await frames.next() { total += frame.data.readableBytes }
            echoes.append("binary \(total)")
            try await out.withTextMessageWriter { write in
                try await write("frag")
                try await write("mented")
            }
            var text = ""
            while let frame = try await frames.next() {
                text += String(buffer: frame.data)
                if frame.fin { break }
            }
            echoes.append(text)
            return echoes
        }
        let headers = try #require(seen.greeting["headers"] as? [String: String])
        #expect(seen.greeting["path"] as? String == "/base/chat?room=1")
        #expect(headers["x-keel-user"] == "admin" && headers["x-keel-roles"] == "admin" && headers["x-keel-signature"]?.count == 64)
        #expect(headers["authorization"] == nil && headers["x-other"] == "kept")
        #expect(seen.echoes == ["hi", "binary 200000", "fragmented"])

        // The client's close (1000) reached the app: it reports it on the next handshake.
        seen = try await Self.session(server, "/ext/ws/app/again", headers: ["X-Keel-User": "mallory"]) { frames, out in
            try await out.write(.text("close-me"))
            while try await frames.next() != nil {}
            return []
        }
        #expect(seen.greeting["last_close"] as? Int == 1000)
        #expect((seen.greeting["headers"] as? [String: String])?["x-keel-user"] == "", "anonymous: the forged user is dropped")
        #expect(seen.close == 1000, "the app closed (4000): the client's WebSocket ends normally")
    }

    @Test("the app's own 101 headers (its cookie, a header of its own) never reach the client")
    func upstreamHandshakeHeadersDropped() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }
        // A raw handshake, to read the 101's head as sent (a WebSocket client keeps it to itself).
        let script = #"""
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            s.sendall(b"GET /ext/ws/app/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            s.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            print(head.split(b"\r\n\r\n")[0].decode("latin-1").lower())
            """#
        let r = try TestEnvironment.run("/usr/bin/python3", ["-c", script, "\(server.port)"])
        #expect(r.stdout.hasPrefix("http/1.1 101"), "\(r.stdout) \(r.stderr)")
        #expect(!r.stdout.contains("set-cookie") && !r.stdout.contains("app-session") && !r.stdout.contains("x-app-secret"), "\(r.stdout)")
    }

    @Test("refusals answer with a stable code: the app refusing (502), the app down (502), a body on the handshake (400), a dot segment (400)")
    func refusals() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream)
        defer { server.stop() }

        var r = try Self.handshake(server.base + "/ext/ws/app/refuse")
        #expect(r.head.hasPrefix("http/1.1 502") && r.body.contains("\"upstream-unavailable\""), "\(r.head)\(r.body)")
        // A handshake with a body is never upgraded: refused (400) or the connection closed at once (curl's "empty
        // reply", 52), never left open until the client gives up (curl's time-out, 28).
        do {
            let smuggled = try Self.handshake(server.base + "/ext/ws/app/x", ["-X", "GET", "--data-binary", "GET /smuggled HTTP/1.1\r\n\r\n"])
            #expect(smuggled.head.hasPrefix("http/1.1 400"), "\(smuggled.head)\(smuggled.body)")
        } catch {
            #expect("\(error)".contains("(52)"), "\(error)")
        }
        r = try Self.handshake(server.base + "/ext/ws/app/%2e%2e/%2e%2e/api/v1/plugins", ["--path-as-is"])
        #expect(r.head.hasPrefix("http/1.1 400") && r.body.contains("\"bad-path\""), "\(r.head)\(r.body)")
        r = try Self.handshake(server.base + "/ext/ws/other")
        #expect(r.head.hasPrefix("http/1.1 404"), "only the declared prefix is proxied: \(r.head)")

        upstream.stop()
        r = try Self.handshake(server.base + "/ext/ws/app/x")
        #expect(r.head.hasPrefix("http/1.1 502") && r.body.contains("\"upstream-unavailable\""), "\(r.head)\(r.body)")
        #expect(try await server.request("GET", "/healthz").status == 200, "the host goes on")
    }

    @Test("a WebSocket with no frame either way for the idle timeout is closed on both sides (1001)")
    func idle() async throws {
        let upstream = try Upstream(script: "ws_echo.py")
        defer { upstream.stop() }
        let server = try Self.serve(upstream, idle: 2)
        defer { server.stop() }
        let seen = try await Self.session(server, "/ext/ws/app/quiet") { frames, _ in
            while try await frames.next() != nil {}
            return []
        }
        #expect(seen.close == 1001)
        let next = try await Self.session(server, "/ext/ws/app/after")
        #expect(next.greeting["last_close"] as? Int == 1001, "the app was told too")
    }
}

/// Collects what a WebSocket handler saw (the handler is @Sendable).
final class LockedBox: @unchecked Sendable {
    // Safe: every access holds `lock`.
    private let lock = NSLock()
    private var _greeting = ""
    private var _echoes: [String] = []
    var greeting: String { lock.withLock { _greeting } }
    var echoes: [String] { lock.withLock { _echoes } }
    func set(greeting: String) { lock.withLock { _greeting = greeting } }
    func set(echoes: [String]) { lock.withLock { _echoes = echoes } }
}

/// HTTP header fields from plain strings.
struct HTTPFieldsBuilder {
    var fields = HTTPFields()
    mutating func add(_ name: String, _ value: String) {
        if let n = HTTPField.Name(name) { fields.append(HTTPField(name: n, value: value)) }
    }
}
