// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
@testable import KeelHTTP
import Testing

/// The labels a plugin chooses (route patterns, hook names) are bounded per plugin (KeelHTTP/LabelBudget.swift): a
/// plugin that registers new patterns at every activation does not grow `GET /metrics` for ever.
@Suite("metrics label budget", .scheduled)
struct LabelBudgetTests {
    /// The distinct values of `label` among the samples of `metric` for `plugin` in a Prometheus text exposition.
    static func values(_ text: String, metric: String, plugin: String, label: String) -> Set<String> {
        var found: Set<String> = []
        for line in text.split(separator: "\n") where line.hasPrefix(metric + "{") && line.contains("plugin=\"\(plugin)\"") {
            guard let start = line.range(of: label + "=\"") else { continue }
            let rest = line[start.upperBound...]
            if let end = rest.firstIndex(of: "\"") { found.insert(String(rest[..<end])) }
        }
        return found
    }

    @Test("past 512 route patterns and 16 hook names of one plugin (twice what one activation may register), new ones count as (other); other plugins keep theirs")
    func boundedPerPlugin() {
        let metrics = ServerMetrics(handlerBudget: 2)
        for i in 0..<600 {
            metrics.route(plugin: "shifty", method: "GET", pattern: "/r\(i)").record(status: 200, elapsed: .milliseconds(1))
            metrics.hookDenied(plugin: "shifty", hook: "hook\(i % 40)")
        }
        metrics.route(plugin: "plain", method: "GET", pattern: "/x").record(status: 500, elapsed: .milliseconds(1))
        metrics.hookDenied(plugin: "plain", hook: "gate")
        // Once admitted, a pattern keeps its own label.
        metrics.route(plugin: "shifty", method: "GET", pattern: "/r7").record(status: 404, elapsed: .milliseconds(1))
        let text = metrics.scrape(plugins: [], activations: [:], connections: 0)
        let routes = Self.values(text, metric: "keel_requests_total", plugin: "shifty", label: "route")
        #expect(routes.count == 513 && routes.contains("(other)") && routes.contains("/r511") && !routes.contains("/r512"))
        #expect(text.contains(#"keel_requests_total{plugin="shifty",method="GET",route="/r7",status="4xx"} 1"#))
        #expect(text.contains(#"keel_requests_total{plugin="shifty",method="GET",route="(other)",status="2xx"} 88"#))
        let hooks = Self.values(text, metric: "keel_hook_denials_total", plugin: "shifty", label: "hook")
        #expect(hooks.count == 17 && hooks.contains("(other)") && hooks.contains("hook15") && !hooks.contains("hook16"))
        #expect(Self.values(text, metric: "keel_requests_total", plugin: "plain", label: "route") == ["/x"])
        #expect(Self.values(text, metric: "keel_hook_denials_total", plugin: "plain", label: "hook") == ["gate"])
        // The operator's limits (`keel serve --max-routes`) move the budget with them.
        let wider = ServerMetrics(handlerBudget: 2, limits: RegistrationLimits(routes: 300, menus: 64, hooks: 8))
        for i in 0..<1000 { wider.route(plugin: "big", method: "GET", pattern: "/r\(i)").record(status: 200, elapsed: .milliseconds(1)) }
        let widerRoutes = Self.values(wider.scrape(plugins: [], activations: [:], connections: 0), metric: "keel_requests_total", plugin: "big", label: "route")
        #expect(widerRoutes.count == 601 && widerRoutes.contains("/r599") && !widerRoutes.contains("/r600"))
    }
}
