// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState
import KeelStatePostgres
import Testing

extension PostgresBackedTests {
    /// `--state postgres://...`: the CLI's errors, and several `keel serve` hosts on one PostgreSQL state.
    @Suite("hosts sharing a PostgreSQL state", .serialized)
    struct SharedStateTests {
        var keel: String { TestEnvironment.binPath + "/keel" }

        /// Before, `--state postgres://...` was taken for a file path: a folder named `postgres:` appeared and a SQLite
        /// state was made in it, silently.
        @Test("a bad or unreachable postgres:// state is one line naming the URL without its password, and no folder")
        func badURLs() throws {
            let dir = TestEnvironment.makeTemporaryDirectory("pgcli")
            let common = ["--plugins", dir + "/plugins", "--host-dir", dir + "/host"]
            let unreachable = try TestEnvironment.run(keel, ["plugins", "list", "--state", "postgres://ann:secret@127.0.0.1:1/keel"] + common,
                                                      currentDirectory: dir)
            #expect(unreachable.status == 1)
            #expect(unreachable.stderr == "keel: error: postgres://ann@127.0.0.1:1/keel: cannot connect: Connection refused\n")
            let noDatabase = try TestEnvironment.run(keel, ["tenants", "list", "--state", "postgres://ann:secret@127.0.0.1:1"] + common,
                                                     currentDirectory: dir)
            #expect(noDatabase.status == 1)
            #expect(noDatabase.stderr == "keel: error: postgres://ann@127.0.0.1:1: the URL names no database (postgres://user@host:port/database)\n")
            let serve = try TestEnvironment.run(keel, ["serve", "--port", "0", "--state", "postgresql://127.0.0.1/keel"] + common,
                                                currentDirectory: dir)
            #expect(serve.status == 1)
            #expect(serve.stderr.hasSuffix("postgresql://127.0.0.1/keel: the URL names no user (postgres://user@host:port/database)\n"), "\(serve.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/postgres:"))
            #expect(!FileManager.default.fileExists(atPath: dir + "/postgresql:"))
            #expect(![unreachable, noDatabase, serve].contains { $0.stderr.contains("secret") })
            // An unreachable database stops `serve` before this host's folder is made (it was left behind until 2026-12-07).
            let unreached = try TestEnvironment.run(keel, ["serve", "--port", "0", "--state", "postgres://ann:secret@127.0.0.1:1/keel"] + common,
                                                    currentDirectory: dir)
            #expect(unreached.status == 1 && unreached.stderr == unreachable.stderr, "\(unreached.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/host"))
        }

        /// Three hosts on one database: enabling or disabling through any host, or through the CLI against the
        /// database, reaches every host; a host killed with SIGKILL and a PostgreSQL restart leave them converging.
        /// Convergence times are printed, not asserted, two ways: as this test saw them (from the change's answer to
        /// each host's /healthz showing it, asked over plain sockets from a thread of its own: other tests running
        /// beside this one block Swift's cooperative pool with synchronous waits, and a measurement made on it counted
        /// seconds that were this process's own), and as the hosts recorded them (from the change's commit to each
        /// host's own status row).
        @Test("three hosts converge on changes made through any host and the CLI, across a SIGKILL and a PostgreSQL restart",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set: no multi-host run"))
        func threeHostsConverge() async throws {
            let url = StateEngine.postgres.freshLocation()
            let root = TestEnvironment.makeTemporaryDirectory("hosts")
            try TestEnvironment.stageExamples(into: root + "/cli-plugins")
            let keel = self.keel
            let cli: @Sendable ([String]) throws -> (status: Int32, stdout: String, stderr: String) = { arguments in
                try TestEnvironment.run(keel, arguments + ["--plugins", root + "/cli-plugins", "--state", url, "--host-dir", root + "/cli"])
            }
            let grant = try cli(["plugins", "grant", "hello", "authenticate"])
            #expect(grant.status == 0, "\(grant.stderr)")
            func host(_ i: Int) throws -> ServerProcess {
                try? TestEnvironment.stageExamples(into: root + "/plugins\(i)")
                return try ServerProcess(plugins: root + "/plugins\(i)", state: url, extraArguments: ["--host-dir", root + "/host\(i)"])
            }
            var hosts = try (0..<3).map(host)
            defer { for h in hosts { h.stop() } }
            var samples: [Double] = [], recorded: [Double] = [], byChange: [String] = []
            let store = try PostgresStore.open(url)
            let stamp = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

            /// The hosts' own record of the last enable/disable of hello: from its commit to each host's status row
            /// (written just after the host's /healthz shows the change, so it is waited for, up to 2 s).
            func record(_ servers: [ServerProcess], active: Bool, _ what: String) async {
                let ids = servers.map { "\(ProcessInfo.processInfo.hostName)-\($0.process.processIdentifier)" }
                var found: [Double] = []
                for _ in 0..<100 {
                    let change = (try? store.events(for: "hello"))?.last { $0.kind == "enable" || $0.kind == "disable" }
                    let observed = (try? store.observations()) ?? [:]
                    found = ids.compactMap { id in
                        guard let change, let seen = observed[id]?["hello"], seen.status == (active ? "enabled" : "disabled"),
                              let from = try? stamp.parse(change.at), let to = try? stamp.parse(seen.changedAt), to >= from else { return nil }
                        return to.timeIntervalSince(from)
                    }
                    if found.count == ids.count { break }
                    try? await Task.sleep(for: .milliseconds(20))
                }
                recorded += found
                byChange.append("\(what): " + found.map { String(format: "%.0f", $0 * 1000) }.joined(separator: ", ") + " ms")
            }

            /// Makes `change` (true when it was taken), then waits (up to 20 s) until every host in `servers` shows hello
            /// active (or not); records each host's time from the change's answer. All of it on a thread of its own.
            func converge(_ servers: [ServerProcess], active: Bool, _ what: String,
                          after change: @escaping @Sendable () -> Bool = { true }) async {
                let ports = servers.map(\.port)
                let (taken, times) = await Self.onThread { () -> (Bool, [Double?]) in
                    let taken = change()
                    let start = ContinuousClock.now
                    return (taken, ports.map { port in
                        while ContinuousClock.now - start < .seconds(20) {
                            if let reply = try? RawHTTP.request(port: port, "GET", "/healthz"), Self.activeIDs(reply.text).contains("hello") == active {
                                let elapsed = ContinuousClock.now - start
                                return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                            }
                            usleep(5_000)
                        }
                        return nil
                    })
                }
                #expect(taken, "\(what): the change was not taken")
                for (server, time) in zip(servers, times) {
                    samples.append(time ?? 20)
                    #expect(time != nil, "\(what): the host on port \(server.port) did not converge: \(server.errors.value)")
                }
                await record(servers, active: active, what)
            }

            // Through host 0, then host 1, then the CLI against the database.
            let (h0, h1) = (hosts[0], hosts[1])
            await converge(hosts, active: true, "enable through host 0") { Self.post(h0, "enable") }
            await converge(hosts, active: false, "disable through host 1") { Self.post(h1, "disable") }
            await converge(hosts, active: true, "enable through the CLI") { (try? cli(["plugins", "enable", "hello"]))?.status == 0 }

            // The hosts table and its API: every host, with hello at its generation (once each reported: every second).
            var listed = try await hosts[2].request("GET", "/api/v1/hosts", admin: true)
            let reported = { (reply: ServerProcess.Reply) in
                let rows = reply.json as? [[String: Any]] ?? []
                return rows.count == 3 && rows.allSatisfy { (($0["plugins"] as? [String: Int])?["hello"] ?? 0) > 0 }
            }
            for _ in 0..<100 where !reported(listed) {
                try await Task.sleep(for: .milliseconds(100))
                listed = try await hosts[2].request("GET", "/api/v1/hosts", admin: true)
            }
            #expect(reported(listed), "\(listed.text)")
            let hostsList = try cli(["hosts", "list"])
            #expect(hostsList.status == 0 && hostsList.stdout.split(separator: "\n").count == 3, "\(hostsList.stdout)\(hostsList.stderr)")
            // A CLI run whose plugin folder lacks every bundle (another machine, a typo) observes for no host: until
            // 2026-12-07 `plugins list` recorded each plugin missing in the shared row, and the hosts' views said so.
            let elsewhere = try TestEnvironment.run(keel, ["plugins", "list", "--plugins", root + "/nowhere", "--state", url])
            #expect(elsewhere.status == 0, "\(elsewhere.stderr)")
            let shared = try store.plugin("hello")
            #expect(shared?.status == .enabled, "\(String(describing: shared))")
            let viewed = try await hosts[0].request("GET", "/api/v1/plugins/hello", admin: true)
            #expect((viewed.json as? [String: Any])?["status"] as? String == "enabled", "\(viewed.text)")

            // SIGKILL host 2 right after a change through host 0: the others converge; a host started again does too.
            let killed = hosts[2].process.processIdentifier
            await converge(Array(hosts[0...1]), active: false, "disable with host 2 killed") {
                defer { kill(killed, SIGKILL) }
                return Self.post(h0, "disable")
            }
            hosts[2].process.waitUntilExit()
            hosts[2] = try host(2)
            await converge([hosts[2]], active: false, "host 2 started again")
            // The killed host's row stays until it is forgotten (a day): listed as silent, not as if it ran.
            var silent = ""
            for _ in 0..<100 where !silent.contains("(silent for ") {
                silent = (try? cli(["hosts", "list"]))?.stdout ?? ""
                if !silent.contains("(silent for ") { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(silent.split(separator: "\n").filter { $0.contains("(silent for ") }.count == 1, "\(silent)")

            // PostgreSQL restarted (when it is the test server Scripts/postgres-test-server.sh runs): hosts reconnect.
            let script = TestEnvironment.repository.path + "/Scripts/postgres-test-server.sh"
            let running = try TestEnvironment.run("/bin/bash", [script, "url"])
            if let base = StateEngine.postgresURL, running.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == base {
                // system(3), not Process: Foundation's Process was seen never to reap a script whose child daemonises.
                #expect(system("/bin/bash '\(script)' restart") == 0)
                await converge(hosts, active: true, "enable after a PostgreSQL restart") {
                    for _ in 0..<100 {
                        if Self.post(h1, "enable") { return true }
                        usleep(100_000)
                    }
                    return false
                }
            } else {
                print("SharedStateTests: KEEL_TEST_POSTGRES is not the server of Scripts/postgres-test-server.sh; not restarting it")
            }

            print("SharedStateTests: as the hosts recorded it, per change: " + byChange.joined(separator: "; "))
            for (label, values) in [("as the test saw it", samples), ("as the hosts recorded it", recorded)] where !values.isEmpty {
                let sorted = values.sorted()
                let p50 = sorted[sorted.count / 2], p99 = sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
                print(String(format: "SharedStateTests: convergence %@ over %d host changes: p50 %.0f ms, p99 %.0f ms",
                             label, sorted.count, p50 * 1000, p99 * 1000))
            }
        }

        /// Before, a host that lacked the bundle of a plugin enabled on the shared state left it alone, silently: the
        /// operator saw it enabled, and the host did not serve it.
        @Test("a host lacking an enabled plugin installs it from the repository; one the repository lacks is that host's failure",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set: no multi-host run"))
        func missingBundlesComeFromTheRepository() async throws {
            let url = StateEngine.postgres.freshLocation()
            let root = TestEnvironment.makeTemporaryDirectory("hostsrepo")
            let cli = { (arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) in
                try TestEnvironment.run(self.keel, arguments + ["--plugins", root + "/cli-plugins", "--state", url, "--host-dir", root + "/cli"])
            }
            // A repository with hello, signed by a key the shared state trusts; greeter is not in it.
            try TestEnvironment.stageExamples(into: root + "/staging")
            try TestEnvironment.stageExamples(into: root + "/cli-plugins")
            try FileManager.default.createDirectory(atPath: root + "/repo", withIntermediateDirectories: true)
            let key = try TestEnvironment.run(keel, ["trust", "keygen", root + "/acme.key"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try TestEnvironment.run(keel, ["pack", root + "/staging/hello-c", "--out", root + "/repo", "--key", root + "/acme.key",
                                                   "--signer", "acme"]).status == 0)
            #expect(try TestEnvironment.run(keel, ["repo", "index", root + "/repo"]).status == 0)
            for arguments in [["trust", "add", "acme", key], ["repo", "add", "main", root + "/repo"],
                              ["plugins", "grant", "hello", "authenticate"], ["plugins", "grant", "greeter", "authorize"]] {
                let r = try cli(arguments)
                #expect(r.status == 0, "\(arguments): \(r.stderr)")
            }
            // Host a has both bundles; host b has none.
            try TestEnvironment.stageExamples(into: root + "/plugins-a")
            try FileManager.default.createDirectory(atPath: root + "/plugins-b", withIntermediateDirectories: true)
            let a = try ServerProcess(plugins: root + "/plugins-a", state: url, extraArguments: ["--host-dir", root + "/host-a"])
            let b = try ServerProcess(plugins: root + "/plugins-b", state: url, extraArguments: ["--host-dir", root + "/host-b"])
            defer { a.stop(); b.stop() }

            #expect(try await a.request("POST", "/api/v1/plugins/hello/enable", admin: true).status == 200)
            var served = 0
            for _ in 0..<200 where served != 200 {
                served = (try? await b.request("GET", "/ext/hello/greet/ada").status) ?? 0
                if served != 200 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(served == 200, "host b did not serve hello: \(b.errors.value)")
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: root + "/plugins-b")) ?? []).contains("hello"))
            // A host that joins with hello already enabled and its plugin folder not made yet: it starts (the check for a
            // mistyped --plugins is for a state of its own), makes the folder and installs hello from the repository.
            let c = try ServerProcess(plugins: root + "/plugins-c", state: url, extraArguments: ["--host-dir", root + "/host-c"])
            var servedOnC = 0
            for _ in 0..<200 where servedOnC != 200 {
                servedOnC = (try? await c.request("GET", "/ext/hello/greet/ada").status) ?? 0
                if servedOnC != 200 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(servedOnC == 200, "a new host without its folder did not serve hello: \(c.errors.value)")
            c.stop()

            // greeter: host a runs it; host b records why it cannot, in its own row, and keeps serving hello.
            #expect(try await a.request("POST", "/api/v1/plugins/greeter/enable", admin: true).status == 200)
            func observed(_ host: ServerProcess, _ plugin: String) async throws -> [String: Any]? {
                let rows = try await a.request("GET", "/api/v1/hosts", admin: true).json as? [[String: Any]] ?? []
                let row = rows.first { $0["address"] as? String == host.base }
                return (row?["observed"] as? [String: Any])?[plugin] as? [String: Any]
            }
            var failure: [String: Any]?
            for _ in 0..<200 where failure?["status"] as? String != "install-failed" {
                failure = try await observed(b, "greeter")
                try await Task.sleep(for: .milliseconds(50))
            }
            let reason = failure?["reason"] as? String ?? ""
            #expect(failure?["status"] as? String == "install-failed", "\(String(describing: failure)) \(b.errors.value)")
            #expect(reason.contains("greeter") && !reason.contains("\n"), "\(reason)")
            let greeterOnA = try await observed(a, "greeter")
            #expect(greeterOnA?["status"] as? String == "enabled" && (greeterOnA?["generation"] as? Int ?? 0) > 0, "\(String(describing: greeterOnA))")
            #expect(try await b.request("GET", "/ext/hello/greet/ada").status == 200)
            let listed = try cli(["hosts", "list"])
            #expect(listed.stdout.contains("  greeter: install-failed: "), "\(listed.stdout)")
        }

        /// Before, the queue had no host of its own: a reload the CLI queued for the server beside it could be claimed by
        /// any host of the state, which reloaded its own copy instead.
        @Test("two hosts starting at once on a new shared state: one admin token is shown, and no statement fails",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set: no multi-host run"))
        func simultaneousFirstStarts() async throws {
            let url = StateEngine.postgres.freshLocation()
            let root = TestEnvironment.makeTemporaryDirectory("twins")
            // Until 2026-12-07 both showed a token (the second one stored made the first never work), and one logged
            // `duplicate key value violates unique constraint "plugins_pkey"` for a bundle both found new.
            var hosts: [ChildProcess] = []
            defer { for h in hosts { h.stop() } }
            for i in 0..<2 {
                try TestEnvironment.stageExamples(into: root + "/plugins\(i)")
                hosts.append(try ChildProcess(keel, ["serve", "--port", "0", "--plugins", root + "/plugins\(i)", "--state", url, "--host-dir", root + "/host\(i)"],
                                              environment: ["KEEL_ADMIN_TOKEN": ""]))
            }
            for h in hosts { try await h.waitFor("listening on") }
            let outputs = hosts.map { $0.output.value + $0.errors.value }
            #expect(outputs.filter { $0.contains("admin token (shown once") }.count == 1, "\(outputs)")
            #expect(!outputs.contains { $0.contains("duplicate key") || $0.contains("transaction is aborted") }, "\(outputs)")
        }

        @Test("a reload the CLI queues for the server beside it runs on that host, never on another host of the state",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set: no multi-host run"))
        func queuedCommandsStayOnTheirHost() async throws {
            let url = StateEngine.postgres.freshLocation()
            let root = TestEnvironment.makeTemporaryDirectory("hostsqueue")
            for folder in ["/plugins-a", "/plugins-b", "/cli-plugins"] { try TestEnvironment.stageExamples(into: root + folder) }
            let grant = try TestEnvironment.run(keel, ["plugins", "grant", "hello", "authenticate", "--plugins", root + "/cli-plugins",
                                                       "--state", url, "--host-dir", root + "/cli"])
            #expect(grant.status == 0, "\(grant.stderr)")
            let a = try ServerProcess(plugins: root + "/plugins-a", state: url, extraArguments: ["--host-dir", root + "/host-a"])
            let b = try ServerProcess(plugins: root + "/plugins-b", state: url, extraArguments: ["--host-dir", root + "/host-b"])
            defer { a.stop(); b.stop() }
            /// The generation of hello `host` runs, as the hosts table shows it.
            func generation(_ host: ServerProcess) async -> Int? {
                let rows = (try? await a.request("GET", "/api/v1/hosts", admin: true).json as? [[String: Any]]) ?? []
                let observed = rows.first { $0["address"] as? String == host.base }?["observed"] as? [String: Any]
                return (observed?["hello"] as? [String: Any])?["generation"] as? Int
            }
            func settled(_ host: ServerProcess, at expected: @escaping (Int) -> Bool) async -> Int? {
                var seen: Int?
                for _ in 0..<200 {
                    seen = await generation(host)
                    if let seen, expected(seen) { return seen }
                    try? await Task.sleep(for: .milliseconds(50))
                }
                return seen
            }
            #expect(try await a.request("POST", "/api/v1/plugins/hello/enable", admin: true).status == 200)
            let startA = await settled(a) { $0 > 0 } ?? 0, startB = await settled(b) { $0 > 0 } ?? 0
            #expect(startA > 0 && startB > 0, "both hosts run it: \(a.errors.value) \(b.errors.value)")
            let reloads = 6
            for _ in 0..<reloads {
                let r = try TestEnvironment.run(keel, ["plugins", "reload", "hello", "--plugins", root + "/plugins-a", "--state", url,
                                                      "--host-dir", root + "/host-a"])
                #expect(r.status == 0, "\(r.stderr)")
            }
            #expect(await settled(a) { $0 >= startA + reloads } == startA + reloads, "every reload ran on host a")
            // Each CLI reload returned once a host had run it; host b's record would show by now. Watched a while more.
            for _ in 0..<10 {
                #expect(await generation(b) == startB, "host b reloaded none of them")
                try await Task.sleep(for: .milliseconds(100))
            }
            // The history and the audit trail say which host did what (neither did before 2026-12-08).
            let hosts = (try await a.request("GET", "/api/v1/hosts", admin: true).json as? [[String: Any]]) ?? []
            func hostID(_ server: ServerProcess) -> String {
                hosts.first { $0["address"] as? String == server.base }?["id"] as? String ?? "?"
            }
            let (idA, idB) = (hostID(a), hostID(b))
            let history = try TestEnvironment.run(keel, ["plugins", "history", "hello", "--state", url, "--host-dir", root + "/cli"])
            let activations = history.stdout.split(separator: "\n").filter { $0.contains("  activated") }
            #expect(activations.filter { $0.contains("  \(idA)  ") }.count >= reloads + 1, "\(history.stdout)")
            #expect(activations.filter { $0.contains("  \(idB)  ") }.count >= 1, "\(history.stdout)")
            let loads = try #require(try await a.request("GET", "/api/v1/plugins/hello/history", admin: true).json as? [[String: Any]])
            #expect(Set(loads.compactMap { $0["host"] as? String }) == [idA, idB], "\(loads)")
            let audit = try TestEnvironment.run(keel, ["audit", "--state", url, "--host-dir", root + "/cli"])
            #expect(audit.stdout.contains("admin-api admin@127.0.0.1 on \(idA)  enable hello  ok"), "\(audit.stdout)")
            // The CLI's grant ran on the state itself: no host's. Its reloads, queued for host a, ran there.
            #expect(audit.stdout.split(separator: "\n").contains { $0.contains("grants hello") && !$0.contains(" on ") }, "\(audit.stdout)")
            #expect(audit.stdout.components(separatedBy: "@local on \(idA)  reload hello  ok").count == reloads + 1, "\(audit.stdout)")
        }

        /// Before, `keel plugins disable` took the plugin down first and then failed to record it when PostgreSQL was
        /// away: the plugin stopped serving on that host while the shared state still said enabled.
        @Test("PostgreSQL going away: plugins keep serving, changes are refused naming the store, the host reconnects",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set: no PostgreSQL server to stop"))
        func postgresGoesAway() async throws {
            // A server of its own (Scripts/postgres-test-server.sh with its own record), so no other test loses its server.
            let root = TestEnvironment.makeTemporaryDirectory("pgdown")
            let server = "KEEL_PG_STATE='\(root)/server.path' /bin/bash '\(TestEnvironment.repository.path)/Scripts/postgres-test-server.sh'"
            // system(3), not Process: Foundation's Process was seen never to reap a script whose child daemonises.
            #expect(system("\(server) start > '\(root)/url' 2> '\(root)/start.log'") == 0)
            defer { _ = system("\(server) stop") }
            let url = try String(contentsOfFile: root + "/url", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            try TestEnvironment.stageExamples(into: root + "/plugins")
            let grant = try TestEnvironment.run(keel, ["plugins", "grant", "hello", "authenticate", "--plugins", root + "/plugins",
                                                       "--state", url, "--host-dir", root + "/cli"])
            #expect(grant.status == 0, "\(grant.stderr)")
            let host = try ServerProcess(plugins: root + "/plugins", state: url, extraArguments: ["--host-dir", root + "/host"])
            defer { host.stop() }
            #expect(try await host.request("POST", "/api/v1/plugins/hello/enable", admin: true).status == 200)
            #expect(try await host.request("GET", "/ext/hello/greet/ada").status == 200)

            #expect(system("\(server) down") == 0)
            #expect(try await host.request("GET", "/ext/hello/greet/ada").status == 200)
            let refused = try await host.request("POST", "/api/v1/plugins/hello/disable", admin: true)
            let message = ((refused.json as? [String: Any])?["error"] as? [String: Any])?["message"] as? String ?? ""
            #expect(refused.status == 503 && message.contains(url) && !message.contains("\n"), "\(refused.status) \(refused.text)")
            #expect(try await host.request("GET", "/ext/hello/greet/ada").status == 200)
            // Reads answer too, with a body saying why (the plugin list and the hosts were an empty 500 until 2026-12-07,
            // and the console's Plugins view broke): served from the host's view, or a 503 `state` naming the store.
            for path in ["/api/v1/plugins", "/api/v1/hosts", "/api/v1/plugins/hello", "/api/v1/audit"] {
                let read = try await host.request("GET", path, admin: true)
                let code = ((read.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String
                #expect(read.status == 200 || (read.status == 503 && code == "state"), "\(path): \(read.status) \(read.text.prefix(300))")
            }
            // The plugins, the console's first view, from the host's own last view (a 503 until 2026-12-07).
            let listed = try await host.request("GET", "/api/v1/plugins", admin: true)
            #expect(listed.status == 200 && listed.text.contains(#""id":"hello""#), "\(listed.status) \(listed.text.prefix(300))")
            #expect(try await host.request("GET", "/api/v1/plugins/hello", admin: true).status == 200)

            // Said once in the host's log when the state stops answering, and once when it answers again (until
            // 2026-12-07 neither: the outage showed nowhere but in refused changes).
            for _ in 0..<50 where !host.errors.value.contains("the shared state does not answer") { try await Task.sleep(for: .milliseconds(100)) }
            #expect(host.errors.value.contains("the shared state does not answer ("), "\(host.errors.value)")
            // /healthz says it too, for monitoring, and stays 200: the plugins serve on.
            let unanswered = try await host.request("GET", "/healthz")
            #expect(unanswered.status == 200 && unanswered.text.contains(#""state":"unanswered for "#), "\(unanswered.text)")
            #expect(system("\(server) up") == 0)
            var answered = 0
            for _ in 0..<200 where answered != 200 {
                answered = (try? await host.request("POST", "/api/v1/plugins/hello/disable", admin: true).status) ?? 0
                if answered != 200 { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(answered == 200, "the host did not reconnect: \(host.errors.value)")
            #expect(try await host.request("GET", "/ext/hello/greet/ada").status == 404)
            var rows: [[String: Any]] = []
            for _ in 0..<50 where rows.count != 1 {
                rows = try await host.request("GET", "/api/v1/hosts", admin: true).json as? [[String: Any]] ?? []
                if rows.count != 1 { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(rows.count == 1, "the heartbeat did not resume")
            for _ in 0..<50 where !host.errors.value.contains("the shared state answers again after ") { try await Task.sleep(for: .milliseconds(100)) }
            #expect(host.errors.value.contains("the shared state answers again after "), "\(host.errors.value)")
            #expect(host.errors.value.components(separatedBy: "the shared state does not answer").count == 2, "said once: \(host.errors.value)")
            let answering = try await host.request("GET", "/healthz")
            #expect(answering.status == 200 && !answering.text.contains(#""state""#), "\(answering.text)")
        }

        /// Runs `body` on a thread of its own, never on Swift's cooperative pool, and returns its result.
        static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
            await withCheckedContinuation { done in Thread { done.resume(returning: body()) }.start() }
        }

        /// POSTs /api/v1/plugins/hello/`action` to `server` with the admin token over a plain socket; true on 200.
        static func post(_ server: ServerProcess, _ action: String) -> Bool {
            let headers = ["Authorization": "Bearer \(ServerProcess.token)", "Content-Length": "0"]
            return (try? RawHTTP.request(port: server.port, "POST", "/api/v1/plugins/hello/\(action)", headers: headers))?.status == 200
        }

        /// The ids in the `active` list of a raw /healthz response.
        static func activeIDs(_ response: String) -> [String] {
            guard let start = response.range(of: "\"active\""), let open = response[start.upperBound...].firstIndex(of: "["),
                  let close = response[open...].firstIndex(of: "]") else { return [] }
            return response[response.index(after: open)..<close].split(separator: ",").map {
                $0.trimmingCharacters(in: CharacterSet(charactersIn: "\" \r\n"))
            }
        }
    }
}

/// `PostgresURL.redact`: the text shown for a `postgres://` URL that may not even parse (logs, `keel dev`, errors).
@Suite("postgres:// URLs shown without their password", .scheduled)
struct PostgresRedactTests {
    @Test("the password goes however it is spelled: an unescaped @, /, ? or # in it; no password or no URL leaves the text as it is")
    func redact() {
        #expect(PostgresURL.redact("postgres://ann:secret@db:5432/keel") == "postgres://ann@db:5432/keel")
        #expect(PostgresURL.redact("postgres://ann:se@cr@et@db/keel") == "postgres://ann@db/keel", "the authority's last @ ends the user part")
        for password in ["se/cret", "se?cret", "se#cret", "a@b/c"] {
            let shown = PostgresURL.redact("postgresql://ann:\(password)@db/keel?schema=x")
            #expect(shown == "postgresql://ann@db/keel?schema=x", "\(password) -> \(shown)")
        }
        #expect(PostgresURL.redact("postgres://ann@db/keel") == "postgres://ann@db/keel")
        #expect(PostgresURL.redact("postgres://db/keel?user=a@b") == "postgres://db/keel?user=a@b", "no password, nothing hidden")
        #expect(PostgresURL.redact("postgres://ann:pw@db/keel?x=a@b") == "postgres://ann@b", "an @ in the query hides more, never less")
        #expect(PostgresURL.redact("/var/lib/keel/state.db") == "/var/lib/keel/state.db")
        #expect(PostgresURL.redact("postgres://ann@db/keel?sslmode=require&Password=s3cret") == "postgres://ann@db/keel?sslmode=require&password=(hidden)",
                "libpq's password parameter")
        #expect(PostgresURL.isPostgres("POSTGRES://ann:pw@db/keel") && PostgresURL.redact("POSTGRES://ann:pw@db/keel") == "POSTGRES://ann@db/keel",
                "a scheme in capitals is still PostgreSQL, never a file path shown whole")
        do {
            _ = try PostgresURL("postgres://ann@db/keel?password=s3cret", environment: [:])
            Issue.record("a password parameter was taken")
        } catch {
            #expect(!error.description.contains("s3cret") && error.description.contains("unsupported parameter \"password\""), "\(error)")
        }
    }
}
