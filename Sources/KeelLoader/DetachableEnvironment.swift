// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest
import Synchronization

/// The environment activations see, until the host that made them lets go of it (`detach`).
///
/// An activation of a library that is never closed (every library but an unload-safe one: `RTLD_NODELETE`) outlives
/// its host: `PluginLibrary` keeps its contexts for the life of the process, and each context its environment. Given
/// the host's own environment, that kept the host's registry, access control and state store (an in-memory SQLite
/// database of about 300 KB) alive after an embedder's `keel_close`, once per kernel opened. The host hands out this
/// shell instead and detaches it when it stops: what is kept then is the shell alone. A detached environment answers
/// as a stopped host would: no owner for anything, every permission denied, no provider, no command, logs dropped.
/// Thread-safe (plugin threads call it).
public final class DetachableEnvironment: PluginEnvironment {
    private let target: Mutex<(any PluginEnvironment)?>

    public init(_ target: any PluginEnvironment) { self.target = Mutex(target) }

    /// Lets go of the host's environment: later calls get a stopped host's answers. Idempotent.
    public func detach() { target.withLock { $0 = nil } }

    private var current: (any PluginEnvironment)? { target.withLock { $0 } }

    public func routeOwner(method: String, shape: String, excluding plugin: String) -> String? {
        current?.routeOwner(method: method, shape: shape, excluding: plugin)
    }

    public func menuOwner(id: String, excluding plugin: String) -> String? { current?.menuOwner(id: id, excluding: plugin) }

    public func checkPermission(plugin: String, _ principal: Principal, action: String, resource: String) -> AuthDecision {
        current?.checkPermission(plugin: plugin, principal, action: action, resource: resource) ?? .deny
    }

    public func resolveService(_ interface: InterfaceID, tenant: String) -> ServiceProvision? {
        current?.resolveService(interface, tenant: tenant)
    }

    public func serves(_ plugin: String, tenant: String) -> Bool { current?.serves(plugin, tenant: tenant) ?? false }

    public func callCommand(caller: String, plugin: String, name: String, arguments: String, principal: Principal) -> Result<String, CommandError> {
        current?.callCommand(caller: caller, plugin: plugin, name: name, arguments: arguments, principal: principal)
            ?? .failure(CommandError(.unavailable, "the host has stopped"))
    }

    public func log(plugin: String, generation: Int?, level: LogLevel, message: String) {
        current?.log(plugin: plugin, generation: generation, level: level, message: message)
    }

    public func misbehaving(plugin: String, generation: Int, reason: String) {
        current?.misbehaving(plugin: plugin, generation: generation, reason: reason)
    }

    public func hookOverran(plugin: String, hook: String) { current?.hookOverran(plugin: plugin, hook: hook) }

    public func callFailed(plugin: String) { current?.callFailed(plugin: plugin) }

    public var serviceBroker: (any RemoteServiceBroker)? { current?.serviceBroker }
}
