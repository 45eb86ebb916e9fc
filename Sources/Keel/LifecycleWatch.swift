// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization

/// Which plugin code the kernel's lifecycle thread is running, and since when.
///
/// Plugin code that runs on the kernel's own thread (an `activate`, a `deactivate`, a consumer's service listener,
/// the `get_extension` call that finds a health check) holds every lifecycle command while it runs: one that never
/// returns would leave the admin API waiting for ever, with nothing to say why. The kernel marks each such call here;
/// any other thread can then tell a stalled lifecycle from a busy one (`Kernel.lifecycleStall`), and the server turns
/// that into a 503 on `/healthz` and the admin API, a log line, and, when the operator asks, an exit that the next
/// start answers with a quarantine.
///
/// Set and put back on the lifecycle thread only (a call made from inside another is marked until it returns, then
/// the outer one is again); read from any thread. Thread-safe: a lock held to swap or copy one value.
final class LifecycleWatch: Sendable {
    struct Call: Sendable {
        let plugin: String
        let generation: Int
        /// What the host called: `activate`, `deactivate`, `service listener`, `get_extension`.
        let site: String
        let since: ContinuousClock.Instant
    }

    private let current = Mutex<Call?>(nil)

    /// Runs `body` (a call into plugin code) marked as `site` of `plugin`'s `generation`. [lifecycle thread]
    func during<T, E: Error>(_ plugin: String, generation: Int, _ site: String, _ body: () throws(E) -> T) throws(E) -> T {
        let call = Call(plugin: plugin, generation: generation, site: site, since: .now)
        let outer = current.withLock { slot in
            let outer = slot
            slot = call
            return outer
        }
        defer { current.withLock { $0 = outer } }
        return try body()
    }

    /// The call running now, if any. [any thread]
    var call: Call? { current.withLock { $0 } }
}

/// The kernel's lifecycle thread has been inside one call into a plugin for longer than the kernel's stall limit
/// (`KernelConfiguration.stallLimit`): every lifecycle command and every view that asks the kernel waits behind it.
/// Plugin routes, proxies and `/healthz` keep answering.
public struct LifecycleStall: Sendable, Equatable, CustomStringConvertible {
    /// The plugin whose code has not returned.
    public let plugin: String
    public let generation: Int
    /// What the host called: `activate`, `deactivate`, `service listener` or `get_extension`.
    public let call: String
    /// How long it has been running, in seconds.
    public let seconds: Double

    /// E.g. `plugin "slow" (generation 3): activate has not returned for 31 s`.
    public var description: String {
        "plugin \"\(plugin)\" (generation \(generation)): \(call) has not returned for \(Int(seconds)) s"
    }

    /// What the next start does about it, once the host ends with the call still running (see
    /// `Kernel.recordStall`).
    public var remedy: String {
        "stop the host (SIGTERM or Ctrl-C records the stall) and start it again: the next start quarantines \"\(plugin)\" (disabled, with this reason)"
    }
}

extension Kernel {
    /// The plugin call that has held the kernel's lifecycle thread for longer than `configuration.stallLimit`, or
    /// nil when there is none. Cheap (a lock and a clock read). [any thread]
    public nonisolated var lifecycleStall: LifecycleStall? {
        guard let call = lifecycleWatch.call else { return nil }
        let elapsed = ContinuousClock.now - call.since
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        guard seconds >= configuration.stallLimit else { return nil }
        return LifecycleStall(plugin: call.plugin, generation: call.generation, call: call.site, seconds: seconds)
    }

    /// Writes a record of `stall` where the fatal-signal handler writes a crash record (`crashRecordPath`), for a
    /// process about to end with the call still running: the next start then treats the plugin as one that took
    /// the host down (`quarantineAfterCrash`), with the reason `hung the host: its activate did not return within
    /// 31 s`. Returns the record's path, or nil when the state lives in memory or the file cannot be written.
    /// [any thread]
    @discardableResult
    public nonisolated func recordStall(_ stall: LifecycleStall) -> String? {
        guard !state.isInMemory else { return nil }
        let text = CrashRecord.stallText(plugin: stall.plugin, generation: stall.generation, site: stall.call,
                                         seconds: Int(stall.seconds), time: Int(Date().timeIntervalSince1970))
        let path = crashRecordPath
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else { return nil }
        return path
    }
}
