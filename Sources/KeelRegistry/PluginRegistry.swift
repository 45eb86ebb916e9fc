// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest
import Synchronization

/// The composed view of every active plugin's contributions: one route table, one navigation, one auth chain.
///
/// Each plugin's contributions are published as a unit and revoked as a unit, in one atomic step each. Readers
/// (request dispatch, the auth chain) take an immutable `Snapshot` and never wait for a publish in progress, so a
/// request runs to its end on the contributions it started with.
///
/// ```swift
/// let registry = PluginRegistry()
/// try registry.publish(pluginID: "hello", contributions)      // after activate returned KEEL_OK
/// let match = registry.snapshot.route(method: "GET", path: "/ext/hello/greet/bob")
/// registry.revoke(pluginID: "hello")                          // on disable: everything at once
/// ```
/// Thread-safe.
public final class PluginRegistry: Sendable {
    private let current = Mutex(Snapshot())

    public init() {}

    /// The current composition. Cheap: a copy of immutable storage.
    public var snapshot: Snapshot { current.withLock { $0 } }

    /// Makes `contributions` of `pluginID` visible, replacing any it had before, after checking them against
    /// every other plugin's.
    /// - Throws: `RegistryError` naming both plugins when a route or menu id is taken; nothing is published then.
    public func publish(pluginID: String, _ contributions: Contributions) throws(RegistryError) {
        // Checked first, then changed in place: no copy of the composition unless a reader still holds it.
        try current.withLock { (snapshot: inout Snapshot) throws(RegistryError) in
            if let conflict = snapshot.conflict(pluginID, contributions) { throw conflict }
            snapshot.replace(pluginID, contributions)
        }
    }

    /// Sets the guards the host wants and does not have running, with why (`Snapshot.missingGuards`).
    public func setMissingGuards(_ missing: [String: String]) { update { $0.missingGuards = missing } }

    /// Changes the composition in place under the lock.
    func update(_ change: (inout Snapshot) -> Void) { current.withLock { change(&$0) } }

    /// Reads the composition under the lock, without copying it.
    func read<T>(_ body: (borrowing Snapshot) -> T) -> T { current.withLock { body($0) } }

    /// Takes away everything `pluginID` contributed. Returns what was removed (nil if it had nothing published).
    @discardableResult
    public func revoke(pluginID: String) -> Contributions? {
        current.withLock { snapshot in
            let removed = snapshot.plugins[pluginID]
            snapshot.remove(pluginID)
            return removed
        }
    }
}

/// Why contributions could not be published.
public struct RegistryError: Error, Sendable, CustomStringConvertible {
    public var pluginID: String
    public var otherPluginID: String
    public var reason: String

    public var description: String { reason }
}

/// An immutable composition of the active plugins' contributions.
public struct Snapshot: Sendable {
    /// Contributions by plugin id.
    public private(set) var plugins: [String: Contributions] = [:]
    /// Plugin ids in the order they were first published (the auth chain's order): a republished plugin keeps its
    /// place (`replace`), one revoked and published again comes last.
    public private(set) var order: [String] = []
    /// Route table: full path shape → routes (method, owner) for conflict checks and listing.
    var routeOwners: [String: [(method: String, plugin: String)]] = [:]
    var menuOwners: [String: String] = [:]
    /// Each plugin's routes below `/ext/<id>`, compiled for lookup.
    var routeTables: [String: RouteTable] = [:]
    /// Each plugin's commands, by plugin id (only plugins with commands): a call finds its command without copying
    /// the plugin's whole `Contributions` out of `plugins`.
    var commandTables: [String: [PluginCommand]] = [:]
    /// Routes under granted foreign prefixes, outside `/ext/`, compiled for lookup.
    var absoluteRoutes = RouteTable(entries: [])
    /// Authenticate hooks in publish order, kept as a list so that requests do not gather them from every plugin.
    public private(set) var authenticators: [AuthenticateHook] = []
    /// Authorize hooks in publish order.
    public private(set) var authorizers: [AuthorizeHook] = []
    /// Interfaces: providers, listeners, the operator's choices.
    public internal(set) var services = ServiceDirectory()
    /// Plugins with auth hooks that the host wants and does not have running (their activation failed, or they
    /// were quarantined), with why, by id: while there is one, every authorize question is denied (`authorize`).
    public internal(set) var missingGuards: [String: String] = [:]

    public init() {}

    mutating func remove(_ pluginID: String) {
        guard let old = plugins.removeValue(forKey: pluginID) else { return }
        order.removeAll { $0 == pluginID }
        routeTables[pluginID] = nil
        commandTables[pluginID] = nil
        if old.routes.contains(where: \.absolute) { absoluteRoutes = RouteTable(entries: absoluteRoutes.entries.filter { $0.pluginID != pluginID }) }
        if !old.authenticators.isEmpty { authenticators.removeAll { $0.pluginID == pluginID } }
        if !old.authorizers.isEmpty { authorizers.removeAll { $0.pluginID == pluginID } }
        if !old.services.isEmpty || !old.listeners.isEmpty { services.remove(old.services, old.listeners) }
        for route in old.routes {
            let shape = route.fullShape(plugin: pluginID)
            routeOwners[shape]?.removeAll { $0.plugin == pluginID }
            if routeOwners[shape]?.isEmpty == true { routeOwners[shape] = nil }
        }
        for menu in old.menus where menuOwners[menu.entry.id] == pluginID { menuOwners[menu.entry.id] = nil }
    }

    /// The first clash of `c` with another plugin's contributions (its own earlier ones do not count), or nil.
    func conflict(_ pluginID: String, _ c: Contributions) -> RegistryError? {
        for route in c.routes {
            let shape = route.fullShape(plugin: pluginID)
            if let other = routeOwners[shape]?.first(where: { $0.plugin != pluginID && ActivationContext.methodsOverlap($0.method, route.method) }) {
                return RegistryError(pluginID: pluginID, otherPluginID: other.plugin,
                                     reason: "route \(route.method) \(route.fullPath(plugin: pluginID)) of plugin \"\(pluginID)\" conflicts with plugin \"\(other.plugin)\"")
            }
        }
        for menu in c.menus {
            if let other = menuOwners[menu.entry.id], other != pluginID {
                return RegistryError(pluginID: pluginID, otherPluginID: other,
                                     reason: "menu entry \"\(menu.entry.id)\" of plugin \"\(pluginID)\" is already registered by plugin \"\(other)\"")
            }
        }
        return nil
    }

    /// Adds contributions already checked with `conflict`, after `remove` took the plugin's old ones away.
    mutating func insert(_ pluginID: String, _ c: Contributions) {
        for route in c.routes { routeOwners[route.fullShape(plugin: pluginID), default: []].append((route.method, pluginID)) }
        routeTables[pluginID] = RouteTable(pluginID: pluginID, routes: c.routes.lazy.filter { !$0.absolute })
        if c.routes.contains(where: \.absolute) {
            absoluteRoutes = RouteTable(entries: absoluteRoutes.entries + RouteTable(pluginID: pluginID, routes: c.routes.lazy.filter(\.absolute)).entries)
        }
        for menu in c.menus { menuOwners[menu.entry.id] = pluginID }
        if !c.commands.isEmpty { commandTables[pluginID] = c.commands }
        plugins[pluginID] = c
        order.append(pluginID)
        authenticators += c.authenticators
        authorizers += c.authorizers
        if !c.services.isEmpty || !c.listeners.isEmpty { services.add(c.services, c.listeners) }
    }

    /// Publishes `c` for `pluginID` where its earlier contributions stood, if it had any (a reload, or a lazy
    /// plugin's placeholder replaced at its wake), else last: a plugin keeps its place in `order` and so in the auth
    /// chain, whose hooks run in that order (a reload must not hand the plugin's callers to another plugin's
    /// authenticate hook that takes the same credentials).
    mutating func replace(_ pluginID: String, _ c: Contributions) {
        let place = plugins[pluginID] == nil ? nil : order.firstIndex(of: pluginID)
        remove(pluginID)
        insert(pluginID, c)
        guard let place, place < order.count - 1 else { return }
        order.removeLast()
        order.insert(pluginID, at: place)
        guard !c.authenticators.isEmpty || !c.authorizers.isEmpty else { return }
        // The hook lists follow `order`: this plugin's go after the hooks of the plugins before it.
        let before = Set(order[..<place])
        func moveBack<Hook>(_ hooks: inout [Hook], _ count: Int, _ plugin: (Hook) -> String) {
            guard count > 0 else { return }
            let mine = hooks.suffix(count)
            hooks.removeLast(count)
            hooks.insert(contentsOf: mine, at: hooks.prefix { before.contains(plugin($0)) }.count)
        }
        moveBack(&authenticators, c.authenticators.count) { $0.pluginID }
        moveBack(&authorizers, c.authorizers.count) { $0.pluginID }
    }

    // MARK: lookups

    /// The owner of a route with `method` and the full path `shape`, other than `plugin`.
    public func routeOwner(method: String, shape: String, excluding plugin: String) -> String? {
        let normalized = shape.hasSuffix("/") && shape.count > 1 ? String(shape.dropLast()) : shape
        return routeOwners[normalized]?.first { $0.plugin != plugin && ActivationContext.methodsOverlap($0.method, method) }?.plugin
    }

    public func menuOwner(id: String, excluding plugin: String) -> String? {
        menuOwners[id].flatMap { $0 == plugin ? nil : $0 }
    }

    /// A route matched to a request path.
    public struct RouteMatch: Sendable {
        public let pluginID: String
        public let route: RouteRegistration
        /// The path below `/ext/<plugin-id>`.
        public let routePath: String
        public let parameters: [(name: String, value: String)]
    }

    /// Whether `a` followed by its method score sorts before `b` followed by its own (lexicographic order, the
    /// shorter first on a tie), without building either sequence.
    static func precedes(_ a: [UInt8], _ aExact: Bool, _ b: [UInt8], _ bExact: Bool) -> Bool {
        let ax = a.count, bx = b.count
        var i = 0
        while true {
            let av: Int? = i < ax ? Int(a[i]) : (i == ax ? (aExact ? 1 : 0) : nil)
            let bv: Int? = i < bx ? Int(b[i]) : (i == bx ? (bExact ? 1 : 0) : nil)
            switch (av, bv) {
            case (nil, nil): return false
            case (nil, _): return true
            case (_, nil): return false
            case let (x?, y?):
                if x != y { return x < y }
            }
            i += 1
        }
    }

    /// True when some plugin serves a path outside `/ext/` (a granted foreign prefix).
    public var hasForeignRoutes: Bool { !absoluteRoutes.entries.isEmpty }

    /// Every route, as `(plugin, method, full path pattern)`, sorted.
    public var routes: [(pluginID: String, method: String, path: String)] {
        plugins.flatMap { id, c in
            c.routes.map { (pluginID: id, method: $0.method, path: $0.fullPath(plugin: id)) }
        }.sorted { ($0.path, $0.method) < ($1.path, $1.method) }
    }


}
