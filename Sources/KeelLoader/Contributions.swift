// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest
import KeelSystem

/// A route a plugin registered.
public struct RouteRegistration: Sendable {
    /// Uppercase method, or `*` for any.
    public let method: String
    /// Below `/ext/<plugin-id>`, or, when `absolute`, the full path under a granted foreign prefix.
    public let pattern: RoutePattern
    public let handler: RouteHandler
    /// Registered with a leading `=`: a full path under one of the plugin's granted route prefixes.
    public var absolute: Bool = false

    /// `GET <path>` served by the host for the plugin (its bundle's assets, its console pages); `path` must parse as
    /// a route pattern. `everyTenant`: see `RouteHandler.everyTenant`.
    public static func hostServed(_ path: String, context: ActivationContext, everyTenant: Bool = false,
                                  serve: @escaping @Sendable (PluginRequest) -> PluginResponse) -> RouteRegistration? {
        guard case let .success(pattern) = RoutePattern.parse(path) else { return nil }
        return RouteRegistration(method: "GET", pattern: pattern,
                                 handler: RouteHandler(hostServed: serve, everyTenant: everyTenant, context: context))
    }

    /// The full request path pattern this route answers.
    public func fullPath(plugin: String) -> String {
        absolute ? pattern.text : "/ext/\(plugin)" + (pattern.text == "/" ? "/" : pattern.text)
    }

    /// The shape used for conflicts (parameter names erased), as a full path.
    public func fullShape(plugin: String) -> String {
        absolute ? pattern.shape : "/ext/\(plugin)" + (pattern.shape == "/" ? "" : pattern.shape)
    }
}

/// A menu entry a plugin contributes, from its manifest or registered in activate.
public struct MenuRegistration: Sendable, Hashable {
    public let entry: MenuDeclaration
    /// True when it came from plugin.yaml rather than from code.
    public let fromManifest: Bool

    public init(entry: MenuDeclaration, fromManifest: Bool) {
        self.entry = entry
        self.fromManifest = fromManifest
    }
}

/// Everything one activation of a plugin registered. Published to the registry as a whole, revoked as a whole.
public struct Contributions: Sendable {
    public var routes: [RouteRegistration] = []
    public var menus: [MenuRegistration] = []
    public var authenticators: [AuthenticateHook] = []
    public var authorizers: [AuthorizeHook] = []
    /// Tables this activation provides for interfaces ("keel.services/1").
    public var services: [ServiceProvision] = []
    /// Its requests to hear about provider changes.
    public var listeners: [ServiceListener] = []
    /// Its commands, prepared for calls ("keel.commands/1"); seeded by the host from the manifest.
    public var commands: [PluginCommand] = []
    /// Upstream apps served under its prefix (`proxy:`); seeded by the host from the manifest.
    public var proxies: [ProxyDeclaration] = []
    /// The last registration the host refused during an activate that still returned `KEEL_OK` (the plugin went on
    /// past the error it was given): what an author is told, beside the log's warning (`keel plugins enable`,
    /// `inspect`). Nil when none was refused.
    public var ignoredRefusal: String?
    /// Console pages and the host endpoints they may call (`console:`); seeded by the host from the manifest.
    public var console: ConsoleDeclaration?

    public init() {}

    /// The sentence an author is told of `ignoredRefusal`: of a plugin that now runs without the registration
    /// (`running`: `enable`) or would (`inspect`, `validate`).
    public static func ignoredRefusalNote(_ refused: String, running: Bool) -> String {
        "activate went on past a registration the host refused (it \(running ? "runs" : "would run") without it): \(refused)"
    }

    /// Its routes that are legal but likely not what was meant (`RoutePattern.likelyMistake`), one line each
    /// (`route GET /things/{id}: ...`), for the author: `keel plugins inspect` and `enable` say them.
    public func routeMistakes(pluginID: String) -> [String] {
        routes.compactMap { r in
            guard !r.absolute, let why = r.pattern.likelyMistake(pluginID: pluginID) else { return nil }
            // The plugin's own text (its path) reaches an operator's terminal: its control characters written out.
            return Printable.escapingControls("route \(r.method) \(r.pattern.text): \(why)")
        }
    }

    /// Whether these include auth hooks: requests are denied on their word (see `Kernel.disableMisbehaving`).
    public var guardsRequests: Bool { !authenticators.isEmpty || !authorizers.isEmpty }

    public var isEmpty: Bool {
        routes.isEmpty && menus.isEmpty && authenticators.isEmpty && authorizers.isEmpty && services.isEmpty && listeners.isEmpty
            && commands.isEmpty
    }

    /// The command named `name`, if this activation has one.
    public func command(_ name: String) -> PluginCommand? { commands.first { $0.name == name } }
}

/// Per-plugin ceilings on what one activation may register. Going over is an error (`KEEL_ERR_LIMIT`).
public struct RegistrationLimits: Sendable, Hashable {
    public var routes: Int
    public var menus: Int
    public var hooks: Int

    public init(routes: Int = 256, menus: Int = 64, hooks: Int = 8) {
        self.routes = routes
        self.menus = menus
        self.hooks = hooks
    }

    public static let `default` = RegistrationLimits()
}

/// Time limits and the failure threshold for calls into a plugin. Calls cannot be stopped in-process; a call over
/// its budget is logged, and an auth hook over its budget counts as a denial for that request. After
/// `failureThreshold` failed calls in a row (error statuses, or hooks over budget), the plugin is reported as
/// misbehaving and the kernel disables it (not a plugin with auth hooks, nor one such a plugin depends on: see
/// `Kernel.disableMisbehaving`).
public struct CallBudgets: Sendable, Hashable {
    /// Seconds a route handler may take before it is logged as slow.
    public var handler: Double
    /// Seconds an authenticate or authorize hook may take; slower counts as deny.
    public var hook: Double
    public var failureThreshold: Int

    public init(handler: Double = 2, hook: Double = 0.25, failureThreshold: Int = 20) {
        self.handler = handler
        self.hook = hook
        self.failureThreshold = failureThreshold
    }

    public static let `default` = CallBudgets()
}

/// What the host side above the loader provides to an activation: conflict look-ups across plugins, the
/// permission check, and the log. The registry and kernel implement it; the loader only calls it.
/// Called from plugin threads: implementations must be thread-safe.
public protocol PluginEnvironment: AnyObject, Sendable {
    /// The id of another plugin (not `plugin`) that already owns a route with this method and shape, if any.
    func routeOwner(method: String, shape: String, excluding plugin: String) -> String?
    /// The id of another plugin (not `plugin`) that already owns this menu entry id, if any.
    func menuOwner(id: String, excluding plugin: String) -> String?
    /// The host's authorize chain for `principal` doing `action` on `resource`, asked by `plugin` (which may only ask
    /// about the permission items it declares).
    func checkPermission(plugin: String, _ principal: Principal, action: String, resource: String) -> AuthDecision
    /// The table serving `interface` for `tenant` ("" host-wide), by the operator's choice or the ranking rule; nil
    /// when no provider serves it.
    func resolveService(_ interface: InterfaceID, tenant: String) -> ServiceProvision?
    /// Whether `plugin` serves callers of `tenant` (enabled for every tenant, or for that one): a consumer enabled
    /// for some tenants only may acquire for those alone.
    func serves(_ plugin: String, tenant: String) -> Bool
    /// Calls `plugin`'s command `name` for `caller` (which declared it under calls:) on behalf of `principal`;
    /// `arguments` is a JSON array. Returns the result as JSON text.
    func callCommand(caller: String, plugin: String, name: String, arguments: String, principal: Principal) -> Result<String, CommandError>
    /// Writes a line attributed to `plugin`; `generation` names the activation it came from, when known.
    func log(plugin: String, generation: Int?, level: LogLevel, message: String)
    /// `plugin`'s activation `generation` failed `CallBudgets.failureThreshold` calls in a row; called once per
    /// activation. (The generation: a report from one being replaced must not take down its successor.)
    func misbehaving(plugin: String, generation: Int, reason: String)
    /// The authenticate or authorize hook `hook` of `plugin` ran over its budget (for metrics; already logged).
    func hookOverran(plugin: String, hook: String)
    /// A call into `plugin`'s code failed: an error status, or a hook over its budget (for metrics).
    func callFailed(plugin: String)
    /// Where leases are taken when they are not served in this process (a worker's host); nil in the host.
    var serviceBroker: (any RemoteServiceBroker)? { get }
}

extension PluginEnvironment {
    /// Leases are served in this process unless the environment says otherwise.
    public var serviceBroker: (any RemoteServiceBroker)? { nil }
    /// Every plugin serves every tenant unless the environment says otherwise (a worker's: its host checks).
    public func serves(_ plugin: String, tenant: String) -> Bool { true }
    /// Counted nowhere unless the environment says otherwise.
    public func hookOverran(plugin: String, hook: String) {}
    /// Counted nowhere unless the environment says otherwise.
    public func callFailed(plugin: String) {}

    /// Writes a line attributed to `plugin`, about no generation in particular.
    func log(plugin: String, level: LogLevel, message: String) {
        log(plugin: plugin, generation: nil, level: level, message: message)
    }
}
