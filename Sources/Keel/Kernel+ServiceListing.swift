// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState

/// What `keel services list` (`GET /api/v1/services`, the console's Services table) and a plugin's info say of the
/// interfaces between plugins: who provides each, who serves each scope and why, who consumes it.
extension Kernel {
    /// Every interface that some installed plugin provides or consumes, or the host provides: its providers, which
    /// serves (host-wide and per tenant with a choice) and why, and its consumers.
    public func services() -> [InterfaceInfo] {
        let directory = registry.snapshot.services, tenants = access.directory.pluginTenants
        let declared = declaredServices()
        // The records, read once and only when some provider neither runs nor waits idle (every command's live view
        // lists the services; a shared state would pay a round trip per read).
        var records: [String: PluginRecord]?
        func whyStopped(_ id: String) -> String {
            if records == nil { records = BundleReconciler.byID((try? state.plugins()) ?? []) }
            return Self.stoppedText(records?[id], running: active[id] != nil)
        }
        return Set(directory.providers.keys).union(declared.interfaces).sorted().map { interface in
            let providers = providerRows(interface, directory: directory, declared: declared, whyStopped: whyStopped)
            let consumers = (declared.consumers[interface] ?? []).map { c in
                InterfaceInfo.Consumer(plugin: c.plugin, versions: c.versions, optional: c.optional, active: active[c.plugin] != nil)
            }.sorted { $0.plugin < $1.plugin }
            return InterfaceInfo(interface: interface.description, providers: providers,
                                 serving: serving(interface, providers: providers, directory: directory, tenants: tenants),
                                 consumers: consumers)
        }
    }

    /// `interface`'s installed providers as `services()` lists them, the one the rule prefers first, then the host's
    /// own table if it provides one.
    /// - Parameter whyStopped: why a provider that neither runs nor waits idle serves nothing (nil: not asked).
    func providerRows(_ interface: InterfaceID, directory: ServiceDirectory, declared: ServiceDeclarations,
                      whyStopped: (String) -> String?) -> [InterfaceInfo.Provider] {
        let live = directory.providers[interface] ?? []
        var providers: [InterfaceInfo.Provider] = (declared.providers[interface] ?? []).map { p in
            let provision = live.first { $0.providerID == p.plugin }
            let isIdle = provision == nil && idle.contains(p.plugin)
            return .init(plugin: p.plugin, pluginVersion: p.pluginVersion, version: p.version, ranking: p.ranking,
                         active: provision != nil, generation: provision?.generation, leases: provision?.leasesHeld ?? 0,
                         idle: isIdle, stopped: provision == nil && !isIdle ? whyStopped(p.plugin) : nil)
        }.sorted { ($0.ranking, $1.plugin) > ($1.ranking, $0.plugin) }
        for host in live where host.providerID == ServiceProvision.hostID {
            providers.append(.init(plugin: host.providerID, pluginVersion: "", version: "\(host.version)", ranking: host.ranking,
                                   active: true, generation: 0, leases: host.leasesHeld, idle: false))
        }
        return providers
    }

    /// Who serves `interface` host-wide and for each tenant that may be served otherwise (one with a choice of its
    /// own, one a provider is enabled for only), and why. An idle provider that the first acquire would wake (the
    /// operator's choice for that scope) is named as serving it; `services()` and a plugin's info both say so.
    /// - Parameters:
    ///   - providers: `providerRows(interface, ...)`.
    ///   - tenants: plugin id → the tenants it is enabled for (absent: all).
    func serving(_ interface: InterfaceID, providers: [InterfaceInfo.Provider], directory: ServiceDirectory,
                 tenants: [String: Set<String>]) -> [InterfaceInfo.Serving] {
        // The tenants an idle provider is enabled for are scopes too: it serves them once woken.
        let idleTenants = providers.filter(\.idle).flatMap { tenants[$0.plugin] ?? [] }
        let scopes = idleTenants.isEmpty ? directory.scopes(interface, providerTenants: tenants)
            : [""] + Set(directory.scopes(interface, providerTenants: tenants).dropFirst()).union(idleTenants).sorted()
        return scopes.map { tenant -> InterfaceInfo.Serving in
            let filter = AccessControl.servingFilter(tenants, tenant: tenant)
            let r = directory.resolution(interface, tenant: tenant, serving: filter)
            // Only an idle provider enabled for this tenant would be woken for it.
            let wakes = providers.contains { $0.idle && filter?($0.plugin) ?? true }
            // The operator's choice, idle, is woken by the first acquire rather than another one serving for it.
            let idleChoice = directory.choices(interface, tenant: tenant).lazy.filter { filter?($0) ?? true }
                .first { c in c == r?.provision.providerID || providers.contains { $0.plugin == c && $0.idle } }
            if let chosen = idleChoice, chosen != r?.provision.providerID {
                let why: ServiceDirectory.Reason = directory.selections[tenant]?[interface] == chosen && !tenant.isEmpty ? .tenantChoice : .operatorChoice
                return .init(tenant: tenant, choice: directory.selections[tenant]?[interface], provider: chosen,
                             reason: why.rawValue + "; " + Self.idleServingNote)
            }
            // Which idle one: the registry's order (ranking, then id), among those serving this tenant.
            let first = wakes ? providers.filter { $0.idle && filter?($0.plugin) ?? true }.first?.plugin : nil
            return .init(tenant: tenant, choice: directory.selections[tenant]?[interface], provider: r?.provision.providerID,
                         reason: r?.reason.rawValue ?? (first.map { "no provider running; \($0) (idle) is loaded by the first acquire" } ?? "no provider enabled"))
        }
    }

    /// What a scope served by an idle provider says after the reason it was chosen.
    static let idleServingNote = "idle, loaded by the first acquire"

    /// Why a provider serves no table: `failed: <reason>` (its first line), `disabled`, `missing`, `not enabled` (also
    /// without a record: the list is a view, not a check), `running, but it registered no table for it`, or the status
    /// of an enabled plugin that is not running (`installing`, ...).
    static func stoppedText(_ record: PluginRecord?, running: Bool) -> String {
        if running { return "running, but it registered no table for it" }
        guard let record else { return "not enabled" }
        switch record.status {
        case .failed: return "failed" + (record.reason.map { ": " + ($0.split(separator: "\n", omittingEmptySubsequences: false).first ?? "") } ?? "")
        case .disabled: return "disabled"
        case .missing: return "missing"
        case .enabled, .installed: return record.enabled ? "enabled, not running" : "not enabled"
        default: return record.enabled ? "enabled, \(record.status.rawValue)" : "not enabled (\(record.status.rawValue))"
        }
    }

    /// The bundles' service declarations, gathered once per change of the bundles: every command's live view lists the
    /// services, and going through every manifest for each interface cost a command on a host of 1,000 plugins more
    /// than the rest of its live view.
    func declaredServices() -> ServiceDeclarations {
        if let known = serviceDeclarations { return known }
        var declared = ServiceDeclarations()
        for manifest in bundles.values.compactMap(\.manifest) {
            for p in manifest.provides {
                declared.interfaces.insert(p.interface)
                declared.providers[p.interface, default: []].append(
                    (manifest.id, "\(manifest.version)", "\(p.version)", p.ranking))
            }
            for c in manifest.consumes {
                declared.interfaces.insert(c.interface)
                declared.consumers[c.interface, default: []].append((manifest.id, c.versions.text, c.optional))
            }
        }
        serviceDeclarations = declared
        return declared
    }
}

/// What the bundles' manifests declare of services, by interface (`Kernel.services`): providers with their versions
/// and ranking (the first `provides` entry of an interface in a manifest, as a manifest names each once), consumers
/// with the versions they take.
struct ServiceDeclarations {
    var interfaces: Set<InterfaceID> = []
    var providers: [InterfaceID: [(plugin: String, pluginVersion: String, version: String, ranking: Int)]] = [:]
    var consumers: [InterfaceID: [(plugin: String, versions: String, optional: Bool)]] = [:]
}

/// One interface as `keel services list` shows it.
public struct InterfaceInfo: Sendable, Codable, Hashable {
    /// `name/major`, e.g. `gitops.sync/1`.
    public var interface: String
    /// Installed providers, the one the rule prefers first.
    public var providers: [Provider]
    /// Who serves: host-wide (tenant "") first, then each tenant with a choice of its own.
    public var serving: [Serving]
    /// Installed plugins that consume it.
    public var consumers: [Consumer]

    public struct Provider: Sendable, Codable, Hashable {
        public var plugin: String
        public var pluginVersion: String
        /// The interface version it implements.
        public var version: String
        public var ranking: Int
        public var active: Bool
        public var generation: Int?
        /// Leases held on it now.
        public var leases: Int
        /// Enabled but not loaded (`activation: lazy`, or a CLI's kernel, which starts plugins idle): a consumer's
        /// acquire loads it. Absent in the JSON of a host before 2026-12-06: read as false.
        public var idle: Bool = false
        /// Why it serves no table although installed (`Kernel.stoppedText`: `failed: <reason>`, `disabled`, `missing`,
        /// `not enabled`, ...); nil when it serves or is idle. Absent in the JSON of a host before 2026-12-07.
        public var stopped: String?

        public init(plugin: String, pluginVersion: String, version: String, ranking: Int, active: Bool, generation: Int?,
                    leases: Int, idle: Bool, stopped: String? = nil) {
            (self.plugin, self.pluginVersion, self.version, self.ranking) = (plugin, pluginVersion, version, ranking)
            (self.active, self.generation, self.leases, self.idle, self.stopped) = (active, generation, leases, idle, stopped)
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            plugin = try c.decode(String.self, forKey: .plugin)
            pluginVersion = try c.decode(String.self, forKey: .pluginVersion)
            version = try c.decode(String.self, forKey: .version)
            ranking = try c.decode(Int.self, forKey: .ranking)
            active = try c.decode(Bool.self, forKey: .active)
            generation = try c.decodeIfPresent(Int.self, forKey: .generation)
            leases = try c.decode(Int.self, forKey: .leases)
            idle = try c.decodeIfPresent(Bool.self, forKey: .idle) ?? false
            stopped = try c.decodeIfPresent(String.self, forKey: .stopped)
        }
    }

    public struct Serving: Sendable, Codable, Hashable {
        /// "" host-wide.
        public var tenant: String
        /// The operator's choice for this scope, if any (it may name a plugin that is not enabled).
        public var choice: String?
        /// The plugin serving now, or nil.
        public var provider: String?
        public var reason: String
    }

    public struct Consumer: Sendable, Codable, Hashable {
        public var plugin: String
        public var versions: String
        public var optional: Bool
        public var active: Bool
    }
}
