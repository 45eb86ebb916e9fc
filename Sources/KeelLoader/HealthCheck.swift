// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import Synchronization

/// A plugin's health check: the `check` of its "keel.health/1" table (keel/health.h), bound to one activation.
///
/// `run` calls it on the calling thread (the caller keeps that off the cooperative pool and applies the budget).
/// Calls are admitted like handler calls, so a check never overlaps deactivate. Two checks of one activation never
/// overlap: a second `run` while one is running returns `.busy` without calling the plugin. `@unchecked Sendable`
/// because of the C function pointer, which is immutable; the running flag is atomic.
public final class HealthCheck: @unchecked Sendable {
    public let context: ActivationContext
    let function: @convention(c) (OpaquePointer?) -> keel_status
    private let site: CrashSite
    private let running = Atomic<Bool>(false)

    public enum Outcome: Sendable, Equatable {
        case healthy
        /// The check returned an error status, with the plugin's message (from set_error) or the status's name.
        case unhealthy(String)
        /// The previous check of this activation has not returned yet.
        case busy
        /// The activation is stopping or stopped: nothing was called.
        case inactive
    }

    /// The check `library` offers for `context`, or nil when it implements no "keel.health/1" (or a table too short
    /// to hold `check`, or a NULL `check`). Asks the plugin's get_extension ([thread-safe]).
    public init?(library: PluginLibrary, context: ActivationContext) {
        guard let table = library.extensionTable(KEEL_EXTENSION_HEALTH),
              let (health, _) = GrowableStruct.read(table, as: keel_health_v1.self,
                                                    minimum: MemoryLayout<keel_health_v1>.offset(of: \.check)! + MemoryLayout<UnsafeRawPointer>.size),
              let check = health.check else { return nil }
        self.context = context
        function = check
        site = context.crashSite("health check")
    }

    /// Calls the check once. [thread-safe]; blocks for as long as the plugin's check takes.
    public func run() -> Outcome {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return .busy }
        defer { running.store(false, ordering: .releasing) }
        guard context.enter(use: false) else { return .inactive }
        let outer = ActivationContext.beginCall(context)
        defer { ActivationContext.endCall(outer); context.leave(use: false) }
        let status = site.around { function(HostABI.pointer(to: context)) }
        guard status == KEEL_OK else {
            let message = context.takeError()
            return .unhealthy(message.isEmpty ? "the check returned \(StatusCode.name(status))" : String(message.prefix(500)))
        }
        return .healthy
    }

    /// True while a call of `run` is in the plugin.
    public var isRunning: Bool { running.load(ordering: .acquiring) }
}
