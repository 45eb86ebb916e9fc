// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CoreMetrics
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Keel
import NIOCore
import Prometheus
import Synchronization

/// The server's metrics, recorded through the swift-metrics API into one Prometheus registry of this server (never
/// the process-wide `MetricsSystem`, so several servers and tests in one process keep their own numbers), and
/// exported by `GET /metrics` in Prometheus text format.
///
/// Labels stay bounded: a plugin id, a method, a route PATTERN as the plugin registered it (never a raw path), a
/// status class, a hook name, a plugin state; the patterns and hook names a plugin chooses up to a budget per
/// plugin, past it `(other)` (`LabelBudget`; a request to a route past the budget takes two more locks and builds
/// its label's key, to be counted as `(other)`). The request path pays one dictionary lookup under a lock per request
/// (keyed by strings the route table already holds) and no label string is built per request: each route's counters
/// and histogram are made once, the first time the route is used, and reused by every later generation of the
/// plugin. Thread-safe.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `keel_requests_total` | counter | plugin, method, route, status (`2xx`, `4xx`, ...) |
/// | `keel_request_duration_seconds` | histogram | plugin, method, route |
/// | `keel_handler_budget_overruns_total` | counter | plugin, method, route |
/// | `keel_hook_denials_total` | counter | plugin, hook |
/// | `keel_hook_budget_overruns_total` | counter | plugin, hook: authenticate and authorize hooks over the hook budget |
/// | `keel_plugin_failed_calls_total` | counter | plugin: handler, hook, command and service listener calls that failed |
/// | `keel_plugin_reloads_total` | counter | plugin, outcome (`ok`, `failed`) |
/// | `keel_plugin_reload_duration_seconds` | histogram | plugin |
/// | `keel_plugin_activation_duration_seconds` | histogram | plugin (activations while the server runs) |
/// | `keel_plugin_last_activation_seconds` | gauge | plugin (its last activation, start-up included) |
/// | `keel_plugins` | gauge | state (every `PluginStatus`: `installed`, `enabled`, `disabled`, `failed`, `missing`, ...), set at each scrape |
/// | `keel_open_connections` | gauge | none, set at each scrape |
/// | `keel_stale_library_copies`, `keel_stale_library_bytes` | gauge | none: copies of stopped plugins' libraries that stay mapped (`Kernel.staleLibraryCopies`), set at each scrape |
/// | `keel_plugin_healthy` | gauge | plugin: 1 when its last health check passed, else 0 (plugins with a check only) |
/// | `keel_plugin_health_checks_total` | counter | plugin, outcome (`healthy`, `unhealthy`, `overrun`) |
/// | `keel_state_commit_duration_seconds` | histogram | none: SQLite commits of the state store (KeelState) |
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    /// A handler that takes longer than this counts as a budget overrun.
    let handlerBudget: Duration
    private let routes = Mutex<[RouteKey: RouteMetrics]>([:])
    private let counters = Mutex<[CounterKey: CoreMetrics.Counter]>([:])
    private let timers = Mutex<[CounterKey: CoreMetrics.Timer]>([:])
    private let windows = Mutex<[String: PluginWindow]>([:])
    /// Route patterns (with their method) and hook names per plugin: twice what one activation may register
    /// (`limits`), so that a reload may change them all once; past that, `(other)`.
    private let labels: Mutex<LabelBudget>
    private let commitTimer: CoreMetrics.Timer

    /// - Parameter limits: what one activation of a plugin may register (`KernelConfiguration.limits`).
    init(handlerBudget: Double, limits: RegistrationLimits = .default) {
        labels = Mutex(LabelBudget(limits: ["route": 2 * limits.routes, "hook": 2 * limits.hooks]))
        var factory = PrometheusMetricsFactory(registry: registry)
        // From 1 ms to 10 s: plugin handlers answer in micro- to milliseconds; lifecycle work takes longer.
        factory.defaultDurationHistogramBuckets = [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                                   .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                                                   .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)]
        self.factory = factory
        commitTimer = CoreMetrics.Timer(label: "keel_state_commit_duration_seconds", factory: factory)
        // Bounded before the conversion (a day): a larger budget would trap there.
        self.handlerBudget = .nanoseconds(Int64(min(max(0, handlerBudget), 86_400) * 1e9))
    }

    struct RouteKey: Hashable, Sendable {
        let plugin: String
        let method: String
        let pattern: String
    }

    private struct CounterKey: Hashable, Sendable {
        let name: String
        let labels: [String]
    }

    /// The metrics of one route pattern of one plugin.
    final class RouteMetrics: Sendable {
        /// By status class: 1xx ... 5xx.
        let byClass: [CoreMetrics.Counter]
        let latency: CoreMetrics.Timer
        let overruns: CoreMetrics.Counter
        let budget: Duration
        /// The plugin's last minute, for its health.
        let window: PluginWindow

        init(_ key: RouteKey, factory: any MetricsFactory, budget: Duration, window: PluginWindow) {
            self.budget = budget
            self.window = window
            let labels = [("plugin", key.plugin), ("method", key.method), ("route", key.pattern)]
            byClass = (1...5).map { CoreMetrics.Counter(label: "keel_requests_total", dimensions: labels + [("status", "\($0)xx")], factory: factory) }
            latency = CoreMetrics.Timer(label: "keel_request_duration_seconds", dimensions: labels, factory: factory)
            overruns = CoreMetrics.Counter(label: "keel_handler_budget_overruns_total", dimensions: labels, factory: factory)
        }

        /// One answered request: its status and how long the server took.
        func record(status: Int, elapsed: Duration) {
            byClass[min(max(status / 100, 1), 5) - 1].increment()
            let c = elapsed.components
            let nanoseconds = c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000
            latency.recordNanoseconds(nanoseconds)
            window.record(nanoseconds: nanoseconds, failed: status >= 500)
        }
    }

    /// The last minute of `plugin`'s requests (empty until its first).
    func window(plugin: String) -> PluginWindow {
        windows.withLock { windows in
            if let found = windows[plugin] { return found }
            let made = PluginWindow()
            windows[plugin] = made
            return made
        }
    }

    /// Runs a handler call, counting a budget overrun on `route` when it takes longer than the handler budget.
    static func timed<T>(_ route: RouteMetrics?, _ call: () -> T) -> T {
        guard let route else { return call() }
        let started = ContinuousClock.now
        let result = call()
        if ContinuousClock.now - started > route.budget { route.overruns.increment() }
        return result
    }

    /// The metrics of a route, made on its first use; those of `(other)` once the plugin has used its budget of
    /// patterns (`LabelBudget`).
    func route(plugin: String, method: String, pattern: String) -> RouteMetrics {
        var key = RouteKey(plugin: plugin, method: method, pattern: pattern)
        if let found = routes.withLock({ $0[key] }) { return found }
        if labels.withLock({ $0.admit(method + " " + pattern, family: "route", plugin: plugin) }) == LabelBudget.other {
            key = RouteKey(plugin: plugin, method: method, pattern: LabelBudget.other)
            if let found = routes.withLock({ $0[key] }) { return found }
        }
        let made = RouteMetrics(key, factory: factory, budget: handlerBudget, window: window(plugin: plugin))
        return routes.withLock { routes in
            if let found = routes[key] { return found }
            routes[key] = made
            return made
        }
    }

    private func counter(_ name: String, _ labels: [(String, String)]) -> CoreMetrics.Counter {
        let key = CounterKey(name: name, labels: labels.map(\.1))
        return counters.withLock { counters in
            if let found = counters[key] { return found }
            let made = CoreMetrics.Counter(label: name, dimensions: labels, factory: factory)
            counters[key] = made
            return made
        }
    }

    private func timer(_ name: String, _ labels: [(String, String)]) -> CoreMetrics.Timer {
        let key = CounterKey(name: name, labels: labels.map(\.1))
        return timers.withLock { timers in
            if let found = timers[key] { return found }
            let made = CoreMetrics.Timer(label: name, dimensions: labels, factory: factory)
            timers[key] = made
            return made
        }
    }

    /// The label of a hook's name: the name, or `(other)` past the plugin's budget of names.
    private func hookLabel(_ plugin: String, _ hook: String) -> String {
        labels.withLock { $0.admit(hook, family: "hook", plugin: plugin) }
    }

    /// An authorize hook denied (or failed and so denied) a request.
    func hookDenied(plugin: String, hook: String) {
        counter("keel_hook_denials_total", [("plugin", plugin), ("hook", hookLabel(plugin, hook))]).increment()
    }

    /// One commit of the state store took `elapsed` (StateStore.observeCommits).
    func stateCommitted(_ elapsed: Duration) {
        let c = elapsed.components
        commitTimer.recordNanoseconds(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
    }

    /// A plugin's health check ended (HealthMonitor): healthy or not, or ran over its budget.
    func healthChecked(plugin: String, healthy: Bool, overrun: Bool) {
        let outcome = overrun ? "overrun" : healthy ? "healthy" : "unhealthy"
        counter("keel_plugin_health_checks_total", [("plugin", plugin), ("outcome", outcome)]).increment()
        CoreMetrics.Gauge(label: "keel_plugin_healthy", dimensions: [("plugin", plugin)], factory: factory).record(healthy ? 1 : 0)
    }

    /// Records what the kernel reports: activations, reloads, hooks over their budget, failed calls.
    func record(_ event: KernelMetrics.Event) {
        switch event {
        case let .activated(plugin, seconds, _):
            timer("keel_plugin_activation_duration_seconds", [("plugin", plugin)]).recordSeconds(seconds)
        case let .reloaded(plugin, seconds, ok):
            counter("keel_plugin_reloads_total", [("plugin", plugin), ("outcome", ok ? "ok" : "failed")]).increment()
            timer("keel_plugin_reload_duration_seconds", [("plugin", plugin)]).recordSeconds(seconds)
        case let .hookOverran(plugin, hook):
            counter("keel_hook_budget_overruns_total", [("plugin", plugin), ("hook", hookLabel(plugin, hook))]).increment()
        case let .callFailed(plugin):
            counter("keel_plugin_failed_calls_total", [("plugin", plugin)]).increment()
        }
    }

    /// The Prometheus text exposition, with the gauges set first: plugin counts by state from `plugins`, the last
    /// activation time of each plugin from `activations`, the open connections.
    func scrape(plugins: [PluginInfo], activations: [String: Double], connections: Int,
                staleCopies: (copies: Int, bytes: Int) = (0, 0)) -> String {
        CoreMetrics.Gauge(label: "keel_open_connections", factory: factory).record(connections)
        CoreMetrics.Gauge(label: "keel_stale_library_copies", factory: factory).record(staleCopies.copies)
        CoreMetrics.Gauge(label: "keel_stale_library_bytes", factory: factory).record(staleCopies.bytes)
        let known = Set(plugins.map(\.id))
        for (plugin, seconds) in activations where known.contains(plugin) {
            CoreMetrics.Gauge(label: "keel_plugin_last_activation_seconds", dimensions: [("plugin", plugin)], factory: factory)
                .record(seconds)
        }
        var byState: [String: Int] = [:]
        for p in plugins { byState[p.status.rawValue, default: 0] += 1 }
        for state in PluginStatus.allCases {
            CoreMetrics.Gauge(label: "keel_plugins", dimensions: [("state", state.rawValue)], factory: factory)
                .record(byState[state.rawValue] ?? 0)
        }
        return registry.emitToString()
    }
}

extension ServerMetrics {
    /// `GET /metrics`: the Prometheus text format, for a caller that presents the admin token or the metrics token
    /// (`Authorization: Bearer <token>`); anyone else gets 401 and learns nothing. 404 when metrics are off.
    /// `connections` tells how many connections are open, at each scrape.
    static func register(on router: Router<KeelRequestContext>, metrics: ServerMetrics?, gatekeeper: Gatekeeper, metricsToken: String?,
                         connections: @escaping @Sendable () -> Int) {
        // Off: no route at all, so that no method is named for it (a POST would be 405 naming a GET that is 404).
        guard let metrics else { return }
        router.get("/metrics") { request, _ -> Response in
            let presented = request.headers[.authorization] ?? ""
            guard gatekeeper.presentsAdminToken(presented) || metricsToken.map({ Self.matches(presented, token: $0) }) == true else {
                throw APIError.unauthorized
            }
            let kernel = gatekeeper.kernel
            let text = metrics.scrape(plugins: (try? await kernel.plugins()) ?? [], activations: kernel.metrics.lastActivationSeconds,
                                      connections: connections(), staleCopies: await kernel.staleLibraryCopies())
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
    }

    /// True when `authorization` is `Bearer <token>` (scheme in any case); compared in constant time.
    static func matches(_ authorization: String, token: String) -> Bool {
        guard !token.isEmpty, authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else { return false }
        // Digests compared, not the texts: no early return on a length that differs tells the token's length.
        let given = Array(SHA256.hash(data: Data(authorization.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8)))
        let wanted = Array(SHA256.hash(data: Data(token.utf8)))
        return zip(given, wanted).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
