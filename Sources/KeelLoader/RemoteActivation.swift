// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest

/// How the host reaches a plugin that runs in a worker process (`isolation: process`): its routes and auth hooks by
/// number, in the order the worker reported them, and its commands in the manifest's order.
///
/// Implemented over the worker's socket (KeelIsolation); the loader only calls it. Every call blocks the calling
/// thread until the worker answers, dies, or runs past its budget, so it must be made off Swift's cooperative pool
/// (the plugin lanes do). A worker that dies fails the call with `StatusCode.workerCrashed`, a call past its budget
/// with `StatusCode.workerTimedOut`. Thread-safe: calls may run on any number of threads at once.
public protocol RemoteCalls: AnyObject, Sendable {
    func handle(route: Int, _ request: PluginRequest) -> Result<PluginResponse, PluginCallError>
    /// The same call, suspending the task instead of blocking a thread: for the HTTP server's request tasks.
    func handleAsync(route: Int, _ request: PluginRequest) async -> Result<PluginResponse, PluginCallError>
    func authenticate(hook: Int, _ request: PluginRequest) -> Result<Principal?, PluginCallError>
    func authorize(hook: Int, _ principal: Principal, action: String, resource: String,
                   request: PluginRequest?) -> Result<AuthDecision, PluginCallError>
    /// Command number `index` (manifest order) with values already checked against its signature.
    func command(_ index: Int, _ values: [CommandValue]) -> Result<CommandValue, CommandError>
    /// Function `function` (0: the first after struct_size) of the service table number `provision` (in the order
    /// the worker reported them), with arguments checked against its declared signature.
    func service(_ provision: Int, function: Int, _ call: ServiceCall) -> Result<ServiceAnswer, PluginCallError>
    /// Tells the worker's listeners of `interface` that `now` (nil: none) serves it for `tenant`. Does not wait.
    func serviceChanged(_ interface: String, tenant: String, _ now: ServiceProvision?)
    /// Returns once the worker runs, waiting (up to its start timeout) while it restarts after a crash, so that a
    /// hook's budget is timed from there: the restart is the host's time, not the plugin's.
    func waitForWorker()
}

/// A route or hook of a plugin in a worker process: where to send the call, and its number there.
struct RemoteTarget: Sendable {
    let calls: any RemoteCalls
    let index: Int
}

/// What a plugin running in a worker registered during its activate, as the worker reported it. The host does not
/// trust it: `ActivationContext.register(_:calls:seed:)` puts every item through the checks a plugin's own
/// registration call gets (grants, reserved paths, conflicts, limits).
public struct RemoteRegistrations: Sendable, Hashable {
    public struct Route: Sendable, Hashable {
        public var method: String
        /// As the plugin registered it: below its prefix, or `=/full/path` under a granted foreign prefix.
        public var path: String
        public init(method: String, path: String) {
            self.method = method
            self.path = path
        }
    }

    public var routes: [Route] = []
    public var menus: [MenuDeclaration] = []
    public var authenticators: [String] = []
    public var authorizers: [String] = []
    /// Service tables it provides: the interface id and the table's struct_size.
    public var services: [Service] = []
    /// Interfaces whose changes of provider it listens for (`listen`), as it named them.
    public var listeners: [String] = []
    /// What the worker cannot hand over: named, so the host can refuse with a reason.
    public var unsupported: [String] = []

    public struct Service: Sendable, Hashable {
        public var interface: String
        public var tableSize: Int
        public init(interface: String, tableSize: Int) {
            self.interface = interface
            self.tableSize = tableSize
        }
    }

    public init() {}

    /// What `contributions` (a worker's own activation) holds, as it is reported to the host.
    public init(_ contributions: Contributions) {
        routes = contributions.routes.map { Route(method: $0.method, path: ($0.absolute ? "=" : "") + $0.pattern.text) }
        menus = contributions.menus.filter { !$0.fromManifest }.map(\.entry)
        authenticators = contributions.authenticators.map(\.name)
        authorizers = contributions.authorizers.map(\.name)
        services = contributions.services.map { Service(interface: $0.interface.description, tableSize: $0.tableSize) }
        listeners = contributions.listeners.map(\.interface.description)
    }
}

extension ActivationContext {
    /// Activates this context for a plugin that runs in a worker process: `seed` (what the host contributes on its
    /// behalf) and `registrations` (what the worker reported) go through the same checks as a plugin's own
    /// registration calls, on this thread, and the routes and hooks call `calls`. [lifecycle]
    /// - Throws: `LoadError` naming the first registration the host refused; nothing of it is published.
    public func register(_ registrations: RemoteRegistrations, calls: any RemoteCalls, seed: Contributions,
                         path: String) throws(LoadError) -> Contributions {
        self.seed(seed)
        beginActivation()
        var refused: String?
        func check(_ status: Int32) {
            if status != StatusCode.ok, refused == nil { refused = takeRefusal() ?? StatusCode.name(status) }
        }
        if let first = registrations.unsupported.first {
            refused = "registered a \(first) in activate, which cannot cross a process boundary yet; use isolation: in-process"
        }
        for (index, service) in registrations.services.enumerated() where refused == nil {
            guard let declared = identity.provides.first(where: { $0.interface.description == service.interface }) else {
                check(addProvision(service.interface, table: Self.emptyTable))
                continue
            }
            guard !declared.functions.isEmpty else {
                refused = "service \(service.interface): its functions are not declared, so its table cannot cross a process boundary; declare them under functions: of its provides: entry in plugin.yaml, or use isolation: in-process"
                continue
            }
            guard let proxy = ServiceProxyTable(interface: declared.interface, declared: declared.functions,
                                                count: max(0, service.tableSize - 8) / 8, context: self,
                                                send: { function, call in calls.service(index, function: function, call) }) else {
                refused = "service \(service.interface): the host could not make its proxy table (libffi refused a signature)"
                continue
            }
            check(addProvision(service.interface, table: proxy.table, owner: proxy))
        }
        for text in registrations.listeners where refused == nil {
            check(addRemoteListener(text) { tenant, now in calls.serviceChanged(text, tenant: tenant, now) })
        }
        for (index, route) in registrations.routes.enumerated() where refused == nil {
            check(addRoute(method: route.method, path: route.path,
                           handler: RouteHandler(remote: calls, index: index, context: self)))
        }
        for menu in registrations.menus where refused == nil { check(addMenu(menu)) }
        for (index, name) in registrations.authenticators.enumerated() where refused == nil {
            check(addAuthenticator(AuthenticateHook(name: name, remote: calls, index: index, context: self)))
        }
        for (index, name) in registrations.authorizers.enumerated() where refused == nil {
            check(addAuthorizer(AuthorizeHook(name: name, remote: calls, index: index, context: self)))
        }
        let contributions = endActivation(success: refused == nil)
        if let refused {
            close()
            throw LoadError(.activationFailed, path: path, pluginID: pluginID, reason: refused)
        }
        return contributions
    }
}

extension ActivationContext {
    /// A table of no functions, for an undeclared interface a worker reports: `addProvision` refuses it by name.
    nonisolated(unsafe) static let emptyTable: UnsafeRawPointer = {
        let t = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        t.storeBytes(of: UInt64(8), as: UInt64.self)
        return UnsafeRawPointer(t)
    }()
}

extension Result {
    /// The error, or nil for a success.
    var failure: Failure? {
        if case let .failure(error) = self { return error }
        return nil
    }
}
