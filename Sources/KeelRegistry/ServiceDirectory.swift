// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest

/// Who provides which interface, who listens, and the operator's choices: the services part of a `Snapshot`.
///
/// Which provider serves an interface for a tenant: the tenant's own choice if its plugin provides the interface
/// now; else the host-wide choice, likewise; else the highest ranking, then the one published first (enabled first).
/// Immutable value, read from any thread inside a snapshot.
public struct ServiceDirectory: Sendable {
    /// Providers per interface, in the rule's order: ranking (highest first), then publish order.
    public private(set) var providers: [InterfaceID: [ServiceProvision]] = [:]
    /// Listeners per interface, in publish order.
    public private(set) var listeners: [InterfaceID: [ServiceListener]] = [:]
    /// The operator's choices: tenant ("" host-wide) → interface → plugin id.
    public private(set) var selections: [String: [InterfaceID: String]] = [:]

    public init() {}

    /// Why a provider serves.
    public enum Reason: String, Sendable, Codable {
        /// The operator chose it for this tenant.
        case tenantChoice = "chosen for the tenant"
        /// The operator chose it host-wide.
        case operatorChoice = "chosen by the operator"
        /// The highest ranking among the enabled providers (no choice, or the chosen plugin is not enabled).
        case ranking = "highest ranking"
        /// Ranking ties: the one enabled first.
        case firstEnabled = "first enabled"
    }

    /// The provider serving `interface` for `tenant` ("" host-wide), or nil when none is enabled.
    /// - Parameter serving: which providers serve that tenant (nil: all; see `resolution`).
    public func resolve(_ interface: InterfaceID, tenant: String, serving: ((String) -> Bool)? = nil) -> ServiceProvision? {
        resolution(interface, tenant: tenant, serving: serving)?.provision
    }

    /// The provider serving `interface` for `tenant`, and why.
    /// - Parameter serving: given a provider's plugin id, whether that plugin serves `tenant` (a plugin enabled for
    ///   some tenants only does not serve the others, nor an acquire made for no tenant); nil when every plugin
    ///   serves every tenant. The others are not candidates, chosen or not.
    public func resolution(_ interface: InterfaceID, tenant: String,
                           serving: ((String) -> Bool)? = nil) -> (provision: ServiceProvision, reason: Reason)? {
        guard var candidates = providers[interface] else { return nil }
        if let serving { candidates.removeAll { !serving($0.providerID) } }
        guard let first = candidates.first else { return nil }
        if !tenant.isEmpty, let chosen = selections[tenant]?[interface],
           let p = candidates.first(where: { $0.providerID == chosen }) { return (p, .tenantChoice) }
        if let chosen = selections[""]?[interface], let p = candidates.first(where: { $0.providerID == chosen }) {
            return (p, .operatorChoice)
        }
        let tie = candidates.count > 1 && candidates[1].ranking == first.ranking
        return (first, tie ? .firstEnabled : .ranking)
    }

    /// The plugins the operator chose to serve `interface` for `tenant`, in the rule's order: the tenant's own choice,
    /// then the host-wide one (each taken only when it can serve, as `resolution` takes them). Whether one provides the
    /// interface now is not asked (an idle lazy plugin does not).
    public func choices(_ interface: InterfaceID, tenant: String) -> [String] {
        // Most hosts have no choice stored: every acquire asks, so nothing is built or hashed then.
        guard !selections.isEmpty else { return [] }
        return [tenant.isEmpty ? nil : selections[tenant]?[interface], selections[""]?[interface]].compactMap { $0 }
    }

    /// The rule's order among providers that are not published (idle lazy plugins, by their manifests' ranking): true
    /// when `a` comes before `b`: the operator's `chosen` plugin first, then the highest ranking, then by id.
    public static func prefers(_ a: (id: String, ranking: Int), _ b: (id: String, ranking: Int), chosen: String?) -> Bool {
        if (a.id == chosen) != (b.id == chosen) { return a.id == chosen }
        return (b.ranking, a.id) < (a.ranking, b.id)
    }

    /// "" (host-wide) and the tenants that may be served otherwise: those with a choice of their own for `interface`,
    /// and those of its providers enabled for some tenants only (`providerTenants`: plugin id → its tenants).
    public func scopes(_ interface: InterfaceID, providerTenants: [String: Set<String>] = [:]) -> [String] {
        var tenants = Set(selections.filter { $0.key != "" && $0.value[interface] != nil }.map(\.key))
        for p in providers[interface] ?? [] { tenants.formUnion(providerTenants[p.providerID] ?? []) }
        return [""] + tenants.sorted()
    }

    mutating func add(_ provisions: [ServiceProvision], _ newListeners: [ServiceListener]) {
        for p in provisions {
            var list = providers[p.interface] ?? []
            // After every provider of the same or a higher ranking: ties keep publish order.
            let index = list.firstIndex { $0.ranking < p.ranking } ?? list.count
            list.insert(p, at: index)
            providers[p.interface] = list
        }
        for l in newListeners { listeners[l.interface, default: []].append(l) }
    }

    mutating func remove(_ provisions: [ServiceProvision], _ oldListeners: [ServiceListener]) {
        for p in provisions {
            providers[p.interface]?.removeAll { $0 === p }
            if providers[p.interface]?.isEmpty == true { providers[p.interface] = nil }
        }
        for l in oldListeners {
            listeners[l.interface]?.removeAll { $0 === l }
            if listeners[l.interface]?.isEmpty == true { listeners[l.interface] = nil }
        }
    }

    mutating func setSelections(_ choices: [String: [InterfaceID: String]]) { selections = choices }
}

extension PluginRegistry {
    /// Adds tables the host (or its embedder) provides. They are never revoked.
    public func publishHostServices(_ provisions: [ServiceProvision]) {
        update { $0.services.add(provisions, []) }
    }

    /// Replaces the operator's choices of provider (tenant "" host-wide → interface → plugin id).
    public func setServiceSelections(_ choices: [String: [InterfaceID: String]]) {
        update { $0.services.setSelections(choices) }
    }

    /// The command `name` of active plugin `pluginID`, looked up under the lock without copying the snapshot.
    /// [thread-safe]
    public func command(plugin pluginID: String, name: String) -> PluginCommand? {
        read { $0.commandTables[pluginID]?.first { $0.name == name } }
    }

    /// The names of active plugin `pluginID`'s commands (none when it is not active). [thread-safe]
    public func commandNames(plugin pluginID: String) -> [String] {
        read { $0.commandTables[pluginID]?.map(\.name) ?? [] }
    }

    /// The provider serving `interface` for `tenant`, looked up under the lock without copying the snapshot: the
    /// path every `acquire` takes (`serving`: see `ServiceDirectory.resolution`). [thread-safe]
    public func resolveService(_ interface: InterfaceID, tenant: String, serving: ((String) -> Bool)? = nil) -> ServiceProvision? {
        read { $0.services.resolve(interface, tenant: tenant, serving: serving) }
    }

    /// The provider serving `interface` for `tenant` (as `resolveService`), and the plugins the operator chose for it
    /// (`ServiceDirectory.choices`), in one look-up. [thread-safe]
    public func resolveServiceAndChoices(_ interface: InterfaceID, tenant: String,
                                         serving: ((String) -> Bool)? = nil) -> (provision: ServiceProvision?, choices: [String]) {
        read { ($0.services.resolve(interface, tenant: tenant, serving: serving), $0.services.choices(interface, tenant: tenant)) }
    }
}

extension Snapshot {
    /// The upstream serving the full request `path` (`/ext/<id>/<prefix>/...`) and the path below its prefix, when an
    /// active plugin proxies that prefix (`proxy:`).
    public func proxy(for path: String) -> (pluginID: String, proxy: ProxyDeclaration, rest: String)? {
        guard path.hasPrefix("/ext/") else { return nil }
        let tail = path.dropFirst(5)
        let slash = tail.firstIndex(of: "/") ?? tail.endIndex
        let below = String(tail[slash...])
        guard let proxies = plugins[String(tail[..<slash])]?.proxies else { return nil }
        for p in proxies where below == p.prefix || below.hasPrefix(p.prefix + "/") {
            return (String(tail[..<slash]), p, String(below.dropFirst(p.prefix.count)))
        }
        return nil
    }
}
