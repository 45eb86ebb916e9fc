// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState

/// The Keel kernel: finds plugin bundles, keeps their state in SQLite, loads and activates the enabled ones in
/// dependency order, and composes what they register in `registry`.
///
/// ```swift
/// let kernel = try Kernel(configuration: KernelConfiguration(pluginsDirectory: "plugins", stateFile: "keel.db"))
/// await kernel.start()                       // activates what was enabled last time
/// try await kernel.enable("hello")           // persisted before it returns
/// let match = kernel.registry.snapshot.route(method: "GET", path: "/ext/hello/greet/bob")
/// await kernel.shutdown()                    // deactivates in reverse order
/// ```
///
/// Lifecycle operations are serialised by the actor. `registry` is read without the actor, from any thread.
/// A plugin that fails to load or activate ends `failed` with its reason; nothing it registered stays behind, and
/// other plugins are not affected.
public actor Kernel {
    public nonisolated let configuration: KernelConfiguration
    public nonisolated let registry = PluginRegistry()
    public nonisolated let state: StateStore
    let environment: KernelEnvironment

    private var bundles: [String: Bundle] = [:]
    private var active: [String: ActivePlugin] = [:]
    /// Ids in the order they were activated; deactivation runs in reverse.
    private var activationOrder: [String] = []

    struct ActivePlugin {
        let library: PluginLibrary
        let context: ActivationContext
        let manifest: Manifest
    }

    /// Opens the state file (creating and migrating it as needed). Loads nothing yet: call `start()`.
    /// - Throws: `KernelError.Code.state` when the state file cannot be used.
    public init(configuration: KernelConfiguration = KernelConfiguration()) throws(KernelError) {
        self.configuration = configuration
        do { state = try StateStore(path: configuration.stateFile) } catch {
            throw KernelError(.state, reason: error.description)
        }
        environment = KernelEnvironment(registry: registry, log: configuration.log)
    }

    nonisolated func log(_ level: LogLevel, _ pluginID: String?, _ message: String) {
        configuration.log(LogRecord(level: level, pluginID: pluginID, message: message))
    }

    // MARK: start-up and discovery

    /// Scans the plugin folder, records what it finds, and activates every plugin whose stored state says enabled,
    /// dependencies first. Failures are recorded per plugin and logged; they never stop the others.
    public func start() {
        rescan()
        let wanted = ((try? state.plugins()) ?? []).filter { $0.enabled && bundles[$0.id] != nil }.map(\.id)
        for id in activationPlan(for: Set(wanted)) where active[id] == nil {
            _ = try? activate(id)
        }
    }

    /// Re-reads the plugin folder and brings the stored records up to date (new bundles become `installed`,
    /// vanished ones `missing`, unusable ones `failed` with the reason). Active plugins keep running.
    public func rescan() {
        let found: [Bundle]
        do { found = try BundleScanner().scan(configuration.pluginsDirectory) } catch {
            log(.error, nil, error.description)
            return
        }
        var next: [String: Bundle] = [:]
        for bundle in found {
            next[bundle.id] = bundle
            for warning in bundle.warnings { log(.warn, bundle.id, warning.description) }
            do {
                try state.discovered(id: bundle.id, name: bundle.manifest?.name ?? "",
                                     version: bundle.manifest.map { "\($0.version)" } ?? "", bundlePath: bundle.folder)
                if let problem = bundle.problem, active[bundle.id] == nil {
                    try state.setStatus(bundle.id, .failed, reason: problem)
                    log(.error, bundle.id, problem)
                } else if bundle.problem == nil, let record = try state.plugin(bundle.id), active[bundle.id] == nil,
                          record.status == .missing || (record.status == .failed && !record.enabled) {
                    try state.setStatus(bundle.id, record.enabled ? .failed : (record.status == .missing ? .disabled : .installed),
                                        reason: record.enabled ? record.reason : nil)
                }
            } catch {
                log(.error, bundle.id, error.description)
            }
        }
        for record in (try? state.plugins()) ?? [] where next[record.id] == nil && record.status != .missing && active[record.id] == nil {
            try? state.setStatus(record.id, .missing, reason: "bundle no longer in \(configuration.pluginsDirectory)")
        }
        bundles = next
    }

    /// Orders `ids` so that each comes after the plugins it depends on. Members of a cycle are recorded as
    /// failed and left out.
    func activationPlan(for ids: Set<String>) -> [String] {
        var order: [String] = []
        var state: [String: Int] = [:] // 1 visiting, 2 done
        var failedCycle: Set<String> = []
        func visit(_ id: String, _ path: [String]) {
            if state[id] == 2 { return }
            if state[id] == 1 {
                let cycle = path[(path.firstIndex(of: id) ?? 0)...] + [id]
                let text = "dependency cycle: " + cycle.joined(separator: " → ")
                for member in cycle where !failedCycle.contains(member) {
                    failedCycle.insert(member)
                    try? self.state.setStatus(member, .failed, reason: text)
                    log(.error, member, text)
                }
                return
            }
            state[id] = 1
            for dep in bundles[id]?.manifest?.dependencies ?? [] where ids.contains(dep.id) {
                visit(dep.id, path + [id])
            }
            state[id] = 2
            if !failedCycle.contains(id) { order.append(id) }
        }
        for id in ids.sorted() { visit(id, []) }
        return order.filter { !failedCycle.contains($0) }
    }

    // MARK: enable / disable

    /// Enables `id`: records the wish, then loads and activates it. Persisted before it returns.
    /// - Throws: `KernelError` when the plugin is unknown or fails to activate (it is then recorded `failed` with
    ///   the reason, and stays wanted, so a later start retries).
    public func enable(_ id: String) throws(KernelError) {
        if bundles[id] == nil { rescan() }
        guard bundles[id] != nil else {
            throw KernelError(.unknownPlugin, pluginID: id,
                              reason: "no plugin \"\(id)\" in \(configuration.pluginsDirectory)")
        }
        do { try state.setEnabled(id, true, status: active[id] != nil ? .enabled : .installed) } catch {
            throw KernelError(.state, pluginID: id, reason: error.description)
        }
        guard active[id] == nil else { return }
        try activate(id)
    }

    /// Disables `id`: takes away everything it registered at once, deactivates it, records the wish.
    /// - Parameter cascade: also disable the enabled plugins that depend on it (in reverse dependency order);
    ///   without it, a plugin others depend on is refused, naming them.
    /// - Throws: `KernelError` for an unknown plugin, a blocking dependent, or a state write failure.
    public func disable(_ id: String, cascade: Bool = false) throws(KernelError) {
        guard bundles[id] != nil || ((try? state.plugin(id)) ?? nil) != nil else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "no plugin \"\(id)\" is known")
        }
        let dependents = activationOrder.filter { other in
            active[other]?.manifest.dependencies.contains { $0.id == id } ?? false
        }
        if !dependents.isEmpty {
            guard cascade else {
                throw KernelError(.dependency, pluginID: id,
                                  reason: "plugin \"\(id)\" is needed by enabled plugin(s) \(dependents.map { "\"\($0)\"" }.joined(separator: ", ")); disable them first or use --cascade")
            }
            for other in dependents.reversed() { try disable(other, cascade: true) }
        }
        deactivate(id)
        do { try state.setEnabled(id, false, status: .disabled) } catch {
            throw KernelError(.state, pluginID: id, reason: error.description)
        }
    }

    /// Deactivates every active plugin in reverse activation order. The state keeps them enabled, so the next
    /// start brings the same set back.
    public func shutdown() {
        for id in activationOrder.reversed() { deactivate(id) }
    }

    // MARK: activation

    /// Loads and activates one plugin whose bundle is known. On failure, records `failed` with the reason.
    private func activate(_ id: String) throws(KernelError) {
        do {
            try activateOrThrow(id)
            try? state.setStatus(id, .enabled)
            log(.info, id, "activated")
        } catch {
            try? state.setStatus(id, .failed, reason: error.reason)
            log(.error, id, error.reason)
            throw error
        }
    }

    private func activateOrThrow(_ id: String) throws(KernelError) {
        guard let bundle = bundles[id] else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "no plugin \"\(id)\" in \(configuration.pluginsDirectory)")
        }
        if let problem = bundle.problem { throw KernelError(.bundle, pluginID: id, reason: problem) }
        guard let manifest = bundle.manifest, let libraryPath = bundle.libraryPath else {
            throw KernelError(.bundle, pluginID: id, reason: "\(bundle.manifestPath): no usable manifest")
        }
        if let range = manifest.hostVersions, let host = Semver(Kernel.version), !range.contains(host) {
            throw KernelError(.dependency, pluginID: id,
                              reason: "plugin \"\(id)\" needs keel \(range), this is \(Kernel.version)")
        }
        for dep in manifest.dependencies {
            guard let other = bundles[dep.id], let otherManifest = other.manifest else {
                throw KernelError(.dependency, pluginID: id, reason: "plugin \"\(id)\" needs \"\(dep.id)\" \(dep.versions), which is not installed")
            }
            guard dep.versions.contains(otherManifest.version) else {
                throw KernelError(.dependency, pluginID: id,
                                  reason: "plugin \"\(id)\" needs \"\(dep.id)\" \(dep.versions), but \(otherManifest.version) is installed")
            }
            guard active[dep.id] != nil else {
                throw KernelError(.dependency, pluginID: id, reason: "plugin \"\(id)\" needs \"\(dep.id)\", which is not enabled")
            }
        }
        let library: PluginLibrary
        do {
            library = try PluginLibrary.open(path: libraryPath, expectedID: id)
            try library.verify(against: manifest, manifestPath: bundle.manifestPath)
        } catch {
            throw KernelError(.loadFailed, pluginID: id, reason: error.description)
        }
        let context = ActivationContext(pluginID: id, grants: manifest.capabilities, limits: configuration.limits,
                                        environment: environment)
        var seed = Contributions()
        seed.menus = manifest.menus.map { MenuRegistration(entry: $0, fromManifest: true) }
        let contributions: Contributions
        do { contributions = try library.activate(context, seed: seed) } catch {
            throw KernelError(.loadFailed, pluginID: id, reason: error.description)
        }
        do { try registry.publish(pluginID: id, contributions) } catch {
            if let problem = library.deactivate(context, drainTimeout: configuration.drainTimeout) { log(.warn, id, problem) }
            throw KernelError(.conflict, pluginID: id, reason: error.description)
        }
        active[id] = ActivePlugin(library: library, context: context, manifest: manifest)
        activationOrder.append(id)
    }

    /// Revokes a plugin's contributions, waits for its calls to drain, and runs its deactivate.
    private func deactivate(_ id: String) {
        guard let plugin = active.removeValue(forKey: id) else { return }
        activationOrder.removeAll { $0 == id }
        registry.revoke(pluginID: id)
        if let problem = plugin.library.deactivate(plugin.context, drainTimeout: configuration.drainTimeout) {
            log(.warn, id, problem)
        }
        log(.info, id, "deactivated")
    }

    // MARK: queries

    /// The host's own version.
    public static let version = "1.0.0"

    /// Ids of the active plugins in activation order.
    public var activePlugins: [String] { activationOrder }

    /// Every known plugin with its state and, for active ones, what it registered.
    public func plugins() throws(KernelError) -> [PluginInfo] {
        let records: [PluginRecord]
        do { records = try state.plugins() } catch { throw KernelError(.state, reason: error.description) }
        let snapshot = registry.snapshot
        return records.map { record in
            let bundle = bundles[record.id]
            let m = bundle?.manifest
            let c = snapshot.plugins[record.id]
            return PluginInfo(
                id: record.id, name: m?.name ?? record.name, version: m.map { "\($0.version)" } ?? record.version,
                description: m?.description ?? "", abi: m.map { "\($0.abi)" } ?? "",
                bundlePath: bundle?.folder ?? record.bundlePath, library: m?.library ?? "",
                enabled: record.enabled, status: record.status, reason: record.reason, changedAt: record.changedAt,
                capabilities: (m?.capabilities ?? []).map(\.rawValue).sorted(),
                dependencies: Dictionary(uniqueKeysWithValues: (m?.dependencies ?? []).map { ($0.id, $0.versions.text) }),
                routes: (c?.routes ?? []).map { "\($0.method) /ext/\(record.id)\($0.pattern)" },
                menus: (c?.menus ?? []).map(\.entry.id),
                authenticators: (c?.authenticators ?? []).map(\.name),
                authorizers: (c?.authorizers ?? []).map(\.name),
                warnings: (bundle?.warnings ?? []).map(\.description))
        }
    }

    /// One plugin's info.
    /// - Throws: `KernelError.Code.unknownPlugin`.
    public func plugin(_ id: String) throws(KernelError) -> PluginInfo {
        guard let info = try plugins().first(where: { $0.id == id }) else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "no plugin \"\(id)\" is known")
        }
        return info
    }
}
