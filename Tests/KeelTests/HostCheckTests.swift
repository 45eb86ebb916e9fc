// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// What a page of another site, or a plugin's own proxy, can make a host on 127.0.0.1 do: answer under a name that
/// is not its own (DNS rebinding), or call itself through a proxy.
@Suite("a host on loopback: Host names it answers to, and proxies that point at it", .serialized, .scheduled)
struct HostCheckTests {
    /// A port free now (the kernel picks one; it is given back at once).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        let port = RawHTTP.localPort(fd)
        guard bound, port > 0 else { throw TestFailure("no free port") }
        return port
    }

    /// A manifest-only bundle "loop" proxying /app to `upstream`, enabled.
    static func proxying(to upstream: String) throws -> KernelFixture {
        let f = KernelFixture()
        _ = try TestEnvironment.makeBundle(in: f.plugins, folder: "loop", manifest: """
            id: loop
            name: Loop
            version: 1.0.0
            abi: "1.0"
            proxy:
              - {prefix: /app, upstream: "\(upstream)"}

            """, library: nil)
        let keel = TestEnvironment.binPath + "/keel"
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "loop", "--plugins", f.plugins, "--state", f.state]).status == 0)
        return f
    }

    @Test("a request whose Host is not a loopback name (a page of another site rebound to 127.0.0.1) is 421 host-not-allowed; localhost, 127.x and [::1] are answered, and so are the names --allowed-host adds")
    func rebinding() async throws {
        let f = try Self.proxying(to: "http://127.0.0.1:9/")
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "--allowed-host", "keel.example"])
        defer { server.stop() }
        let refused = try RawHTTP.request(port: server.port, "GET", "/healthz", headers: ["Host": "attacker.example"])
        #expect(refused.status == 421 && refused.text.contains("\"host-not-allowed\"") && refused.text.contains("--allowed-host attacker.example"),
                "\(refused)")
        // Also for the anonymous endpoints and plugin routes a page would read, and a WebSocket handshake.
        for path in ["/api/v1/pages", "/ext/loop/app/x"] {
            #expect(try RawHTTP.request(port: server.port, "GET", path, headers: ["Host": "attacker.example:\(server.port)"]).status == 421)
        }
        let handshake = try RawHTTP.request(port: server.port, "GET", "/ext/loop/app/ws", headers: [
            "Host": "attacker.example", "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="])
        #expect(handshake.status == 421, "\(handshake)")
        for name in ["localhost", "LocalHost:\(server.port)", "127.0.0.1", "127.1.2.3:80", "[::1]:\(server.port)", "app.localhost", "keel.example", "KEEL.example."] {
            let answered = try RawHTTP.request(port: server.port, "GET", "/healthz", headers: ["Host": name])
            #expect(answered.status == 200, "\(name): \(answered)")
        }
        // A name that only looks like a loopback literal is a name like any other.
        #expect(try RawHTTP.request(port: server.port, "GET", "/healthz", headers: ["Host": "127.0.0.1.attacker.example"]).status == 421)
    }

    @Test("a proxy whose upstream leads back to this host, directly or through another proxy, under any name of it, is refused (508 proxy-loop), for plain requests and WebSockets: before, one anonymous GET looped until the connection limit was full")
    func proxyLoop() async throws {
        let port = try Self.freePort()
        // loop → localhost:P/ext/loop2/app → 127.0.0.1:P/ext/loop/app → ...
        let f = try Self.proxying(to: "http://localhost:\(port)/ext/loop2/app")
        _ = try TestEnvironment.makeBundle(in: f.plugins, folder: "loop2", manifest: """
            id: loop2
            name: Loop 2
            version: 1.0.0
            abi: "1.0"
            proxy:
              - {prefix: /app, upstream: "http://127.0.0.1:\(port)/ext/loop/app"}

            """, library: nil)
        let keel = TestEnvironment.binPath + "/keel"
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "loop2", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "--port", "\(port)"])
        defer { server.stop() }
        #expect(server.port == port)
        let started = ContinuousClock.now
        let looped = try RawHTTP.request(port: port, "GET", "/ext/loop/app/x")
        #expect(looped.status == 508 && looped.text.contains("\"proxy-loop\""), "\(looped)")
        #expect(ContinuousClock.now - started < .seconds(2))
        let direct = try RawHTTP.request(port: port, "GET", "/ext/loop2/app/x")
        #expect(direct.status == 508 && direct.text.contains("\"proxy-loop\""), "\(direct)")
        // A client cannot make a request look looped: its X-Keel-* headers are dropped first.
        let forged = try RawHTTP.request(port: port, "GET", "/ext/loop2/app/x", headers: ["X-Keel-Hop": "0"])
        #expect(forged.status == 508, "still the loop's own refusal, one hop on: \(forged)")
        let handshake = try RawHTTP.request(port: port, "GET", "/ext/loop/app/ws", headers: [
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="])
        #expect([502, 508].contains(handshake.status), "\(handshake)")
        #expect(try RawHTTP.request(port: port, "GET", "/healthz").status == 200)
    }
}
