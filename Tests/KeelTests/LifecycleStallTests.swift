// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// A plugin whose `activate` does not return holds the kernel's lifecycle thread: a real `keel serve` says so on
/// `/healthz` and the admin API (503 `lifecycle-stalled`) instead of leaving them waiting, keeps serving routes, and
/// a stop (or `--exit-on-stall`) records the stall so that the next start quarantines that plugin.
@Suite("lifecycle stall", .scheduled)
struct LifecycleStallTests {
    /// The crashing fixture's `activate` waits while this file exists (`CRASHER_HANG_ACTIVATE_IF`).
    static func staged(gate: Bool = false) throws -> (KernelFixture, hang: String) {
        let f = try CrashAttributionTests().stage(gate: gate)
        return (f, f.plugins + "/../hang")
    }

    static func environment(_ hang: String) -> [String: String] {
        CrashAttributionTests.environment.merging(["CRASHER_HANG_ACTIVATE_IF": hang]) { $1 }
    }

    /// Starts a reload of "crasher" that waits as long as its activate does; its reply, when it comes.
    /// (With a time-out of its own: URLSession's default of 60 s can pass under a loaded suite before the test lets
    /// the call return.)
    static func reload(_ server: ServerProcess) -> Task<Int?, Never> {
        Task {
            guard let url = URL(string: server.base + "/api/v1/plugins/crasher/reload") else { return nil }
            var request = URLRequest(url: url, timeoutInterval: 600)
            request.httpMethod = "POST"
            request.setValue("Bearer \(ServerProcess.token)", forHTTPHeaderField: "Authorization")
            guard let (_, response) = try? await URLSession.shared.data(for: request) else { return nil }
            return (response as? HTTPURLResponse)?.statusCode
        }
    }

    /// Makes crasher's activate hang in a reload of `server` (run with `--stall-limit 1 --exit-on-stall`) and waits
    /// for the host to end itself with status 70; the reload's own answer is awaited after.
    static func stallUntilExit(_ server: ServerProcess, hang: String) async throws {
        FileManager.default.createFile(atPath: hang, contents: nil)
        let reload = Self.reload(server)
        // Generous: under a loaded suite the reload itself can take long to reach the server.
        let deadline = Date().addingTimeInterval(120)
        while server.process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        // (Foundation traps on the termination status of a process still running: asked only once it ended.)
        try #require(!server.process.isRunning, "\(server.errors.value)")
        #expect(server.process.terminationReason == .exit && server.process.terminationStatus == 70)
        _ = await reload.value
    }

    static func health(_ server: ServerProcess) async -> (status: Int, body: [String: Any]) {
        guard let r = try? await server.request("GET", "/healthz") else { return (0, [:]) }
        return (r.status, r.json as? [String: Any] ?? [:])
    }

    @Test("an activate that does not return: 503 on /healthz and the admin API while routes serve; it recovers when the call returns; a stop records it and the next start quarantines the plugin")
    func stalledActivate() async throws {
        let (f, hang) = try Self.staged()
        // No folder watch: the test's reload is the only activation (a watcher that re-read the bundle written a
        // moment before the start could otherwise reload it first, into the hang, and the test's reload would then
        // be refused as stalled).
        var server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--stall-limit", "1", "--no-watch"],
                                       environment: Self.environment(hang))
        defer { server.stop() }
        #expect(await Self.health(server).status == 200)
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 200)

        // The next activation of crasher hangs: a reload (the old generation serves meanwhile).
        FileManager.default.createFile(atPath: hang, contents: nil)
        let first = Self.reload(server)
        #expect(await waitFor(15) { await Self.health(server).status == 503 }, "\(server.errors.value)")
        let health = await Self.health(server)
        #expect(health.body["status"] as? String == "stalled")
        let stalled = health.body["stalled"] as? [String: Any] ?? [:]
        #expect(stalled["plugin"] as? String == "crasher" && stalled["call"] as? String == "activate", "\(health.body)")
        #expect((stalled["seconds"] as? Int ?? 0) >= 1)

        // The admin API answers at once instead of waiting behind it; the audit trail still reads.
        let started = Date()
        let list = try await server.request("GET", "/api/v1/plugins", admin: true)
        #expect(list.status == 503 && list.errorCode == "lifecycle-stalled", "\(list.text)")
        #expect(list.text.contains("plugin \\\"crasher\\\"") && list.text.contains("activate has not returned"), "\(list.text)")
        let disable = try await server.request("POST", "/api/v1/plugins/fine/disable", admin: true)
        #expect(disable.status == 503 && disable.errorCode == "lifecycle-stalled")
        // Not waiting for the stalled call, which goes on until the test ends it (a loaded suite can slow the two
        // answers to many seconds, never to the minute a waiting client's URLSession would give up after).
        #expect(Date().timeIntervalSince(started) < 45)
        #expect(try await server.request("GET", "/api/v1/audit", admin: true).status == 200)
        #expect(try await server.request("GET", "/api/v1/plugins/crasher/logs", admin: true).status == 200)
        // Unauthenticated callers learn nothing from the admin API.
        #expect(try await server.request("GET", "/api/v1/plugins").status == 401)
        // Routes keep serving: the other plugin's and the stalled plugin's old generation.
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 200)
        #expect(await waitFor(5) { server.errors.value.contains("the host's lifecycle is stalled: plugin \"crasher\" (generation ") },
                "\(server.errors.value)")
        // The CLI's command, queued for the stalled server, is not run; its error says what the server waits for.
        let queued = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "disable", "fine", "--plugins", f.plugins, "--state", f.state])
        #expect(queued.status == 1 && queued.stderr.contains("it was cancelled and nothing changed")
                    && queued.stderr.contains("the server says: plugin \"crasher\" (generation ")
                    && queued.stderr.contains("activate has not returned for"), "\(queued.stderr)")

        // The call returns: the reload completes (the stalled generation is the one activated now), and the host is
        // healthy again. (Read from the server, not from the reload's own answer: under a loaded suite the client's
        // time-out can pass before the test lets the call return.)
        try FileManager.default.removeItem(atPath: hang)
        first.cancel()
        let stalledGeneration = try #require(stalled["generation"] as? Int)
        func activatedGeneration() async -> Int? {
            let history = (try? await server.request("GET", "/api/v1/plugins/crasher/history", admin: true).json) as? [[String: Any]] ?? []
            return history.last { $0["outcome"] as? String == "activated" }?["generation"] as? Int
        }
        #expect(await waitFor(60) { await Self.health(server).status == 200 })
        #expect(await waitFor(30) { await activatedGeneration() == stalledGeneration }, "\(stalled)")
        #expect(try await server.request("GET", "/api/v1/plugins", admin: true).status == 200)
        #expect(await waitFor(5) { server.errors.value.contains("the host's lifecycle runs again: activate of generation ") }, "\(server.errors.value)")

        // It hangs again and the operator stops the host: it exits (status 70) instead of waiting for ever.
        FileManager.default.createFile(atPath: hang, contents: nil)
        let second = Self.reload(server)
        #expect(await waitFor(15) { await Self.health(server).status == 503 })
        #expect(server.stop() == 70, "\(server.errors.value)")
        #expect(server.output.value.contains("exiting without deactivating the plugins; the next start quarantines \"crasher\""),
                "\(server.output.value)")
        _ = await second.value

        // The next start quarantines it (the file is still there: an activation would hang again) and serves the rest.
        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment(hang))
        #expect(await Self.health(server).status == 200)
        let plugins = try await server.request("GET", "/api/v1/plugins", admin: true).json as? [[String: Any]] ?? []
        let crasher = plugins.first { $0["id"] as? String == "crasher" }
        #expect(crasher?["status"] as? String == "failed" && crasher?["enabled"] as? Bool == false)
        let reason = crasher?["reason"] as? String ?? ""
        #expect(reason.hasPrefix("hung the host: its activate had not returned after ") && reason.contains(" s (generation "), "\(reason)")
        let history = try await server.request("GET", "/api/v1/plugins/crasher/history", admin: true).json as? [[String: Any]] ?? []
        #expect(history.last?["outcome"] as? String == "hung", "\(history)")
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 404)

        // Quarantined by the library's checksum: a new build put into the folder of the running host lifts it (as
        // the next start would; the call no longer hangs), and it serves again, without a restart.
        try FileManager.default.removeItem(atPath: hang)
        let rebuilt = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/crasher.c", name: "crasher",
                                                      defines: ["CRASHER_NO_GATE", "CRASHER_BUILD_TAG=\"2\""])
        let library = f.plugins + "/crasher/libcrasher.so"
        try? FileManager.default.removeItem(atPath: library + ".new")
        try FileManager.default.copyItem(atPath: rebuilt, toPath: library + ".new")
        #expect(rename(library + ".new", library) == 0)
        #expect(await waitFor(20) { (try? await server.request("GET", "/ext/crasher/items/7").status) == 200 }, "\(server.errors.value)")
        let lifted = try await server.request("GET", "/api/v1/plugins/crasher", admin: true).json as? [String: Any]
        #expect(lifted?["enabled"] as? Bool == true && lifted?["status"] as? String == "enabled", "\(String(describing: lifted))")
    }

    @Test("a stall in a reload the CLI queued: SIGTERM ends the host (status 70, stall record) instead of waiting for the queued command")
    func stalledQueuedReload() async throws {
        let (f, hang) = try Self.staged()
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--stall-limit", "1", "--no-watch"],
                                       environment: Self.environment(hang))
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/crasher/items/7").status == 200)
        FileManager.default.createFile(atPath: hang, contents: nil)
        let cli = try ChildProcess(TestEnvironment.binPath + "/keel", ["plugins", "reload", "crasher", "--plugins", f.plugins, "--state", f.state],
                                   environment: Self.environment(hang))
        defer { cli.stop() }
        #expect(await waitFor(30) { await Self.health(server).status == 503 }, "\(server.errors.value)")
        let stopped = Date()
        #expect(server.stop() == 70, "\(server.errors.value)")
        #expect(Date().timeIntervalSince(stopped) < 20, "the stop waited \(Date().timeIntervalSince(stopped)) s")
        #expect(server.output.value.contains("exiting without deactivating the plugins; the next start quarantines \"crasher\""),
                "\(server.output.value)\(server.errors.value)")
        #expect(FileManager.default.fileExists(atPath: f.state + ".crash"), "the stall record")
    }

    @Test("--exit-on-stall ends a stalled host by itself (status 70); the next start quarantines the plugin, and a guard's quarantine closes the host")
    func exitOnStall() async throws {
        // With its authorize hook, crasher is a guard: quarantined, it is a guard the host misses (fail closed).
        let (f, hang) = try Self.staged(gate: true)
        var server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--stall-limit", "1", "--exit-on-stall", "--no-watch"],
                                       environment: Self.environment(hang))
        defer { server.stop() }
        try await Self.stallUntilExit(server, hang: hang)
        #expect(server.errors.value.contains("activate has not returned for 1 s; exiting (--exit-on-stall); the next start quarantines \"crasher\""),
                "\(server.errors.value)")

        server = try ServerProcess(plugins: f.plugins, state: f.state, environment: Self.environment(hang))
        let plugins = try await server.request("GET", "/api/v1/plugins", admin: true).json as? [[String: Any]] ?? []
        let reason = plugins.first { $0["id"] as? String == "crasher" }?["reason"] as? String ?? ""
        #expect(reason.hasPrefix("hung the host: its activate had not returned after "), "\(reason)")
        let health = await Self.health(server)
        #expect(health.status == 503 && health.body["status"] as? String == "closed"
                && (health.body["missingGuards"] as? [String]) == ["crasher"], "\(health.body)")
        #expect(try await server.request("GET", "/ext/fine/items/1").status != 200)
    }

    @Test("an activate that hangs while the host starts is watched too: --exit-on-stall ends the start (status 70) and the next start quarantines the plugin")
    func stalledAtStart() async throws {
        let (f, hang) = try Self.staged()
        FileManager.default.createFile(atPath: hang, contents: nil)
        let keel = Process()
        keel.executableURL = URL(fileURLWithPath: TestEnvironment.binPath + "/keel")
        keel.arguments = ["serve", "--port", "0", "--plugins", f.plugins, "--state", f.state, "--stall-limit", "1", "--exit-on-stall", "--no-watch"]
        keel.environment = ProcessInfo.processInfo.environment.merging(Self.environment(hang)) { $1 }
        let errors = Pipe()
        keel.standardError = errors
        keel.standardOutput = FileHandle.nullDevice
        let text = LockedText()
        try keel.run()
        PipeDrain(errors.fileHandleForReading, into: text)
        let deadline = Date().addingTimeInterval(120)
        while keel.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let ended = !keel.isRunning
        if !ended { kill(keel.processIdentifier, SIGKILL) }
        keel.waitUntilExit()
        #expect(ended, "\(text.value)")
        #expect(keel.terminationReason == .exit && keel.terminationStatus == 70, "\(text.value)")
        #expect(text.value.contains("activate has not returned for 1 s; exiting (--exit-on-stall)"), "\(text.value)")

        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"], environment: Self.environment(hang))
        defer { server.stop() }
        let plugins = try await server.request("GET", "/api/v1/plugins", admin: true).json as? [[String: Any]] ?? []
        let reason = plugins.first { $0["id"] as? String == "crasher" }?["reason"] as? String ?? ""
        #expect(reason.hasPrefix("hung the host: its activate had not returned after "), "\(reason)")
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
    }

    @Test("a symbolic link planted where the stall record goes is not written through: the file it names keeps its bytes, and the record is a file of its own")
    func plantedRecordLink() async throws {
        let (f, hang) = try Self.staged()
        let victim = (f.state as NSString).deletingLastPathComponent + "/victim.txt"
        try "the operator's file\n".write(toFile: victim, atomically: false, encoding: .utf8)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--stall-limit", "1", "--exit-on-stall", "--no-watch"],
                                       environment: Self.environment(hang))
        defer { server.stop() }
        // Planted once the host started (a start reads a record there and moves it aside).
        try FileManager.default.createSymbolicLink(atPath: f.state + ".crash", withDestinationPath: victim)
        try await Self.stallUntilExit(server, hang: hang)
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "the operator's file\n")
        #expect(server.errors.value.contains("the next start quarantines \"crasher\""), "\(server.errors.value)")
        var st = stat()
        #expect(lstat(f.state + ".crash", &st) == 0 && st.st_mode & S_IFMT == S_IFREG, "the record replaced the link")
        #expect(((try? String(contentsOfFile: f.state + ".crash", encoding: .utf8)) ?? "").contains("crasher"))
    }
}
