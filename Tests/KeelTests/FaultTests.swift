// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Keel
import KeelLoader
import KeelRegistry
import Synchronization
import Testing

@Suite("fault containment", .scheduled)
struct FaultTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    @Test("constructors that crash, exit or hang are caught by the child-process probe; the host never loads them")
    func hostileConstructors() async throws {
        let f = KernelFixture()
        for (id, mode) in [("segv", 1), ("quits", 2), ("hangs", 3)] {
            try f.fixtureBundle(id, defines: ["CTOR_MODE=\(mode)"])
        }
        try f.fixtureBundle("fine")
        let kernel = try f.kernel(probe: PluginProbe(executable: keel, timeout: 3))
        await kernel.start()
        var reasons: [String: String] = [:]
        for id in ["segv", "quits", "hangs"] {
            do { try await kernel.enable(id); Issue.record("\(id) was loaded") } catch { reasons[id] = error.description }
        }
        try await kernel.enable("fine")
        #expect(reasons["segv"]?.hasSuffix("libsegv.so: crashed with SIGSEGV (signal 11) while loading or activating; the host did not load it") == true, "\(reasons)")
        #expect(reasons["quits"]?.contains("exited with code 7 while loading or activating") == true)
        #expect(reasons["hangs"]?.contains("hung: no answer within 3 s") == true)
        // What the host waits for is said while it waits (a start held by a hanging build said nothing for 10 s).
        #expect(f.log.lines.contains { $0.contains("[hangs] waiting for its probe: the trial load and activation in a child process has not answered for 2 s (it is stopped after 3 s)") },
                "\(f.log.lines.suffix(5))")
        #expect(!f.log.lines.contains { $0.contains("[fine] waiting for its probe") })
        #expect(try await kernel.plugin("segv").status == .failed)
        #expect(get(kernel, "/ext/fine/ping")?.0 == 200)
        // Not one of them is mapped into this process.
        for id in ["segv", "quits", "hangs"] { #expect(try !isMapped(id)) }
        let history = try await kernel.history("segv").map(\.outcome)
        #expect(history == ["probe-failed"])
        // Tried again at once (the operator's enable after the watcher's try): the same build's failure stands,
        // without a second wait for its time-out or a second history row.
        let again = Date()
        do { try await kernel.enable("hangs"); Issue.record("hangs was loaded") } catch {
            #expect(error.description.contains("hung: no answer within 3 s") && error.description.contains(" s ago; the same build is probed again after 60 s"), "\(error)")
        }
        #expect(Date().timeIntervalSince(again) < 2, "the same build was probed again")
        #expect(try await kernel.history("hangs").map(\.outcome) == ["probe-failed"])
        // Its plugin.yaml rewritten: another build (the probe checks the library against it), probed again.
        let yaml = f.plugins + "/hangs/plugin.yaml"
        try String(contentsOfFile: yaml, encoding: .utf8).appending("\n").write(toFile: yaml, atomically: true, encoding: .utf8)
        do { try await kernel.enable("hangs"); Issue.record("hangs was loaded") } catch {
            #expect(error.description.contains("hung: no answer within 3 s") && !error.description.contains(" s ago;"), "\(error)")
        }
        #expect(try await kernel.history("hangs").map(\.outcome) == ["probe-failed", "probe-failed"])
        await kernel.shutdown()
    }

    @Test("the probe's answer cannot be spoiled by what a plugin prints; a process it starts is killed, and the probe ends at once")
    func probeOutput() async throws {
        let f = KernelFixture()
        let pidFile = TestEnvironment.makeTemporaryDirectory("probe-pid") + "/grandchild"
        try f.fixtureBundle("chatty", defines: ["CTOR_MODE=4"])
        try f.fixtureBundle("forker", defines: ["CTOR_MODE=5", "CTOR_PIDFILE=\"\(pidFile)\""])
        let kernel = try f.kernel(probe: PluginProbe(executable: keel, timeout: 10))
        await kernel.start()
        // A printf and 32 MiB written to stdout while loading: the answer is read intact (before, it was refused).
        try await kernel.enable("chatty")
        #expect(get(kernel, "/ext/chatty/ping")?.0 == 200)
        // A process started while loading holds the probe's pipes for 60 s: it is killed with the probe's group.
        let started = Date()
        try await kernel.enable("forker")
        // Not held for the grandchild's 60 s, nor until the probe's 10-s time-out (a loaded suite took 5 s once).
        #expect(Date().timeIntervalSince(started) < 9)
        let pid = try #require(Int32(String(contentsOfFile: pidFile, encoding: .utf8)))
        let gone = await waitFor(5) {
            // Gone, or a zombie waiting for its reaper: either way no longer running.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
            return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
        }
        #expect(gone, "the plugin's process \(pid) outlived the probe")
        await kernel.shutdown()
    }

    @Test("the probe's child gets none of the host's secrets: plugin code runs there before the host chose to load it")
    func probeEnvironment() throws {
        let f = KernelFixture()
        let seen = TestEnvironment.makeTemporaryDirectory("probe-env") + "/seen"
        try f.fixtureBundle("nosy", defines: ["CTOR_MODE=6", "CTOR_PIDFILE=\"\(seen)\""])
        let inspected = try TestEnvironment.run(keel, ["plugins", "inspect", f.plugins + "/nosy"],
                                                environment: ["KEEL_ADMIN_TOKEN": "keel_secret_of_the_host", "PGPASSWORD": "hunter2"])
        #expect(inspected.status == 0, "\(inspected.stderr)")
        #expect(try String(contentsOfFile: seen, encoding: .utf8) == "- -")
    }

    @Test("keel plugins inspect survives a hostile file and says what happened")
    func inspectHostile() throws {
        let lib = try TestEnvironment.buildFixture("inspect-segv", ["CTOR_MODE=1"])
        let r = try TestEnvironment.run(keel, ["plugins", "inspect", lib])
        #expect(r.status == 1)
        #expect(r.stderr == "keel: error: \(lib): crashed with SIGSEGV (signal 11) while loading or activating; the host did not load it\n")
    }

    @Test("an activate that takes the host down is quarantined at the next start; a new build lifts it; safe mode loads nothing")
    func quarantine() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("crashy", defines: ["CRASH_IN_HOST"])
        let common = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "hello"] + common).status == 0)
        // The probe passes (the crash needs the host), then the CLI's own process goes down inside activate.
        let crash = try TestEnvironment.run(keel, ["plugins", "enable", "crashy"] + common, environment: ["SWIFT_BACKTRACE": "enable=no"])
        #expect(crash.status != 0 && crash.status != 1)

        var server = try ServerProcess(plugins: f.plugins, state: f.state)
        var plugins = try await server.request("GET", "/api/v1/plugins", admin: true).json as? [[String: Any]] ?? []
        let crashy = plugins.first { $0["id"] as? String == "crashy" }
        #expect(crashy?["status"] as? String == "failed")
        #expect(crashy?["enabled"] as? Bool == false)
        #expect((crashy?["reason"] as? String)?.hasPrefix("quarantined: the host went down while activating generation 1") == true)
        #expect(try await server.request("GET", "/ext/hello/greet/x").status == 200)
        let history = try await server.request("GET", "/api/v1/plugins/crashy/history", admin: true)
        #expect(((history.json as? [[String: Any]]) ?? []).compactMap { $0["outcome"] as? String }.last == "quarantined")
        #expect(server.stop() == 0)

        // Safe mode: nothing active, everything still listed.
        server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--safe-mode"])
        let health = try await server.request("GET", "/healthz")
        #expect((health.json as? [String: Any])?["active"] as? [String] == [])
        #expect(try await server.request("GET", "/ext/hello/greet/x").status == 404)
        // The list says the enabled plugins are not loaded (it said plain `enabled`, as if they served).
        let listed = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "list", "--plugins", f.plugins, "--state", f.state])
        #expect(listed.stdout.contains("hello 1.0.0  enabled (not loaded: safe mode)"), "\(listed.stdout)")
        #expect(server.stop() == 0)

        // A new build (new checksum) lifts the quarantine.
        let fixed = try TestEnvironment.buildFixture("crashy-fixed", ["PLUGIN_ID=\"crashy\"", "TAG=\"fixed\""])
        try install(fixed, into: f.plugins + "/crashy", as: "libcrashy.so")
        server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/crashy/ping").text.contains("tag=fixed"))
        plugins = try await server.request("GET", "/api/v1/plugins", admin: true).json as? [[String: Any]] ?? []
        #expect(plugins.first { $0["id"] as? String == "crashy" }?["status"] as? String == "enabled")
    }

    @Test("odd files where a library should be: a symlink loop, a directory, registrations beyond quota or prefix")
    func oddBundles() async throws {
        let f = KernelFixture()
        let dir = f.plugins + "/loop"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try TestEnvironment.manifest(id: "loop", library: "libloop.so").write(toFile: dir + "/plugin.yaml", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: dir + "/libloop.so", withDestinationPath: "libloop.so")
        let folder = f.plugins + "/folder"
        try FileManager.default.createDirectory(atPath: folder + "/libfolder.so", withIntermediateDirectories: true)
        try TestEnvironment.manifest(id: "folder", library: "libfolder.so").write(toFile: folder + "/plugin.yaml", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: f.plugins + "/selfloop", withDestinationPath: "selfloop")
        try f.fixtureBundle("greedy", defines: ["EXTRA_ROUTES=100000"])
        try f.fixtureBundle("escaper", defines: ["ROUTE_PATH=\"/../hello/greet/x\""])
        try f.fixtureBundle("fine")
        // A 20 MB manifest is refused by size before it is parsed.
        let huge = f.plugins + "/huge"
        try FileManager.default.createDirectory(atPath: huge, withIntermediateDirectories: true)
        try Data(repeating: UInt8(ascii: "#"), count: 20 << 20).write(to: URL(fileURLWithPath: huge + "/plugin.yaml"))
        let kernel = try f.kernel()
        await kernel.start()
        #expect(try await kernel.plugin("huge").reason == "\(huge)/plugin.yaml: 20971520 bytes is over the 262144-byte limit for a manifest")
        var reasons: [String: String] = [:]
        for id in ["loop", "folder", "greedy", "escaper"] {
            do { try await kernel.enable(id); Issue.record("\(id) enabled") } catch { reasons[id] = error.description }
        }
        try await kernel.enable("fine")
        #expect(reasons["loop"] == "plugin \"loop\" (\(dir)/libloop.so): a symbolic link loop, not a shared library")
        #expect(reasons["folder"] == "plugin \"folder\" (\(folder)/libfolder.so): a directory, not a shared library")
        #expect(reasons["greedy"]?.contains("over the limit of 256 routes per plugin") == true)
        #expect(reasons["escaper"]?.contains("segment \"..\" would leave the plugin's own prefix") == true)
        #expect(get(kernel, "/ext/fine/ping")?.0 == 200)
        #expect(kernel.registry.snapshot.routes.map(\.pluginID) == ["fine"])
        await kernel.shutdown()
    }

    @Test("Kernel.dispatch answers a handler's refusal as HTTP does: KEEL_ERR_NOT_FOUND 404 not-found, its message in the log only")
    func dispatchRefusal() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("absent", defines: ["HANDLER_STATUS=5"])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("absent")
        let answer = kernel.dispatch(PluginRequest(method: "GET", path: "/ext/absent/ping"))
        let text = String(decoding: answer.body, as: UTF8.self)
        #expect(answer.status == 404 && text.contains(#""code":"not-found""#) && !text.contains("refused with"), "\(answer.status) \(text)")
        #expect(f.log.lines.contains { $0.contains("[absent] GET /ext/absent/ping: the plugin refused it (404)") && $0.contains("refused with status 5") },
                "\(f.log.lines)")
        await kernel.shutdown()
    }

    @Test("Kernel.dispatch: a handler's own KEEL_ERR_UNAVAILABLE is called once and answered 503, not retried as a stopping generation, and never disables the plugin")
    func unavailableHandlerCalledOnce() async throws {
        let f = KernelFixture()
        let calls = TestEnvironment.makeTemporaryDirectory("busy-kernel") + "/called"
        try f.fixtureBundle("busy", defines: ["HANDLER_UNAVAILABLE=\"\(calls)\""])
        let kernel = try f.kernel(budgets: CallBudgets(handler: 1, hook: 0.05, failureThreshold: 5))
        await kernel.start()
        try await kernel.enable("busy")
        let answer = kernel.dispatch(PluginRequest(method: "GET", path: "/ext/busy/ping"))
        #expect(answer.status == 503 && String(decoding: answer.body, as: UTF8.self).contains("plugin-unavailable"))
        #expect((try? Data(contentsOf: URL(fileURLWithPath: calls)))?.count == 1)
        #expect(f.log.lines.contains { $0.contains("[busy] GET /ext/busy/ping: the plugin cannot serve it now") && $0.contains("the item store is down") })
        // An outage is not misbehaviour: past the threshold of failures in a row, the plugin is still enabled and
        // serving (it would stay off once its store came back).
        for _ in 0..<8 { #expect(kernel.dispatch(PluginRequest(method: "GET", path: "/ext/busy/ping")).status == 503) }
        #expect((try? Data(contentsOf: URL(fileURLWithPath: calls)))?.count == 9)
        let info = try await kernel.plugin("busy")
        #expect(info.enabled && info.status == .enabled, "\(info)")
        // A plugin that words its refusal as the host's own ("plugin is not active") is not taken for it: called once.
        let spoofCalls = TestEnvironment.makeTemporaryDirectory("spoof") + "/called"
        try f.fixtureBundle("spoof", defines: ["HANDLER_UNAVAILABLE=\"\(spoofCalls)\"", "UNAVAILABLE_MESSAGE=\"plugin is not active\""])
        try await kernel.enable("spoof")
        #expect(kernel.dispatch(PluginRequest(method: "GET", path: "/ext/spoof/ping")).status == 503)
        #expect((try? Data(contentsOf: URL(fileURLWithPath: spoofCalls)))?.count == 1)
        await kernel.shutdown()
    }

    @Test("call budgets: a slow auth hook denies, a plugin that keeps failing is disabled automatically")
    func budgets() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("sluggish", defines: ["AUTH_MODE=1", "SLOW_HOOK_MS=120"])
        try f.fixtureBundle("flaky", defines: ["HANDLER_FAILS"])
        let kernel = try f.kernel(budgets: CallBudgets(handler: 1, hook: 0.05, failureThreshold: 5))
        await kernel.start()
        try await kernel.enable("sluggish")
        try await kernel.enable("flaky")
        let snapshot = kernel.registry.snapshot
        guard case let .failure(error) = snapshot.authenticate(PluginRequest(method: "GET", path: "/x", headers: [("authorization", "Bearer ann")])) else {
            Issue.record("a hook over its budget did not deny")
            return
        }
        #expect(error.message == "authenticate hook \"bearer\" ran over its 50 ms budget")
        #expect(f.log.lines.contains { $0.contains("[sluggish] authenticate hook \"bearer\" took") && $0.contains("over its budget of 50 ms") })

        try await kernel.disable("sluggish")
        for _ in 0..<5 { #expect(get(kernel, "/ext/flaky/ping")?.0 == 500) }
        #expect(await waitFor { (try? await kernel.plugin("flaky").status) == .failed })
        let info = try await kernel.plugin("flaky")
        #expect(info.enabled == false)
        #expect(info.reason == "disabled automatically: 5 calls in a row failed (last: GET /ext/flaky/ping handler: KEEL_ERR_INTERNAL handler failed on purpose)")
        #expect(get(kernel, "/ext/flaky/ping") == nil)
        // The host's own decision is in the audit trail too, as the host's (it was in the log alone).
        let row = try kernel.auditTrail().last { $0.target == "flaky" }
        #expect(row?.actor == "keel" && row?.command == "disable" && row?.outcome == "ok" && row?.detail == info.reason, "\(String(describing: row))")
        // The operator's disable of it changes something (the failure is cleared): not "nothing changed".
        let disabled = try await kernel.execute(.disable(id: "flaky", tenant: nil, cascade: false))
        #expect(disabled.note == nil, "\(disabled.note ?? "")")
        #expect(try await kernel.plugin("flaky").status == .disabled)
        await kernel.shutdown()
    }

    @Test("a plugin with auth hooks, or one such a plugin depends on, is not disabled by calls a client can make fail: its rules keep denying")
    func guardStaysAfterFailures() async throws {
        let f = KernelFixture()
        // denier: a handler that always fails and a hook that denies "secret"; broken: a hook that always errors.
        try f.fixtureBundle("denier", defines: ["AUTHZ_MODE=2", "HANDLER_FAILS"])
        try f.fixtureBundle("broken", defines: ["AUTHZ_MODE=3"])
        try f.fixtureBundle("flaky", defines: ["HANDLER_FAILS"])
        // And a plugin whose failures would take down, as its dependent, a guard that denies "secret".
        try f.fixtureBundle("base", defines: ["HANDLER_FAILS"])
        try f.fixtureBundle("warden", defines: ["AUTHZ_MODE=2"], extra: "dependencies:\n  base: \"*\"")
        let kernel = try f.kernel(budgets: CallBudgets(handler: 1, hook: 0.05, failureThreshold: 5))
        await kernel.start()
        for id in ["denier", "flaky"] { try await kernel.enable(id) }
        let who = Principal(id: "mallory", authenticatedBy: "test")
        func decide(_ resource: String) -> AuthDecision {
            kernel.registry.snapshot.authorize(who, action: "read", resource: resource).0
        }
        // Ten failed calls of each plugin's handler: the plain plugin goes, the one that denies stays and denies.
        for _ in 0..<10 {
            #expect(get(kernel, "/ext/denier/ping")?.0 == 500)
            _ = get(kernel, "/ext/flaky/ping")
        }
        #expect(await waitFor(30) { (try? await kernel.plugin("flaky").status) == .failed })
        #expect(await waitFor(30) { f.log.lines.contains { $0.contains("[denier] not disabled automatically although 5 calls in a row failed") } })
        #expect(try await kernel.plugin("denier").status == .enabled)
        #expect(decide("/ext/flaky/secret") == .deny)
        try await kernel.disable("denier")
        try await kernel.enable("base")
        try await kernel.enable("warden")
        for _ in 0..<10 { #expect(get(kernel, "/ext/base/ping")?.0 == 500) }
        #expect(await waitFor(30) { f.log.lines.contains { $0.contains("[base] not disabled automatically although 5 calls in a row failed") && $0.contains(": \"warden\", which depends on it, has auth hooks") } }, "\(f.log.lines.suffix(8))")
        #expect(try await kernel.plugin("base").status == .enabled)
        #expect(try await kernel.plugin("warden").status == .enabled)
        #expect(decide("/ext/any/secret") == .deny)
        // What the next start reads before anything is loaded (a crash record names a plugin): the guards, and what
        // each needs.
        #expect(try kernel.state.guardRecords() == ["denier": [], "warden": ["base"]])
        for id in ["warden", "base"] { try await kernel.disable(id) }
        // A hook that errors on every call denies every request, however many: it is never switched off by them.
        try await kernel.enable("broken")
        for _ in 0..<20 { #expect(decide("/ext/any/thing") == .deny) }
        #expect(await waitFor { f.log.lines.contains { $0.contains("[broken] not disabled automatically although 5 calls in a row failed") } })
        #expect(try await kernel.plugin("broken").status == .enabled)
        #expect(decide("/ext/any/thing") == .deny)
        await kernel.shutdown()
    }

    @Test("a guard the host wants and cannot run closes the host (every request denied) until it runs again; one the operator disables does not")
    func missingGuardClosesTheHost() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("warden", defines: ["AUTHZ_MODE=2"])
        try f.fixtureBundle("plain")
        let good = f.plugins + "/warden/libwarden.so"
        let broken = try TestEnvironment.buildFixture("warden", ["PLUGIN_ID=\"warden\"", "PLUGIN_VERSION=\"1.0.0\"", "AUTHZ_MODE=2", "ACTIVATE_FAILS"])
        let kept = TestEnvironment.makeTemporaryDirectory("good") + "/libwarden.so"
        try FileManager.default.copyItem(atPath: good, toPath: kept)
        var kernel = try f.kernel()
        await kernel.start()
        for id in ["warden", "plain"] { try await kernel.enable(id) }
        let who = Principal(id: "ann", authenticatedBy: "test")
        func decide(_ resource: String) -> (AuthDecision, String?) {
            kernel.access.authorize(who, action: "GET", resource: resource, snapshot: kernel.registry.snapshot)
        }
        #expect(decide("/ext/plain/ping").0 == .abstain)
        #expect(decide("/ext/plain/secret").0 == .deny)

        // A new build that fails to activate, found at the next start: the host does not serve without its rules.
        await kernel.shutdown()
        try install(broken, into: f.plugins + "/warden", as: "libwarden.so")
        kernel = try f.kernel()
        await kernel.start()
        #expect(kernel.activePlugins == ["plain"])
        let (decision, reason) = decide("/ext/plain/ping")
        #expect(decision == .deny)
        #expect(reason?.hasPrefix("guard \"warden\" is not running (") == true && reason?.hasSuffix("): every request is denied until it runs again or the operator disables it") == true,
                "\(reason ?? "")")
        #expect(f.log.lines.contains { $0.contains("[warden] a guard (it has auth hooks) is not running (plugin \"warden\" (") && $0.contains("activate returned KEEL_ERR_UNAVAILABLE: cannot reach the frobnicator)") && $0.contains("every request is denied (fail closed)") },
                "\(f.log.lines.filter { $0.contains("guard") })")
        // A shutdown deactivates everything: no guard goes missing then.
        #expect(!f.log.lines.contains { $0.contains("is not running (status enabled)") })

        // The good build back: it runs, and the host opens.
        try install(kept, into: f.plugins + "/warden", as: "libwarden.so")
        try await kernel.execute(.enable(id: "warden", tenant: nil))
        #expect(decide("/ext/plain/ping").0 == .abstain)
        #expect(decide("/ext/plain/secret").0 == .deny)
        #expect(f.log.lines.contains { $0.contains("every guard runs again") })

        // The operator's disable is a choice: the host serves without it.
        try await kernel.execute(.disable(id: "warden", tenant: nil, cascade: false))
        #expect(decide("/ext/plain/secret").0 == .abstain)
        // And an enable that fails closes it again, until the operator disables it.
        try install(broken, into: f.plugins + "/warden", as: "libwarden.so")
        await #expect(throws: KernelError.self) { try await kernel.execute(.enable(id: "warden", tenant: nil)) }
        #expect(decide("/ext/plain/ping").0 == .deny)
        try await kernel.execute(.disable(id: "warden", tenant: nil, cascade: false))
        #expect(decide("/ext/plain/ping").0 == .abstain)
        await kernel.shutdown()

        // Quarantined (a crash in its activate took the host down: what `quarantineAfterCrash` writes): closed, and
        // the operator's disable opens it. Safe mode, where nothing runs by the operator's choice, is never closed.
        try kernel.state.setEnabled("warden", false, status: .failed, reason: "quarantined: the host went down while activating")
        // The checksum of the library in the folder (a different one would be a new build, which lifts it).
        let checksum = try #require(try kernel.state.loads(for: "warden", limit: 100).last?.checksum)
        try kernel.state.setQuarantine("warden", checksum: checksum)
        kernel = try f.kernel()
        await kernel.start(safeMode: true)
        try await kernel.execute(.grants(id: "plain", grant: ["menus"], revoke: []))
        #expect(decide("/ext/plain/ping").0 == .abstain)
        await kernel.shutdown()
        kernel = try f.kernel()
        await kernel.start()
        #expect(decide("/ext/plain/ping").1?.hasPrefix("guard \"warden\" is not running (quarantined: ") == true)
        // Asked for another tenant's plugins only, a missing guard that serves no tenant of the caller's does not deny.
        #expect(kernel.registry.snapshot.authorize(who, action: "GET", resource: "/x", include: { $0 != "warden" }).0 == .abstain)
        // Nor a caller the admin API admits with the admin token (the operator's way to act).
        #expect(kernel.access.authorize(who, action: "GET", resource: "/api/v1/plugins", snapshot: kernel.registry.snapshot,
                                        admittedWhileClosed: true).0 == .abstain)
        try await kernel.execute(.disable(id: "warden", tenant: nil, cascade: false))
        #expect(decide("/ext/plain/ping").0 == .abstain)
        await kernel.shutdown()
    }

    @Test("failures of a generation a reload replaced, reported as it drains, do not disable its successor")
    func oldGenerationFailures() async throws {
        let f = KernelFixture()
        let gate = TestEnvironment.makeTemporaryDirectory("gate") + "/open"
        try f.fixtureBundle("flaky", defines: ["HANDLER_FAILS", "FAIL_GATE=\"\(gate)\""])
        let kernel = try f.kernel(budgets: CallBudgets(handler: 30, hook: 0.05, failureThreshold: 5))
        await kernel.start()
        try await kernel.enable("flaky")
        func activated() throws -> Int? { try kernel.state.loads(for: "flaky", limit: 100).last { $0.outcome == "activated" }?.generation }
        let before = try #require(try activated())
        // Five calls of the first generation in its handler (each fails once the gate opens), then the reload; the
        // gate opens after it: they fail as the old generation drains, and the fifth makes the report.
        let first = kernel.registry.snapshot
        let finished = Atomic<Int>(0)
        /// Five calls at once, each on a thread of its own (never blocking Swift's pool, which the suite shares).
        func callFive(_ snapshot: @escaping @Sendable () -> Snapshot) {
            for _ in 0..<5 {
                Thread {
                    if let match = snapshot().route(method: "GET", path: "/ext/flaky/ping") {
                        _ = match.route.handler.handle(PluginRequest(method: "GET", path: "/ext/flaky/ping", routePath: match.routePath))
                    }
                    finished.add(1, ordering: .relaxed)
                }.start()
            }
        }
        callFive { first }
        let entered = { (try? FileManager.default.attributesOfItem(atPath: gate + ".entered")[.size] as? Int) ?? 0 }
        #expect(await waitFor(20) { entered() == 5 }, "\(entered()) calls in the handler")
        try await kernel.reload("flaky")
        #expect(FileManager.default.createFile(atPath: gate, contents: Data()))
        #expect(await waitFor(20) { finished.load(ordering: .relaxed) == 5 })
        #expect(await waitFor(20) { f.log.lines.contains { $0.contains("[flaky] a failure report from generation \(before), which generation \(before + 1) replaced, changes nothing: 5 calls in a row failed") } })
        let after = try await kernel.plugin("flaky")
        #expect(after.status == .enabled && after.enabled, "\(after.reason ?? "")")
        #expect(try activated() == before + 1)
        // The successor's own five failures still take it down.
        callFive { kernel.registry.snapshot }
        #expect(await waitFor(20) { (try? await kernel.plugin("flaky").status) == .failed })
        await kernel.shutdown()
    }

    @Test("kill -9 at random moments during 1,000 enable/disable operations: the state file stays sound and current")
    func killNine() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("toggle")
        let total = 1000, rounds = 3
        var done = 0
        var lastAcked: Bool? = nil
        for round in 0..<rounds {
            let server = try ServerProcess(plugins: f.plugins, state: f.state)
            let killAt = round == rounds - 1 ? total - done : Int.random(in: 150...(total / rounds))
            var inFlight: Bool? = nil
            for i in 0..<killAt {
                let target = (done + i) % 2 == 0
                if i == killAt - 1 && round < rounds - 1 {
                    // The last operation of the round is in flight when the host is killed.
                    inFlight = target
                    let base = server.base
                    let request = Task.detached { () -> Int? in
                        var r = URLRequest(url: URL(string: base + "/api/v1/plugins/toggle/" + (target ? "enable" : "disable"))!)
                        r.httpMethod = "POST"
                        r.setValue("Bearer \(ServerProcess.token)", forHTTPHeaderField: "Authorization")
                        return try? await (URLSession.shared.data(for: r).1 as? HTTPURLResponse)?.statusCode
                    }
                    usleep(UInt32.random(in: 0...8000))
                    kill(server.process.processIdentifier, SIGKILL)
                    if await request.value == 200 { lastAcked = target; inFlight = nil }
                } else {
                    let r = try await server.request("POST", "/api/v1/plugins/toggle/" + (target ? "enable" : "disable"), admin: true)
                    #expect(r.status == 200, "\(r.text)")
                    lastAcked = target
                }
            }
            done += killAt
            if round < rounds - 1 {
                server.process.waitUntilExit()
                #expect(server.process.terminationReason == .uncaughtSignal)
            } else {
                #expect(server.stop() == 0)
            }
            let state = try StateStore(path: f.state)
            #expect(try state.integrityCheck() == "ok")
            let stored = try #require(try state.plugin("toggle")).enabled
            if inFlight == nil {
                // Everything sent was acknowledged: the file holds the last acknowledged value.
                #expect(stored == lastAcked, "round \(round): stored \(stored), acknowledged \(String(describing: lastAcked))")
            }
            // Otherwise the kill landed before or after the unacknowledged toggle committed: both values are sound
            // (the integrity check above is what must hold), and the next round continues from the stored one.
            lastAcked = stored
        }
        #expect(done == total)
    }

    @Test("a route prefix outside /ext/<id>/ needs the capability and the operator's grant; the host's own paths never")
    func foreignPrefix() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("legacy", defines: ["ROUTE_PATH=\"=/legacy/items/:id\""],
                            capabilities: ["routes", "route-prefix:/legacy"])
        try f.fixtureBundle("copycat", defines: ["ROUTE_PATH=\"=/legacy/items/:n\""], capabilities: ["routes", "route-prefix:/legacy"])
        try f.fixtureBundle("sneaky", defines: ["ROUTE_PATH=\"=/other/x\""], capabilities: ["routes", "route-prefix:/legacy"])
        try f.fixtureBundle("greedy-api", capabilities: ["routes", "route-prefix:/api/v2"])
        let kernel = try f.kernel()
        await kernel.start()
        do { try await kernel.enable("legacy"); Issue.record("served a foreign prefix without a grant") } catch {
            #expect(error.description.contains("outside the plugin's own /ext/legacy/ and no granted route prefix covers it (route-prefix:/legacy "
                                               + "is asked for but not granted; grant it with `keel plugins grant legacy route-prefix:/legacy`)"),
                    "\(error)")
        }
        try await kernel.setGrants("legacy", grant: ["route-prefix:/legacy"])
        try await kernel.enable("legacy")
        #expect(get(kernel, "/legacy/items/7")?.1.contains("id=7") == true)
        #expect(try await kernel.plugin("legacy").routes == ["GET /legacy/items/:id"])
        #expect(try await kernel.plugin("legacy").grants.contains("route-prefix:/legacy"))

        try await kernel.setGrants("copycat", grant: ["route-prefix:/legacy"])
        do { try await kernel.enable("copycat"); Issue.record("two plugins on one route") } catch {
            #expect(error.description.contains("of plugin \"copycat\" is already registered by plugin \"legacy\""))
        }
        try await kernel.setGrants("sneaky", grant: ["route-prefix:/legacy"])
        do { try await kernel.enable("sneaky"); Issue.record("served outside its granted prefix") } catch {
            #expect(error.description.contains("route GET =/other/x: outside the plugin's own /ext/sneaky/ and no granted route prefix covers it "
                                               + "(ask for route-prefix:/other under capabilities: in plugin.yaml and have it granted)"), "\(error)")
        }
        #expect(try await kernel.plugin("greedy-api").reason?.contains("\"/api/v2\" is inside the host's own /api") == true)
        await kernel.shutdown()
    }
}
