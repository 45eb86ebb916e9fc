// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest
import KeelRegistry
import Synchronization

/// The host services an activation sees, backed by the registry and the kernel's log. Thread-safe.
final class KernelEnvironment: PluginEnvironment {
    let registry: PluginRegistry
    let sink: @Sendable (LogRecord) -> Void
    private let misbehaviour = Mutex<(@Sendable (String, String) -> Void)?>(nil)

    init(registry: PluginRegistry, log: @escaping @Sendable (LogRecord) -> Void) {
        self.registry = registry
        self.sink = log
    }

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

    /// Who to tell when a plugin keeps failing (the kernel, which disables it).
    func onMisbehaving(_ handler: @escaping @Sendable (String, String) -> Void) { misbehaviour.withLock { $0 = handler } }

    func misbehaving(plugin: String, reason: String) {
        sink(LogRecord(level: .error, pluginID: plugin, message: "misbehaving: \(reason)"))
        misbehaviour.withLock { $0 }?(plugin, reason)
    }

    func resolveService(_ interface: InterfaceID, tenant: String) -> ServiceProvision? {
        registry.resolveService(interface, tenant: tenant)
    }

    func callCommand(caller: String, plugin: String, name: String, arguments: String, principal: Principal) -> Result<String, CommandError> {
        guard let access = access.withLock({ $0 }) else { return .failure(CommandError(.unavailable, "the host is starting")) }
        let result = CommandRunner(registry: registry, access: access)
            .call(caller: caller, plugin: plugin, name: name, arguments: arguments, principal: principal)
        if case let .failure(e) = result, e.code == .forbidden { log(plugin: caller, level: .warn, message: e.message) }
        return result
    }

    func log(plugin: String, level: LogLevel, message: String) {
        sink(LogRecord(level: level, pluginID: plugin, message: message))
    }
}
