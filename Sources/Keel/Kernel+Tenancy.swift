// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState
import KeelSystem

/// Tenants, roles and per-tenant enablement, as kernel operations over the state store and `access`.
extension Kernel {
    // MARK: tenants

    func apply(_ result: StateStore.ChangeResult) throws(KernelError) {
        access.refresh()
        if case let .refused(reason) = result { throw KernelError.directory(reason) }
    }

    func directoryChange(_ body: () throws(StateError) -> StateStore.ChangeResult) throws(KernelError) {
        let result: StateStore.ChangeResult
        do { result = try body() } catch { throw KernelError(.state, reason: error.description) }
        try apply(result)
    }

    /// A change of the tenants a plugin serves: applied, then the consumers of the interfaces it provides are told
    /// who serves each tenant now (the providers a tenant's acquire may reach changed).
    func tenancyChange(_ body: () throws(StateError) -> StateStore.ChangeResult) throws(KernelError) {
        let before = registry.snapshot.services, tenantsBefore = access.directory.pluginTenants
        try directoryChange(body)
        notifyServiceChanges(since: before, tenantsBefore: tenantsBefore)
    }

    public func createTenant(_ name: String) throws(KernelError) {
        try directoryChange { () throws(StateError) in try state.createTenant(name) }
        // A choice an earlier tenant of this name left (a state from before deletes removed them) is gone from the store.
        loadServiceSelections()
    }
    public func createRole(_ name: String) throws(KernelError) { try directoryChange { () throws(StateError) in try state.createRole(name) } }

    /// Removes role `name` with its permission items and bindings.
    /// - Returns: the bindings that went with it ("alice in acme"), for the note and the audit row.
    @discardableResult
    public func deleteRole(_ name: String) throws(KernelError) -> [String] {
        let bound = access.directory.members.flatMap { tenant, principals in
            principals.filter { $0.value.contains(name) }.map { "\($0.key) in \(tenant)" }
        }.sorted()
        try directoryChange { () throws(StateError) in try state.deleteRole(name) }
        return bound
    }

    /// True when `permission` (KEY:ACTION, or KEY:* for any action of KEY) is one of `declared` (`key:action` items, as
    /// `PluginInfo.permissions` lists them): the rule `keel roles grant` and the admin API hold a grant to unless forced.
    public static func isDeclared(_ permission: String, among declared: [String]) -> Bool {
        guard let colon = permission.firstIndex(of: ":") else { return false }
        let key = permission[..<colon], action = permission[permission.index(after: colon)...]
        return declared.contains { item in
            guard let c = item.firstIndex(of: ":") else { return false }
            return item[..<c] == key && (action == "*" || item[item.index(after: c)...] == action)
        }
    }

    /// Grants `permission` to `role`, or revokes it.
    /// - Returns: what the operator may not expect: for a grant to the built-in admin, that nothing changed (it allows
    ///   everything); for a revoke, that the role never had it (nothing changed), or its `KEY:*` still allows it, or
    ///   the role is the built-in admin.
    @discardableResult
    public func setRolePermission(_ role: String, _ permission: String, granted: Bool = true) throws(KernelError) -> String? {
        let parts = permission.split(separator: ":", omittingEmptySubsequences: false)
        // A grant names an item a plugin could declare: KEY:ACTION or KEY:*, of letters, digits, '.', '_', '-' (a
        // newline or an escape in one was stored and printed by `roles list` as it was, forging a line). A revoke
        // takes any text, so that one stored before this check can be taken away.
        guard parts.count == 2, !granted || (MenuDeclaration.isValidID(String(parts[0]))
                                             && (parts[1] == "*" || MenuDeclaration.isValidID(String(parts[1])))) else {
            throw KernelError.directory("\"\(Printable.escapingControls(permission))\" is not a permission: write KEY:ACTION (e.g. hello.greetings:view) or KEY:*")
        }
        let held = access.directory.rolePermissions[role] ?? []
        // The built-in admin allows everything: an item listed under it would only read as if it mattered.
        if granted, role == StateStore.Directory.adminRole {
            return "the built-in admin role allows everything already; nothing changed"
        }
        try directoryChange { () throws(StateError) in try state.setRolePermission(role, permission, granted: granted) }
        guard !granted else { return nil }
        if role == StateStore.Directory.adminRole { return "the built-in admin role allows everything, whatever permissions it lists: it still may" }
        let wildcard = "\(parts[0]):*"
        let stillAllowed = permission != wildcard && held.contains(wildcard)
        // A role that never listed the item, but whose KEY:* allows it, still may: said, not "nothing changed" alone.
        if !held.contains(permission) {
            return "it did not have \(permission); nothing changed" + (stillAllowed ? ", and \(wildcard) allows it (revoke \(wildcard) to take it away)" : "")
        }
        return stillAllowed ? "\(wildcard) still allows it" : nil
    }

    /// Binds (or unbinds) `principal` to `tenant` with `role`.
    /// - Returns: a note when an unbinding changed nothing (the principal did not have the role there).
    @discardableResult
    public func setMember(tenant: String, principal: String, role: String, member: Bool = true) throws(KernelError) -> String? {
        // A principal id equal to another only by canonical equivalence would share its bindings here (`CanonicalText`);
        // removing one (a binding made before they were refused, which counts for no one) is allowed.
        // Nor one no authenticate hook can name (`keel_principal_builder` refuses control, line-separator and
        // bidirectional characters): such a binding counts for no one, and was printed by `tenants list` as it was.
        guard Principal.isPrintable(principal) || !member else {
            throw KernelError(.badRequest, pluginID: nil, reason: "principal id \"\(Printable.escapingControls(principal))\" holds a control, "
                              + "line-separator or bidirectional character: no authenticate hook can name such a caller")
        }
        guard CanonicalText.isNFC(principal) || !member else {
            throw KernelError(.badRequest, pluginID: nil, reason: "principal id \"\(CanonicalText.scalars(principal))\" is not in Unicode NFC form; "
                              + "Keel takes principal ids only so (one spelt otherwise could share another's bindings)")
        }
        let held = access.directory.members[tenant]?[principal]?.contains(role) ?? false
        try directoryChange { () throws(StateError) in try state.setMember(tenant: tenant, principal: principal, role: role, member: member) }
        return !member && !held && CanonicalText.isNFC(principal) ? "\(principal) was not \(role) in \(tenant); nothing changed" : nil
    }

    /// Removes a tenant. With `cascade`, plugins enabled only for it are disabled, before the tenant goes: a plugin
    /// with no tenant left counts as enabled for every tenant, so its hooks would otherwise see every tenant's
    /// callers (and could hand out `admin`) until it was stopped. Without `cascade` such plugins refuse the removal.
    /// - Returns: the plugins `cascade` disabled, by id.
    @discardableResult
    public func deleteTenant(_ name: String, cascade: Bool = false) throws(KernelError) -> [String] {
        let only = access.directory.pluginTenants.filter { $0.value == [name] }.map(\.key).sorted()
        if cascade && name != Principal.defaultTenant && access.directory.tenants.contains(name) {
            // Judged without the tenant: a consumer that keeps other tenants needs no provider in the one that goes.
            for id in only { _ = try disable(id, cascade: true, leavingTenant: name) }
        }
        let before = registry.snapshot.services
        try directoryChange { () throws(StateError) in try state.deleteTenant(name, cascade: cascade) }
        for id in only {
            try tenancyChange { () throws(StateError) in try state.setPluginTenants(id, nil) }
        }
        // Its choices of provider went with it.
        loadServiceSelections()
        notifyServiceChanges(since: before)
        return cascade ? only : []
    }

    /// Enables `id` for one tenant (or, with nil, for all).
    /// - Returns: a note when `tenant` changed nothing because the plugin is enabled for every tenant already.
    @discardableResult
    public func enable(_ id: String, tenant: String?) throws(KernelError) -> String? {
        try requireRunning("enable \(id)")
        // Everything that refuses comes before the tenants are written: a plugin not yet scanned is looked for first.
        if bundles[id] == nil { rescan() }
        guard let bundle = bundles[id] else {
            throw notInFolder(id)
        }
        if let tenant, !access.directory.tenants.contains(tenant) {
            throw KernelError.directory("unknown tenant \"\(tenant)\"", pluginID: id)
        }
        // Judged with the tenants it will serve: a consumer enabled for one more tenant needs a provider there too.
        var tenancy = access.directory.pluginTenants
        let current = tenancy[id]
        let alreadyForAll = current == nil && (active[id] != nil || (try? state.plugin(id))??.enabled == true)
        if let tenant { if !alreadyForAll { tenancy[id] = (current ?? []).union([tenant]) } } else { tenancy[id] = nil }
        if let unmet = enableRefusal(id, bundle, tenancy: tenancy) { throw unmet }
        if active[id] != nil || idle.contains(id), let manifest = bundle.manifest,
           let missing = missingInterface(manifest, pending: idle, hostInterfacesUnknown: configuration.startsIdle, tenancy: tenancy) {
            throw KernelError(.dependency, pluginID: id, reason: missing)
        }
        // A registration the host refused while activate went on (the plugin runs without it), a route that is likely
        // a mistake: what an author would not otherwise learn from the command.
        func refusal() -> String? { authorNote(id) }
        guard let tenant else {
            // Already for all tenants: nothing to write (no event, no directory reload on every enable).
            if access.directory.pluginTenants[id] != nil {
                try tenancyChange { () throws(StateError) in try state.setPluginTenants(id, nil) }
            }
            try enable(id)
            return refusal()
        }
        // Enabled for every tenant already (running, parked idle, or just stored so, as a CLI's own kernel sees it):
        // enabling it for one more changes nothing; it must not narrow it to that one.
        if !alreadyForAll {
            try tenancyChange { () throws(StateError) in try state.setPluginTenants(id, (current ?? []).union([tenant])) }
        }
        try enable(id)
        return alreadyForAll ? "it stays enabled for every tenant, \(tenant) included; to serve \(tenant) only, disable it, then "
            + "enable it with --tenant \(tenant)" : nil
    }

    /// Disables `id` for one tenant (or, with nil, everywhere). When no tenant is left, the plugin is disabled.
    /// - Returns: the plugins `cascade` disabled with it, in the order they were disabled.
    @discardableResult
    public func disable(_ id: String, tenant: String?, cascade: Bool = false) throws(KernelError) -> [String] {
        guard let tenant else { return try disable(id, cascade: cascade) }
        let d = access.directory
        guard d.tenants.contains(tenant) else { throw KernelError.directory("unknown tenant \"\(tenant)\"", pluginID: id) }
        let remaining = (d.pluginTenants[id] ?? Set(d.tenants)).subtracting([tenant])
        guard remaining.isEmpty else {
            // A provider that stops serving a tenant may leave a consumer there without one.
            let losing = dependents(of: id, includingIdle: true, servingOnly: remaining)
            guard losing.isEmpty || cascade else {
                let named = losing.map { "\"\($0.id)\" (through \($0.needs))" }.joined(separator: ", ")
                throw KernelError(.dependency, pluginID: id,
                                  reason: "plugin \"\(id)\" cannot stop serving tenant \(tenant): enabled plugin(s) \(named) would be left "
                                    + "without a provider in some tenant they serve; disable them for \(tenant) first "
                                    + "(`keel plugins disable \(losing[0].id) --tenant \(tenant)`) or use --cascade")
            }
            var also: [String] = []
            for other in losing.reversed() where !also.contains(other.id) {
                also += try disable(other.id, tenant: tenant, cascade: true) + [other.id]
            }
            try tenancyChange { () throws(StateError) in try state.setPluginTenants(id, remaining) }
            return also
        }
        let also = try disable(id, cascade: cascade)
        try tenancyChange { () throws(StateError) in try state.setPluginTenants(id, nil) }
        return also
    }
}
