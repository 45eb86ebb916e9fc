// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState
import KeelSystem
import Synchronization

/// Who may see and do what: the auth chain of the active plugins combined with the operator's tenants, role
/// bindings, role permissions and per-tenant plugin enablement (all kept in SQLite).
///
/// - A caller belongs to a tenant: the one its authenticate hook names (if it exists), else the first tenant it is
///   bound to, else `default`. Its roles are the hook's plus its bindings in that tenant. A hook naming a tenant that
///   does not exist gives the caller anonymous rights (no roles) in `default`.
/// - A plugin enabled for some tenants only has no routes, menus or hooks for the callers of other tenants.
/// - A permission item `key:action` is allowed when a role of the caller grants `key:action` or `key:*` (the
///   `admin` role grants everything) or an authorize hook allows it; any deny wins.
///
/// Thread-safe; lookups read an in-memory copy of the directory, refreshed by `refresh()` after every change.
public final class AccessControl: Sendable {
    let registry: PluginRegistry
    let state: StateStore
    let log: @Sendable (LogRecord) -> Void
    private let current = Mutex(StateStore.Directory())
    private let declared = Mutex<[String: Set<String>]>([:])
    /// What was said once already (`warnOnce`): a line a client could make a hook repeat on every request is logged
    /// once per plugin and kind, not once per request.
    private let warned = Mutex<Set<String>>([])

    /// Logs `message` about `plugin` the first time `kind` happens for it in this process.
    private func warnOnce(_ kind: String, plugin: String, _ message: @autoclosure () -> String) {
        guard warned.withLock({ $0.insert(kind + "\u{0}" + plugin).inserted }) else { return }
        log(LogRecord(level: .warn, pluginID: plugin, message: message() + " (said once)"))
    }

    init(registry: PluginRegistry, state: StateStore, log: @escaping @Sendable (LogRecord) -> Void) {
        self.registry = registry
        self.state = state
        self.log = log
        refresh()
    }

    /// Re-reads tenants, roles and bindings from SQLite.
    public func refresh() {
        if let d = try? state.directory() { current.withLock { $0 = d } }
    }

    public var directory: StateStore.Directory { current.withLock { $0 } }

    func setDeclared(_ pluginID: String, _ manifest: Manifest?) {
        declared.withLock { $0[pluginID] = manifest.map { Set($0.permissions.map(\.key)) } }
    }

    /// `setDeclared` for many plugins under one lock (a start parks a thousand).
    func setDeclared(_ plugins: [(id: String, manifest: Manifest)]) {
        declared.withLock { all in
            all.reserveCapacity(all.count + plugins.count)
            for (id, manifest) in plugins { all[id] = Set(manifest.permissions.map(\.key)) }
        }
    }

    /// Whether `pluginID` is enabled for some tenants only (else it serves every tenant).
    public func isTenantLimited(_ pluginID: String) -> Bool {
        current.withLock { $0.pluginTenants[pluginID] != nil }
    }

    /// True when `pluginID` serves callers of `tenant`.
    public func isVisible(_ pluginID: String, tenant: String) -> Bool {
        // Under the lock, without copying the set out; no hashing at all on a host that limits no plugin.
        current.withLock { $0.pluginTenants.isEmpty || $0.pluginTenants[pluginID].map { $0.contains(tenant) } ?? true }
    }

    /// Which plugins serve `tenant` ("" for work done for no tenant, which only plugins enabled for every tenant
    /// serve), as a filter on plugin ids; nil when every plugin serves every tenant (nothing to filter).
    public func servingFilter(tenant: String) -> (@Sendable (String) -> Bool)? {
        Self.servingFilter(current.withLock { $0.pluginTenants }, tenant: tenant)
    }

    /// `servingFilter(tenant:)` for the per-plugin tenants `limited` (a directory's `pluginTenants`).
    public static func servingFilter(_ limited: [String: Set<String>], tenant: String) -> (@Sendable (String) -> Bool)? {
        guard !limited.isEmpty else { return nil }
        return { id in limited[id].map { $0.contains(tenant) } ?? true }
    }

    /// Fills in the tenant and the bound roles of an authenticated caller.
    public func enrich(_ p: Principal) -> Principal {
        if p.isAnonymous { return Principal(id: "", tenant: Principal.defaultTenant, authenticatedBy: p.authenticatedBy) }
        let d = directory
        var tenant = p.tenant
        var roles = Set(p.roles)
        let fromBindings = tenant.isEmpty
        if fromBindings {
            tenant = Self.boundTenant(p.id, in: d)
        } else if !d.tenants.contains(tenant) {
            log(LogRecord(level: .warn, pluginID: p.authenticatedBy, message: "principal \"\(p.id)\" names unknown tenant \"\(tenant)\": anonymous rights"))
            var anonymousRights = Principal(id: p.id, displayName: p.displayName, tenant: Principal.defaultTenant, roles: [], authenticatedBy: p.authenticatedBy)
            anonymousRights.roleSources = Principal.RoleSources(fromHook: [], bindingsApply: false)
            return anonymousRights
        }
        roles.formUnion(d.members[tenant]?[p.id] ?? [])
        var enriched = Principal(id: p.id, displayName: p.displayName, tenant: tenant, roles: roles.sorted(), authenticatedBy: p.authenticatedBy)
        enriched.roleSources = Principal.RoleSources(fromHook: p.roles, bindingsApply: true, tenantFromBindings: fromBindings)
        return enriched
    }

    /// The tenant of a caller whose hook named none: the first tenant it is bound in, else `default`.
    static func boundTenant(_ id: String, in d: StateStore.Directory) -> String {
        d.tenants.first { d.members[$0]?[id] != nil } ?? Principal.defaultTenant
    }

    /// Runs the authenticate hooks and enriches the result.
    ///
    /// Hooks of plugins enabled for every tenant see every request. A plugin enabled for some tenants only cannot
    /// know a caller's tenant before authentication, so its hooks see a request only when the caller names one of its
    /// tenants itself (`namedTenant`, the `X-Keel-Tenant` header): one tenant's credentials never reach a plugin that
    /// tenant did not enable. A principal such a hook returns belongs to the named tenant. A principal counts only
    /// when its plugin serves the principal's tenant. A failing hook denies (`.failure`).
    public func identify(_ request: PluginRequest, tenant namedTenant: String? = nil, snapshot: Snapshot) -> Result<Principal, PluginCallError> {
        let limited = current.withLock { $0.pluginTenants }
        var enriched: Principal?
        let include: ((String) -> Bool)? = limited.isEmpty ? nil : { id in
            guard let tenants = limited[id] else { return true }
            return namedTenant.map(tenants.contains) ?? false
        }
        // A hook whose plugin a reload replaced after the request took `snapshot` ends the walk (`stopped`), and the
        // chain is asked again as it is now, so that the new generation, in the place the old one held, names the
        // caller (not the next hook, which may take the same credentials for someone else). Bounded: after reloads
        // in a row, a stopped hook names no one. Closures written in the calls: they capture without allocating.
        var result = snapshot.authenticate(request, include: include, stopped: { self.replaced($0.pluginID, $0.context) }) { hook, principal in
            enriched = self.taken(principal, by: hook, limited: limited, namedTenant: namedTenant)
            return enriched != nil
        }
        for attempt in 0..<2 {
            guard case let .failure(error) = result, error.isNotActive else { break }
            result = registry.snapshot.authenticate(request, include: include, stopped: { attempt == 0 && self.replaced($0.pluginID, $0.context) }) { hook, principal in
                enriched = self.taken(principal, by: hook, limited: limited, namedTenant: namedTenant)
                return enriched != nil
            }
        }
        return result.map { enriched ?? enrich($0) }
    }

    /// The caller `principal` that authenticate hook `hook` named, as the host takes it (enriched), or nil when it is
    /// not taken and the next hook is asked. `limited`: the plugins enabled for some tenants only, with theirs;
    /// `namedTenant`: the tenant the caller named itself.
    private func taken(_ principal: Principal, by hook: AuthenticateHook, limited: [String: Set<String>], namedTenant: String?) -> Principal? {
        var principal = principal
        // Names compared as identities must be NFC (`CanonicalText`): "\u{212A}ate" would be "Kate" to every
        // look-up here, with Kate's bindings, while the plugins and proxied apps see another user. Such a
        // principal is not taken (the next hook is asked; none: anonymous); a role so spelt is dropped.
        guard CanonicalText.isNFC(principal.id), CanonicalText.isNFC(principal.tenant) else {
            warnOnce("nfc", plugin: hook.pluginID,
                     "authenticate hook named principal \"\(CanonicalText.scalars(principal.id))\" (tenant \"\(CanonicalText.scalars(principal.tenant))\"), not in Unicode NFC form: not taken; such principals are anonymous")
            return nil
        }
        principal.roles.removeAll { !CanonicalText.isNFC($0) }
        if let namedTenant, limited[hook.pluginID] != nil {
            guard principal.tenant.isEmpty || principal.tenant == namedTenant else { return nil }
            principal.tenant = namedTenant
        }
        // A plugin trusted for some tenants only hands out no role: roles are the host's, made by the operator
        // for whichever sign-in they meant (one naming another tenant's plugin's permissions), and the built-in
        // admin role grants everything, every plugin's permissions and admin-only commands included. Its callers'
        // roles are the operator's bindings in its tenant (`admin` aside, below).
        if limited[hook.pluginID] != nil, !principal.roles.isEmpty {
            principal.roles = []
            warnOnce("roles", plugin: hook.pluginID, "authenticate hook claimed roles for its caller, which a plugin enabled for some tenants only "
                     + "cannot hand out: dropped; bind the caller to roles in its tenant (keel tenants add-member)")
        }
        var full = enrich(principal)
        full.roleSources?.signInGeneration = hook.context.identity.generation
        // Nor can an operator's binding of `admin` in its tenant reach a caller it names: any hook can name any
        // id, and the role reaches past that tenant (a binding meant for the every-tenant sign-in's "alice").
        if limited[hook.pluginID] != nil { full.roles.removeAll { $0 == StateStore.Directory.adminRole } }
        return isVisible(hook.pluginID, tenant: full.tenant) ? full : nil
    }

    /// True when the registry now runs another generation of `pluginID` than the one `context` is (a reload replaced
    /// the one a request reached as it stopped): the chain is then asked again as it is now. False when it runs none
    /// (disabled, idle) or that one.
    func replaced(_ pluginID: String, _ context: ActivationContext) -> Bool {
        let now = registry.snapshot
        let running = now.authenticators.first { $0.pluginID == pluginID }?.context
            ?? now.authorizers.first { $0.pluginID == pluginID }?.context
        return running.map { $0 !== context } ?? false
    }

    /// A caller established earlier (a console page session's) as it stands now, or nil when it no longer does: its
    /// tenant is gone (or, taken from its bindings, they no longer give it), or the plugin whose hook authenticated it
    /// is no longer active or no longer serves that tenant.
    /// Its roles are those its hook gave then (`issued.roleSources`) and, when bindings counted for it then, its
    /// bindings now, without `admin` when that plugin is enabled for some tenants only (as `identify`). A change of
    /// roles, bindings or tenants takes effect at the caller's next request, as it would for a caller presenting a
    /// credential; a caller whose hook named a tenant that did not exist never gains a binding later.
    public func current(_ issued: Principal, snapshot: Snapshot) -> Principal? {
        let by = issued.authenticatedBy
        let fromBindings = issued.roleSources?.tenantFromBindings == true
        let (exists, bound, limited) = current.withLock { d in
            // A tenant taken from the bindings holds while they still give it (a binding removed, or the tenant
            // deleted and made again, puts a caller signing in now elsewhere).
            (d.tenants.contains(issued.tenant) && (!fromBindings || Self.boundTenant(issued.id, in: d) == issued.tenant),
             d.members[issued.tenant]?[issued.id] ?? [], d.pluginTenants[by])
        }
        // Every caller but the admin token's holder (whose tickets end with the token) was named by a hook.
        guard exists, snapshot.authenticators.contains(where: { $0.pluginID == by }),
              limited.map({ $0.contains(issued.tenant) }) ?? true else { return nil }
        // A caller not made by `enrich` (none reaches here but through it) keeps just its roles.
        let sources = issued.roleSources ?? Principal.RoleSources(fromHook: issued.roles, bindingsApply: false)
        var roles = Set(sources.fromHook)
        if sources.bindingsApply { roles.formUnion(bound) }
        if limited != nil { roles.remove(StateStore.Directory.adminRole) }
        var now = issued
        now.roles = roles.sorted()
        return now
    }

    /// True when a role of `principal` grants `key:action`.
    public func rolesAllow(_ principal: Principal, key: String, action: String) -> Bool {
        if principal.roles.isEmpty { return false }
        if principal.roles.contains(StateStore.Directory.adminRole) { return true }
        let grants = current.withLock { d in principal.roles.reduce(into: Set<String>()) { $0.formUnion(d.rolePermissions[$1] ?? []) } }
        return grants.contains("\(key):\(action)") || grants.contains("\(key):*")
    }

    /// The whole chain: authorize hooks of the plugins serving the caller's tenant (any deny wins), then roles.
    public func authorize(_ principal: Principal, action: String, resource: String, request: PluginRequest? = nil,
                          prepared: PreparedRequest? = nil, snapshot: Snapshot, admittedWhileClosed: Bool = false) -> (AuthDecision, String?) {
        // Without per-tenant enablement every plugin serves every tenant: no filtering per request.
        let scoped = current.withLock { !$0.pluginTenants.isEmpty }
        let include: ((String) -> Bool)? = scoped ? { self.isVisible($0, tenant: principal.tenant) } : nil
        // A guard a reload replaced after the request took `snapshot` denies as it stops: the chain is asked again as
        // it is now (twice at most; then the deny stands, fail closed).
        var again = false
        var (decision, reason) = snapshot.authorize(principal, action: action, resource: resource, request: request, prepared: prepared,
                                                    include: include, admittedWhileClosed: admittedWhileClosed,
                                                    stopped: { again = self.replaced($0.pluginID, $0.context) })
        for _ in 0..<2 where again {
            again = false
            (decision, reason) = registry.snapshot.authorize(principal, action: action, resource: resource, request: request, prepared: prepared,
                                                             include: include, admittedWhileClosed: admittedWhileClosed,
                                                             stopped: { again = self.replaced($0.pluginID, $0.context) })
        }
        if decision == .deny { return (decision, reason) }
        if rolesAllow(principal, key: resource, action: action) { return (.allow, nil) }
        return (decision, reason)
    }

    // MARK: a request for a plugin route (HTTP's dispatcher and `Kernel.dispatch` alike)

    /// True when `match`'s handler serves a caller of `tenant`: its plugin serves that tenant, or the route is
    /// served to every tenant (a plugin's public static files).
    public func serves(_ match: Snapshot.RouteMatch, tenant: String) -> Bool {
        match.route.handler.everyTenant || isVisible(match.pluginID, tenant: tenant)
    }

    /// Why the auth chain refused a request: for the operator (log, audit), never for the client.
    public struct Denial: Sendable {
        /// The chain's reason: the hook that denied or failed, and its message.
        public let reason: String
        /// The registered hook that denied, when one did (nil when the chain failed without a hook to name).
        public let hook: AuthorizeHook?
    }

    /// The chain's verdict on `request` (its method on its path) by its principal: nil when allowed, else why it is
    /// denied, logged with the caller and the denying hook's plugin. `prepared`, when given, is the request already
    /// laid out for the handler: the hooks are asked about it.
    public func denial(of request: PluginRequest, prepared: PreparedRequest? = nil, snapshot: Snapshot,
                       admittedWhileClosed: Bool = false) -> Denial? {
        let (decision, reason) = authorize(request.principal, action: request.method, resource: request.path,
                                           request: request, prepared: prepared, snapshot: snapshot,
                                           admittedWhileClosed: admittedWhileClosed)
        guard decision == .deny else { return nil }
        let why = reason ?? "denied by the auth chain"
        let who = request.principal.isAnonymous ? "an anonymous caller" : "\"\(request.principal.id)\""
        // The hook that denied, from the registered hooks (never from the text: a failure message is no label).
        let hook = reason.flatMap { reason in
            snapshot.authorizers.first { reason.hasPrefix("authorize hook \"\($0.name)\"") && reason.contains("\"\($0.pluginID)\"") }
        }
        log(LogRecord(level: .info, pluginID: hook?.pluginID, message: "\(request.method) \(request.path) denied to \(who): \(why)"))
        return Denial(reason: why, hook: hook)
    }

    /// True when `principal` may see a menu entry of `pluginID`: the plugin serves its tenant, and the entry needs
    /// no permission or the chain allows it (`key:action`; a bare key means `key:view`).
    public func canSee(_ entry: MenuDeclaration, of pluginID: String, _ principal: Principal, snapshot: Snapshot) -> Bool {
        guard isVisible(pluginID, tenant: principal.tenant) else { return false }
        guard !entry.permission.isEmpty else { return true }
        let parts = entry.permission.split(separator: ":", maxSplits: 1).map(String.init)
        let (key, action) = (parts[0], parts.count > 1 ? parts[1] : "view")
        return authorize(principal, action: action, resource: key, snapshot: snapshot).0 == .allow
    }

    /// A plugin's own permission check: it may only ask about the permission items it declares.
    func check(plugin: String, _ principal: Principal, action: String, resource: String) -> AuthDecision {
        guard declared.withLock({ $0[plugin]?.contains(resource) }) == true else {
            log(LogRecord(level: .warn, pluginID: plugin, message: "asked about permission \"\(resource)\", which it does not declare: denied"))
            return .deny
        }
        return authorize(principal, action: action, resource: resource, snapshot: registry.snapshot).0 == .allow ? .allow : .deny
    }
}
