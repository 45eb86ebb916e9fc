// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import Keel

extension Gatekeeper {
    /// Activates the idle lazy plugin whose prefix `/ext/<id>/` the (canonical) `path` is under, whatever it asks for
    /// (a route, a static file, a proxied prefix, a WebSocket handshake: an idle plugin's registrations are not known),
    /// through the kernel: serialised with every other lifecycle change, so concurrent first requests wait for one
    /// activation. Used by the dispatcher and by the WebSocket proxy's handshake. Any caller
    /// the plugin would serve may trigger it, authenticated or not: it is what the plugin's first route would need
    /// anyway, and a plugin whose activation failed is not idle any more, so it is tried once per enable. A plugin
    /// enabled for some tenants only is woken only for a caller in one of them (`request`'s caller, identified through
    /// the auth chain first; its public `assets/` aside): another tenant's request loads none of its code.
    /// - Parameter request: the request that asks; nil when its caller was already let through (a retry).
    /// - Returns: true when the plugin is active now (the request is to be looked up again), false when `path` is
    ///   not an idle plugin's, or not one this caller may wake.
    /// - Throws: `APIError` 503 `plugin-activation-failed` when it failed; the reason is logged and recorded in the
    ///   plugin's status, not told to the caller. 403 when an authenticate hook failed.
    func wakeIdlePlugin(_ path: String, for request: Request?) async throws -> Bool {
        guard path.hasPrefix("/ext/") else { return false }
        let id = String(path.dropFirst(5).prefix { $0 != "/" })
        let kernel = self.kernel
        guard !id.isEmpty, kernel.isIdle(id) else { return false }
        if let request, kernel.access.isTenantLimited(id), !path.hasPrefix("/ext/\(id)/assets/") {
            let gatekeeper = self, snapshot = kernel.registry.snapshot
            let caller = try await lanes.run(id) { try gatekeeper.identify(request, snapshot: snapshot, pluginID: id) }
            guard kernel.access.isVisible(id, tenant: caller.principal.tenant) else { return false }
        }
        // A stalled lifecycle would leave the request waiting behind the stuck call, holding its connection.
        if kernel.lifecycleStall != nil {
            throw APIError(.serviceUnavailable, "lifecycle-stalled", "plugin \"\(id)\" cannot be activated now; try again later")
        }
        do { try await kernel.wake(id) } catch where error.code == .notEnabled {
            // Disabled or removed while this request waited for the kernel: no plugin's path now (404).
            return false
        } catch {
            throw APIError(.serviceUnavailable, "plugin-activation-failed", "plugin \"\(id)\" could not be activated; see its status")
        }
        return true
    }
}
