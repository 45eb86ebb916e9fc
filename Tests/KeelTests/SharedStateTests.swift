// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
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
        }

        /// Three hosts on one database: enabling or disabling through any host, or through the CLI against the
        /// database, reaches every host; a host killed with SIGKILL and a PostgreSQL restart leave them converging.
        /// Convergence times (from the change's answer to each host showing it) are printed, not asserted.
        @Test("three hosts converge on changes made through any host and the CLI, across a SIGKILL and a PostgreSQL restart",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set: no multi-host run"))
        func threeHostsConverge() async throws {
            let url = StateEngine.postgres.freshLocation()
            let root = TestEnvironment.makeTemporaryDirectory("hosts")
            try TestEnvironment.stageExamples(into: root + "/cli-plugins")
            let cli = { (arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) in
                try TestEnvironment.run(self.keel, arguments + ["--plugins", root + "/cli-plugins", "--state", url, "--host-dir", root + "/cli"])
            }
            let grant = try cli(["plugins", "grant", "hello", "authenticate"])
            #expect(grant.status == 0, "\(grant.stderr)")
            func host(_ i: Int) throws -> ServerProcess {
                try? TestEnvironment.stageExamples(into: root + "/plugins\(i)")
                return try ServerProcess(plugins: root + "/plugins\(i)", state: url, extraArguments: ["--host-dir", root + "/host\(i)"])
            }
            var hosts = try (0..<3).map(host)
            defer { for h in hosts { h.stop() } }
            var samples: [Double] = []

            /// Waits (up to 20 s) until every host in `servers` shows hello active (or not); records each host's time.
            func converge(_ servers: [ServerProcess], active: Bool, _ what: String) async throws {
                let start = ContinuousClock.now
                for server in servers {
                    var reached = false
                    while ContinuousClock.now - start < .seconds(20) {
                        let health = try? await server.request("GET", "/healthz")
                        let ids = (health?.json as? [String: Any])?["active"] as? [String] ?? []
                        if ids.contains("hello") == active { reached = true; break }
                        try await Task.sleep(for: .milliseconds(10))
                    }
                    let elapsed = ContinuousClock.now - start
                    samples.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
                    #expect(reached, "\(what): the host on port \(server.port) did not converge: \(server.errors.value)")
                }
            }

            // Through host 0, then host 1, then the CLI against the database.
            #expect(try await hosts[0].request("POST", "/api/v1/plugins/hello/enable", admin: true).status == 200)
            try await converge(hosts, active: true, "enable through host 0")
            #expect(try await hosts[1].request("POST", "/api/v1/plugins/hello/disable", admin: true).status == 200)
            try await converge(hosts, active: false, "disable through host 1")
            let enable = try cli(["plugins", "enable", "hello"])
            #expect(enable.status == 0, "\(enable.stderr)")
            try await converge(hosts, active: true, "enable through the CLI")

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

            // SIGKILL host 2 right after a change through host 0: the others converge; a host started again does too.
            #expect(try await hosts[0].request("POST", "/api/v1/plugins/hello/disable", admin: true).status == 200)
            kill(hosts[2].process.processIdentifier, SIGKILL)
            hosts[2].process.waitUntilExit()
            try await converge(Array(hosts[0...1]), active: false, "disable with host 2 killed")
            hosts[2] = try host(2)
            try await converge([hosts[2]], active: false, "host 2 started again")

            // PostgreSQL restarted (when it is the test server Scripts/postgres-test-server.sh runs): hosts reconnect.
            let script = TestEnvironment.repository.path + "/Scripts/postgres-test-server.sh"
            let running = try TestEnvironment.run("/bin/bash", [script, "url"])
            if let base = StateEngine.postgresURL, running.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == base {
                // system(3), not Process: Foundation's Process was seen never to reap a script whose child daemonises.
                #expect(system("/bin/bash '\(script)' restart") == 0)
                var answered = 0
                for _ in 0..<100 where answered != 200 {
                    answered = (try? await hosts[1].request("POST", "/api/v1/plugins/hello/enable", admin: true).status) ?? 0
                    if answered != 200 { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(answered == 200)
                try await converge(hosts, active: true, "enable after a PostgreSQL restart")
            } else {
                print("SharedStateTests: KEEL_TEST_POSTGRES is not the server of Scripts/postgres-test-server.sh; not restarting it")
            }

            let sorted = samples.sorted()
            let p50 = sorted[sorted.count / 2], p99 = sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
            print(String(format: "SharedStateTests: convergence over %d host changes: p50 %.0f ms, p99 %.0f ms", sorted.count, p50 * 1000, p99 * 1000))
        }
    }
}
