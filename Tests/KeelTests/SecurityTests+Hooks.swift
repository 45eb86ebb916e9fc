// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization
import Testing

extension SecurityTests {
    /// Threads of process `pid` asleep in `pause()`: the fixture's hook that never returns.
    static func threadsInPause(_ pid: Int32) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.filter { (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/wchan", encoding: .utf8)) == "__do_sys_pause" }.count
    }

    /// Sends `count` requests for `path(i)` at once, each from a thread of its own; their statuses (0: no answer
    /// within `seconds`, the connection left open).
    static func burst(port: Int, _ count: Int, seconds: Int, _ path: @escaping @Sendable (Int) -> String) -> [Int] {
        let statuses = LockedStatuses()
        let group = DispatchGroup()
        for i in 0..<count {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                guard let fd = try? RawHTTP.connect(port: port) else { return statuses.add(-1) }
                var timeout = timeval(tv_sec: seconds, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                RawHTTP.send(fd, "GET \(path(i)) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                let text = RawHTTP.readAll(fd)
                close(fd)
                statuses.add(text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0)
            }
        }
        group.wait()
        return statuses.values
    }

    @Test("a guard whose new build cannot activate closes the server: 403 everywhere the chain is asked, /healthz 503 closed; the CLI's disable opens it")
    func missingGuardClosesTheServer() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("warden", defines: ["AUTHZ_MODE=2"], capabilities: ["routes", "authorize"])
        try f.fixtureBundle("quick", capabilities: ["routes"])
        #expect(try run(["plugins", "grant", "warden", "authorize"], f).status == 0)
        for id in ["warden", "quick"] { #expect(try run(["plugins", "enable", id], f).status == 0) }
        var server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        #expect(try RawHTTP.request(port: server.port, "GET", "/ext/quick/ping").status == 200)
        #expect(try RawHTTP.request(port: server.port, "GET", "/healthz").status == 200)
        server.stop()

        let broken = try TestEnvironment.buildFixture("warden", ["PLUGIN_ID=\"warden\"", "PLUGIN_VERSION=\"1.0.0\"", "AUTHZ_MODE=2", "ACTIVATE_FAILS"])
        try install(broken, into: f.plugins + "/warden", as: "libwarden.so")
        server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let closed = try RawHTTP.request(port: server.port, "GET", "/ext/quick/ping")
        #expect(closed.status == 403 && closed.text.hasSuffix(#"{"error":{"code":"forbidden","message":"access denied"}}"#), "\(closed.text)")
        #expect(try await server.request("GET", "/api/v1/session").status == 403)
        // The operator's token is told why a plugin route is refused: the guard that is not running.
        let told = try await server.request("GET", "/ext/quick/ping", admin: true)
        #expect(told.status == 403 && told.text.contains(#""message":"access denied: guard \"warden\" is not running ("#), "\(told.text)")
        // The operator's token still reaches the admin API, to see why and act.
        let listed = try await server.request("GET", "/api/v1/plugins/warden", admin: true)
        #expect(listed.status == 200 && (listed.json as? [String: Any])?["status"] as? String == "failed", "\(listed.text)")
        let health = try await server.request("GET", "/healthz")
        #expect(health.status == 503 && (health.json as? [String: Any])?["status"] as? String == "closed", "\(health.text)")
        #expect((health.json as? [String: Any])?["missingGuards"] as? [String] == ["warden"], "\(health.text)")
        #expect(server.errors.value.contains("a guard (it has auth hooks) is not running ("), "\(server.errors.value)")

        let disable = try run(["plugins", "disable", "warden"], f)
        #expect(disable.status == 0, "\(disable)")
        #expect(try RawHTTP.request(port: server.port, "GET", "/ext/quick/ping").status == 200)
        #expect(try RawHTTP.request(port: server.port, "GET", "/healthz").status == 200)
        #expect(try await server.request("GET", "/api/v1/plugins", admin: true).status == 200)
    }

    @Test("an authorize hook that never returns: a burst holds at most 16 threads, later requests are denied at once (fail closed), the CLI disables it, the server still stops")
    func hungAuthorizeHook() async throws {
        let f = KernelFixture()
        // guard's hook never returns for a path containing "hang"; three plugins' routes are the lanes it hangs in.
        try f.fixtureBundle("guard", defines: ["AUTHZ_MODE=4"], capabilities: ["routes", "authorize"])
        for id in ["sink", "drain", "pit"] { try f.fixtureBundle(id, defines: ["ROUTE_PATH=\"/hang\""], capabilities: ["routes"]) }
        try f.fixtureBundle("quick", capabilities: ["routes"])
        #expect(try run(["plugins", "grant", "guard", "authorize"], f).status == 0)
        for id in ["guard", "sink", "drain", "pit", "quick"] { #expect(try run(["plugins", "enable", id], f).status == 0) }
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let pid = server.process.processIdentifier
        #expect(try RawHTTP.request(port: server.port, "GET", "/ext/quick/ping").status == 200)

        // 40 hanging requests at once, across three lanes (8 threads each) and the inline slot: 16 reach the hook and
        // stay there; the others are denied at once, or wait for their lane (whose places the hung calls keep).
        let first = Self.burst(port: server.port, 40, seconds: 3) { i in "/ext/\(["sink", "drain", "pit"][i % 3])/hang" }
        // 16 when the burst arrives within the hook budget; fewer on a machine so busy that four calls were already
        // past it when the later ones came (those are refused as stuck).
        let hung = Self.threadsInPause(pid)
        #expect((4...16).contains(hung), "\(hung) threads in the hook")
        #expect(!first.contains(200), "\(first)")
        #expect(first.contains(403), "none refused at once: \(first)")

        // Past the hook budget, every request is denied at once without asking the hook; none hangs, none gets
        // through, and guard is not disabled (a hang must not become a way around its denials).
        let second = Self.burst(port: server.port, 20, seconds: 10) { i in i % 2 == 0 ? "/ext/quick/ping" : "/ext/quick/ping?hang" }
        #expect(second.allSatisfy { $0 == 403 }, "\(second)")
        #expect(Self.threadsInPause(pid) == hung, "the hook was called again while stuck")
        #expect(try RawHTTP.request(port: server.port, "GET", "/healthz").status == 200)
        let info = try await server.request("GET", "/api/v1/plugins/guard", admin: true)
        #expect(info.status == 403, "the admin API is asked about too: \(info.status)")

        // The operator's way out: the CLI reaches the running server through its state, without the auth chain.
        let disable = try run(["plugins", "disable", "guard"], f)
        #expect(disable.status == 0, "\(disable)")
        #expect(try RawHTTP.request(port: server.port, "GET", "/ext/quick/ping").status == 200)
        let after = try await server.request("GET", "/api/v1/plugins/guard", admin: true)
        #expect(after.status == 200 && (after.json as? [String: Any])?["enabled"] as? Bool == false, "\(after.text)")
        // SIGTERM: the requests still waiting for the hung calls are cut after the 10 s grace period, the server
        // stops waiting for them 5 s later, and ends (it waited for ever before).
        let stopping = Date()
        #expect(server.stop() == 0)
        #expect(Date().timeIntervalSince(stopping) < 29, "took \(Date().timeIntervalSince(stopping)) s to stop")
    }
}

final class LockedStatuses: Sendable {
    private let list = Mutex<[Int]>([])
    func add(_ status: Int) { list.withLock { $0.append(status) } }
    var values: [Int] { list.withLock { $0 } }
}
