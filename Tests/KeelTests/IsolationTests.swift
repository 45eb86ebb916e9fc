// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Keel
import KeelLoader
import Testing

/// `isolation: process`: the crashing plugin of the crash attribution tests, run in a `keel worker` child of a real
/// `keel serve`. Its crashes and hangs fail only the requests in flight in the worker; the host and its other plugins
/// go on serving.
@Suite("process isolation", .scheduled)
struct IsolationTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    /// The crash attribution tests' two plugins ("crasher" with a crashing route and authorize hook, "fine"), both
    /// enabled; the crasher is put in a worker with the CLI (`keel plugins isolate`), unless `manifestAsks`, in which
    /// case its plugin.yaml asks for `isolation: process`.
    func stage(manifestAsks: Bool = false) throws -> KernelFixture {
        let f = KernelFixture()
        let crasher = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/crasher.c", name: "crasher")
        var manifest = TestEnvironment.manifest(id: "crasher", library: "libcrasher.so", capabilities: ["routes", "authorize"])
        if manifestAsks { manifest += "isolation: process\n" }
        try TestEnvironment.makeBundle(in: f.plugins, folder: "crasher", manifest: manifest, library: crasher)
        try f.fixtureBundle("fine", defines: ["ROUTE_PATH=\"/items/:id\""])
        try TestEnvironment.grantSensitive("crasher", plugins: f.plugins, state: f.state)
        for id in ["crasher", "fine"] {
            let r = try TestEnvironment.run(keel, ["plugins", "enable", id, "--plugins", f.plugins, "--state", f.state])
            guard r.status == 0 else { throw TestFailure("enable \(id): \(r.stderr)") }
        }
        if !manifestAsks {
            let r = try TestEnvironment.run(keel, ["plugins", "isolate", "crasher", "process", "--plugins", f.plugins, "--state", f.state])
            guard r.status == 0, r.stdout.contains("crasher runs in a worker process") else { throw TestFailure("isolate: \(r.stdout) \(r.stderr)") }
        }
        return f
    }

    func info(_ server: ServerProcess, _ id: String) async throws -> [String: Any] {
        try await server.request("GET", "/api/v1/plugins/\(id)", admin: true).json as? [String: Any] ?? [:]
    }

    /// Waits (up to 20 s) until the crasher's worker was restarted `count` times. Its authorize hook is in every
    /// request's chain and has only its own budget (250 ms) while the worker restarts, a deny after that: a test
    /// that expects the next request to be decided by the hook sends it once the worker is back.
    func waitForRestarts(_ server: ServerProcess, _ count: Int) async throws {
        let deadline = Date().addingTimeInterval(20)
        while try await info(server, "crasher")["workerRestarts"] as? Int ?? 0 < count, Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test("a worker of another keel build (the executable replaced while the server runs) ends at once, saying so, before it reads a frame")
    func workerOfAnotherBuild() throws {
        for (given, says) in [("1", "the host 1"), (nil, "the host none (an earlier keel)")] {
            let r = try TestEnvironment.run("/bin/sh", ["-c", given == nil ? #"unset KEEL_WORKER_WIRE; exec "$0" worker < /dev/null"#
                                                             : #"KEEL_WORKER_WIRE=1 exec "$0" worker < /dev/null"#, keel])
            #expect(r.status == 78, "\(r.status) \(r.stderr)")
            #expect(r.stderr == "keel worker: speaks worker protocol 2, \(says): the keel executable was replaced after the server started; restart the server\n",
                    "\(r.stderr)")
        }
    }

    @Test("a keel file replaced while the server runs (a package upgrade): a restarted worker and a probe are still the server's own build")
    func replacedExecutable() async throws {
        let f = try stage()
        let folder = NSTemporaryDirectory() + "keel-replaced-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let copy = folder + "/keel"
        try FileManager.default.copyItem(atPath: keel, toPath: copy)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: CrashAttributionTests.environment, executable: copy)
        defer { server.stop() }
        func comm(_ pid: Int?) -> String {
            ((try? String(contentsOfFile: "/proc/\(pid ?? -1)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
        }
        func exe(_ pid: Int?) -> String { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid ?? -1)/exe")) ?? "" }
        #expect(try await server.request("GET", "/ext/crasher/items/1").status == 200)
        let first = try await info(server, "crasher")["workerPID"] as? Int
        // Started from /proc/self/exe, which the kernel would call `exe`: the worker names itself.
        #expect(comm(first) == "keel-worker")
        #expect(exe(first) == copy)
        // What a package manager does: a new file renamed over the name (here a program that is no keel at all).
        let next = folder + "/keel.new"
        try "#!/bin/sh\necho 'not the server build' >&2\nexit 3\n".write(toFile: next, atomically: false, encoding: .utf8)
        #expect(chmod(next, 0o755) == 0 && rename(next, copy) == 0)
        #expect(try await server.request("GET", "/ext/crasher/items/segv").status == 502)
        try await waitForRestarts(server, 1)
        #expect(try await server.request("GET", "/ext/crasher/items/2").status == 200)
        let second = try await info(server, "crasher")["workerPID"] as? Int
        #expect(second != nil && second != first)
        #expect(comm(second) == "keel-worker")
        // The server's own file, which only the running processes still hold.
        #expect(exe(second) == copy + " (deleted)", "\(exe(second))")
        // A new plugin's build is probed in a child before the server loads it: the server's build too.
        try f.fixtureBundle("later", defines: ["ROUTE_PATH=\"/items/:id\""])
        var enabled = 0
        let deadline = Date().addingTimeInterval(10)
        repeat {
            enabled = try await server.request("POST", "/api/v1/plugins/later/enable", admin: true).status
            if enabled == 200 { break }
            try await Task.sleep(for: .milliseconds(100))
        } while Date() < deadline
        #expect(enabled == 200, "\(server.errors.value.suffix(1500))")
        #expect(try await server.request("GET", "/ext/later/items/1").status == 200)
        #expect(!server.errors.value.contains("not the server build"), "\(server.errors.value.suffix(1500))")
    }

    @Test("a worker inherits none of the host's secrets: no KEEL_* variable (the admin token), nothing named like a password")
    func workerEnvironmentScrubbed() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("nosy", defines: ["ENV_ECHO"], extra: "isolation: process\n")
        try TestEnvironment.grantSensitive("nosy", plugins: f.plugins, state: f.state)
        let r = try TestEnvironment.run(keel, ["plugins", "enable", "nosy", "--plugins", f.plugins, "--state", f.state])
        #expect(r.status == 0, "\(r.stderr)")
        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: ["PGPASSWORD": "hunter2"])
        defer { server.stop() }
        #expect(try await info(server, "nosy")["isolation"] as? String == "process")
        let answer = try await server.request("GET", "/ext/nosy/ping")
        #expect(answer.status == 200 && answer.text.hasSuffix(" env=-,-,path"), "\(answer.status) \(answer.text)")
    }

    @Test("100 requests of which every tenth crashes the worker: 90 successes, 10 clean 502s, the host never dies")
    func crashesFailOnlyTheirRequests() async throws {
        let f = try stage()
        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: CrashAttributionTests.environment)
        defer { server.stop() }
        let before = try await info(server, "crasher")
        #expect(before["isolation"] as? String == "process")
        let firstWorker = before["workerPID"] as? Int
        #expect(firstWorker != nil && firstWorker != Int(server.process.processIdentifier))

        var ok = 0, crashed = 0, other: [String] = []
        let modes = ["segv", "abort", "fpe"]
        for i in 1...100 {
            let path = i % 10 == 0 ? "/ext/crasher/items/\(modes[(i / 10) % 3])" : "/ext/crasher/items/\(i)"
            let reply = try await server.request("GET", path)
            let code = ((reply.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String
            if reply.status == 200, reply.text.hasPrefix("item \(i) ") { ok += 1 } else if reply.status == 502, code == "plugin-crashed" {
                crashed += 1
            } else {
                other.append("\(path): \(reply.status) \(reply.text)")
            }
        }
        #expect(ok == 90 && crashed == 10, "\(other)")
        #expect(server.process.isRunning)
        // The host's other plugin and its own API never noticed.
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
        let after = try await info(server, "crasher")
        #expect(after["status"] as? String == "enabled")
        #expect(after["workerRestarts"] as? Int == 10)
        #expect(after["workerPID"] as? Int != firstWorker)
        #expect(server.errors.value.contains("crashed with SIGSEGV; restarting"), "\(server.errors.value.suffix(2000))")
        // The CLI's list reads the server's live view: a restart is a change of its own (the view is not refreshed
        // on a timer), so the new worker shows there within a second.
        var listed: [String: Any] = [:]
        let deadline = Date().addingTimeInterval(1)
        repeat {
            let r = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "list", "--json", "--plugins", f.plugins, "--state", f.state])
            listed = ((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [[String: Any]])?.first { $0["id"] as? String == "crasher" } ?? [:]
            if listed["workerRestarts"] as? Int == 10 { break }
            try await Task.sleep(for: .milliseconds(100))
        } while Date() < deadline
        #expect(listed["workerRestarts"] as? Int == 10 && listed["workerPID"] as? Int == after["workerPID"] as? Int, "\(listed)")
    }

    @Test("a crash in an authorize hook in a worker denies that request only (fails closed); the next one is decided again")
    func crashingHookDenies() async throws {
        let f = try stage(manifestAsks: true)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: CrashAttributionTests.environment)
        defer { server.stop() }
        #expect(try await info(server, "crasher")["isolation"] as? String == "process")
        #expect(try await server.request("GET", "/ext/fine/items/authz-abort").status == 403)
        #expect(server.process.isRunning)
        try await waitForRestarts(server, 1)
        let next = try await server.request("GET", "/ext/fine/items/2")
        #expect(next.status == 200, "\(next.status) \(next.text) \(server.errors.value.suffix(1500))")
        let third = try await server.request("GET", "/ext/crasher/items/3")
        #expect(third.text.hasPrefix("item 3"), "\(third.status) \(third.text)")
    }

    @Test("a handler that never returns is answered 504 after the worker's call budget, and its worker is replaced")
    func hangingHandlerIsKilled() async throws {
        let f = try stage()
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--worker-call-timeout", "1"],
                                       environment: CrashAttributionTests.environment)
        defer { server.stop() }
        let worker = try await info(server, "crasher")["workerPID"] as? Int
        let hung = try await server.request("GET", "/ext/crasher/items/hang")
        #expect(hung.status == 504)
        #expect(((hung.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String == "plugin-timeout")
        if let worker {
            // Killed at once; gone (reaped by the host) a moment later.
            let deadline = Date().addingTimeInterval(10)
            while kill(pid_t(worker), 0) == 0 && Date() < deadline { usleep(10_000) }
            #expect(kill(pid_t(worker), 0) != 0, "the hung worker still runs")
        }
        // Sent at once, it waits for the next worker: never to the one being killed (it failed so under a loaded suite).
        let after = try await server.request("GET", "/ext/crasher/items/4")
        #expect(after.text.hasPrefix("item 4"), "\(after.status) \(after.text)")
        #expect(try await info(server, "crasher")["workerPID"] as? Int != worker)
    }

    @Test("a request that waits for its hook's worker to restart is decided by the hook: the restart does not count toward the hook budget")
    func restartIsNotTheHooksTime() async throws {
        let f = try stage()
        // Each activation of the crasher takes 600 ms, over the 250 ms hook budget.
        let server = try ServerProcess(plugins: f.plugins, state: f.state,
                                       environment: CrashAttributionTests.environment.merging(["CRASHER_SLOW_ACTIVATE_MS": "600"]) { $1 })
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/crasher/items/segv").status == 502)
        // At once: the worker is being restarted; the authorize hook's call waits for it, then abstains in time.
        let next = try await server.request("GET", "/ext/crasher/items/7")
        #expect(next.status == 200 && next.text.hasPrefix("item 7 "), "\(next.status) \(next.text) \(server.errors.value.suffix(1500))")
    }

    /// Waits (up to 30 s) until the server's log has `text`.
    func waitForLog(_ server: ServerProcess, _ text: String) async throws {
        let deadline = Date().addingTimeInterval(30)
        while !server.errors.value.contains(text), !server.output.value.contains(text), Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// After its worker was given up, the crasher (which has an authorize hook) is not disabled automatically: its
    /// hook cannot be asked while no worker runs, so every request is denied (fail closed), the admin API's too; the
    /// plugin stays enabled.
    func expectGivenUpButGuarding(_ server: ServerProcess, _ f: KernelFixture, reason: String) async throws {
        try await waitForLog(server, "not disabled automatically although " + reason)
        let log = server.errors.value + server.output.value
        #expect(log.contains("not disabled automatically although " + reason), "\(log.suffix(2000))")
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 403)
        #expect(try await server.request("GET", "/api/v1/plugins/crasher", admin: true).status == 403)
        let list = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "list", "--json", "--plugins", f.plugins, "--state", f.state])
        let plugins = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]
        #expect(plugins?.first { $0["id"] as? String == "crasher" }?["enabled"] as? Bool == true, "\(list.stdout)")
    }

    @Test("a worker that crashes too often is given up; its plugin, which has an authorize hook, stays, denies, and serves again once a worker starts")
    func crashLoopFailsThePlugin() async throws {
        let f = try stage()
        // A window of 10 minutes, not the default minute: on a loaded machine three crashes and two restarts can take
        // longer than a minute (the test once took 115 s in CI), and the window is not what this test is about.
        // The workers started after the third crash refuse to activate while this file exists: the host's state
        // while no worker runs is looked at without racing the next attempt.
        let refuse = f.state + ".refuse-activation"
        let server = try ServerProcess(plugins: f.plugins, state: f.state,
                                       extraArguments: ["--worker-crash-limit", "3", "--worker-crash-window", "600"],
                                       environment: CrashAttributionTests.environment.merging(["CRASHER_REFUSE_ACTIVATE_IF": refuse]) { $1 })
        defer { server.stop() }
        for crash in 1...3 {
            if crash == 3 { try Data().write(to: URL(fileURLWithPath: refuse)) }
            let reply = try await server.request("GET", "/ext/crasher/items/segv")
            #expect(reply.status == 502, "\(reply.status) \(reply.text)")
            if crash < 3 { try await waitForRestarts(server, crash) }
        }
        try await expectGivenUpButGuarding(server, f, reason: "its worker process crashed 3 times within 600 s")
        // The worker is tried again at the longest back-off (5 s): once it can start, the guard comes back by itself,
        // and with it the host.
        try FileManager.default.removeItem(atPath: refuse)
        let deadline = Date().addingTimeInterval(30)
        var status = 0
        repeat {
            try await Task.sleep(for: .milliseconds(200))
            status = try await server.request("GET", "/ext/fine/items/1").status
        } while status != 200 && Date() < deadline
        #expect(status == 200, "\(server.errors.value.suffix(1500))")
        #expect(try await server.request("GET", "/ext/crasher/items/5").status == 200)
    }

    @Test("a worker that cannot start again is given up after the crash limit in a row, however far apart the attempts")
    func workerThatCannotRestartFailsThePlugin() async throws {
        let f = try stage()
        // A window too short for two crashes to share: the windowed count never reaches the limit. Before the count
        // in a row, such a worker was restarted for ever (at 5 s apart once the back-off is at its maximum, 20
        // crashes never fit in the default minute), each attempt a frame deeper on the restarting thread's stack.
        let refuse = f.state + ".refuse-activation"
        let server = try ServerProcess(plugins: f.plugins, state: f.state,
                                       extraArguments: ["--worker-crash-limit", "3", "--worker-crash-window", "0.001"],
                                       environment: CrashAttributionTests.environment.merging(["CRASHER_REFUSE_ACTIVATE_IF": refuse]) { $1 })
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/crasher/items/1").status == 200)
        try Data().write(to: URL(fileURLWithPath: refuse))
        #expect(try await server.request("GET", "/ext/crasher/items/segv").status == 502)
        try await expectGivenUpButGuarding(server, f, reason: "its worker could not be restarted: it crashed 3 times in a row without answering a call")
        #expect((server.errors.value + server.output.value).contains("KEEL_ERR_INTERNAL"))
        // This worker never starts again: the host stays closed until the operator disables the plugin (the CLI
        // reaches the running server through its state, without the auth chain).
        try await Task.sleep(for: .seconds(6))
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 403)
        let disable = try TestEnvironment.run(TestEnvironment.binPath + "/keel",
                                              ["plugins", "disable", "crasher", "--plugins", f.plugins, "--state", f.state])
        #expect(disable.status == 0, "\(disable)")
        #expect(try await server.request("GET", "/ext/fine/items/1").status == 200)
        #expect(try await server.request("GET", "/ext/crasher/items/5").status == 404)
    }

    @Test("the admin API moves a plugin between the host and a worker; a bad value is refused")
    func adminAPIMovesAPlugin() async throws {
        let f = try stage(manifestAsks: false)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: CrashAttributionTests.environment)
        defer { server.stop() }
        let back = try await server.request("PUT", "/api/v1/plugins/crasher/isolation", admin: true,
                                            body: Data(#"{"isolation":"in-process"}"#.utf8))
        #expect(back.status == 200, "\(back.text)")
        let info = back.json as? [String: Any] ?? [:]
        #expect(info["isolation"] as? String == "in-process")
        #expect(info["workerPID"] == nil)
        #expect(try await server.request("GET", "/ext/crasher/items/6").text.hasPrefix("item 6"))
        let bad = try await server.request("PUT", "/api/v1/plugins/crasher/isolation", admin: true,
                                           body: Data(#"{"isolation":"sandbox"}"#.utf8))
        #expect(bad.status == 400)
        let anonymous = try await server.request("PUT", "/api/v1/plugins/crasher/isolation", body: Data(#"{"isolation":"process"}"#.utf8))
        #expect(anonymous.status == 401)
        let moved = try await server.request("PUT", "/api/v1/plugins/crasher/isolation", admin: true,
                                             body: Data(#"{"isolation":"process"}"#.utf8))
        #expect((moved.json as? [String: Any])?["workerPID"] as? Int != nil, "\(moved.text)")
        // The host survives what would have killed it in-process. Its authorize hook is in every request's chain, and
        // requests that reach it while its worker restarts wait at most the hook's budget (a deny after that): the
        // next request is sent once the worker is back.
        #expect(try await server.request("GET", "/ext/crasher/items/segv").status == 502)
        try await waitForRestarts(server, 1)
        let after = try await server.request("GET", "/ext/crasher/items/7")
        #expect(after.text.hasPrefix("item 7"), "\(after.status) \(after.text)")
        // "manifest", as `keel plugins isolate ID manifest` says it: back to what plugin.yaml asks (in-process here).
        let manifest = try await server.request("PUT", "/api/v1/plugins/crasher/isolation", admin: true,
                                                body: Data(#"{"isolation":"manifest"}"#.utf8))
        #expect(manifest.status == 200 && (manifest.json as? [String: Any])?["isolation"] as? String == "in-process", "\(manifest.text)")
    }

    @Test("commands of a plugin in a worker: every type crosses, errors keep their codes, the host checks arguments first")
    func commandsInAWorker() async throws {
        let c = CommandsFixture()
        try c.calc(extra: "isolation: process")
        let kernel = try c.f.kernel(workerExecutable: keel)
        await kernel.start()
        try await kernel.enable("calc")
        #expect(try await kernel.plugin("calc").workerPID != nil)
        #expect(run(kernel, "add", [.text("2"), .text("40")]) == "42")
        #expect(run(kernel, "neg32", [.text("7")]) == "-7")
        #expect(run(kernel, "half", [.text("5")]) == "2.5")
        #expect(run(kernel, "not", [.bool(false)]) == "true")
        #expect(run(kernel, "len", [.string(Data([0, 1, 2, 255]).base64EncodedString())]) == "4")
        #expect(run(kernel, "nothing", []) == "null")
        #expect(run(kernel, "div", [.int(84), .int(2)]) == "{\"quotient\":42}")
        #expect(run(kernel, "greet", [.string("Ada ✓")]) == "\"hello, Ada ✓\"")
        #expect(run(kernel, "div", [.int(1), .int(0)]).hasPrefix("command-failed: calc.div returned KEEL_ERR_INVALID_ARGUMENT"))
        #expect(run(kernel, "add", [.text("two"), .text("40")]) == "bad-argument: argument 1 of calc.add: \"two\" is not an i64")
        await kernel.shutdown()
    }

    @Test("keel plugins isolate says where a plugin runs, and that one not enabled runs there once enabled")
    func isolateSays() throws {
        let f = KernelFixture()
        try f.fixtureBundle("later", defines: ["ROUTE_PATH=\"/items/:id\""])
        let at = ["--plugins", f.plugins, "--state", f.state]
        let r = try TestEnvironment.run(keel, ["plugins", "isolate", "later", "process"] + at)
        #expect(r.status == 0 && r.stdout == "later will run, once enabled, in a worker process\n", "\(r.stdout) \(r.stderr)")
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "later"] + at).status == 0)
        let back = try TestEnvironment.run(keel, ["plugins", "isolate", "later", "manifest"] + at)
        #expect(back.stdout == "later runs where its manifest says (in-process)\n", "\(back.stdout) \(back.stderr)")
        // Enabled but failed: it runs nowhere yet, and is said so, with why.
        try f.fixtureBundle("flop", defines: ["ACTIVATE_FAILS"])
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "flop"] + at).status == 1)
        let failed = try TestEnvironment.run(keel, ["plugins", "isolate", "flop", "process"] + at)
        #expect(failed.stdout.hasPrefix("flop will run, once it loads, in a worker process\n  (it failed: "), "\(failed.stdout) \(failed.stderr)")
        // A plugin.yaml that does not parse is what is wrong, not a library it lacks.
        try "id: [broken\n".write(toFile: f.plugins + "/later/plugin.yaml", atomically: true, encoding: .utf8)
        let broken = try TestEnvironment.run(keel, ["plugins", "isolate", "later", "process"] + at)
        #expect(broken.status == 1 && broken.stderr.contains("plugin.yaml") && !broken.stderr.contains("has no library"), "\(broken.stderr)")
    }

    @Test("a plugin whose activate fails in its worker is failed with the plugin's reason, named once (not the worker's words wrapped in the host's)")
    func activationFailureInWorker() throws {
        let f = KernelFixture()
        try f.fixtureBundle("fails", defines: ["ACTIVATE_FAILS"], extra: "isolation: process")
        let r = try TestEnvironment.run(keel, ["plugins", "enable", "fails", "--plugins", f.plugins, "--state", f.state])
        #expect(r.status == 1)
        #expect(r.stderr.components(separatedBy: "plugin \"fails\"").count - 1 == 1, "\(r.stderr)")
        #expect(r.stderr.components(separatedBy: "libfails.so").count - 1 == 1, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        let list = try TestEnvironment.run(keel, ["plugins", "list", "--json", "--plugins", f.plugins, "--state", f.state])
        let plugins = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]
        let reason = plugins?.first { $0["id"] as? String == "fails" }?["reason"] as? String ?? ""
        #expect(reason.components(separatedBy: "plugin \"fails\"").count - 1 <= 1 && !reason.isEmpty, "\(reason)")
    }

    @Test("a host with no worker executable refuses isolation: process with a reason that says so")
    func noWorkerExecutable() async throws {
        let c = CommandsFixture()
        try c.calc(extra: "isolation: process")
        let kernel = try c.f.kernel()
        await kernel.start()
        await #expect(throws: KernelError.self) { try await kernel.enable("calc") }
        let info = try await kernel.plugin("calc")
        #expect(info.status == .failed)
        #expect(info.reason?.contains("asks for isolation: process, but this host has no worker executable") == true, "\(info.reason ?? "")")
        await kernel.shutdown()
    }
}
