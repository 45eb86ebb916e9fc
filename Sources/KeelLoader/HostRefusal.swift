// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelSystem

/// The host's refusals of a plugin's calls into it while a route handler runs, noted on the calling thread so that a
/// handler whose error status is the one the host just returned to it is known to pass the host's refusal on
/// (`PluginCallError.passedOn`): a capability not granted, no provider of an interface, a command's refusal, a
/// response over the limit. Its client is then answered 500 (the plugin could not serve), not the refusal's 4xx,
/// which would blame the client for the plugin's or the operator's fault.
/// Thread: the plugin's call's own (a C thread-local: nothing is shared).
enum HostRefusal {
    /// `status`, noted as the host's refusal when it is an error.
    @inline(__always) static func noted(_ status: keel_status) -> keel_status {
        if status != KEEL_OK { keel_host_refusal_note(status) }
        return status
    }

    /// Forgets what was noted on this thread (before a handler runs).
    @inline(__always) static func reset() { _ = keel_host_refusal_take() }

    /// Whether `status`, a handler's error status, is the last refusal the host noted on this thread since `reset`;
    /// forgets it.
    @inline(__always) static func passedOn(_ status: keel_status) -> Bool { keel_host_refusal_take() == status }
}
