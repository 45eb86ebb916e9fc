// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import KeelSystem
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
        /// The library's checksum, for the quarantine (a hung `activate` has no load-history row to take it from).
        let checksum: String
        /// What the host called: `load` (dlopen, the library's constructors and entry), `activate`, `deactivate`,
        /// `unload` (dlclose, its destructors), `service listener`, `get_extension`.
        let site: String
        let since: ContinuousClock.Instant
        /// Tells this call from a later one of the same plugin and site.
        let sequence: UInt64
    }

    private struct State {
        var current: Call?
        var issued: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Runs `body` (a call into plugin code) marked as `site` of `plugin`'s `generation`. [lifecycle thread]
    func during<T, E: Error>(_ plugin: String, generation: Int, checksum: String, _ site: String,
                             _ body: () throws(E) -> T) throws(E) -> T {
        let now = ContinuousClock.now
        let outer = state.withLock { s in
            let outer = s.current
            s.issued &+= 1
            s.current = Call(plugin: plugin, generation: generation, checksum: checksum, site: site, since: now, sequence: s.issued)
            return outer
        }
        defer { state.withLock { $0.current = outer } }
        return try body()
    }

    /// The call running now, if any. [any thread]
    var call: Call? { state.withLock { $0.current } }
}

/// The kernel's lifecycle thread has been inside one call into a plugin for longer than the kernel's stall limit
/// (`KernelConfiguration.stallLimit`): every lifecycle command and every view that asks the kernel waits behind it.
/// Plugin routes, proxies and `/healthz` keep answering.
public struct LifecycleStall: Sendable, Equatable, CustomStringConvertible {
    /// The plugin whose code has not returned.
    public let plugin: String
    public let generation: Int
    /// What the host called: `load`, `activate`, `deactivate`, `unload`, `service listener` or `get_extension`.
    public let call: String
    /// How long it has been running, in seconds.
    public let seconds: Double
    /// Which call of the lifecycle thread this is: a later stall of the same plugin and call has another.
    public let sequence: UInt64
    /// The library's checksum (what the quarantine names).
    let checksum: String

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
        // A limit that is not a positive number of seconds is the default's.
        lifecycleCall(runningFor: configuration.stallLimit.isFinite && configuration.stallLimit > 0 ? configuration.stallLimit : 30)
    }

    /// The plugin call that has held the kernel's lifecycle thread for at least `minimum` seconds, stalled or not
    /// yet: what a command queued behind it waits for. Cheap (a lock and a clock read). [any thread]
    public nonisolated func lifecycleCall(runningFor minimum: Double) -> LifecycleStall? {
        guard let call = lifecycleWatch.call else { return nil }
        let elapsed = ContinuousClock.now - call.since
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        guard seconds >= minimum else { return nil }
        return LifecycleStall(plugin: call.plugin, generation: call.generation, call: call.site, seconds: seconds,
                              sequence: call.sequence, checksum: call.checksum)
    }

    /// Writes a record of `stall` where the fatal-signal handler writes a crash record (`crashRecordPath`), for a
    /// process about to end with the call still running: the next start then treats the plugin as one that took
    /// the host down (`quarantineAfterCrash`: disabled and quarantined by its library's checksum, a guard as after a
    /// crash), with the reason `hung the host: its activate had not returned after 31 s`. Returns the record's path;
    /// nil when the state lives in memory, the file cannot be written, or the call returned meanwhile (then no
    /// record is left). [any thread]
    @discardableResult
    public nonisolated func recordStall(_ stall: LifecycleStall) -> String? {
        guard !state.isInMemory else { return nil }
        let text = CrashRecord.stallText(plugin: stall.plugin, generation: stall.generation, checksum: stall.checksum,
                                         site: stall.call, seconds: Int(stall.seconds), time: Int(Date().timeIntervalSince1970))
        let path = crashRecordPath
        // Owner-only, as the handler's own records, and a new file: a symbolic or hard link planted at the path would
        // have it written over another file.
        unlink(path)
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return nil }
        let written = Array(text.utf8).withUnsafeBytes { SystemFile.writeAll(fd, $0) }
        close(fd)
        // A call that returned while the record was written is no stall to quarantine for.
        guard written, lifecycleWatch.call?.sequence == stall.sequence else {
            unlink(path)
            return nil
        }
        return path
    }
}
