// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// `GET /metrics` (KeelHTTP/ServerMetrics.swift) against a real `keel serve`: the numbers after a known sequence.
@Suite("metrics", .serialized, .scheduled)
struct MetricsTests {
    static let metricsToken = "metrics-token-for-tests-0123456789"

    /// The value of the sample `name{labels}` in a Prometheus text exposition (labels in any order), or nil.
    static func sample(_ text: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            let series = line[..<space], value = line[line.index(after: space)...]
            let (metric, rest) = series.firstIndex(of: "{").map { (series[..<$0], series[series.index(after: $0)...].dropLast()) } ?? (series, "")
            guard metric == name else { continue }
            var found: [String: String] = [:]
            for pair in rest.split(separator: ",") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { found[String(kv[0])] = String(kv[1].dropFirst().dropLast()) }
            }
            if found == labels { return Double(value) }
        }
        return nil
    }

    @Test("after a known sequence of requests the scrape counts them per plugin and route pattern, denials per hook, reloads, plugins by state")
    func scrape() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("guard", defines: ["AUTHZ_MODE=2", "ROUTE_PATH=\"/secret\""], capabilities: ["routes", "authorize"])
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        try TestEnvironment.grantSensitive("guard", plugins: f.plugins, state: f.state, capabilities: ["authorize"])
        for id in ["hello", "guard"] { #expect(try TestEnvironment.run(keel, ["plugins", "enable", id] + at).status == 0) }
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"],
                                       environment: ["KEEL_METRICS_TOKEN": Self.metricsToken])
        defer { server.stop() }

        for name in ["ada", "bob", "cy"] { #expect(try await server.request("GET", "/ext/hello/greet/\(name)").status == 200) }
        #expect(try await server.request("GET", "/ext/hello/greet/secret").status == 403)
        for _ in 0..<2 { #expect(try await server.request("GET", "/ext/guard/secret").status == 403) }
        #expect(try await server.request("GET", "/ext/hello/nowhere").status == 404)
        #expect(try await server.request("POST", "/api/v1/plugins/guard/reload", admin: true).status == 200)

        #expect(try await server.request("GET", "/metrics").status == 401)
        #expect(try await server.request("GET", "/metrics", headers: ["Authorization": "Bearer wrong"]).status == 401)
        // Compared by digest: a prefix of the token, the token with more after it, or its last byte changed read nothing.
        for near in [String(Self.metricsToken.dropLast()), Self.metricsToken + "0", String(Self.metricsToken.dropLast()) + "8", ""] {
            #expect(try await server.request("GET", "/metrics", headers: ["Authorization": "Bearer \(near)"]).status == 401, "\(near)")
        }
        #expect(try await server.request("GET", "/metrics", admin: true).status == 200)
        let reply = try await server.request("GET", "/metrics", headers: ["Authorization": "Bearer \(Self.metricsToken)"])
        #expect(reply.status == 200 && reply.headers["content-type"]?.hasPrefix("text/plain") == true)
        let text = reply.text
        let hello = ["plugin": "hello", "method": "GET", "route": "/greet/:name"]
        #expect(Self.sample(text, "keel_requests_total", hello.merging(["status": "2xx"]) { $1 }) == 3, "\(text)")
        #expect(Self.sample(text, "keel_requests_total", hello.merging(["status": "4xx"]) { $1 }) == 1)
        #expect(Self.sample(text, "keel_requests_total", hello.merging(["status": "5xx"]) { $1 }) == 0)
        #expect(Self.sample(text, "keel_request_duration_seconds_count", hello) == 4)
        #expect(Self.sample(text, "keel_requests_total", ["plugin": "guard", "method": "GET", "route": "/secret", "status": "4xx"]) == 2)
        #expect(Self.sample(text, "keel_handler_budget_overruns_total", hello) == 0)
        #expect(Self.sample(text, "keel_hook_denials_total", ["plugin": "guard", "hook": "rules"]) == 3)
        #expect(Self.sample(text, "keel_plugin_reloads_total", ["plugin": "guard", "outcome": "ok"]) == 1)
        #expect(Self.sample(text, "keel_plugin_reload_duration_seconds_count", ["plugin": "guard"]) == 1)
        #expect(Self.sample(text, "keel_plugins", ["state": "enabled"]) == 2)
        #expect(Self.sample(text, "keel_plugins", ["state": "installed"]) == 1, "greeter is staged, not enabled")
        #expect((Self.sample(text, "keel_plugin_last_activation_seconds", ["plugin": "hello"]) ?? -1) > 0)
        #expect((Self.sample(text, "keel_open_connections") ?? 0) >= 1)
        // The metrics token reads metrics and nothing else.
        #expect(try await server.request("GET", "/api/v1/plugins", headers: ["Authorization": "Bearer \(Self.metricsToken)"]).status == 401)
        // Labels are route patterns, never raw paths.
        #expect(!text.contains("ada") && !text.contains("nowhere") && !text.contains("/greet/secret"))
    }

    @Test("a hook over the hook budget is counted per plugin and hook, and so is the denial it caused; failed calls per plugin")
    func hookOverrunAndFailedCalls() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("sluggish", defines: ["AUTH_MODE=1", "SLOW_HOOK_MS=300"], capabilities: ["routes", "authenticate"])
        try f.fixtureBundle("flaky", defines: ["HANDLER_FAILS"], capabilities: ["routes"])
        let at = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("sluggish", plugins: f.plugins, state: f.state, capabilities: ["authenticate"])
        for id in ["sluggish", "flaky"] { #expect(try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "enable", id] + at).status == 0) }
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "--hook-budget-ms", "100"])
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/sluggish/ping").status == 403)
        // With the admin token no hook runs: the handler fails twice.
        for _ in 0..<2 { #expect(try await server.request("GET", "/ext/flaky/ping", admin: true).status == 500) }
        let text = try await server.request("GET", "/metrics", admin: true).text
        #expect(Self.sample(text, "keel_hook_budget_overruns_total", ["plugin": "sluggish", "hook": "bearer"]) == 1, "\(text)")
        #expect(Self.sample(text, "keel_hook_denials_total", ["plugin": "sluggish", "hook": "bearer"]) == 1, "a failing authenticate hook denies the request: \(text)")
        #expect(Self.sample(text, "keel_plugin_failed_calls_total", ["plugin": "sluggish"]) == 1, "\(text)")
        #expect(Self.sample(text, "keel_plugin_failed_calls_total", ["plugin": "flaky"]) == 2, "\(text)")
        #expect(Self.sample(text, "keel_requests_total", ["plugin": "flaky", "method": "GET", "route": "/ping", "status": "5xx"]) == 2)
    }

    @Test("--no-metrics: nothing is measured and GET /metrics is 404")
    func off() async throws {
        let f = KernelFixture()
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "--no-metrics"])
        defer { server.stop() }
        #expect(try await server.request("GET", "/metrics", admin: true).status == 404)
        #expect(try await server.request("POST", "/metrics", admin: true).status == 404)
    }
}
