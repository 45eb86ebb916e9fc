// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Keel

extension PluginDispatcher {
    /// Activates the idle lazy plugin whose prefix `/ext/<id>/` the (canonical) `path` is under, through the kernel:
    /// serialised with every other lifecycle change, so concurrent first requests wait for one activation. Any
    /// caller may trigger it, authenticated or not: it is what the plugin's first route would need anyway, and a
    /// plugin whose activation failed is not idle any more, so it is tried once per enable.
    /// - Returns: true when the plugin is active now (the request is to be looked up again), false when `path` is
    ///   not an idle plugin's.
    /// - Throws: `APIError` 503 `plugin-activation-failed` when it failed; the reason is logged and recorded in the
    ///   plugin's status, not told to the caller.
    func wakeIdlePlugin(_ path: String) async throws -> Bool {
        guard path.hasPrefix("/ext/") else { return false }
        let id = String(path.dropFirst(5).prefix { $0 != "/" })
        let kernel = gatekeeper.kernel
        guard !id.isEmpty, kernel.isIdle(id) else { return false }
        do { try await kernel.wake(id) } catch {
            throw APIError(.serviceUnavailable, "plugin-activation-failed", "plugin \"\(id)\" could not be activated; see its status")
        }
        return true
    }
}
