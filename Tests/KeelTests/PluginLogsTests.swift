// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Testing

/// Per-plugin logs (Keel/PluginLogs.swift) and health (KeelHTTP/PluginHealth.swift).
@Suite("plugin logs and health", .serialized, .scheduled)
struct PluginLogsTests {
    @Test("the ring keeps the last lines of each plugin, for a bounded number of plugins; lines without a plugin are not kept")
    func ring() {
        let logs = PluginLogs(perPlugin: 3, plugins: 2)
        for i in 1...5 { logs.append(LogRecord(level: .info, pluginID: "a", message: "a\(i)")) }
        logs.append(LogRecord(level: .error, pluginID: "b", message: "b1"))
        logs.append(LogRecord(level: .warn, pluginID: nil, message: "host"))
        #expect(logs.lines("a").map(\.message) == ["a3", "a4", "a5"])
        #expect(logs.lines("b").map(\.level) == ["error"])
        let after = logs.lines("a")[1].seq
        #expect(logs.lines("a", after: after).map(\.message) == ["a5"])
        logs.append(LogRecord(level: .info, pluginID: "c", message: "c1"))  // a was silent longest: dropped
        #expect(logs.lines("a").isEmpty && logs.lines("b").count == 1 && logs.lines("c").count == 1)
    }

    @Test("a plugin's 1 MiB log line is kept cut to 4 KiB, whole characters and an ellipsis, in the host as from a worker")
    func longLinesAreCut() async throws {
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        for id in ["loud", "loudworker"] {
            try f.fixtureBundle(id, defines: ["HANDLER_LOG_BYTES=1048576"], capabilities: ["routes"])
            #expect(try TestEnvironment.run(keel, ["plugins", "enable", id] + at).status == 0)
        }
        #expect(try TestEnvironment.run(keel, ["plugins", "isolate", "loudworker", "process"] + at).status == 0)
        try f.fixtureBundle("garbled", defines: ["HANDLER_LOG_BYTES=1048576", "HANDLER_LOG_BYTE=0xFF"], capabilities: ["routes"])
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "garbled"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        for id in ["loud", "loudworker"] {
            #expect(try await server.request("GET", "/ext/\(id)/ping").status == 200)
            let logs = try await server.request("GET", "/api/v1/plugins/\(id)/logs", admin: true)
            let lines = try #require((logs.json as? [String: Any])?["lines"] as? [[String: Any]], "\(logs.text.prefix(300))")
            let line = try #require(lines.compactMap { $0["message"] as? String }.first { $0.hasPrefix("aé") }, "\(id): \(lines.count) lines")
            // "a", then 2,047 whole "é" (4,095 bytes: the 2,048th would end past 4,096), then "…".
            #expect(line == "a" + String(repeating: "é", count: 2047) + "…", "\(id): \(line.utf8.count) bytes, ends \(line.suffix(3).unicodeScalars.map(\.value))")
        }
        // Bytes that are not UTF-8 are repaired as U+FFFD, three bytes each: the line is cut again after repair.
        #expect(try await server.request("GET", "/ext/garbled/ping").status == 200)
        let logs = try await server.request("GET", "/api/v1/plugins/garbled/logs", admin: true)
        let lines = try #require((logs.json as? [String: Any])?["lines"] as? [[String: Any]], "\(logs.text.prefix(300))")
        let line = try #require(lines.compactMap { $0["message"] as? String }.first { $0.hasPrefix("\u{FFFD}") }, "\(lines.count) lines")
        #expect(line == String(repeating: "\u{FFFD}", count: 1365) + "…", "\(line.utf8.count) bytes")
    }

    @Test("the host's own lines about a request, which name the client's path, are cut to 4 KiB too; so is a refused call in the audit trail")
    func hostLinesAreCut() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("longpath", defines: ["HANDLER_FAILS", "ROUTE_SET"], capabilities: ["routes"])
        let keel = TestEnvironment.binPath + "/keel"
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "longpath", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let segment = String(repeating: "p", count: 60_000)
        #expect(try await server.request("GET", "/ext/longpath/items/" + segment).status == 500)
        let logs = try await server.request("GET", "/api/v1/plugins/longpath/logs", admin: true)
        let lines = try #require((logs.json as? [String: Any])?["lines"] as? [[String: Any]], "\(logs.text.prefix(300))")
        let line = try #require(lines.compactMap { $0["message"] as? String }.first { $0.hasPrefix("GET /ext/longpath/items/ppp") },
                                "\(lines.count) lines")
        #expect(line.utf8.count == 4096 + "…".utf8.count && line.hasSuffix("…"), "\(line.utf8.count) bytes")

        let kernel = try KernelFixture().kernel()
        kernel.auditRefusal(actor: "someone", principal: "someone", origin: "127.0.0.1", call: "POST /api/v1/" + segment, reason: "denied")
        let row = try #require(try kernel.auditTrail().last)
        #expect(row.command.hasPrefix("POST /api/v1/ppp") && row.command.utf8.count == 512 + "…".utf8.count, "\(row.command.utf8.count) bytes")
    }

    @Test("a real server: GET /api/v1/plugins/<id>/logs and /health after failing and good requests; keel logs prints them, -f into a pipe each line as it comes")
    func server() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("flaky", defines: ["HANDLER_FAILS"], capabilities: ["routes"])
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        for id in ["hello", "flaky"] { #expect(try TestEnvironment.run(keel, ["plugins", "enable", id] + at).status == 0) }
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        for _ in 0..<2 { #expect(try await server.request("GET", "/ext/flaky/ping").status == 500) }
        for _ in 0..<3 { #expect(try await server.request("GET", "/ext/hello/greet/ada").status == 200) }

        #expect(try await server.request("GET", "/api/v1/plugins/flaky/logs").status == 401)
        #expect(try await server.request("GET", "/api/v1/plugins/nosuch/logs", admin: true).status == 404)
        let logs = try await server.request("GET", "/api/v1/plugins/flaky/logs", admin: true)
        let lines = try #require((logs.json as? [String: Any])?["lines"] as? [[String: Any]], "\(logs.text)")
        let failures = lines.filter { ($0["message"] as? String)?.contains("GET /ext/flaky/ping failed") == true }
        #expect(failures.count == 2 && failures.allSatisfy { $0["level"] as? String == "error" }, "\(lines)")

        let health = try #require(try await server.request("GET", "/api/v1/plugins/flaky/health", admin: true).json as? [String: Any])
        #expect(health["state"] as? String == "enabled" && (health["generation"] as? Int ?? 0) >= 1, "\(health)")
        #expect(health["requests"] as? Int == 2 && health["failed"] as? Int == 2 && health["errorRate"] as? Double == 1, "\(health)")
        #expect(((health["lastError"] as? [String: Any])?["message"] as? String)?.contains("handler failed on purpose") == true, "\(health)")
        #expect((health["p99Milliseconds"] as? Double).map { $0 >= 0 } == true, "\(health)")
        let good = try #require(try await server.request("GET", "/api/v1/plugins/hello/health", admin: true).json as? [String: Any])
        #expect(good["requests"] as? Int == 3 && good["errorRate"] as? Double == 0 && good["lastError"] is NSNull, "\(good)")
        let idle = try #require(try await server.request("GET", "/api/v1/plugins/greeter/health", admin: true).json as? [String: Any])
        #expect(idle["state"] as? String == "installed" && idle["generation"] is NSNull && idle["p99Milliseconds"] is NSNull, "\(idle)")

        let cli = try TestEnvironment.run(keel, ["logs", "flaky"] + at, environment: ["KEEL_ADMIN_TOKEN": ServerProcess.token])
        #expect(cli.status == 0 && cli.stdout.components(separatedBy: "GET /ext/flaky/ping failed").count == 3, "\(cli.stdout) \(cli.stderr)")
        let recent = try TestEnvironment.run(keel, ["logs", "flaky", "--since", "10m"] + at, environment: ["KEEL_ADMIN_TOKEN": ServerProcess.token])
        #expect(recent.stdout == cli.stdout, "\(recent.stdout) \(recent.stderr)")
        let future = try TestEnvironment.run(keel, ["logs", "flaky", "--since", "2999-01-01"] + at, environment: ["KEEL_ADMIN_TOKEN": ServerProcess.token])
        #expect(future.status == 0 && future.stdout.isEmpty, "\(future.stdout)")
        let noToken = try TestEnvironment.run(keel, ["logs", "flaky"] + at, environment: ["KEEL_ADMIN_TOKEN": ""])
        #expect(noToken.status == 1 && noToken.stderr.contains("admin token"), "\(noToken.stderr)")

        // -f into a pipe (`keel logs flaky -f | grep ...`): the lines there, then a new one, arrive while it runs. The
        // token on its command line is blanked where every process (a plugin's worker too) reads it.
        let follow = Process(), out = Pipe(), followed = LockedText()
        follow.executableURL = URL(fileURLWithPath: keel)
        follow.arguments = ["logs", "flaky", "-f", "--token", ServerProcess.token] + at
        follow.environment = ProcessInfo.processInfo.environment.merging(["KEEL_ADMIN_TOKEN": ""]) { $1 }
        follow.standardOutput = out
        follow.standardError = FileHandle.nullDevice
        try follow.run()
        defer { if follow.isRunning { follow.terminate() }; follow.waitUntilExit() }
        PipeDrain(out.fileHandleForReading, into: followed)
        func seen() -> Int { followed.value.components(separatedBy: "GET /ext/flaky/ping failed").count - 1 }
        func waitFor(_ count: Int) async throws -> Bool {
            for _ in 0..<200 where follow.isRunning {
                if seen() >= count { return true }
                try await Task.sleep(for: .milliseconds(50))
            }
            return seen() >= count
        }
        #expect(try await waitFor(2), "\(followed.value)")
        let shown = (try? String(contentsOfFile: "/proc/\(follow.processIdentifier)/cmdline", encoding: .utf8)) ?? ""
        #expect(shown.contains("--token") && !shown.contains(ServerProcess.token), "\(shown)")
        #expect(try await server.request("GET", "/ext/flaky/ping").status == 500)
        #expect(try await waitFor(3), "\(followed.value)")
    }
}
