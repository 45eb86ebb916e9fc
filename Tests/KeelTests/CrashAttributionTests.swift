// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// A plugin that crashes a real `keel serve` while serving: the host dies of the original signal, and the next start
/// quarantines exactly that plugin with the reason, while the others come up.
@Suite("crash attribution")
struct CrashAttributionTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    /// A plugin folder with the crashing plugin ("crasher": a route and an authorize hook that crash on request) and
    /// a well-behaved one ("fine", whose requests the crasher's hook authorizes), both enabled, with the authorize
    /// grant the crasher needs.
    func stage() throws -> KernelFixture {
        let f = KernelFixture()
        let crasher = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/crasher.c", name: "crasher")
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

    @Test("a crash in a route handler or an authorize hook kills the host by that signal; the next start quarantines that plugin only",
          arguments: [
              ("/ext/crasher/items/segv", SIGSEGV, "SIGSEGV in handler GET /ext/crasher/items/:id"),
              ("/ext/crasher/items/abort", SIGABRT, "SIGABRT in handler GET /ext/crasher/items/:id"),
              ("/ext/crasher/items/fpe", SIGFPE, "SIGFPE in handler GET /ext/crasher/items/:id"),
              ("/ext/fine/items/authz-segv", SIGSEGV, "SIGSEGV in authorize hook \"gate\""),
              ("/ext/fine/items/authz-abort", SIGABRT, "SIGABRT in authorize hook \"gate\""),
              ("/ext/fine/items/authz-fpe", SIGFPE, "SIGFPE in authorize hook \"gate\""),
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
        #expect(detail.contains("instruction 0x") && detail.contains(signal == SIGABRT ? "attributed by call" : "attributed by address+call"), "\(detail)")

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
        let plugins = try await server.request("GET", "/api/v1/plugins", admin: true).json as? [[String: Any]] ?? []
        let crasher = plugins.first { $0["id"] as? String == "crasher" }
        #expect(crasher?["status"] as? String == "failed")
        #expect((crasher?["reason"] as? String ?? "").hasPrefix("crashed the host with SIGSEGV in handler GET /ext/crasher/items/:id"),
                "\(String(describing: crasher))")
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 404)
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
