// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelRegistry

/// The host services an activation sees, backed by the registry and the kernel's log. Thread-safe.
final class KernelEnvironment: PluginEnvironment {
    let registry: PluginRegistry
    let sink: @Sendable (LogRecord) -> Void

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

    func checkPermission(_ principal: Principal, action: String, resource: String) -> AuthDecision {
        let (decision, reason) = registry.snapshot.authorize(principal, action: action, resource: resource)
        if let reason { sink(LogRecord(level: .warn, pluginID: nil, message: "permission check: \(reason)")) }
        return decision == .allow ? .allow : .deny
    }

    func log(plugin: String, level: LogLevel, message: String) {
        sink(LogRecord(level: level, pluginID: plugin, message: message))
    }
}
