// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState

/// Interfaces between plugins ("keel.services/1"): the operator's choice of provider, the dependencies interfaces
/// make, telling consumers about changes, and the host's own tables.
extension Kernel {
    // MARK: the operator's choice

    /// Makes `plugin` serve `interfaceText` (e.g. `gitops.sync/1`) host-wide, or for `tenant`; with `plugin` nil,
    /// forgets the choice so the ranking rule decides again. Stored in one transaction, then in effect at once: new
    /// acquires reach the new provider, consumers' listeners are told, leases on the old one finish undisturbed.
    /// - Returns: a note when the chosen plugin does not serve that scope now (not enabled, or enabled for other
    ///   tenants only), naming what serves instead; the choice is stored all the same and takes effect once it can.
    /// - Throws: `KernelError` for a malformed interface id, a plugin that does not provide it (naming those that
    ///   do), an unknown tenant, or a state write failure.
    @discardableResult
    public func useProvider(_ interfaceText: String, plugin: String?, tenant: String?) throws(KernelError) -> String? {
        let majors = providedMajors(interfaceText)
        guard let interface = InterfaceID(interfaceText) ?? (majors.count == 1 ? majors.first : nil) else {
            throw KernelError(.dependency, reason: majors.count > 1
                ? "\"\(interfaceText)\" names \(majors.sorted().map(\.description).joined(separator: ", ")): say which, like \(majors.sorted()[0])"
                : "\"\(interfaceText)\" is not an interface id like gitops.sync/1")
        }
        let scope = tenant ?? ""
        if !scope.isEmpty, !access.directory.tenants.contains(scope) {
            // Clearing a choice a removed tenant left behind (a state from before removals took them along) is allowed.
            let leftBehind = plugin == nil && ((try? state.serviceSelections()) ?? []).contains {
                $0.tenant == scope && $0.interface == interface.description
            }
            guard leftBehind else { throw KernelError.directory("no tenant \"\(scope)\"") }
        }
        if plugin == nil, !((try? state.serviceSelections()) ?? []).contains(where: { $0.interface == interface.description && $0.tenant == scope }),
           !services().contains(where: { $0.interface == interface.description }) {
            // Nothing to forget, and nothing installed knows the interface: most often a typo.
            let near = Spelling.nearest(interface.description, in: services().map(\.interface)).map { " (did you mean \($0)?)" } ?? ""
            throw KernelError(.dependency, reason: "no installed plugin provides or consumes \(interface), and no choice is stored for it\(near)")
        }
        if let plugin {
            let providers = installedProviders(of: interface)
            // The host's own table ("keel"): only once the embedding program offered it.
            if plugin == ServiceProvision.hostID, !providers.contains(plugin) {
                throw KernelError(.dependency, reason: "the host offers no table for \(interface) (an embedding program offers one with "
                                  + "keel_provide_service or Kernel.provide first)")
            }
            guard providers.contains(plugin) else {
                let named = providers.map { "\"\($0)\"" }.joined(separator: ", ")
                // An interface no installed plugin provides is most often a misspelt one.
                let otherInterface = providers.isEmpty
                    ? Spelling.nearest(interface.description, in: services().filter { !$0.providers.isEmpty }.map(\.interface)).map { "; did you mean \($0)?" } ?? ""
                    : ""
                if bundles[plugin] == nil {
                    let near = Spelling.nearest(plugin, in: providers.isEmpty ? bundles.keys.sorted() : providers).map { "; did you mean \"\($0)\"?" } ?? ""
                    throw KernelError(.unknownPlugin, pluginID: plugin, reason: "no plugin \"\(plugin)\" in the plugin folder ("
                                      + (providers.isEmpty ? "no installed plugin provides \(interface)" : "\(interface) is provided by \(named)") + near + otherInterface + ")")
                }
                let known = (providers.isEmpty ? "no installed plugin provides it" : "it is provided by \(named)") + otherInterface
                throw KernelError(.dependency, pluginID: plugin,
                                  reason: "plugin \"\(plugin)\" does not provide \(interface) (\(known))")
            }
        }
        do { try state.setServiceSelection(interface: interface.description, tenant: scope, plugin: plugin) } catch {
            throw KernelError(.state, pluginID: plugin, reason: error.description)
        }
        let before = registry.snapshot.services
        loadServiceSelections()
        notifyServiceChanges(since: before)
        guard let plugin else { return nil }
        // An idle choice takes over at once where another provider serves the scope now: it is loaded, and the
        // consumers' listeners hear of its table, as for a switch between active providers (they heard nothing, and
        // went on calling the old one until their next acquire). Where none serves, the first acquire loads it. One
        // that fails to activate is recorded failed (the note below says so); the one serving now goes on serving.
        if idle.contains(plugin), !configuration.startsIdle {
            let filter = AccessControl.servingFilter(access.directory.pluginTenants, tenant: scope)
            if filter?(plugin) ?? true,
               let current = registry.snapshot.services.resolve(interface, tenant: scope, serving: filter), current.providerID != plugin {
                try? wake(plugin)
            }
        }
        let serving = services().first { $0.interface == interface.description }?.serving.first { $0.tenant == scope }
        guard serving?.provider != plugin else { return nil }
        let only = access.directory.pluginTenants[plugin] ?? []
        let record = (try? state.plugin(plugin)) ?? nil
        let why = !only.isEmpty && (scope.isEmpty || !only.contains(scope))
            ? "it is enabled for tenant(s) \(only.sorted().joined(separator: ", ")) only"
            : record?.enabled == true && record?.status == .failed ? "it failed (\(record?.reason ?? "see its status"))" : "it is not enabled"
        return "\(plugin) is chosen, but does not serve \(scope.isEmpty ? "host-wide" : "tenant \(scope)"): \(why); "
            + "serving now: \(serving?.provider ?? "none")"
    }

    /// The interfaces installed plugins provide under the bare name `text` (as plugin.yaml's `provides:` writes it,
    /// `gitops.sync`), one per major version; empty when `text` is no bare name.
    func providedMajors(_ text: String) -> Set<InterfaceID> {
        guard InterfaceID.isValidName(text) else { return [] }
        return Set(bundles.values.compactMap(\.manifest).flatMap(\.provides).map(\.interface).filter { $0.name == text })
    }

    /// `command` with a bare interface name completed to the one major version installed plugins provide of it
    /// (`gitops.sync` → `gitops.sync/1`), so that its audit row, its event and its caller's answer name the interface
    /// it changed; any other command, and a name that is unknown or names several, as it is (`useProvider` refuses
    /// those, naming the choices).
    func completingInterface(_ command: KernelCommand) -> KernelCommand {
        guard case let .useProvider(text, plugin, tenant) = command, InterfaceID(text) == nil else { return command }
        let majors = providedMajors(text)
        guard majors.count == 1, let only = majors.first else { return command }
        return .useProvider(interface: only.description, plugin: plugin, tenant: tenant)
    }

    /// Plugins whose manifest provides `interface` (installed, enabled or not), and "keel" when the host does.
    func installedProviders(of interface: InterfaceID) -> [String] {
        var ids = bundles.values.compactMap(\.manifest).filter { $0.provides.contains { $0.interface == interface } }.map(\.id).sorted()
        if registry.snapshot.services.providers[interface]?.contains(where: { $0.providerID == ServiceProvision.hostID }) == true {
            ids.append(ServiceProvision.hostID)
        }
        return ids
    }

    /// Hands the stored choices to the registry, where every acquire reads them.
    func loadServiceSelections() {
        var choices: [String: [InterfaceID: String]] = [:]
        for s in (try? state.serviceSelections()) ?? [] {
            guard let id = InterfaceID(s.interface) else { continue }
            choices[s.tenant, default: [:]][id] = s.plugin
        }
        registry.setServiceSelections(choices)
    }

    // MARK: telling consumers

    /// Logs every change of the provider serving an interface since `before` (per tenant with a choice of its own,
    /// and host-wide), and tells the listeners of that interface. Called after each change of the composition, on the
    /// kernel's thread. A takeover by ranking (a newly enabled provider that ranks higher) is a warning: the calls of
    /// every consumer of that interface now go to it.
    /// - Parameter tenantsBefore: the plugins' tenants before the change, when the change was of those (else the
    ///   current ones are used for both sides).
    func notifyServiceChanges(since before: ServiceDirectory, tenantsBefore: [String: Set<String>]? = nil) {
        let after = registry.snapshot.services
        let tenantsNow = access.directory.pluginTenants, tenantsThen = tenantsBefore ?? tenantsNow
        let interfaces = Set(after.providers.keys).union(before.providers.keys)
        for interface in interfaces.sorted() {
            let scopes = after.scopes(interface, providerTenants: tenantsNow) + before.scopes(interface, providerTenants: tenantsThen)
            for tenant in Set(scopes).sorted() {
                let old = before.resolve(interface, tenant: tenant, serving: AccessControl.servingFilter(tenantsThen, tenant: tenant))
                let now = after.resolution(interface, tenant: tenant, serving: AccessControl.servingFilter(tenantsNow, tenant: tenant))
                guard old !== now?.provision else { continue }
                let scope = tenant.isEmpty ? "" : " for tenant \(tenant)"
                if let old, let now, old.providerID == now.provision.providerID {
                    // The same plugin's new generation (a reload): its listeners hear of the new table, the log need not.
                    log(.debug, now.provision.providerID, "\(interface)\(scope) is served by generation \(now.provision.generation) of \"\(old.providerID)\" now")
                } else {
                    // Out-ranked while still enabled (not replaced because it went away).
                    let takeover = now?.reason == .ranking && (after.providers[interface]?.contains { $0 === old } ?? false)
                    log(takeover ? .warn : .info, now?.provision.providerID,
                        "\(interface)\(scope) is now served by \(now.map { "\"\($0.provision.providerID)\" (\($0.reason.rawValue))" } ?? "no plugin")"
                        + (old.map { " instead of \"\($0.providerID)\"" } ?? "")
                        + (takeover ? "; keep the old one with " + configuration.useProviderHint.replacingOccurrences(of: "{interface}", with: "\(interface)")
                            .replacingOccurrences(of: "{plugin}", with: old?.providerID ?? "") : ""))
                }
                for listener in after.listeners[interface] ?? [] {
                    lifecycleWatch.during(listener.pluginID, generation: listener.generation,
                                          checksum: active[listener.pluginID]?.checksum ?? "", "service listener") {
                        listener.notify(tenant: tenant, now: now?.provision)
                    }
                }
            }
        }
    }

    // MARK: dependencies through interfaces

    /// Why `manifest`'s plugin cannot activate now: a required interface that no active plugin (nor one in
    /// `pending`, about to be) nor the host provides in a version it accepts, or whose providers leave some tenant
    /// the plugin serves without one (`TenantReach`). Nil when all are there, and always nil with
    /// `hostInterfacesUnknown` (a kernel that cannot see what the embedding program offers: any interface may be
    /// the program's, whatever plugins are installed).
    /// - Parameter tenancy: the tenants each plugin is enabled for, when judging a change before it is stored
    ///   (an enable for a tenant); the stored ones by default.
    func missingInterface(_ manifest: Manifest, pending: Set<String> = [], hostInterfacesUnknown: Bool = false,
                          tenancy: [String: Set<String>]? = nil) -> String? {
        guard !hostInterfacesUnknown else { return nil }
        let services = registry.snapshot.services
        for need in manifest.consumes where !need.optional {
            if let unmet = unmetNeed(need, of: manifest, services: services, pending: pending, tenancy: tenancy) { return unmet }
        }
        return nil
    }

    /// `missingInterface` for one of `manifest`'s required interfaces: why the providers active now (and `pending`)
    /// leave it unprovided for some of the consumer's tenants, or nil.
    func unmetNeed(_ need: ConsumedInterface, of manifest: Manifest, services: ServiceDirectory? = nil, pending: Set<String> = [],
                   tenancy: [String: Set<String>]? = nil) -> String? {
        let services = services ?? registry.snapshot.services
        let live = (services.providers[need.interface] ?? []).filter { need.versions.contains($0.version) }.map(\.providerID)
        let upcoming = pending.filter { id in
            id != manifest.id && (bundles[id]?.manifest?.provides.contains(where: need.accepts) ?? false)
        }.sorted()
        let providers = live + upcoming.filter { !live.contains($0) }
        guard !providers.isEmpty else {
            let installed = installedProviders(of: need.interface).filter { $0 != manifest.id }
            let hint = installed.isEmpty ? "no installed plugin provides it" : "enable one of \(installed.map { "\"\($0)\"" }.joined(separator: ", "))"
            return "plugin \"\(manifest.id)\" needs interface \(need.interface) \(need.versions), which no enabled plugin provides (\(hint))"
        }
        let tenancy = tenancy ?? access.directory.pluginTenants
        let reach = TenantReach(providers: providers, consumer: tenancy[manifest.id], tenancy: tenancy)
        guard !reach.isWhole else { return nil }
        return tenantGap(manifest.id, need.interface, need.versions.description, reach, providers: providers, tenancy: tenancy)
    }

    /// The plugins among `candidates` whose manifests provide `need`, in the order the registry would prefer them
    /// once active: the operator's host-wide choice, then the highest `ranking`, then by id. What a wake loads first.
    func preferredProviders(of need: ConsumedInterface, among candidates: some Sequence<String>) -> [String] {
        let chosen = registry.snapshot.services.selections[""]?[need.interface]
        return candidates.compactMap { id -> (id: String, ranking: Int)? in
            bundles[id]?.manifest?.provides.first(where: need.accepts).map { (id, $0.ranking) }
        }.sorted { ServiceDirectory.prefers($0, $1, chosen: chosen) }.map(\.id)
    }

    /// The reason for a consumer whose providers leave some of its tenants without one, naming who serves what and
    /// the commands that close the gap.
    func tenantGap(_ id: String, _ interface: InterfaceID, _ versions: String, _ reach: TenantReach, providers: [String],
                   tenancy: [String: Set<String>]) -> String {
        let serving = providers.map { p in "\"\(p)\" \(tenancy[p].map { "for \($0.sorted().joined(separator: ", "))" } ?? "for every tenant")" }
            .joined(separator: ", ")
        let first = providers.first ?? ""
        if let unserved = reach.unserved {
            let names = unserved.sorted().joined(separator: ", ")
            return "plugin \"\(id)\" needs interface \(interface) \(versions) in tenant(s) \(names), which no enabled provider serves "
                + "(\(serving)); enable one for them (`keel plugins enable \(first) --tenant \(unserved.sorted()[0])`)"
        }
        return "plugin \"\(id)\" is enabled for every tenant and needs interface \(interface) \(versions) in each, but its providers "
            + "are enabled for some tenants only (\(serving)); enable one for every tenant (`keel plugins enable \(first)`), or "
            + "\"\(id)\" for those tenants only (`keel plugins enable \(id) --tenant T` when it is not enabled)"
    }

    /// The active plugins that need `id` as a dependency, or as a provider of an interface they require that
    /// serves some tenant of theirs no other provider does; in activation order, each with what it needs. With
    /// `includingIdle`, then the idle ones (enabled, not loaded) that would need it when they wake, by their
    /// manifests, in id order.
    /// - Parameters:
    ///   - servingOnly: judge `id` left serving these tenants only (a disable for one tenant), instead of gone; its
    ///     plugin dependents are then unaffected.
    ///   - leavingTenant: judge as if this tenant were gone already (a tenant's removal): a consumer does not need a
    ///     provider in a tenant that goes with it.
    func dependents(of id: String, includingIdle: Bool = false, servingOnly: Set<String>? = nil,
                    leavingTenant: String? = nil) -> [(id: String, needs: String)] {
        let services = registry.snapshot.services
        let stored = access.directory.pluginTenants
        let tenancy = leavingTenant.map { gone in stored.mapValues { $0.subtracting([gone]) } } ?? stored
        let after = servingOnly.map { narrowed in tenancy.merging([id: narrowed]) { $1 } } ?? tenancy
        /// Whether `consumer`'s providers (`id` among them) serve fewer of its tenants once `id` goes or narrows.
        func loses(_ consumer: String, _ providers: [String]) -> Bool {
            guard providers.contains(id) else { return false }
            let now = TenantReach(providers: providers, consumer: tenancy[consumer], tenancy: tenancy)
            let then = servingOnly == nil
                ? TenantReach(providers: providers.filter { $0 != id }, consumer: tenancy[consumer], tenancy: tenancy)
                : TenantReach(providers: providers, consumer: tenancy[consumer], tenancy: after)
            return then.served != now.served
        }
        let running = activationOrder.compactMap { other -> (String, String)? in
            guard other != id, let manifest = active[other]?.manifest else { return nil }
            if servingOnly == nil, manifest.dependencies.contains(where: { $0.id == id }) { return (other, "plugin \"\(id)\"") }
            for need in manifest.consumes where !need.optional {
                // Providers serving now, and idle (lazy) ones, which publish nothing until woken but serve then.
                let live = (services.providers[need.interface] ?? []).filter { need.versions.contains($0.version) }.map(\.providerID)
                let sleeping = idle.filter { p in !live.contains(p) && bundles[p]?.manifest?.provides.contains(where: need.accepts) == true }
                if loses(other, live + sleeping.sorted()) { return (other, "interface \(need.interface)") }
            }
            return nil
        }
        guard includingIdle, bundles[id]?.manifest != nil else { return running }
        // An idle plugin's providers are whichever enabled plugins' manifests offer the interface, loaded or not.
        let enabled = Set(activationOrder).union(idle).sorted()
        let sleeping = idle.subtracting([id]).sorted().compactMap { other -> (String, String)? in
            guard let manifest = bundles[other]?.manifest else { return nil }
            if servingOnly == nil, manifest.dependencies.contains(where: { $0.id == id }) { return (other, "plugin \"\(id)\"") }
            for need in manifest.consumes where !need.optional {
                let providers = enabled.filter { $0 != other && bundles[$0]?.manifest?.provides.contains(where: need.accepts) == true }
                if loses(other, providers) { return (other, "interface \(need.interface)") }
            }
            return nil
        }
        return running + sleeping
    }

    /// The plugins `id` waits for at start-up: its plugin dependencies and the providers of interfaces it requires.
    /// An edge to a provider is labelled with the interface, for naming a cycle.
    func startupDependencies(_ id: String) -> [(id: String, via: InterfaceID?)] {
        guard let manifest = bundles[id]?.manifest else { return [] }
        var deps = manifest.dependencies.map { (id: $0.id, via: InterfaceID?.none) }
        for need in manifest.consumes where !need.optional {
            for (other, bundle) in bundles where other != id && bundle.manifest?.provides.contains(where: need.accepts) == true {
                deps.append((id: other, via: need.interface))
            }
        }
        return deps
    }

    // MARK: the host's own tables

    /// Offers `table` to plugins as a provider of `interface` (e.g. an appliance's `appliance.gpio/1`), under the
    /// provider id "keel". Consumers that are waiting for it are told; plugins requiring it can activate from now.
    /// The table must start with `uint32_t struct_size` and stay valid for the life of the process.
    /// - Throws: `KernelError.Code.dependency` for a malformed id, a version outside its major, or a second table
    ///   for the same interface.
    public func provide(_ interfaceText: String, version: String? = nil, ranking: Int = 0, table: HostTable) throws(KernelError) {
        guard let interface = InterfaceID(interfaceText) else {
            throw KernelError(.dependency, reason: "\"\(interfaceText)\" is not an interface id like appliance.gpio/1")
        }
        let v = version.flatMap(Semver.init) ?? Semver(interface.major, 0, 0)
        guard v.major == interface.major else {
            throw KernelError(.dependency, reason: "version \(v) is not in major version \(interface.major) of \(interface)")
        }
        guard Int(table.pointer.loadUnaligned(as: UInt32.self)) >= 8 else {
            throw KernelError(.dependency, reason: "\(interface): the table must start with uint32_t struct_size set to its sizeof")
        }
        if registry.snapshot.services.providers[interface]?.contains(where: { $0.providerID == ServiceProvision.hostID }) == true {
            throw KernelError(.dependency, reason: "the host already provides \(interface)")
        }
        let before = registry.snapshot.services
        registry.publishHostServices([.host(interface, version: v, ranking: ranking, table: table.pointer)])
        notifyServiceChanges(since: before)
    }
}

/// A table the host or an embedding program provides (`Kernel.provide`): a pointer to constant data that starts with
/// `uint32_t struct_size` and stays valid for the life of the process.
/// `@unchecked Sendable` because it holds a pointer: the data behind it is constant and never freed, so any thread may
/// read it.
public struct HostTable: @unchecked Sendable {
    public let pointer: UnsafeRawPointer
    public init(_ pointer: UnsafeRawPointer) { self.pointer = pointer }
}
