// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import Glibc
import KeelManifest
import Synchronization

/// Routes, menus and auth hooks an activation registers while activate runs (called from the C trampolines), each
/// checked against the grants, the namespace and the limits. Thread-safe, like the rest of `ActivationContext`.
extension ActivationContext {
    static let validMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"]

    /// The longest strings a registration may hold, in UTF-8 bytes: the C ABI's (HostABI checks them on the C strings
    /// first) and a worker's alike.
    enum Limit {
        static let menuTitle = 256, menuParent = 128, menuLink = 2048, menuIcon = 128, menuPermission = 256
        static let hookName = 128, routePath = 1024
    }

    func addRoute(method: String, path: String, handler: RouteHandler) -> Int32 {
        let what = "route \(method.prefix(16)) \(path.prefix(Self.Limit.routePath))"
        if let refusal = admitRegistration(.routes, what: what) { return refusal }
        guard path.utf8.count <= Self.Limit.routePath else {
            return refuse(StatusCode.invalidArgument, "route: a path longer than \(Self.Limit.routePath) bytes")
        }
        guard Self.validMethods.contains(method) else {
            return refuse(StatusCode.invalidArgument, "\(what): unknown method \"\(method)\"")
        }
        // "=/legacy/items" is a full path: allowed only under a granted foreign prefix.
        let absolute = path.hasPrefix("=")
        let text = absolute ? String(path.dropFirst()) : path
        let pattern: RoutePattern
        switch RoutePattern.parse(text) {
        case let .success(p): pattern = p
        case let .failure(e): return refuse(StatusCode.invalidArgument, "route: \(e.reason)")
        }
        if absolute {
            // Compared in the one spelling requests are routed by: "//console.js" is "/console.js".
            let canonical = "/" + pattern.segments.map { segment -> String in
                switch segment {
                case let .literal(l): return l
                case let .parameter(name): return ":" + name
                case .rest: return "*"
                }
            }.joined(separator: "/")
            if let reserved = Capability.reservedPrefix(of: canonical) ?? (canonical == "/" ? "/" : nil) {
                return refuse(StatusCode.denied, "\(what): inside the host's own \(reserved)")
            }
            let covers: (String) -> Bool = { canonical == $0 || canonical.hasPrefix($0 + "/") }
            guard routePrefixes.contains(where: covers) else {
                // The fix: the grant of the prefix plugin.yaml asks for, or asking for one first.
                let fix = requestedRoutePrefixes.first(where: covers).map { "route-prefix:\($0) is asked for but not granted; "
                    + grantHint.text(id: pluginID, capability: "route-prefix:\($0)") }
                    ?? "ask for route-prefix:/\(pattern.segments.first.flatMap { if case let .literal(l) = $0 { l } else { nil } } ?? "PATH") "
                    + "under capabilities: in plugin.yaml and have it granted"
                return refuse(StatusCode.denied, "\(what): outside the plugin's own /ext/\(pluginID)/ and no granted route prefix covers it (\(fix))")
            }
        }
        var route = RouteRegistration(method: method, pattern: pattern, handler: handler)
        route.absolute = absolute
        let shape = route.fullShape(plugin: pluginID)
        return pending.withLock { p -> Int32 in
            guard p.routes.count < limits.routes else {
                return refuse(StatusCode.limit, "\(what): over the limit of \(limits.routes) routes per plugin")
            }
            // Same kind (both relative or both absolute): the stored shapes compare without building full paths.
            if let mine = p.routes.first(where: {
                Self.methodsOverlap($0.method, method)
                    && ($0.absolute == absolute ? $0.pattern.shape == pattern.shape : $0.fullShape(plugin: pluginID) == shape)
            }) {
                return refuse(StatusCode.conflict, "\(what) conflicts with \(mine.method) \(mine.pattern) of the same plugin \"\(pluginID)\"")
            }
            if let owner = environment.routeOwner(method: method, shape: shape, excluding: pluginID) {
                return refuse(StatusCode.conflict, "\(what) of plugin \"\(pluginID)\" is already registered by plugin \"\(owner)\"")
            }
            p.routes.append(route)
            return StatusCode.ok
        }
    }

    func addMenu(_ entry: MenuDeclaration) -> Int32 {
        let what = "menu entry \"\(entry.id.prefix(128))\""
        if let refusal = admitRegistration(.menus, what: what) { return refusal }
        // The C ABI's limits (HostABI), checked here so that a plugin in a worker, whose strings arrive in frames of
        // up to 16 MiB, is held to them as well: menu text is served on every menu fetch.
        guard entry.title.utf8.count <= Self.Limit.menuTitle, entry.parent.utf8.count <= Self.Limit.menuParent,
              entry.link.utf8.count <= Self.Limit.menuLink, entry.icon.utf8.count <= Self.Limit.menuIcon,
              entry.permission.utf8.count <= Self.Limit.menuPermission else {
            return refuse(StatusCode.invalidArgument, "\(what): a string is not UTF-8 or too long")
        }
        guard MenuDeclaration.isValidID(entry.id) else {
            return refuse(StatusCode.invalidArgument, "\(what): id must be 1–128 letters, digits, '.', '_' or '-'")
        }
        guard !entry.title.isEmpty else { return refuse(StatusCode.invalidArgument, "\(what): title is empty") }
        if let problem = MenuDeclaration.linkProblem(entry.link) {
            return refuse(StatusCode.invalidArgument, "\(what): the link \(problem)")
        }
        return pending.withLock { p -> Int32 in
            guard p.menus.count < limits.menus else {
                return refuse(StatusCode.limit, "\(what): over the limit of \(limits.menus) menu entries per plugin")
            }
            if p.menus.contains(where: { $0.entry.id == entry.id }) {
                return refuse(StatusCode.conflict, "\(what) is registered twice by plugin \"\(pluginID)\"")
            }
            if let owner = environment.menuOwner(id: entry.id, excluding: pluginID) {
                return refuse(StatusCode.conflict, "\(what) of plugin \"\(pluginID)\" is already registered by plugin \"\(owner)\"")
            }
            p.menus.append(MenuRegistration(entry: entry, fromManifest: false))
            return StatusCode.ok
        }
    }

    func addAuthenticator(_ hook: AuthenticateHook) -> Int32 {
        addHook(hook, name: hook.name, capability: .authenticate, to: \.authenticators)
    }

    func addAuthorizer(_ hook: AuthorizeHook) -> Int32 {
        addHook(hook, name: hook.name, capability: .authorize, to: \.authorizers)
    }

    /// Adds an auth hook of either kind: names are unique per kind, and both kinds share one quota.
    private func addHook<Hook>(_ hook: Hook, name: String, capability: Capability,
                               to list: WritableKeyPath<Contributions, [Hook]>) -> Int32 where Hook: AnyObject {
        let kind = capability.rawValue
        let what = "\(kind) hook \"\(name.prefix(Self.Limit.hookName))\""
        if let refusal = admitRegistration(capability, what: what) { return refusal }
        guard !name.isEmpty else { return refuse(StatusCode.invalidArgument, "\(kind) hook: name is empty") }
        // As HostABI's limit, for a worker's hooks too (their names go into every denial's log line).
        guard name.utf8.count <= Self.Limit.hookName else {
            return refuse(StatusCode.invalidArgument, "\(kind) hook: a name longer than \(Self.Limit.hookName) bytes")
        }
        return pending.withLock { p -> Int32 in
            guard p.authenticators.count + p.authorizers.count < limits.hooks else {
                return refuse(StatusCode.limit, "\(what): over the limit of \(limits.hooks) auth hooks per plugin")
            }
            let names = capability == .authenticate ? p.authenticators.map(\.name) : p.authorizers.map(\.name)
            guard !names.contains(name) else {
                return refuse(StatusCode.conflict, "\(what) is registered twice by plugin \"\(pluginID)\"")
            }
            p[keyPath: list].append(hook)
            return StatusCode.ok
        }
    }

    /// True when two route methods can both match one request.
    public static func methodsOverlap(_ a: String, _ b: String) -> Bool { a == b || a == "*" || b == "*" }
}
