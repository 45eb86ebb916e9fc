// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelIsolation
import KeelLoader
import KeelManifest

/// Plugins in worker processes (`isolation: process`): where a plugin runs, and its activation in a worker.
extension Kernel {
    /// Where `id` runs: the operator's choice, else its manifest's `isolation:`.
    nonisolated func isolation(of id: String, _ manifest: Manifest) -> Isolation {
        ((try? state.isolationChoice(id)).flatMap { $0 }).flatMap(Isolation.init(rawValue:)) ?? manifest.isolation
    }

    /// Stores where `id` runs (nil: as its manifest asks) and reloads it there when it is active.
    /// - Throws: `KernelError` for an unknown plugin, a state failure, or a reload that failed (the old generation
    ///   then goes on serving, and the choice is put back).
    public func setIsolation(_ id: String, _ mode: Isolation?) throws(KernelError) {
        if bundles[id] == nil { rescan() }
        guard let bundle = bundles[id] else {
            throw notInFolder(id)
        }
        if mode == .process, bundle.manifest == nil, let problem = bundle.problem {
            // Whether it has a library is not known while its plugin.yaml cannot be read: that is what to fix.
            throw KernelError(.bundle, pluginID: id, reason: problem)
        }
        if mode == .process, bundle.libraryPath == nil {
            throw KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\" has no library: it runs no code to isolate")
        }
        if mode == .process, let manifest = bundle.manifest, let refusal = Self.servicesRefusal(id, manifest) {
            throw KernelError(.bundle, pluginID: id, reason: refusal)
        }
        let previous = (try? state.isolationChoice(id)) ?? nil
        do { try state.setIsolationChoice(id, mode?.rawValue) } catch {
            throw KernelError(.state, pluginID: id, reason: error.description)
        }
        guard active[id] != nil else { return }
        do { try reload(id, cause: "isolation changed") } catch {
            try? state.setIsolationChoice(id, previous)
            throw error
        }
    }

    /// Starts a worker for `build`, activates the plugin in it, and registers what it reported into `context`
    /// through the same checks as an in-process activation. Nothing is published.
    func activateInWorker(_ build: Build, context: ActivationContext, seed: Contributions,
                          checksum: String, config: String, configStamp: Int) throws(KernelError) -> Generation {
        let id = build.id, manifest = build.manifest, version = "\(manifest.version)"
        func fail(_ reason: String) -> KernelError {
            record(id, build.number, version: version, checksum: checksum, outcome: "failed", detail: reason)
            return KernelError(.loadFailed, pluginID: id, reason: reason)
        }
        guard let libraryPath = build.libraryPath else { throw fail("plugin \"\(id)\" has no library to run in a worker") }
        guard let executable = configuration.workerExecutable else {
            throw fail("plugin \"\(id)\" asks for isolation: process, but this host has no worker executable (KernelConfiguration.workerExecutable; `keel serve` sets it)")
        }
        if let refusal = Self.servicesRefusal(id, manifest) { throw fail(refusal) }
        let prefixes = context.routePrefixes
        let activation = WorkerActivation(
            pluginID: id, libraryPath: libraryPath, manifestPath: build.bundle.manifestPath,
            grants: context.grants.map(\.rawValue).sorted(), routePrefixes: prefixes, config: config,
            limits: context.limits, budgets: context.budgets, version: version, generation: build.number,
            memoryLimitBytes: configuration.isolation.memoryLimitBytes, cpuSeconds: configuration.isolation.cpuSeconds,
            grantHint: configuration.grantHint.template)
        let environment = self.environment
        // Answered as for a plugin in the host, as this plugin (never as whom the worker says it is).
        let services = HostServices(
            calls: Set(manifest.calls),
            command: { plugin, name, arguments, principal in
                ActivationContext.serving(context) {
                    environment.callCommand(caller: id, plugin: plugin, name: name, arguments: arguments, principal: principal)
                }
            },
            permission: { principal, action, resource in
                environment.checkPermission(plugin: id, principal, action: action, resource: resource)
            },
            leases: { RemoteLeases(context: context) })
        let supervisor = WorkerSupervisor(
            pluginID: id, executable: executable, activation: activation, policy: configuration.isolation, services: services,
            log: { [generation = build.number] level, message in
                environment.log(plugin: id, generation: generation, level: level, message: message)
            },
            failed: { [generation = build.number] reason in environment.misbehaving(plugin: id, generation: generation, reason: reason) },
            restarted: { environment.changed() })
        var seed = seed
        seed.commands = manifest.commands.enumerated().map { index, declaration in
            PluginCommand(declaration, remote: supervisor, index: index, context: context)
        }
        let contributions: Contributions
        do {
            let registrations = try supervisor.start()
            contributions = try context.register(registrations, calls: supervisor, seed: seed, path: libraryPath)
        } catch {
            _ = supervisor.stop(drainTimeout: 0)
            throw fail(error.description)
        }
        let plugin = ActivePlugin(library: nil, context: context, manifest: manifest, generation: build.number,
                                  checksum: checksum, worker: supervisor, configStamp: configStamp)
        log(.info, id, "running in worker process \(supervisor.workerPID.map(String.init) ?? "?")")
        return Generation(plugin: plugin, contributions: contributions)
    }
}

extension Kernel {
    /// Why `manifest`'s plugin cannot run in a worker process for the services it provides or consumes, or nil.
    /// A service is a C table of functions the host knows nothing of (keel/services.h): only a table whose functions
    /// are declared with signatures (`functions:` of its provides: entry) can be proxied across a process boundary.
    nonisolated static func servicesRefusal(_ id: String, _ manifest: Manifest) -> String? {
        if let provided = manifest.provides.first(where: { $0.functions.isEmpty }) {
            return "plugin \"\(id)\" provides \(provided.interface), whose functions are not declared, so its table cannot cross a process boundary; declare them under functions: of its provides: entry in plugin.yaml, or use isolation: in-process"
        }
        if let consumed = manifest.consumes.first(where: { $0.functions.isEmpty }) {
            return "plugin \"\(id)\" consumes \(consumed.interface), whose functions are not declared, so it cannot call the table from a worker process; declare them under functions: of its consumes: entry in plugin.yaml, or use isolation: in-process"
        }
        return nil
    }
}

extension Kernel.ActivePlugin {
    /// Ends an activation whose calls were stopped and drained (`running` still in flight): its deactivate runs (in
    /// the library, or in the worker, which then exits), and the context is closed. Returns a problem to report.
    /// [lifecycle]
    func finishTakingDown(stillRunning running: Int, drainTimeout: Double) -> String? {
        if let worker {
            let problem = worker.stop(drainTimeout: drainTimeout)
            let leftover = context.closeWithoutCode(stillRunning: running, drainTimeout: drainTimeout)
            return [leftover, problem].compactMap { $0 }.joined(separator: "; ").nilIfEmpty
        }
        if let library { return library.finishDeactivation(context, stillRunning: running, drainTimeout: drainTimeout) }
        return context.closeWithoutCode(stillRunning: running, drainTimeout: drainTimeout)
    }
}

private extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
