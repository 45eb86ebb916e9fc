// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// How many log lines a plugin may cause per second, in a worker or in the host's process: the host writes each
/// line it lets through (to its log, its files, the plugin log ring), so a plugin that floods its log (or makes the
/// host warn about it in a loop) must not get the host to do unbounded work for it, nor fill the disk its log goes to.
///
/// One-second windows: up to `perSecond` lines pass in each; the rest are dropped and counted, and the count is
/// reported in one line when the window ends (`tick`). Not thread-safe: one per worker connection, used by its
/// reader thread only, or one per activation behind its lock (`ActivationContext.logBudgeted`).
package struct LogBudget: Sendable {
    /// Lines a plugin may log per second (bursts included).
    package static let perSecond = 200

    private let limit: Int
    /// Where the dropped lines came from, for the report ("from the worker").
    private let source: String
    private var windowStart: Double
    private var passed = 0
    package private(set) var dropped = 0
    /// Lines dropped since the worker started, for the record.
    package private(set) var droppedTotal = 0

    package init(limit: Int = LogBudget.perSecond, now: Double, source: String = "from the worker") {
        self.source = source
        self.limit = limit
        windowStart = now
    }

    /// True when a line may pass now; false when it is dropped (and counted).
    package mutating func admit(now: Double) -> Bool {
        if now - windowStart >= 1 { _ = tick(now: now) }
        guard passed < limit else {
            dropped += 1
            droppedTotal += 1
            return false
        }
        passed += 1
        return true
    }

    /// Ends the window when it is over (or at once with `force`); returns the line that reports its drops, if any.
    package mutating func tick(now: Double, force: Bool = false) -> String? {
        guard force || now - windowStart >= 1 else { return nil }
        defer {
            windowStart = now
            passed = 0
            dropped = 0
        }
        guard dropped > 0 else { return nil }
        return "dropped \(dropped) log line(s) \(source) (over \(limit) per second; \(droppedTotal) since it started)"
    }
}
