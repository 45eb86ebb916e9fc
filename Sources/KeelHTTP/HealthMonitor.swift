// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Synchronization

/// Calls the plugins' health checks ("keel.health/1", keel/health.h) every `interval`, each under `budget`, and
/// keeps the last result of each plugin for `GET /api/v1/plugins/<id>/health` and `/metrics`.
///
/// Never on Swift's cooperative pool and never blocking the server: each check runs on a thread of its own (never one
/// that serves requests), and the round waits for it at most `budget`. A check still
/// running then is reported unhealthy ("did not return within ...") and counted as an overrun; it is not waited for,
/// and the plugin's next check is skipped (reported the same way) until it returns, whatever generation of the
/// plugin is active by then, so a hung check holds at most one thread per plugin and delays nothing else. The results
/// are the operator's only: nothing is disabled or rerouted because of them. Thread-safe.
final class HealthMonitor: Sendable {
    /// The last result of one plugin's check.
    struct Result: Sendable, Encodable {
        var healthy: Bool
        /// Why not, when not: the plugin's message (set_error), or the host's reason (overrun, still running).
        var message: String?
        /// When the check was started, ISO 8601 UTC.
        var at: String
        /// How long it took; for an overrun, the budget.
        var milliseconds: Double
        var generation: Int
        /// Checks of this plugin that ran over the budget, since the server started.
        var overruns: Int

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(healthy, forKey: .healthy); try c.encode(message, forKey: .message); try c.encode(at, forKey: .at)
            try c.encode(milliseconds, forKey: .milliseconds); try c.encode(generation, forKey: .generation)
            try c.encode(overruns, forKey: .overruns)
        }
        enum CodingKeys: String, CodingKey { case healthy, message, at, milliseconds, generation, overruns }
    }

    let interval: Duration
    let budget: Duration
    /// Set by `stop`: no check is started after it.
    private let stopped = Atomic<Bool>(false)
    private let metrics: ServerMetrics?
    private let log: @Sendable (LogRecord) -> Void
    private struct State {
        var checks: [String: (generation: Int, check: HealthCheck?)] = [:]
        var results: [String: Result] = [:]
        var overruns: [String: Int] = [:]
        /// Plugins with a check in their code now (of any generation: a reload does not free a hung one's thread).
        var running: Set<String> = []
    }
    private let state = Mutex(State())
    private static let timestamp = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    init(interval: Duration, budget: Duration, metrics: ServerMetrics?, log: @escaping @Sendable (LogRecord) -> Void) {
        self.interval = interval
        self.budget = budget

        self.metrics = metrics
        self.log = log
    }

    /// Starts no more checks; one still running keeps its thread, not the caller.
    func stop() { stopped.store(true, ordering: .relaxed) }

    /// The last result of `id`'s check; nil when it has none (no check, not active, or not run yet).
    func result(_ id: String) -> Result? { state.withLock { $0.results[id] } }

    /// Checks every `interval`, the first round at once, until the task is cancelled.
    func run(_ kernel: Kernel) async {
        while !Task.isCancelled {
            await round(kernel)
            try? await Task.sleep(for: interval)
        }
    }

    /// One round: every active plugin's check, one after another (so at most one check thread is added per round
    /// and per plugin). Results of plugins no longer active are dropped.
    func round(_ kernel: Kernel) async {
        let known = state.withLock { $0.checks.mapValues(\.generation) }
        let (active, fresh) = await kernel.healthChecks(known: known)
        let checks = state.withLock { s -> [(String, Int, HealthCheck)] in
            for (id, check) in fresh { s.checks[id] = (active[id] ?? 0, check) }
            for id in s.checks.keys where active[id] == nil {
                s.checks[id] = nil
                s.results[id] = nil
            }
            return s.checks.compactMap { id, c in c.check.map { (id, c.generation, $0) } }.sorted { $0.0 < $1.0 }
        }
        for (id, generation, check) in checks where !Task.isCancelled {
            await checkOne(id, generation: generation, check)
        }
    }

    private func checkOne(_ id: String, generation: Int, _ check: HealthCheck) async {
        let at = Self.timestamp.format(Date()), started = ContinuousClock.now
        let outcome: HealthCheck.Outcome?
        if check.isRunning || !state.withLock({ $0.running.insert(id).inserted }) {
            outcome = .busy
        } else {
            outcome = await withBudget { [self] in
                defer { _ = state.withLock { $0.running.remove(id) } }
                return check.run()
            }
            // Not called at all once the monitor stopped.
            if outcome == .inactive { _ = state.withLock { $0.running.remove(id) } }
        }
        let elapsed = ContinuousClock.now - started
        var result = Result(healthy: false, message: nil, at: at, milliseconds: Self.milliseconds(elapsed),
                            generation: generation, overruns: 0)
        switch outcome {
        case .healthy: result.healthy = true
        case let .unhealthy(message): result.message = message
        case .inactive: return
        case .busy, nil:
            result.message = outcome == nil ? "the check did not return within \(Self.milliseconds(budget)) ms"
                : "the previous check has not returned yet"
            result.milliseconds = Self.milliseconds(budget)
        }
        let overrun = outcome == nil || outcome == .busy
        let changed = state.withLock { s -> Bool in
            if overrun { s.overruns[id, default: 0] += 1 }
            result.overruns = s.overruns[id] ?? 0
            defer { s.results[id] = result }
            return s.results[id]?.healthy != result.healthy
        }
        // Logged when the answer changes, and at every overrun; not at every round.
        if changed || overrun {
            log(LogRecord(level: result.healthy ? .info : .warn, pluginID: id,
                          message: result.healthy ? "health check: healthy" : "health check: unhealthy: \(result.message ?? "")",
                          generation: generation))
        }
        metrics?.healthChecked(plugin: id, healthy: result.healthy, overrun: overrun)
    }

    /// Runs `body` on a thread of its own; its outcome, or nil when `budget` passed first (the body goes on, unwaited).
    private func withBudget(_ body: @escaping @Sendable () -> HealthCheck.Outcome) async -> HealthCheck.Outcome? {
        let once = FirstOf<HealthCheck.Outcome?>()
        let timer = Task { [budget] in
            try? await Task.sleep(for: budget)
            once.resume(nil)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { (continuation: CheckedContinuation<HealthCheck.Outcome?, Never>) in
            once.set(continuation)
            guard !stopped.load(ordering: .relaxed) else { return once.resume(.inactive) }
            // A thread per check: `running` already keeps it to one per plugin, so hung checks of some plugins
            // never delay another's.
            let thread = Thread { once.resume(body()) }
            thread.name = "keel.health"
            thread.start()
        }
    }

    static func milliseconds(_ d: Duration) -> Double {
        let c = d.components
        return ((Double(c.seconds) * 1000 + Double(c.attoseconds) / 1e15) * 1000).rounded() / 1000
    }
}
