// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import KeelManifest

/// The "keel.services/1" half of an activation: the tables it provides and the listeners it registers (while activate
/// runs), and the leases it takes on other plugins' tables (at any time). Thread-safe, like the rest of
/// `ActivationContext`.
extension ActivationContext {
    /// A lease this activation held was released.
    func leaseReleased() { leases.wrappingSubtract(1, ordering: .relaxed) }

    /// Registers this activation's table for `text` (an interface it declares under provides:).
    /// `owner`: what keeps a table the host made alive (see `ServiceProvision.owner`).
    func addProvision(_ text: String, table: UnsafeRawPointer, owner: AnyObject? = nil) -> Int32 {
        let what = "service \(text)"
        if let refusal = admitRegistration(nil, what: what) { return refusal }
        guard let declared = identity.provides.first(where: { $0.interface.description == text }) else {
            let known = identity.provides.map(\.interface.description)
            return refuse(StatusCode.denied, "\(what): not declared under provides: in plugin.yaml" +
                          (known.isEmpty ? "" : " (declared: \(known.joined(separator: ", ")))"))
        }
        let size = Int(table.loadUnaligned(as: UInt32.self))
        guard size >= 8 else {
            return refuse(StatusCode.invalidArgument, "\(what): \(SizeRefusal.table)\(size); a table starts with uint32_t struct_size set to its sizeof")
        }
        return pending.withLock { p -> Int32 in
            guard !p.services.contains(where: { $0.interface == declared.interface }) else {
                return refuse(StatusCode.conflict, "\(what) is provided twice by plugin \"\(pluginID)\"")
            }
            p.services.append(ServiceProvision(interface: declared.interface, version: declared.version, ranking: declared.ranking,
                                               providerID: pluginID, providerVersion: identity.version,
                                               generation: identity.generation, table: table, context: self,
                                               functions: declared.functions, owner: owner))
            return StatusCode.ok
        }
    }

    /// Registers a listener for changes of the provider of `text` (an interface declared under consumes:).
    func addListener(_ text: String, function: keel_service_changed_fn?, userData: UnsafeMutableRawPointer?,
                     forward: (@Sendable (String, ServiceProvision?) -> Void)? = nil) -> Int32 {
        let what = "service listener for \(text)"
        if let refusal = admitRegistration(nil, what: what) { return refusal }
        guard let consumed = identity.consumed(text) else {
            return refuse(StatusCode.denied, "\(what): \(text) is not declared under consumes: in plugin.yaml")
        }
        return pending.withLock { p -> Int32 in
            guard p.listeners.count < 16 else { return refuse(StatusCode.limit, "\(what): over the limit of 16 listeners per plugin") }
            p.listeners.append(ServiceListener(interface: consumed.interface, function: function, userData: userData, context: self,
                                               forward: forward))
            return StatusCode.ok
        }
    }

    /// Leases the table serving `text` for `tenant`: checks the declaration, the provider's version and table size,
    /// and retries once or twice when the chosen provider is being taken down just then. [thread-safe]
    func acquire(_ text: String, tenant: String, minSize: Int) -> Result<ServiceLease, PluginCallError> {
        func failure(_ status: Int32, _ message: String, log: Bool = true) -> Result<ServiceLease, PluginCallError> {
            if log { logBudgeted(.warn, message) }
            return .failure(PluginCallError(pluginID: pluginID, status: status, message: message))
        }
        // A closed activation leases nothing more: `close` released its leases once, and one taken after would keep
        // its provider from draining for good.
        guard !isClosed else {
            return failure(StatusCode.wrongState, "service \(text): the plugin's activation is over", log: false)
        }
        guard let consumed = identity.consumed(text) else {
            return failure(StatusCode.denied, "service \(text) denied: not declared under consumes: in plugin.yaml")
        }
        // A consumer enabled for some tenants only leases for those alone: one enabled for tenant evilco naming acme
        // reached acme's own provider (and its configuration) until 2026-12-08. Checked by the host for a worker's
        // acquire too (`RemoteLeases` comes here).
        guard tenant.isEmpty || environment.serves(pluginID, tenant: tenant) else {
            return failure(StatusCode.denied, "service \(text) for tenant \"\(tenant)\" denied: \"\(pluginID)\" is not enabled for that tenant")
        }
        if let broker = environment.serviceBroker { return acquireRemote(consumed, tenant: tenant, minSize: minSize, broker: broker) }
        for _ in 0..<3 {
            guard let provision = environment.resolveService(consumed.interface, tenant: tenant) else {
                return failure(StatusCode.notFound, "no enabled plugin provides \(consumed.interface)", log: false)
            }
            guard consumed.versions.contains(provision.version) else {
                return failure(StatusCode.unsupported, "\(consumed.interface) is served by \"\(provision.providerID)\" in version \(provision.version), outside the declared range \(consumed.versions)")
            }
            if !consumed.functions.isEmpty, !provision.functions.isEmpty,
               let difference = provision.functions.firstDifference(from: consumed.functions) {
                return failure(StatusCode.unsupported, "\(consumed.interface): the functions: of consumer \"\(pluginID)\" and provider \"\(provision.providerID)\" disagree: \(difference)")
            }
            guard provision.tableSize >= minSize else {
                return failure(StatusCode.unsupported, "\(consumed.interface) is served by \"\(provision.providerID)\" with a table of \(provision.tableSize) bytes; \(minSize) are needed")
            }
            guard leases.wrappingAdd(1, ordering: .relaxed).newValue <= ServiceLease.limitPerConsumer else {
                leases.wrappingSubtract(1, ordering: .relaxed)
                return failure(StatusCode.limit, "\(ServiceLease.limitPerConsumer) service leases held at once; release each lease when its work is done")
            }
            if provision.retain() { return .success(ServiceLease(provision: provision, consumer: self)) }
            leases.wrappingSubtract(1, ordering: .relaxed)
        }
        return failure(StatusCode.unavailable, "the provider of \(consumed.interface) is being taken down; retry", log: false)
    }
}
