// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

extension SecurityTests {
    /// Threads of process `pid` asleep in `pause()`: the fixture's hook that never returns.
    static func threadsInPause(_ pid: Int32) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.filter { (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/wchan", encoding: .utf8)) == "__do_sys_pause" }.count
    }

    @Test("an authorize hook that never returns holds a few threads, not every lane's: later requests are denied at once, the plugin is disabled as misbehaving, the server still stops")
    func hungAuthorizeHook() async throws {
        let f = KernelFixture()
        // guard's hook never returns for a path containing "hang"; two plugins' routes are the lanes it hangs in.
        try f.fixtureBundle("guard", defines: ["AUTHZ_MODE=4"], capabilities: ["routes", "authorize"])
        try f.fixtureBundle("sink", defines: ["ROUTE_PATH=\"/hang\""], capabilities: ["routes"])
        try f.fixtureBundle("drain", defines: ["ROUTE_PATH=\"/hang\""], capabilities: ["routes"])
        try f.fixtureBundle("quick", capabilities: ["routes"])
        #expect(try run(["plugins", "grant", "guard", "authorize"], f).status == 0)
        for id in ["guard", "sink", "drain", "quick"] { #expect(try run(["plugins", "enable", id], f).status == 0) }
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let pid = server.process.processIdentifier
        #expect(try RawHTTP.request(port: server.port, "GET", "/ext/quick/ping").status == 200)

        // Six calls hang, three in each lane, and are left waiting.
        var hanging: [Int32] = []
        defer { hanging.forEach { close($0) } }
        for i in 0..<6 {
            let fd = try RawHTTP.connect(port: server.port)
            RawHTTP.send(fd, "GET /ext/\(i % 2 == 0 ? "sink" : "drain")/hang HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            hanging.append(fd)
        }
        let stuck = Date().addingTimeInterval(10)
        while Self.threadsInPause(pid) < 6 && Date() < stuck { usleep(50_000) }
        #expect(Self.threadsInPause(pid) == 6)
        // Past the point where four of them count as stuck (4 × the 250 ms hook budget, at least 1 s).
        usleep(1_300_000)

        // Forty more, from as many clients at once: each is answered at once, none hangs. Denied (the hook is not
        // asked), until the twentieth failure in a row disables guard as misbehaving; served without it after that.
        let denied = LockedCounter(), served = LockedCounter()
        let group = DispatchGroup()
        for i in 0..<40 {
            group.enter()
            Thread.detachNewThread {
                switch (try? RawHTTP.request(port: server.port, "GET", "/ext/\(i % 2 == 0 ? "sink" : "drain")/hang"))?.status {
                case 403: denied.increment()
                case 200: served.increment()
                default: break
                }
                group.leave()
            }
        }
        #expect(group.wait(timeout: .now() + 15) == .success, "requests hung behind the stuck hook")
        #expect(denied.value >= 20 && denied.value + served.value == 40, "\(denied.value) denied, \(served.value) served")
        #expect(Self.threadsInPause(pid) == 6, "the hook was called again while stuck")
        #expect(try RawHTTP.request(port: server.port, "GET", "/healthz").status == 200)

        // guard is disabled as misbehaving, and the host serves again without it.
        let back = Date().addingTimeInterval(30)
        var status = 0
        while Date() < back {
            status = try RawHTTP.request(port: server.port, "GET", "/ext/quick/ping").status
            if status == 200 { break }
            usleep(200_000)
        }
        #expect(status == 200)
        let info = try await server.request("GET", "/api/v1/plugins/guard", admin: true)
        let reason = (info.json as? [String: Any])?["reason"] as? String ?? ""
        #expect(reason.contains("authorize hook \"rules\" was not asked: 4 of its calls have run for over 1 s"), "\(info.text)")
        // SIGTERM: the requests still waiting for the hung calls are cut after the 10 s grace period, the threads are
        // left behind after 5 s more, and the server ends (it waited for ever before).
        let stopping = Date()
        #expect(server.stop() == 0)
        #expect(Date().timeIntervalSince(stopping) < 29, "took \(Date().timeIntervalSince(stopping)) s to stop")
    }
}
