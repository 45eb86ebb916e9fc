// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelHTTP
import Testing

/// The structured log (KeelHTTP/StructuredLog.swift), plugin health checks (keel/health.h, KeelHTTP/HealthMonitor.swift)
/// and the metrics they add, against a real `keel serve`.
@Suite("observability", .serialized, .scheduled)
struct ObservabilityTests {
    static let keel = TestEnvironment.binPath + "/keel"

    /// The JSON objects among `text`'s lines that satisfy `where`.
    static func jsonLines(_ text: String, where match: ([String: Any]) -> Bool = { _ in true }) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { line in
            try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        }.filter(match)
    }

    /// Polls `body` until it returns a value or 20 s pass.
    static func eventually<T>(_ body: () async throws -> T?) async throws -> T? {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let value = try await body() { return value }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    @Test("--log-format json: one JSON object per stderr line; a handler's host->log line carries plugin, generation and the request's id")
    func jsonLog() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("chatty", defines: ["HANDLER_LOGS"], capabilities: ["routes"])
        try f.fixtureBundle("failing", defines: ["HANDLER_FAILS"], capabilities: ["routes"])
        try f.fixtureBundle("hidden", capabilities: ["routes"])
        let at = ["--plugins", f.plugins, "--state", f.state]
        for id in ["chatty", "failing"] { #expect(try TestEnvironment.run(Self.keel, ["plugins", "enable", id] + at).status == 0) }
        #expect(try TestEnvironment.run(Self.keel, ["tenants", "create", "acme"] + at).status == 0)
        #expect(try TestEnvironment.run(Self.keel, ["plugins", "enable", "hidden", "--tenant", "acme"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "--log-format", "json"])
        defer { server.stop() }
        // An error answer of a plugin route carries the id too (the log line about it does).
        let failed = try await server.request("GET", "/ext/failing/ping", headers: ["X-Request-Id": "trace-45"])
        #expect(failed.status == 500 && failed.headers["x-request-id"] == "trace-45", "\(failed.status) \(failed.headers)")
        let unknown = try await server.request("GET", "/ext/failing/nowhere", headers: ["X-Request-Id": "trace-46"])
        #expect(unknown.status == 404 && unknown.headers["x-request-id"] == nil, "no route matched: no plugin's request, no id to give back")
        // A route of a plugin only another tenant runs reads the same, header included: it does not exist here.
        let hidden = try await server.request("GET", "/ext/hidden/ping", headers: ["X-Request-Id": "trace-47"])
        #expect(hidden.status == 404 && hidden.headers["x-request-id"] == nil && hidden.text == unknown.text, "\(hidden.headers) \(hidden.text)")

        let given = try await server.request("GET", "/ext/chatty/ping", headers: ["X-Request-Id": "trace-4711.a"])
        #expect(given.status == 200 && given.headers["x-request-id"] == "trace-4711.a", "\(given.headers)")
        // An id that could forge log fields (a quote, a newline) or is too long is replaced by one of the server's.
        let hostile = try await server.request("GET", "/ext/chatty/ping", headers: ["X-Request-Id": #"x","level":"error"#])
        let made = try #require(hostile.headers["x-request-id"])
        #expect(hostile.status == 200 && !made.contains("\"") && !made.isEmpty, "\(made)")
        // The server's ids: 32 lowercase hex digits, a new one per request.
        let again = try #require(try await server.request("GET", "/ext/chatty/ping").headers["x-request-id"])
        #expect(made.count == 32 && made.allSatisfy { $0.isHexDigit && !$0.isUppercase } && again != made, "\(made) \(again)")

        let handled = try await Self.eventually { () -> [[String: Any]]? in
            let lines = Self.jsonLines(server.errors.value) { ($0["message"] as? String) == "handling /ping" }
            return lines.count == 3 ? lines : nil
        }
        let lines = try #require(handled, "stderr: \(server.errors.value)")
        for line in lines {
            #expect(line["plugin"] as? String == "chatty" && line["level"] as? String == "warning", "\(line)")
            #expect((line["generation"] as? Int ?? 0) >= 1 && line["ts"] is String && line["label"] as? String == "keel", "\(line)")
        }
        #expect(lines.map { $0["request_id"] as? String } == ["trace-4711.a", made, again], "\(lines)")
        // Every line the server wrote to stderr is JSON.
        let stderr = server.errors.value.split(separator: "\n")
        #expect(!stderr.isEmpty && stderr.allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) is [String: Any] },
                "\(server.errors.value)")
    }

    @Test("a JSON log line escapes quotes, backslashes and control characters: no message or metadata value can end the line or add a field")
    func jsonEscaping() throws {
        let message = "a\"b\nc\u{1}\\ \u{2028}"
        let line = KeelLogHandler.jsonLine(level: "warning", label: "keel", message: message,
                                           metadata: [("generation", "3"), ("plugin", #"x","level":"error"#)])
        #expect(!line.contains("\n") && !line.contains("\u{2028}"), "\(line)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        #expect(object["message"] as? String == message && object["level"] as? String == "warning", "\(object)")
        #expect(object["plugin"] as? String == #"x","level":"error"# && object["generation"] as? Int == 3, "\(object)")
    }

    @Test("a plugin's keel.health/1 check runs on a schedule under a budget: healthy, unhealthy with its reason, a slow one as an overrun that does not block the server")
    func healthChecks() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("fine", defines: ["HEALTH_MODE=1"], capabilities: ["routes"])
        try f.fixtureBundle("sick", defines: ["HEALTH_MODE=2"], capabilities: ["routes"])
        try f.fixtureBundle("stuck", defines: ["HEALTH_MODE=3", "HEALTH_SLOW_MS=2500"], capabilities: ["routes"])
        let at = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        for id in ["fine", "sick", "stuck", "hello"] { #expect(try TestEnvironment.run(Self.keel, ["plugins", "enable", id] + at).status == 0) }
        let server = try ServerProcess(plugins: f.plugins, state: f.state,
                                       extraArguments: ["--no-watch", "--health-interval", "0.5", "--health-budget-ms", "1000"])
        defer { server.stop() }

        func check(_ id: String) async throws -> [String: Any]? {
            let health = try await server.request("GET", "/api/v1/plugins/\(id)/health", admin: true).json as? [String: Any]
            return health?["check"] as? [String: Any]
        }
        // Each waits for the answer it expects (a busy machine may make a round late, never the answer different).
        let fine = try #require(try await Self.eventually { try await check("fine").flatMap { $0["healthy"] as? Bool == true ? $0 : nil } })
        #expect(fine["healthy"] as? Bool == true && fine["message"] is NSNull && (fine["generation"] as? Int ?? 0) >= 1, "\(fine)")
        let sick = try #require(try await Self.eventually { try await check("sick").flatMap { $0["message"] as? String == "database unreachable" ? $0 : nil } })
        #expect(sick["healthy"] as? Bool == false && sick["message"] as? String == "database unreachable", "\(sick)")
        let stuck = try #require(try await Self.eventually { try await check("stuck").flatMap { ($0["overruns"] as? Int ?? 0) >= 1 ? $0 : nil } })
        #expect(stuck["healthy"] as? Bool == false && (stuck["overruns"] as? Int ?? 0) >= 1, "\(stuck)")
        // The round that found it over its budget, or a later one that found it still running.
        let reason = stuck["message"] as? String ?? ""
        #expect(reason.contains("did not return within 1000") || reason.contains("has not returned yet"), "\(stuck)")
        // While the slow check holds its thread, the server answers.
        #expect(try await server.request("GET", "/healthz").status == 200)
        #expect(try await server.request("GET", "/ext/stuck/ping").status == 200)
        let hello = try #require(try await server.request("GET", "/api/v1/plugins/hello/health", admin: true).json as? [String: Any])
        #expect(hello["check"] is NSNull, "\(hello)")

        let metrics = try await server.request("GET", "/metrics", admin: true).text
        #expect(MetricsTests.sample(metrics, "keel_plugin_healthy", ["plugin": "fine"]) == 1, "\(metrics)")
        #expect(MetricsTests.sample(metrics, "keel_plugin_healthy", ["plugin": "sick"]) == 0)
        #expect((MetricsTests.sample(metrics, "keel_plugin_health_checks_total", ["plugin": "stuck", "outcome": "overrun"]) ?? 0) >= 1)
        #expect((MetricsTests.sample(metrics, "keel_plugin_health_checks_total", ["plugin": "sick", "outcome": "unhealthy"]) ?? 0) >= 1)

        let env = ["KEEL_ADMIN_TOKEN": ServerProcess.token]
        let good = try TestEnvironment.run(Self.keel, ["plugins", "health", "fine"] + at, environment: env)
        #expect(good.status == 0 && good.stdout.contains("check: healthy"), "\(good.stdout) \(good.stderr)")
        let bad = try TestEnvironment.run(Self.keel, ["plugins", "health", "sick"] + at, environment: env)
        #expect(bad.status == 1 && bad.stdout.contains("check: unhealthy: database unreachable"), "\(bad.stdout) \(bad.stderr)")
        let none = try TestEnvironment.run(Self.keel, ["plugins", "health", "hello"] + at, environment: env)
        #expect(none.status == 0 && none.stdout.contains("check: none"), "\(none.stdout) \(none.stderr)")
    }

    @Test("a health check that never returns holds one thread however often its plugin is reloaded, and the server stops")
    func hungCheckAcrossReloads() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("stuck", defines: ["HEALTH_MODE=3", "HEALTH_SLOW_MS=600000"], capabilities: ["routes"])
        let at = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(Self.keel, ["plugins", "enable", "stuck"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state,
                                       extraArguments: ["--no-watch", "--health-interval", "0.2", "--health-budget-ms", "100"])
        defer { server.stop() }
        let pid = server.process.processIdentifier
        /// Threads of the server asleep in the check's `nanosleep`.
        func sleeping() -> Int {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            return tasks.filter { (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/wchan", encoding: .utf8)) == "hrtimer_nanosleep" }.count
        }
        #expect(try await Self.eventually { sleeping() == 1 ? true : nil } == true, "the first check never started")
        for round in 1...4 {
            let reload = try await server.request("POST", "/api/v1/plugins/stuck/reload", admin: true)
            #expect(reload.status == 200, "\(reload.text)")
            // A few rounds of the new generation: its check is skipped while the old one's runs.
            try await Task.sleep(for: .milliseconds(800))
            #expect(sleeping() == 1, "after reload \(round): \(sleeping()) threads in the hung check")
        }
        let stuck = try await server.request("GET", "/api/v1/plugins/stuck/health", admin: true).json as? [String: Any]
        #expect(((stuck?["check"] as? [String: Any])?["message"] as? String ?? "").contains("has not returned yet"), "\(String(describing: stuck))")
        #expect(try await server.request("GET", "/healthz").status == 200)
        // SIGTERM: the server does not wait for the check's thread (it waited for ever while checks shared the
        // request threads, whose shutdown joined them).
        let stopping = Date()
        #expect(server.stop() == 0)
        #expect(Date().timeIntervalSince(stopping) < 29, "took \(Date().timeIntervalSince(stopping)) s to stop")
    }

    @Test("/metrics: a handler over its budget counts as an overrun on its route; state store commits are timed")
    func overrunsAndCommits() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("slowpoke", defines: ["SLOW_MS=300"], capabilities: ["routes"])
        try f.fixtureBundle("quick", capabilities: ["routes"])
        let at = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(Self.keel, ["plugins", "enable", "slowpoke"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "--handler-budget-ms", "100"])
        defer { server.stop() }

        let before = try await server.request("GET", "/metrics", admin: true).text
        let commitsBefore = MetricsTests.sample(before, "keel_state_commit_duration_seconds_count") ?? 0
        for _ in 0..<2 { #expect(try await server.request("GET", "/ext/slowpoke/ping").status == 200) }
        #expect(try await server.request("POST", "/api/v1/plugins/quick/enable", admin: true).status == 200)
        #expect(try await server.request("GET", "/ext/quick/ping").status == 200)

        let text = try await server.request("GET", "/metrics", admin: true).text
        #expect(MetricsTests.sample(text, "keel_handler_budget_overruns_total", ["plugin": "slowpoke", "method": "GET", "route": "/ping"]) == 2, "\(text)")
        #expect(MetricsTests.sample(text, "keel_handler_budget_overruns_total", ["plugin": "quick", "method": "GET", "route": "/ping"]) == 0)
        // Enabling wrote the plugin's state (and its load record): at least one more commit, each timed.
        let commits = try #require(MetricsTests.sample(text, "keel_state_commit_duration_seconds_count"), "\(text)")
        #expect(commits > commitsBefore, "\(commitsBefore) → \(commits)")
        #expect((MetricsTests.sample(text, "keel_state_commit_duration_seconds_sum") ?? -1) >= 0)
        #expect(text.contains("keel_state_commit_duration_seconds_bucket{le=\"0.005\"}"), "\(text)")
    }
}
