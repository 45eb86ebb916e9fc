// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelState

/// Enable and disable: the operator's wish recorded, then the plugin loaded or taken down, with what depends on it.
extension Kernel {
    /// Enables `id`: records the wish, then loads and activates it. Persisted before it returns.
    /// - Throws: `KernelError` when the plugin is unknown or a dependency is missing, disabled or of the wrong
    ///   version (`.dependency`: refused, nothing stored: the plugin stays as it was), or when it fails to activate
    ///   (it is then recorded `failed` with the reason, and stays wanted, so a later start retries).
    public func enable(_ id: String) throws(KernelError) {
        try requireRunning("enable \(id)")
        if bundles[id] == nil { rescan() }
        guard let bundle = bundles[id] else {
            throw notInFolder(id)
        }
        if let unmet = enableRefusal(id, bundle) { throw unmet }
        // The operator's enable lifts a quarantine (a plugin that is not quarantined has nothing to clear).
        if (try? isQuarantined(id)) == true { try? state.setQuarantine(id, checksum: nil) }
        do { try state.setEnabled(id, true, status: active[id] != nil ? .enabled : .installed) } catch {
            throw KernelError(.state, pluginID: id, reason: error.description)
        }
        guard active[id] == nil else { return }
        if isLazy(id) {
            park(id)
            // A one-command kernel activates what it enables (an eager plugin), so that the operator sees a
            // failure now.
            if configuration.startsIdle && bundles[id]?.manifest?.activation != .lazy { try wake(id) }
            return
        }
        try wakeDependencies(of: id)
        try activate(id)
    }

    /// Disables `id`: records the wish, then takes away everything it registered at once and deactivates it.
    /// - Parameter cascade: also disable the enabled plugins that depend on it (in reverse dependency order);
    ///   without it, a plugin others depend on is refused, naming them.
    /// - Returns: the plugins `cascade` disabled with it, in the order they were disabled.
    /// - Throws: `KernelError` for an unknown plugin, a blocking dependent, or a state write failure.
    @discardableResult
    public func disable(_ id: String, cascade: Bool = false) throws(KernelError) -> [String] {
        try disable(id, cascade: cascade, leavingTenant: nil)
    }

    /// `disable`, judging its dependents as if `leavingTenant` were gone already (a tenant's removal with cascade).
    func disable(_ id: String, cascade: Bool, leavingTenant: String?) throws(KernelError) -> [String] {
        guard bundles[id] != nil || ((try? state.plugin(id)) ?? nil) != nil else {
            throw notInFolder(id, known: false)
        }
        let dependents = dependents(of: id, includingIdle: true, leavingTenant: leavingTenant)
        if !dependents.isEmpty {
            guard cascade else {
                let named = dependents.map { "\"\($0.id)\"" + ($0.needs.hasPrefix("interface") ? " (through \($0.needs))" : "") }
                throw KernelError(.dependency, pluginID: id,
                                  reason: "plugin \"\(id)\" is needed by enabled plugin(s) \(named.joined(separator: ", ")); disable them first or use --cascade")
            }
        }
        var also: [String] = []
        for other in dependents.reversed() where !also.contains(other.id) {
            also += try disable(other.id, cascade: true, leavingTenant: leavingTenant) + [other.id]
        }
        // The wish first: a store that cannot be written (PostgreSQL away) refuses the change before anything is
        // taken down, so the plugin keeps serving.
        do { try state.setEnabled(id, false, status: .disabled) } catch {
            throw KernelError(.state, pluginID: id, reason: error.description)
        }
        unpark(id)
        deactivate(id, keepingLibrary: true)
        return also
    }
}
