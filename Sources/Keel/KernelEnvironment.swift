// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest
import KeelRegistry
import Synchronization

/// The host services an activation sees, backed by the registry and the kernel's log. Thread-safe.
final class KernelEnvironment: PluginEnvironment {
    let registry: PluginRegistry
    let sink: @Sendable (LogRecord) -> Void
    /// Where hook overruns and failed calls are counted (the kernel's; nil for a validator or inspector).
    let metrics: KernelMetrics?
    private let misbehaviour = HandlerSlot<@Sendable (String, Int, String) -> Void>()
    private let changes = HandlerSlot<@Sendable () -> Void>()

    init(registry: PluginRegistry, log: @escaping @Sendable (LogRecord) -> Void, metrics: KernelMetrics? = nil) {
        self.registry = registry
        self.sink = log
        self.metrics = metrics
    }

    func hookOverran(plugin: String, hook: String) { metrics?.report(.hookOverran(plugin: plugin, hook: hook)) }
    func callFailed(plugin: String) { metrics?.report(.callFailed(plugin: plugin)) }

    func routeOwner(method: String, shape: String, excluding plugin: String) -> String? {
        registry.snapshot.routeOwner(method: method, shape: shape, excluding: plugin)
    }

    func menuOwner(id: String, excluding plugin: String) -> String? {
        registry.snapshot.menuOwner(id: id, excluding: plugin)
    }

    func checkPermission(plugin: String, _ principal: Principal, action: String, resource: String) -> AuthDecision {
        guard let access = access.withLock({ $0 }) else { return .deny }
        return access.check(plugin: plugin, principal, action: action, resource: resource)
    }

    private let access = Mutex<AccessControl?>(nil)
    func attach(_ control: AccessControl) { access.withLock { $0 = control } }

    /// Who to tell when a plugin keeps failing (the kernel, which disables it unless it guards requests).
    func onMisbehaving(_ handler: @escaping @Sendable (String, Int, String) -> Void) { misbehaviour.set(handler) }

    /// Who to tell when something shown about plugins changed outside a lifecycle change (a worker restarted: its
    /// process id and restart count): the kernel, which emits `.pluginsChanged`.
    func onChanged(_ handler: @escaping @Sendable () -> Void) { changes.set(handler) }

    func changed() { changes.current?() }

    func misbehaving(plugin: String, generation: Int, reason: String) {
        sink(LogRecord(level: .error, pluginID: plugin, message: "misbehaving: \(reason)"))
        misbehaviour.current?(plugin, generation, reason)
    }

    func serves(_ plugin: String, tenant: String) -> Bool {
        access.withLock { $0 }?.isVisible(plugin, tenant: tenant) ?? true
    }

    /// The provider serving `interface` for `tenant`: only a plugin that serves that tenant (a provider enabled for
    /// some tenants only never serves another tenant's acquire, nor one made for no tenant).
    func resolveService(_ interface: InterfaceID, tenant: String) -> ServiceProvision? {
        let serving = access.withLock { $0 }?.servingFilter(tenant: tenant)
        let (resolved, choices) = registry.resolveServiceAndChoices(interface, tenant: tenant, serving: serving)
        // The operator's choice holds for a lazy provider too: idle, it is woken rather than another one served in its
        // place (when it cannot be, what serves now serves).
        if let chosen = idleChoice(choices, interface, serving: serving, servedBy: resolved?.providerID) {
            if wake(.plugin(chosen)) == nil, let provision = registry.resolveService(interface, tenant: tenant, serving: serving),
               provision.providerID == chosen { return provision }
        }
        if let resolved { return resolved }
        // No provider active: an idle lazy one is woken (acquires come from plugin code on a lane thread), the next one
        // when it fails (it is idle no more, so each pass takes another).
        for _ in 0..<idle.withLock({ $0.count }) {
            let failure = wake(.interface(interface, serving: serving, chosen: choices.first))
            if let provision = registry.resolveService(interface, tenant: tenant, serving: serving) { return provision }
            // Another try only when that provider failed to activate (it is idle no more); a stall, a time-out or a
            // refusal ends it.
            guard let failed = failure?.pluginID, idle.withLock({ $0[failed] == nil }) else { return nil }
        }
        return nil
    }

    /// Something an idle lazy plugin is woken for.
    enum Need: Sendable {
        case plugin(String)
        /// An idle provider of the interface, among the plugins `serving` accepts (nil: any); `chosen`, the operator's
        /// choice for it, first.
        case interface(InterfaceID, serving: (@Sendable (String) -> Bool)?, chosen: String?)
    }

    /// The manifests of the idle lazy plugins, by id (the kernel's `idle`, readable off the actor).
    private let idle = Mutex<[String: Manifest]>([:])
    private let waker = HandlerSlot<@Sendable (Need) -> KernelError?>()

    func updateIdle(adding: [(String, Manifest)], removing: Set<String>) {
        idle.withLock { all in
            for id in removing { all[id] = nil }
            all.reserveCapacity(all.count + adding.count)
            for (id, manifest) in adding { all[id] = manifest }
        }
    }
    func idleManifest(_ id: String) -> Manifest? { idle.withLock { $0[id] } }
    /// The idle plugin that provides `interface` (the first by id) among those `serving` accepts (nil: any), if any:
    /// an acquire for one tenant never loads a provider enabled for other tenants only.
    func idleProvider(of interface: InterfaceID, serving: ((String) -> Bool)? = nil, chosen: String? = nil) -> String? {
        idle.withLock { all in
            let candidates = all.compactMap { id, manifest in
                serving?(id) == false ? nil : manifest.provides.first { $0.interface == interface }.map { (id: id, ranking: $0.ranking) }
            }
            // As the registry would choose among them active.
            return candidates.min { ServiceDirectory.prefers($0, $1, chosen: chosen) }?.id
        }
    }

    /// The operator's choice to wake for an acquire of `interface`: the first of `choices` (tenant's, then host-wide)
    /// that could serve, when it is idle; nil when that one serves already (`servedBy`) or none is idle. A choice that
    /// is neither (not enabled, or not for the tenant) is passed over, as the registry passes it over.
    func idleChoice(_ choices: [String], _ interface: InterfaceID, serving: ((String) -> Bool)?, servedBy: String?) -> String? {
        guard !choices.isEmpty else { return nil }
        for choice in choices where serving?(choice) != false {
            if choice == servedBy { return nil }
            if idle.withLock({ $0[choice]?.provides.contains { $0.interface == interface } ?? false }) { return choice }
        }
        return nil
    }

    /// Who wakes idle lazy plugins (the kernel, waiting for the activation).
    func onIdleNeeded(_ handler: @escaping @Sendable (Need) -> KernelError?) { waker.set(handler) }

    /// Wakes what `need` names when it is idle, waiting for it; nil when it is active now or nothing was idle.
    func wake(_ need: Need) -> KernelError? {
        // A plugin being disabled, whose call the kernel's thread is draining, gets no wake: it would be queued behind
        // that drain, which waits for this very call (the lifecycle stalled for the drain's time-out, then the
        // plugin's lease refused anyway, its activation over).
        if ActivationContext.currentCallHoldsLifecycle {
            let what = switch need { case let .plugin(id): "plugin \"\(id)\""; case let .interface(interface, _, _): "a provider of \(interface)" }
            return KernelError(.loadFailed, reason: "\(what) is idle and is not activated for a plugin that is being stopped")
        }
        return waker.current?(need)
    }

    func callCommand(caller: String, plugin: String, name: String, arguments: String, principal: Principal) -> Result<String, CommandError> {
        guard let access = access.withLock({ $0 }) else { return .failure(CommandError(.unavailable, "the host is starting")) }
        let result = CommandRunner(registry: registry, access: access, environment: self)
            .call(caller: caller, plugin: plugin, name: name, arguments: arguments, principal: principal)
        if case let .failure(e) = result, e.code == .forbidden { log(plugin: caller, level: .warn, message: e.message) }
        return result
    }

    func log(plugin: String, generation: Int?, level: LogLevel, message: String) {
        // Generation 0: a context made for a check (validate, inspect), not a load.
        sink(LogRecord(level: level, pluginID: plugin, message: message, generation: generation.flatMap { $0 > 0 ? $0 : nil }))
    }

    func log(plugin: String, level: LogLevel, message: String) {
        log(plugin: plugin, generation: nil, level: level, message: message)
    }
}
