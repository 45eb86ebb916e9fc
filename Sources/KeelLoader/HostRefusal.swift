// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelSystem

/// The outcome of a plugin's last call into the host while a route handler runs, noted on the calling thread so that a
/// handler whose error status is the one the host returned to its last call is known to pass the host's refusal on
/// (`PluginCallError.passedOn`): no provider of an interface, a command the caller may not call, a bad `set_status`,
/// a response over the limit. A called command's own error status is that plugin's answer, not a refusal. Its client
/// is then answered 500 (the plugin could not serve), not the refusal's 4xx, which would blame the client for the
/// plugin's or the operator's fault.
/// Thread: the plugin's call's own (a C thread-local: nothing is shared).
enum HostRefusal {
    /// `status`, noted as the outcome of the plugin's last call into the host (`KEEL_OK` too: a refusal the handler
    /// dealt with and followed by a call that succeeded is no longer the last).
    @inline(__always) static func noted(_ status: keel_status) -> keel_status {
        keel_host_refusal_note(status)
        return status
    }

    /// `noted`, for a call on the handler's response (`set_status`, `add_header`, `write`), whose refusal's reason the
    /// response writer keeps (`ResponseWriter.refusal`).
    @inline(__always) static func notedOnResponse(_ status: keel_status) -> keel_status {
        keel_host_refusal_note_response(status)
        return status
    }

    /// Whether the last call noted was one on the response (`notedOnResponse`). Read before `passedOn`, which forgets it.
    @inline(__always) static var lastWasOnResponse: Bool { keel_host_refusal_was_response() != 0 }

    /// Notes that the plugin's last call into the host was answered by another plugin (a command's own status), not
    /// refused by the host: a handler that passes it on answers with that plugin's word.
    @inline(__always) static func notRefused() { keel_host_refusal_note(KEEL_OK) }

    /// Forgets what was noted on this thread (before a handler runs).
    @inline(__always) static func reset() { _ = keel_host_refusal_take() }

    /// Whether `status`, a handler's error status, is the last refusal the host noted on this thread since `reset`;
    /// forgets it.
    @inline(__always) static func passedOn(_ status: keel_status) -> Bool { keel_host_refusal_take() == status }
}
