// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Synchronization

/// Where the kernel reports how long its lifecycle work took (activations, reloads), hooks over their budget and
/// failed calls into plugin code, for `GET /metrics`. The kernel depends on no metrics library: the HTTP server attaches a sink that records into
/// its Prometheus registry, and without one a report costs one lock and nothing else. Thread-safe; the sink is
/// called on the kernel's thread (lifecycle) or a calling one (overruns, failures) and must not block.
public final class KernelMetrics: Sendable {
    /// One finished piece of lifecycle work.
    public enum Event: Sendable {
        /// A generation of `plugin` was loaded and activated (`ok`) or failed to, in `seconds`.
        case activated(plugin: String, seconds: Double, ok: Bool)
        /// A reload of `plugin` swapped in a new generation (`ok`) or left the old one serving, in `seconds`.
        case reloaded(plugin: String, seconds: Double, ok: Bool)
        /// An authenticate or authorize hook `hook` of `plugin` ran over the hook budget (its call counts as failed,
        /// so the request is denied). Reported from the request's thread.
        case hookOverran(plugin: String, hook: String)
        /// A call into `plugin`'s code failed: a handler, hook, command or service listener returned an error
        /// status, or a hook ran over its budget. Reported from the calling thread.
        case callFailed(plugin: String)
    }

    private let sink = HandlerSlot<@Sendable (Event) -> Void>()
    private let lastActivation = Mutex<[String: Double]>([:])

    public init() {}

    /// Sends every later event to `handler` (nil: nowhere).
    public func attach(_ handler: (@Sendable (Event) -> Void)?) {
        sink.set(handler)
    }

    func report(_ event: Event) {
        if case let .activated(plugin, seconds, true) = event { lastActivation.withLock { $0[plugin] = seconds } }
        sink.current?(event)
    }

    /// Seconds the last successful activation of each plugin took, whether a sink was attached then or not (a
    /// server attaches one after start-up activated the enabled plugins).
    public var lastActivationSeconds: [String: Double] { lastActivation.withLock { $0 } }

    /// Seconds since `start` on the continuous clock.
    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
