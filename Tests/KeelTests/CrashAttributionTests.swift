// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// A plugin that crashes a real `keel serve` while serving: the host dies of the original signal, and the next start
/// quarantines exactly that plugin with the reason, while the others come up.
@Suite("crash attribution", .scheduled)
struct CrashAttributionTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    /// A plugin folder with the crashing plugin ("crasher": a route that crashes on request and, with `gate`, an
    /// authorize hook that does too) and a well-behaved one ("fine", whose requests the crasher's hook authorizes),
    /// both enabled, with the authorize grant the crasher needs.
    func stage(gate: Bool = false) throws -> KernelFixture {
        let f = KernelFixture()
        let crasher = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/crasher.c", name: "crasher",
                                                      defines: gate ? [] : ["CRASHER_NO_GATE"])
        try TestEnvironment.makeBundle(in: f.plugins, folder: "crasher", manifest: TestEnvironment.manifest(
            id: "crasher", library: "libcrasher.so", capabilities: ["routes", "authorize"]), library: crasher)
        try f.fixtureBundle("fine", defines: ["ROUTE_PATH=\"/items/:id\""])
        try TestEnvironment.grantSensitive("crasher", plugins: f.plugins, state: f.state)
        for id in ["crasher", "fine"] {
            let r = try TestEnvironment.run(keel, ["plugins", "enable", id, "--plugins", f.plugins, "--state", f.state])
            guard r.status == 0 else { throw TestFailure("enable \(id): \(r.stderr)") }
        }
        return f
    }

    /// The Swift runtime's backtracer off: a crash of the host's own would otherwise spend seconds symbolicating.
    static let environment = ["SWIFT_BACKTRACE": "enable=no"]

    /// Sends the request that crashes the server and waits for it to die; returns the signal it died of (0: it did not).
    func crash(_ server: ServerProcess, path: String) async -> Int32 {
        _ = try? await server.request("GET", path)
        let deadline = Date().addingTimeInterval(20)
        while server.process.isRunning && Date() < deadline { usleep(20_000) }
        guard !server.process.isRunning, server.process.terminationReason == .uncaughtSignal else { return 0 }
        return server.process.terminationStatus
    }

    @Test("a crash in a route handler kills the host by that signal; the next start quarantines that plugin only",
          arguments: [
              ("/ext/crasher/items/segv", SIGSEGV, "SIGSEGV in handler GET /ext/crasher/items/:id"),
              ("/ext/crasher/items/abort", SIGABRT, "SIGABRT in handler GET /ext/crasher/items/:id"),
              ("/ext/crasher/items/fpe", SIGFPE, "SIGFPE in handler GET /ext/crasher/items/:id"),
          ])
    func crashWhileServing(path: String, signal: Int32, reason: String) async throws {
        let f = try stage()
        var server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        #expect(try await server.request("GET", "/ext/crasher/items/7").text.hasPrefix("item 7"))
        #expect(await crash(server, path: path) == signal, "\(server.errors.value)")
        // Said as it dies, not only at the next start.
        let name = reason.prefix { $0 != " " }
        #expect(await waitFor(5) { server.errors.value.contains("keel: plugin \"crasher\" (generation ") && server.errors.value.contains(") crashed the host with \(name); the next start quarantines it (crash record: ") },
                "\(server.errors.value)")

        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        defer { server.stop() }
        // The generation that crashed: the one the first server activated (the CLI's enables made the earlier ones).
        let history = try await server.request("GET", "/api/v1/plugins/crasher/history", admin: true).json as? [[String: Any]] ?? []
        let generation = try #require(history.last { $0["outcome"] as? String == "activated" }?["generation"] as? Int)
        #expect(history.last?["outcome"] as? String == "crashed")
        let detail = history.last?["detail"] as? String ?? ""
        #expect(detail.hasPrefix("crashed the host with \(reason) (generation \(generation)), "), "\(detail)")
        // abort() faults in libc: the handler's frame on the stack names it (`by stack+call`; `by call` before 2026-12-08).
        #expect(detail.contains("instruction 0x") && detail.contains(signal == SIGABRT ? "attributed by stack+call" : "attributed by address+call"), "\(detail)")

        let plugins = try await server.request("GET", "/api/v1/plugins", admin: true).json as? [[String: Any]] ?? []
        let crasher = plugins.first { $0["id"] as? String == "crasher" }
        #expect(crasher?["status"] as? String == "failed")
        #expect(crasher?["enabled"] as? Bool == false)
        #expect(crasher?["reason"] as? String == "crashed the host with \(reason) (generation \(generation)); install a new build or run `keel plugins enable crasher` to try again")
        #expect(plugins.first { $0["id"] as? String == "fine" }?["status"] as? String == "enabled")
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 404)
        #expect(!FileManager.default.fileExists(atPath: f.state + ".crash"))
        let list = try TestEnvironment.run(keel, ["plugins", "list", "--plugins", f.plugins, "--state", f.state])
        #expect(list.stdout.contains("reason: crashed the host with \(reason) (generation \(generation))"), "\(list.stdout)")
        // The quarantine is the host's own decision: an audit row of the host's, with the reason.
        let audit = try await server.request("GET", "/api/v1/audit", admin: true).json as? [[String: Any]] ?? []
        let row = audit.last { $0["target"] as? String == "crasher" }
        #expect(row?["actor"] as? String == "keel" && row?["command"] as? String == "quarantine"
                && (row?["detail"] as? String ?? "").hasPrefix("crashed the host with \(reason)"), "\(String(describing: row))")
    }

    /// Every reload of a plugin that is not unload-safe maps a new copy; until 2026-12-02 the handler knew only the
    /// first 1,024 libraries by their address ranges, and a crash in a later one was attributed by the call alone.
    @Test("a crash in the 1,100th copy of a library loaded in one process is still attributed by its address")
    func manyCopiesStillKnownByAddress() async throws {
        let f = try stage()
        var server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        for i in 0..<1_100 {
            let reply = try await server.request("POST", "/api/v1/plugins/crasher/reload", admin: true)
            guard reply.status == 200 else { Issue.record("reload \(i): \(reply.status) \(reply.text)"); return }
        }
        #expect(await crash(server, path: "/ext/crasher/items/segv") == SIGSEGV, "\(server.errors.value)")
        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        defer { server.stop() }
        let history = try await server.request("GET", "/api/v1/plugins/crasher/history", admin: true).json as? [[String: Any]] ?? []
        let detail = history.last?["detail"] as? String ?? ""
        #expect(detail.contains("attributed by address+call") && detail.contains("offset 0x"), "\(detail)")
    }

    /// A client that can crash a guard (a plugin with auth hooks) must not get it switched off: before 2026-12-02 the
    /// next start disabled it, and the host served without its denials.
    @Test("a guard that crashed the host while serving is not disabled: the next start runs it in a worker, where the crafted request fails closed",
          arguments: [
              ("/ext/fine/items/authz-segv", SIGSEGV, "SIGSEGV in authorize hook \"gate\""),
              ("/ext/fine/items/authz-abort", SIGABRT, "SIGABRT in authorize hook \"gate\""),
              ("/ext/crasher/items/fpe", SIGFPE, "SIGFPE in handler GET /ext/crasher/items/:id"),
          ])
    func guardMovesToAWorker(path: String, signal: Int32, reason: String) async throws {
        let f = try stage(gate: true)
        var server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        #expect(try await server.request("GET", "/ext/fine/items/authz-deny-me").status == 200)
        #expect(await crash(server, path: path) == signal, "\(server.errors.value)")

        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        defer { server.stop() }
        #expect(server.errors.value.contains("crashed the host with \(reason) (generation ") &&
                server.errors.value.contains("not disabled, because it has auth hooks and disabling it would let through what they deny: it runs in a worker process from now on"),
                "\(server.errors.value)")
        let history = try await server.request("GET", "/api/v1/plugins/crasher/history", admin: true).json as? [[String: Any]] ?? []
        #expect(history.contains { $0["outcome"] as? String == "crashed" && ($0["detail"] as? String ?? "").hasPrefix("crashed the host with \(reason)") },
                "\(history)")
        let crasher = try await server.request("GET", "/api/v1/plugins/crasher", admin: true).json as? [String: Any] ?? [:]
        #expect(crasher["enabled"] as? Bool == true && crasher["status"] as? String == "enabled", "\(crasher)")
        #expect(crasher["isolation"] as? String == "process" && crasher["workerPID"] as? Int != nil, "\(crasher)")
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
        #expect(try await server.request("GET", "/ext/crasher/items/7").text.hasPrefix("item 7"))

        // The same request again: it ends the worker, not the host, and is not let through.
        let again = try await server.request("GET", path)
        #expect(again.status != 200, "\(again.status) \(again.text)")
        #expect(server.process.isRunning)
        // The hook still guards: once a worker runs again, it is asked (and lets the ordinary request through).
        #expect(try await waitFor(20) { try await server.request("GET", "/ext/fine/items/2").status == 200 })
        #expect(try await server.request("GET", "/ext/fine/items/authz-segv").status != 200)
    }

    /// Without a worker executable (an embedding host), a guard that crashed while serving stays in the host: a
    /// crash loop the operator sees, rather than an open door. The crash record is the one the handler writes.
    @Test("without worker processes, a guard that crashed while serving stays enabled in the host, and the log says how to take it down")
    func guardStaysWithoutWorkers() async throws {
        let f = try stage(gate: true)
        let first = try f.kernel()
        await first.start()
        #expect(Set(first.activePlugins) == ["crasher", "fine"])
        await first.shutdown()
        let record = "keel-crash 1\nplugin crasher\ngeneration 3\nsignal 11\ncode 1\naddress 0x0\npc 0x1234\nby address+call\nsite authorize hook \"gate\"\ntime 1764633600\nend\n"
        try record.write(toFile: f.state + ".crash", atomically: true, encoding: .utf8)
        let again = try f.kernel()
        await again.start()
        #expect(Set(again.activePlugins) == ["crasher", "fine"])
        let logs = f.log.lines.joined(separator: "\n")
        #expect(logs.contains("crashed the host with SIGSEGV in authorize hook \"gate\" (generation 3); not disabled, because it has auth hooks"), "\(logs)")
        #expect(logs.contains("it stays enabled in the host, where it can crash it again (it cannot run in a worker process: this host has no worker executable); `keel plugins disable crasher` takes it down"), "\(logs)")
        #expect(try again.state.isolationChoice("crasher") == nil)
        #expect(try again.state.plugin("crasher")?.enabled == true)
        await again.shutdown()
    }

    @Test("a crash record that cannot be moved aside (a folder planted at .crash.last) is read once: the plugin enabled again is not quarantined again at the next start")
    func recordReadOnce() async throws {
        let f = try stage()
        let first = try f.kernel()
        await first.start()
        await first.shutdown()
        let record = "keel-crash 1\nplugin crasher\ngeneration 3\nsignal 11\ncode 1\naddress 0x0\npc 0x1234\nby address+call\nsite handler GET /items/:id\ntime 1764633600\nend\n"
        try record.write(toFile: f.state + ".crash", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: f.state + ".crash.last/planted", withIntermediateDirectories: true)
        let second = try f.kernel()
        await second.start()
        #expect(try second.state.plugin("crasher")?.enabled == false, "quarantined by the record")
        #expect(!FileManager.default.fileExists(atPath: f.state + ".crash"), "the record went although it could not be moved aside")
        try await second.enable("crasher")
        await second.shutdown()
        let third = try f.kernel()
        await third.start()
        #expect(try third.state.plugin("crasher")?.enabled == true && third.activePlugins.contains("crasher"))
        await third.shutdown()
    }

    @Test("a quarantine keeps its reason through later starts: a CLI command on another plugin and the next server")
    func quarantineKeepsItsReason() async throws {
        let f = try stage()
        var server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        #expect(await crash(server, path: "/ext/crasher/items/segv") == SIGSEGV, "\(server.errors.value)")
        // Without a server, a lifecycle command on another plugin starts a kernel of the CLI's own (it rescans the folder).
        let disable = try TestEnvironment.run(keel, ["plugins", "disable", "fine", "--plugins", f.plugins, "--state", f.state])
        #expect(disable.status == 0, "\(disable.stderr)")
        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        server.stop()
        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        defer { server.stop() }
        // Each start names it: the CLI read the crash record, so nothing else would (until 2026-12-07 a `keel plugins
        // list` run just after the crash left the next start silent about it).
        #expect(await waitFor(5) { server.errors.value.contains("[crasher] not started, quarantined: crashed the host with SIGSEGV") },
                "\(server.errors.value)")
        let plugins = try await server.request("GET", "/api/v1/plugins", admin: true).json as? [[String: Any]] ?? []
        let crasher = plugins.first { $0["id"] as? String == "crasher" }
        #expect(crasher?["status"] as? String == "failed")
        #expect((crasher?["reason"] as? String ?? "").hasPrefix("crashed the host with SIGSEGV in handler GET /ext/crasher/items/:id"),
                "\(String(describing: crasher))")
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 404)
    }

    /// Found by a security review: a plugin that crashed the host from a thread of its own inside libc was "outside any
    /// plugin", quarantined nothing, and came back at every start to crash it again.
    @Test("a plugin's own thread that faults inside libc is named by its frame on the stack and quarantined")
    func threadFaultInLibc() async throws {
        let f = try stage()
        var server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        #expect(await crash(server, path: "/ext/crasher/items/thread") == SIGSEGV, "\(server.errors.value)")
        #expect(await waitFor(5) { server.errors.value.contains("keel: plugin \"crasher\" (generation ") }, "\(server.errors.value)")
        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        defer { server.stop() }
        let history = try await server.request("GET", "/api/v1/plugins/crasher/history", admin: true).json as? [[String: Any]] ?? []
        let detail = history.last?["detail"] as? String ?? ""
        #expect(detail.hasPrefix("crashed the host with SIGSEGV in a thread of its own (generation ") && detail.contains("attributed by stack,"),
                "\(detail)")
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 404)
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
    }

    @Test("a crash outside any plugin is logged as the host's own and quarantines nothing; enabling the plugin again lifts a quarantine")
    func hostsOwnCrash() async throws {
        let f = try stage()
        var server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        kill(server.process.processIdentifier, SIGBUS)
        server.process.waitUntilExit()
        #expect(server.process.terminationReason == .uncaughtSignal && server.process.terminationStatus == SIGBUS)

        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        #expect(server.errors.value.contains("the last run crashed with SIGBUS outside any plugin"), "\(server.errors.value)")
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 200)
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
        #expect(await crash(server, path: "/ext/crasher/items/segv") == SIGSEGV)

        // The operator's "try again": the plugin serves, until the next crash.
        let enable = try TestEnvironment.run(keel, ["plugins", "enable", "crasher", "--plugins", f.plugins, "--state", f.state])
        #expect(enable.status == 0, "\(enable.stderr)")
        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment)
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/crasher/items/8").text.hasPrefix("item 8"))
    }
}
