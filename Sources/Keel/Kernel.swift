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
    /// The kernel's own thread: lifecycle work blocks and must never occupy Swift's cooperative pool.
    nonisolated let executor = LifecycleExecutor()
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    deinit {
        watcher?.stop()
        executor.stop()
    }
    public nonisolated let configuration: KernelConfiguration
    public nonisolated let registry = PluginRegistry()
    public nonisolated let state: StateStore
    /// Tenants, roles and the combined auth chain; read from any thread.
    public nonisolated let access: AccessControl
    let environment: KernelEnvironment

    var bundles: [String: Bundle] = [:]
    var active: [String: ActivePlugin] = [:]
    /// Ids in the order they were activated; deactivation runs in reverse.
    private var activationOrder: [String] = []

    struct ActivePlugin: Sendable {
        let library: PluginLibrary
        let context: ActivationContext
        let manifest: Manifest
        /// Which load of this plugin it is (1, 2, ...), across restarts.
        let generation: Int
        /// SHA-256 of the library it was loaded from.
        let checksum: String
    }

    let generations: GenerationStore
    let activationMark: ActivationMark
    var nextGeneration: [String: Int] = [:]
    /// Library checksums for the signature status, by path, with the file identity they were computed for.
    private var checksums: [String: (stamp: [Int], sum: String)] = [:]
    private var watcher: PluginWatcher?

    /// Opens the state file (creating and migrating it as needed). Loads nothing yet: call `start()`.
    /// - Throws: `KernelError.Code.state` when the state file cannot be used.
    public init(configuration: KernelConfiguration = KernelConfiguration()) throws(KernelError) {
        self.configuration = configuration
        do { state = try StateStore(path: configuration.stateFile) } catch {
            throw KernelError(.state, reason: error.description)
        }
        environment = KernelEnvironment(registry: registry, log: configuration.log)
        access = AccessControl(registry: registry, state: state, log: configuration.log)
        environment.attach(access)
        generations = GenerationStore(stateFile: configuration.stateFile, inMemory: configuration.copiesInMemory)
        activationMark = ActivationMark(path: configuration.stateFile + ".activating")
    }

    nonisolated func log(_ level: LogLevel, _ pluginID: String?, _ message: String) {
        configuration.log(LogRecord(level: level, pluginID: pluginID, message: message))
    }

    // MARK: start-up and discovery

    /// Scans the plugin folder, records what it finds, and activates every plugin whose stored state says enabled,
    /// dependencies first. Failures are recorded per plugin and logged; they never stop the others.
    /// - Parameter safeMode: discover and record, but activate nothing.
    public func start(safeMode: Bool = false) {
        environment.onMisbehaving { [weak self] id, reason in
            guard let self else { return }
            Task { await self.disableMisbehaving(id, reason: reason) }
        }
        generations.removeLeftovers()
        // Start-up writes many small records: they go to SQLite as one transaction.
        recoverInterruptedChanges()
        finishUninstalls()
        try? state.batch {
            rescan()
            quarantineAfterCrash()
            releaseRebuiltQuarantines()
            if safeMode {
                log(.warn, nil, "safe mode: no plugin is activated")
                return
            }
            let wanted = ((try? state.plugins()) ?? []).filter { $0.enabled && bundles[$0.id] != nil }.map(\.id)
            activateAll(activationPlan(for: Set(wanted)).filter { active[$0] == nil })
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
        // One read of every record, not one per bundle: `discovered` changes no status, so these stay current.
        let records = Dictionary(((try? state.plugins()) ?? []).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for bundle in found {
            next[bundle.id] = bundle
            for warning in bundle.warnings { log(.warn, bundle.id, warning.description) }
            do {
                try state.discovered(id: bundle.id, name: bundle.manifest?.name ?? "",
                                     version: bundle.manifest.map { "\($0.version)" } ?? "", bundlePath: bundle.folder)
                if let problem = bundle.problem, active[bundle.id] == nil {
                    try state.setStatus(bundle.id, .failed, reason: problem)
                    log(.error, bundle.id, problem)
                } else if bundle.problem == nil, let record = records[bundle.id], active[bundle.id] == nil,
                          [.missing, .installing, .installFailed, .upgrading].contains(record.status) || (record.status == .failed && !record.enabled) {
                    try state.setStatus(bundle.id, record.enabled ? .failed : (record.status == .missing ? .disabled : .installed),
                                        reason: record.enabled ? record.reason : nil)
                }
            } catch {
                log(.error, bundle.id, error.description)
            }
        }
        for record in (try? state.plugins()) ?? [] where next[record.id] == nil && active[record.id] == nil
            && ![.missing, .installFailed].contains(record.status) {
            if record.status == .installing {
                // An install interrupted by a crash: never left in a transient state.
                try? state.setStatus(record.id, .installFailed, reason: "install interrupted; run keel install again")
                continue
            }
            try? state.setStatus(record.id, .missing, reason: "bundle no longer in the plugin folder")
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

    /// A plugin whose calls keep failing is taken down and recorded failed (and not wanted) with the reason.
    func disableMisbehaving(_ id: String, reason: String) {
        guard active[id] != nil else { return }
        for other in activationOrder.reversed() where active[other]?.manifest.dependencies.contains(where: { $0.id == id }) == true {
            deactivate(other)
            try? state.setStatus(other, .failed, reason: "its dependency \"\(id)\" was disabled automatically")
        }
        deactivate(id)
        try? state.setEnabled(id, false, status: .failed, reason: "disabled automatically: \(reason)")
        log(.error, id, "disabled automatically: \(reason)")
    }

    // MARK: tenants

    private func apply(_ result: StateStore.ChangeResult) throws(KernelError) {
        access.refresh()
        if case let .refused(reason) = result { throw KernelError(.directory, reason: reason) }
    }

    private func directoryChange(_ body: () throws(StateError) -> StateStore.ChangeResult) throws(KernelError) {
        let result: StateStore.ChangeResult
        do { result = try body() } catch { throw KernelError(.state, reason: error.description) }
        try apply(result)
    }

    public func createTenant(_ name: String) throws(KernelError) { try directoryChange { () throws(StateError) in try state.createTenant(name) } }
    public func createRole(_ name: String) throws(KernelError) { try directoryChange { () throws(StateError) in try state.createRole(name) } }

    public func setRolePermission(_ role: String, _ permission: String, granted: Bool = true) throws(KernelError) {
        guard permission.split(separator: ":").count == 2 else {
            throw KernelError(.directory, reason: "\"\(permission)\" is not a permission: write KEY:ACTION (e.g. hello.greetings:view) or KEY:*")
        }
        try directoryChange { () throws(StateError) in try state.setRolePermission(role, permission, granted: granted) }
    }

    public func setMember(tenant: String, principal: String, role: String, member: Bool = true) throws(KernelError) {
        try directoryChange { () throws(StateError) in try state.setMember(tenant: tenant, principal: principal, role: role, member: member) }
    }

    /// Removes a tenant. With `cascade`, plugins enabled only for it are disabled.
    public func deleteTenant(_ name: String, cascade: Bool = false) throws(KernelError) {
        let only = access.directory.pluginTenants.filter { $0.value == [name] }.map(\.key)
        try directoryChange { () throws(StateError) in try state.deleteTenant(name, cascade: cascade) }
        for id in only.sorted() {
            try disable(id, cascade: true)
            try directoryChange { () throws(StateError) in try state.setPluginTenants(id, nil) }
        }
    }

    /// Enables `id` for one tenant (or, with nil, for all).
    public func enable(_ id: String, tenant: String?) throws(KernelError) {
        guard let tenant else {
            try directoryChange { () throws(StateError) in try state.setPluginTenants(id, nil) }
            return try enable(id)
        }
        guard access.directory.tenants.contains(tenant) else { throw KernelError(.directory, pluginID: id, reason: "unknown tenant \"\(tenant)\"") }
        let current = access.directory.pluginTenants[id]
        let alreadyForAll = current == nil && active[id] != nil
        if !alreadyForAll {
            try directoryChange { () throws(StateError) in try state.setPluginTenants(id, (current ?? []).union([tenant])) }
        }
        try enable(id)
    }

    /// Disables `id` for one tenant (or, with nil, everywhere). When no tenant is left, the plugin is disabled.
    public func disable(_ id: String, tenant: String?, cascade: Bool = false) throws(KernelError) {
        guard let tenant else { return try disable(id, cascade: cascade) }
        let d = access.directory
        guard d.tenants.contains(tenant) else { throw KernelError(.directory, pluginID: id, reason: "unknown tenant \"\(tenant)\"") }
        let remaining = (d.pluginTenants[id] ?? Set(d.tenants)).subtracting([tenant])
        if remaining.isEmpty {
            try disable(id, cascade: cascade)
            try directoryChange { () throws(StateError) in try state.setPluginTenants(id, nil) }
        } else {
            try directoryChange { () throws(StateError) in try state.setPluginTenants(id, remaining) }
        }
    }

    // MARK: crash-loop quarantine

    static func quarantineKey(_ id: String) -> String { "quarantine.\(id)" }

    /// A mark left from the last run means that plugin's activate took the host down: disable it, with the reason.
    private func quarantineAfterCrash() {
        guard let mark = activationMark.read() else { return }
        activationMark.clear()
        let parts = mark.split(separator: " ").map(String.init)
        guard parts.count == 3 else { return }
        let (id, generation, checksum) = (parts[0], Int(parts[1]) ?? 0, parts[2])
        let reason = "quarantined: the host went down while activating generation \(generation) (checksum \(checksum.prefix(12))); install a new build or run `keel plugins enable \(id)` to try again"
        try? state.setEnabled(id, false, status: .failed, reason: reason)
        try? state.setQuarantine(id, checksum: checksum)
        record(id, generation, version: bundles[id]?.manifest.map { "\($0.version)" } ?? "", checksum: checksum,
               outcome: "quarantined", detail: "the host went down during activate")
        log(.error, id, reason)
    }

    /// A quarantined plugin whose library changed (a new build) is wanted again.
    private func releaseRebuiltQuarantines() {
        for record in (try? state.plugins()) ?? [] {
            guard let quarantined = try? state.quarantinedChecksum(record.id),
                  let path = bundles[record.id]?.libraryPath, let current = GenerationStore.checksum(path),
                  current != quarantined else { continue }
            try? state.setQuarantine(record.id, checksum: nil)
            try? state.setEnabled(record.id, true, status: .installed)
            log(.info, record.id, "new build found: quarantine lifted")
        }
    }

    // MARK: configuration

    /// The JSON a plugin gets at activation: its stored configuration, checked against the schema its bundle ships
    /// now (an upgrade may tighten it). A bundle with a schema and no stored configuration gets `{}`, checked too.
    func configJSON(_ id: String, bundle: Bundle) throws(KernelError) -> String {
        let schemaPath = Self.schemaPath(bundle)
        let stored = try? state.config(id)
        guard stored != nil || schemaPath != nil else { return "" }
        do {
            return try PluginConfig.validate(yaml: stored?.yaml ?? "{}", file: stored == nil ? "(no configuration)" : "configuration of \(id)",
                                             schemaPath: schemaPath)
        } catch {
            let hint = stored == nil ? "; give it one with `keel plugins config \(id) FILE`" : ""
            throw KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\" needs a valid configuration: \(error)\(hint)")
        }
    }

    /// The bundle's configuration schema, when it ships one.
    static func schemaPath(_ bundle: Bundle) -> String? {
        let schema = bundle.folder + "/" + PluginConfig.schemaFile
        return Glibc.access(schema, F_OK) == 0 ? schema : nil
    }

    /// Sets a plugin's configuration from YAML (`file` names it in errors): checked against the bundle's schema,
    /// stored, and applied by re-activating the plugin when it is active. A configuration its code rejects leaves the
    /// old activation serving, as any failed reload does, and the previous configuration stored.
    /// - Throws: `KernelError` with the file, the key and the reason.
    public func setConfig(_ id: String, yaml: String, file: String) throws(KernelError) {
        if bundles[id] == nil { rescan() }
        guard let bundle = bundles[id] else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "no plugin \"\(id)\" in the plugin folder")
        }
        let json: String
        do { json = try PluginConfig.validate(yaml: yaml, file: file, schemaPath: Self.schemaPath(bundle)) } catch {
            throw KernelError(.bundle, pluginID: id, reason: error.description)
        }
        let previous = try? state.config(id)
        do { try state.setConfig(id, yaml: yaml, json: json) } catch { throw KernelError(.state, pluginID: id, reason: error.description) }
        guard active[id] != nil else { return }
        do { try reload(id) } catch {
            try? state.setConfig(id, previous ?? nil, event: "config-rejected")
            throw error
        }
    }

    // MARK: capabilities

    /// What a plugin may use: what its manifest asks for, limited to the trusted capabilities and the operator's
    /// explicit grants.
    nonisolated func effectiveGrants(_ id: String, _ manifest: Manifest) -> Set<Capability> {
        let granted = Set(((try? state.grants(id)) ?? []).compactMap(Capability.init(rawValue:)))
        return manifest.capabilities.intersection(configuration.trustedCapabilities.union(granted))
    }

    /// Grants (or revokes) capabilities to a plugin, persisted at once; an active plugin is reloaded so the change
    /// takes effect (a revoke that its code cannot live with leaves the old generation serving, as any failed reload).
    /// - Throws: `KernelError` for an unknown plugin or capability, or one the plugin does not ask for.
    public func setGrants(_ id: String, grant: [String] = [], revoke: [String] = []) throws(KernelError) {
        if bundles[id] == nil { rescan() }
        guard let manifest = bundles[id]?.manifest else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "no plugin \"\(id)\" in the plugin folder")
        }
        for name in grant + revoke {
            if name.hasPrefix("route-prefix:") {
                let prefix = String(name.dropFirst("route-prefix:".count))
                if grant.contains(name) && !manifest.routePrefixes.contains(prefix) {
                    throw KernelError(.bundle, pluginID: id,
                                      reason: "plugin \"\(id)\" does not ask for \"\(name)\" in its plugin.yaml; nothing to grant")
                }
                continue
            }
            guard let capability = Capability(rawValue: name) else {
                let known = Capability.allCases.map(\.rawValue).joined(separator: ", ")
                throw KernelError(.bundle, pluginID: id, reason: "unknown capability \"\(name)\" (known: \(known))")
            }
            if grant.contains(name) && !manifest.capabilities.contains(capability) {
                throw KernelError(.bundle, pluginID: id,
                                  reason: "plugin \"\(id)\" does not ask for \"\(name)\" in its plugin.yaml; nothing to grant")
            }
        }
        do { try state.setGrants(id, grant: grant, revoke: revoke) } catch {
            throw KernelError(.state, pluginID: id, reason: error.description)
        }
        if active[id] != nil { try reload(id) }
    }

    // MARK: enable / disable

    /// Enables `id`: records the wish, then loads and activates it. Persisted before it returns.
    /// - Throws: `KernelError` when the plugin is unknown or fails to activate (it is then recorded `failed` with
    ///   the reason, and stays wanted, so a later start retries).
    public func enable(_ id: String) throws(KernelError) {
        if bundles[id] == nil { rescan() }
        guard bundles[id] != nil else {
            throw KernelError(.unknownPlugin, pluginID: id,
                              reason: "no plugin \"\(id)\" in the plugin folder")
        }
        try? state.setQuarantine(id, checksum: nil)
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
        watcher?.stop()
        watcher = nil
        for id in activationOrder.reversed() { deactivate(id) }
    }

    // MARK: activation

    /// Loads and activates one plugin whose bundle is known. On failure, records `failed` with the reason.
    private func activate(_ id: String) throws(KernelError) {
        try publishFirst(id) { () throws(KernelError) in try loadGeneration(id) }
    }

    /// Publishes the generation `load` makes as the plugin's active one. On failure, records `failed` with the reason.
    private func publishFirst(_ id: String, _ load: () throws(KernelError) -> Generation) throws(KernelError) {
        do throws(KernelError) {
            let generation = try load()
            do { try registry.publish(pluginID: id, generation.contributions) } catch {
                retire(generation.plugin, id: id, outcome: "refused")
                throw KernelError(.conflict, pluginID: id, reason: error.description)
            }
            active[id] = generation.plugin
            activationOrder.append(id)
            access.setDeclared(id, generation.plugin.manifest)
            try? state.setStatus(id, .enabled)
            record(id, generation.plugin, outcome: "activated")
            log(.info, id, "activated (generation \(generation.plugin.generation))")
        } catch {
            try? state.setStatus(id, .failed, reason: error.reason)
            log(.error, id, error.reason)
            throw error
        }
    }

    /// Activates the plugins of `plan` (dependencies first), with the same outcome as `activate` one by one, faster:
    /// the work that does not depend on order is done first, a batch at a time. A batch's libraries are copied on every
    /// core, then opened in one run (the dynamic loader walks its list of loaded objects on every open; a run keeps
    /// that list in cache); then all are activated and published in order. Batches are bounded, so that the copies'
    /// descriptors stay few.
    private func activateAll(_ plan: [String]) {
        var opened: [String: Result<Opened, KernelError>] = [:]
        var builds: [Build] = []
        let planned = Set(plan)
        for id in plan {
            do { builds.append(try build(id, pending: planned)) } catch { opened[id] = .failure(error) }
        }
        var start = 0
        while start < builds.count {
            let batch = Array(builds[start..<min(start + 64, builds.count)])
            start += batch.count
            let copies = generations.copy(batch.map { ($0.libraryPath, $0.id, $0.number) })
            for (build, copy) in zip(batch, copies) {
                opened[build.id] = copy.flatMap { copy in Result { () throws(KernelError) in try open(build, copy) } }
            }
        }
        for id in plan {
            guard let result = opened[id] else { continue }
            _ = try? publishFirst(id) { () throws(KernelError) in
                try activate(result.get())
            }
        }
    }

    /// A loaded and activated build of a plugin, not yet published.
    struct Generation {
        let plugin: ActivePlugin
        let contributions: Contributions
    }

    /// A plugin build checked against its bundle and dependencies and numbered, not yet copied or opened.
    struct Build: Sendable {
        let id: String
        let bundle: Bundle
        let manifest: Manifest
        let libraryPath: String
        let number: Int
    }

    /// A build whose library is open and verified, not yet activated.
    struct Opened {
        let build: Build
        let library: PluginLibrary
        let checksum: String
    }

    /// Checks the bundle and its dependencies, copies the library to a private path, opens, verifies and activates
    /// it into a fresh context. Nothing is published; on failure nothing of it remains registered.
    private func loadGeneration(_ id: String) throws(KernelError) -> Generation {
        let build = try build(id)
        let copy = try generations.copy(build.libraryPath, id: id, generation: build.number)
        return try activate(open(build, copy))
    }

    /// Checks that plugin `id` can be loaded: a usable bundle, this host's version, its dependencies installed in
    /// a matching version and active (or in `pending`, about to be), and numbers its next generation.
    private func build(_ id: String, pending: Set<String> = []) throws(KernelError) -> Build {
        guard let bundle = bundles[id] else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "no plugin \"\(id)\" in the plugin folder")
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
            try requireActive(dep.id, of: id, pending: pending)
        }
        let number = max(nextGeneration[id] ?? 0, ((try? state.lastGeneration(id)) ?? 0) + 1)
        nextGeneration[id] = number + 1
        return Build(id: id, bundle: bundle, manifest: manifest, libraryPath: libraryPath, number: number)
    }

    private func requireActive(_ dependency: String, of id: String, pending: Set<String> = []) throws(KernelError) {
        guard active[dependency] != nil || pending.contains(dependency) else {
            throw KernelError(.dependency, pluginID: id, reason: "plugin \"\(id)\" needs \"\(dependency)\", which is not enabled")
        }
    }

    /// Probes (when configured and not yet passed), opens and verifies the private copy of a build, then removes
    /// the copy. Failures are recorded in the plugin's history.
    private func open(_ build: Build, _ copy: GenerationStore.Copy) throws(KernelError) -> Opened {
        defer { generations.discard(copy) }
        let id = build.id, version = "\(build.manifest.version)"
        if let probe = configuration.probe, !((try? state.probePassed(copy.checksum)) ?? false) {
            switch probe.run(library: copy.path, manifestPath: build.bundle.manifestPath, shownPath: build.libraryPath) {
            case .passed:
                try? state.recordProbePassed(copy.checksum, detail: "\(id) \(version)")
            case let .failed(reason):
                record(id, build.number, version: version, checksum: copy.checksum, outcome: "probe-failed", detail: reason)
                throw KernelError(.loadFailed, pluginID: id, reason: reason)
            }
        }
        do {
            let library = try PluginLibrary.open(path: copy.path, expectedID: id, reportAs: build.libraryPath, image: copy.image)
            try library.verify(against: build.manifest, manifestPath: build.bundle.manifestPath)
            return Opened(build: build, library: library, checksum: copy.checksum)
        } catch {
            record(id, build.number, version: version, checksum: copy.checksum, outcome: "failed", detail: error.description)
            throw KernelError(.loadFailed, pluginID: id, reason: error.description)
        }
    }

    /// Activates an opened build into a fresh context, with its grants and configuration. Nothing is published.
    private func activate(_ opened: Opened) throws(KernelError) -> Generation {
        let build = opened.build, library = opened.library, checksum = opened.checksum
        let id = build.id, manifest = build.manifest
        for dep in manifest.dependencies { try requireActive(dep.id, of: id) }
        let granted = (try? state.grants(id)) ?? []
        let prefixes = manifest.routePrefixes.filter { granted.contains(Capability.routePrefix($0)) }
        let config = try configJSON(id, bundle: build.bundle)
        let context = ActivationContext(pluginID: id, grants: effectiveGrants(id, manifest), routePrefixes: prefixes,
                                        config: config, limits: configuration.limits,
                                        budgets: configuration.budgets, environment: environment)
        var seed = Contributions()
        seed.menus = manifest.menus.map { MenuRegistration(entry: $0, fromManifest: true) }
        let contributions: Contributions
        // The mark survives only if the process dies inside activate: the next start quarantines the plugin.
        activationMark.set("\(id) \(build.number) \(checksum)")
        defer { activationMark.clear() }
        do { contributions = try library.activate(context, seed: seed) } catch {
            record(id, build.number, version: "\(manifest.version)", checksum: checksum, outcome: "failed", detail: error.description)
            throw KernelError(.loadFailed, pluginID: id, reason: error.description)
        }
        let plugin = ActivePlugin(library: library, context: context, manifest: manifest, generation: build.number,
                                  checksum: checksum)
        return Generation(plugin: plugin, contributions: contributions)
    }

    /// Revokes a plugin's contributions, waits for its calls to drain, and runs its deactivate.
    private func deactivate(_ id: String) {
        guard let plugin = active.removeValue(forKey: id) else { return }
        activationOrder.removeAll { $0 == id }
        registry.revoke(pluginID: id)
        access.setDeclared(id, nil)
        if let problem = plugin.library.deactivate(plugin.context, drainTimeout: configuration.drainTimeout) {
            log(.warn, id, problem)
        }
        plugin.library.unloadIfSafe()
        record(id, plugin, outcome: "deactivated")
        log(.info, id, "deactivated")
    }

    /// Takes an unpublished or replaced generation down: drains its calls, deactivates it, closes it when
    /// unload-safe. Runs on a thread of its own, so a slow drain holds up neither lifecycle work nor requests.
    private nonisolated func retire(_ plugin: ActivePlugin, id: String, outcome: String) {
        let timeout = configuration.drainTimeout
        Thread.detachNewThread { [self] in
            let problem = plugin.library.deactivate(plugin.context, drainTimeout: timeout)
            if let problem { self.log(.warn, id, "generation \(plugin.generation): \(problem)") }
            plugin.library.unloadIfSafe()
            self.record(id, plugin, outcome: outcome, detail: problem ?? "")
        }
    }

    nonisolated func record(_ id: String, _ plugin: ActivePlugin, outcome: String, detail: String = "") {
        record(id, plugin.generation, version: "\(plugin.manifest.version)", checksum: plugin.checksum, outcome: outcome, detail: detail)
    }

    nonisolated func record(_ id: String, _ generation: Int, version: String, checksum: String, outcome: String, detail: String = "") {
        try? state.recordLoad(id, StateStore.Load(generation: generation, version: version, checksum: checksum,
                                                  outcome: outcome, detail: detail))
    }

    // MARK: reload

    /// Loads the plugin's current build as a new generation and swaps it in: routes, menus and hooks change over
    /// in one atomic step; requests already running finish on the old generation, which is then drained and
    /// deactivated in the background. If the new build fails to load, verify, activate or publish, the old one keeps
    /// serving and the failure is recorded (history and `reason`): a reload never makes things worse.
    /// A plugin that is not active is activated when it is wanted, else only re-read.
    /// - Throws: `KernelError` for an unknown plugin or a failed new build.
    public func reload(_ id: String) throws(KernelError) {
        rescan()
        guard bundles[id] != nil else {
            if active[id] != nil { retireMissing(id) }
            throw KernelError(.unknownPlugin, pluginID: id, reason: "no plugin \"\(id)\" in the plugin folder")
        }
        guard let old = active[id] else {
            if (try? state.plugin(id))?.enabled == true { try activate(id) }
            return
        }
        let generation: Generation
        do { generation = try loadGeneration(id) } catch {
            try? state.setStatus(id, .enabled, reason: "reload failed, generation \(old.generation) still serving: \(error.reason)")
            log(.error, id, "reload failed, generation \(old.generation) keeps serving: \(error.reason)")
            throw error
        }
        do { try registry.publish(pluginID: id, generation.contributions) } catch {
            retire(generation.plugin, id: id, outcome: "refused")
            try? state.setStatus(id, .enabled, reason: "reload refused, generation \(old.generation) still serving: \(error.description)")
            throw KernelError(.conflict, pluginID: id, reason: error.description)
        }
        active[id] = generation.plugin
        access.setDeclared(id, generation.plugin.manifest)
        try? state.setStatus(id, .enabled)
        record(id, generation.plugin, outcome: "activated", detail: "replaced generation \(old.generation)")
        log(.info, id, "reloaded: generation \(generation.plugin.generation) replaces \(old.generation)")
        retire(old, id: id, outcome: "retired")
    }

    /// The bundle of an active plugin is gone: take everything it registered away and record it missing.
    private func retireMissing(_ id: String) {
        deactivate(id)
        try? state.setStatus(id, .missing, reason: "bundle removed from the plugin folder")
    }

    /// The load history of a plugin, oldest first.
    public func history(_ id: String) throws(KernelError) -> [StateStore.Load] {
        guard bundles[id] != nil || ((try? state.plugin(id)) ?? nil) != nil else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "no plugin \"\(id)\" is known")
        }
        do { return try state.loads(for: id) } catch { throw KernelError(.state, pluginID: id, reason: error.description) }
    }

    // MARK: watching the plugin folder

    /// Starts watching the plugin folder (inotify). A new bundle is discovered and, when its stored state says
    /// enabled, activated; a replaced library or manifest is reloaded; a removed bundle is retired. A burst of events
    /// for one bundle causes one reload. Stops at `shutdown()`.
    /// - Throws: `KernelError.Code.bundle` when the folder cannot be watched.
    public func watch() throws(KernelError) {
        guard watcher == nil else { return }
        try? FileManager.default.createDirectory(atPath: configuration.pluginsDirectory, withIntermediateDirectories: true)
        let w = try PluginWatcher(directory: configuration.pluginsDirectory) { [weak self] folders in
            guard let self else { return }
            Task { await self.bundlesChanged(folders) }
        }
        watcher = w
    }

    /// Reacts to changed bundle folders (names relative to the plugin folder).
    func bundlesChanged(_ folders: Set<String>) {
        let before = bundles
        rescan()
        var ids = Set<String>()
        for folder in folders {
            let path = configuration.pluginsDirectory + "/" + folder
            for (id, bundle) in before where bundle.folder == path { ids.insert(id) }
            for (id, bundle) in bundles where bundle.folder == path { ids.insert(id) }
        }
        for id in ids.sorted() {
            if bundles[id] == nil {
                if active[id] != nil { retireMissing(id); log(.info, id, "bundle removed: retired") }
                continue
            }
            if let current = active[id] {
                guard let path = bundles[id]?.libraryPath, GenerationStore.waitUntilSettled(path) else {
                    log(.warn, id, "library did not settle; not reloading")
                    continue
                }
                let changed = GenerationStore.checksum(path) != current.checksum
                    || bundles[id]?.manifest != current.manifest
                if changed { try? reload(id) }
            } else if (try? state.plugin(id))?.enabled == true {
                if let path = bundles[id]?.libraryPath { _ = GenerationStore.waitUntilSettled(path) }
                try? activate(id)
            }
        }
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
        let directory = access.directory
        return records.map { record in
            let bundle = bundles[record.id]
            let m = bundle?.manifest
            let c = snapshot.plugins[record.id]
            return PluginInfo(
                id: record.id, name: m?.name ?? record.name, version: m.map { "\($0.version)" } ?? record.version,
                description: m?.description ?? "", abi: m.map { "\($0.abi)" } ?? "",
                bundlePath: bundle?.folder ?? record.bundlePath, library: m?.library ?? "",
                enabled: record.enabled, status: record.status, reason: record.reason, changedAt: record.changedAt,
                capabilities: ((m?.capabilities ?? []).map(\.rawValue) + (m?.routePrefixes ?? []).map(Capability.routePrefix)).sorted(),
                grants: m.map { manifest in
                    let granted = (try? state.grants(record.id)) ?? []
                    return (effectiveGrants(record.id, manifest).map(\.rawValue)
                        + manifest.routePrefixes.map(Capability.routePrefix).filter { granted.contains($0) }).sorted()
                } ?? [],
                dependencies: Dictionary(uniqueKeysWithValues: (m?.dependencies ?? []).map { ($0.id, $0.versions.text) }),
                routes: (c?.routes ?? []).map { "\($0.method) \($0.fullPath(plugin: record.id))" },
                menus: (c?.menus ?? []).map(\.entry.id),
                authenticators: (c?.authenticators ?? []).map(\.name),
                authorizers: (c?.authorizers ?? []).map(\.name),
                warnings: (bundle?.warnings ?? []).map(\.description),
                tenants: directory.pluginTenants[record.id].map { $0.sorted() },
                permissions: (m?.permissions ?? []).flatMap { p in p.actions.map { "\(p.key):\($0)" } },
                signature: signature(record.id, bundle: bundle))
        }
    }

    /// How `id` was signed when installed, shown only while its bundle's library is still the library installed then
    /// (a library replaced by hand, or another bundle with the same id, shows none).
    private func signature(_ id: String, bundle: Bundle?) -> String? {
        guard let stored = (try? state.signatureRecord(id)) ?? nil, let path = bundle?.libraryPath else { return nil }
        return ExtensionStore.signature(stored: stored, librarySum: libraryChecksum(path))
    }

    /// The SHA-256 of a library file, remembered for as long as the file's inode, size and mtime stay the same.
    private func libraryChecksum(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let stamp = [Int(st.st_ino), Int(st.st_size), Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec)]
        if let known = checksums[path], known.stamp == stamp { return known.sum }
        guard let sum = GenerationStore.checksum(path) else { return nil }
        checksums[path] = (stamp, sum)
        return sum
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
