// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState
import KeelSystem

/// The activation pipeline: build → private copy → probe and open → activate → publish, and the way back.
extension Kernel {
    // MARK: activation

    /// Loads and activates one plugin whose bundle is known. On failure, records `failed` with the reason.
    /// - Parameter reusing: activate the library kept from the plugin's last orderly stop when its file is unchanged
    ///   (`ResidentLibraries`); false loads a fresh copy whatever the file (an explicit reload).
    func activate(_ id: String, reusing: Bool = true) throws(KernelError) {
        try requireRunning("activate \(id)")
        try publishFirst(id) { () throws(KernelError) in try loadGeneration(id, reusing: reusing) }
    }

    /// Publishes the generation `load` makes as the plugin's active one. On failure, records `failed` with the reason.
    func publishFirst(_ id: String, _ load: () throws(KernelError) -> Generation) throws(KernelError) {
        do throws(KernelError) {
            let generation = try load()
            let before = registry.snapshot.services
            do { try registry.publish(pluginID: id, generation.contributions) } catch {
                retire(generation.plugin, id: id, outcome: "refused")
                throw KernelError(.conflict, pluginID: id, reason: error.description)
            }
            notifyServiceChanges(since: before)
            noteGuards(id, generation.contributions)
            setActive(id, generation.plugin)
            appendActivated(id)
            access.setDeclared(id, generation.plugin.manifest)
            let plugin = generation.plugin, state = self.state, wait = activationRecordsWait
            // Status and load history in one transaction (one wait for the disk, not two; none on a first use).
            write { [self] in
                let commit = { _ = try? state.transaction { try? state.setStatus(id, .enabled); self.record(id, plugin, outcome: "activated") } }
                if wait { commit() } else { state.settling(sync: false, commit) }
            }
            log(.info, id, "activated (generation \(generation.plugin.generation))")
        } catch {
            try? state.setStatus(id, .failed, reason: error.reason)
            // A bundle's own problem was logged when the scan found it (`rescan`): not a second line for each try.
            if error.code != .bundle || error.reason != bundles[id]?.problem {
                log(.error, id, error.reason)
                loggedDuringCommand?.insert(LoggedFailure(pluginID: id, reason: error.reason))
            }
            if deferredWrites == nil { checkGuardsRunning() }
            throw error
        }
    }

    /// The per-plugin records an activation reads, read for every plugin at once (`startReads`).
    struct StartReads {
        let grants: [String: Set<String>]
        let configs: [String: (yaml: String, json: String)]
        let generations: [String: Int]

        /// Nil when one of the reads fails: each activation then reads its own.
        init?(_ state: StateStore) {
            guard let grants = try? state.allGrants(), let configs = try? state.allConfigs(),
                  let generations = try? state.lastGenerations() else { return nil }
            (self.grants, self.configs, self.generations) = (grants, configs, generations)
        }
    }

    /// Activates the plugins of `plan` (dependencies first), with the same outcome as `activate` one by one, faster:
    /// the work that does not depend on order is done first, a batch at a time. A batch's libraries are copied on every
    /// core, then opened in one run (the dynamic loader walks its list of loaded objects on every open; a run keeps
    /// that list in cache); then all are activated and published in order. Batches are bounded, so that the copies'
    /// descriptors stay few.
    func activateAll(_ plan: [String]) {
        // Nothing to activate (a start that parks every plugin): no records to write, and no sync of the write-ahead
        // log to wait for (about a quarter of a millisecond of a lazy start).
        guard !plan.isEmpty else { return }
        // Three reads of every plugin's records instead of three per plugin, when there are many plugins.
        let reads = startReads == nil && plan.count >= 16
        if reads { startReads = StartReads(state) }
        defer { if reads { startReads = nil } }
        // Start-up and another host's changes load fresh copies: a copy kept from an earlier stop is let go.
        if residents.count > 0 { for id in plan { residents.forget(id) } }
        var opened: [String: Result<Opened, KernelError>] = [:]
        var builds: [Build] = []
        let planned = Set(plan)
        for id in plan {
            do { builds.append(try build(id, pending: planned)) } catch { opened[id] = .failure(error) }
        }
        // A manifest-only bundle has nothing to copy or open, nor has a plugin that runs in a worker (the worker opens it).
        for build in builds where build.libraryPath == nil || build.isolated {
            opened[build.id] = Result { () throws(KernelError) in try openManifestOnly(build) }
        }
        builds.removeAll { $0.libraryPath == nil || $0.isolated }
        var start = 0
        while start < builds.count {
            let batch = Array(builds[start..<min(start + 64, builds.count)])
            start += batch.count
            let copies = generations.copy(batch.map { ($0.libraryPath ?? "", $0.id, $0.number) },
                                          owned: configuration.pluginsDirectory, known: checksums)
            for (build, copy) in zip(batch, copies) {
                if case let .success(made) = copy, let path = build.libraryPath { remember(made, of: path) }
                opened[build.id] = copy.flatMap { copy in Result { () throws(KernelError) in try open(build, copy) } }
            }
        }
        // In order, a batch at a time: each plugin is activated and published before its dependents; the records of
        // four batches' successes are written together after them, outside the plugin code (a commit writes every
        // page of the load history's indexes that its plugins touch, wherever they are: one commit per 256 plugins
        // instead of per 64 took about 4 % off a start of 1,000, in alternating child starts of both builds). A crash
        // of the process in plugin code loses the load history rows of up to 255 plugins activated before it (the
        // activation mark still names the plugin that crashed: quarantine is unchanged).
        var next = 0
        // Inside a command that holds its records back (`Kernel.execute`), they join those.
        let outer = deferredWrites
        defer { if let outer { deferredWrites = outer + (deferredWrites ?? []) } }
        if outer != nil { deferredWrites = [] }
        // The batches' commits do not wait for the disk; one sync at the end makes them all durable (`settling`: a
        // crash of the process loses none, a power cut before the sync only the last ones).
        state.settling {
            while next < plan.count {
                let batch = plan[next..<min(next + 64, plan.count)]
                next += batch.count
                if outer == nil, deferredWrites == nil { deferredWrites = [] }
                for id in batch {
                    guard let result = opened[id] else { continue }
                    _ = try? publishFirst(id) { () throws(KernelError) in
                        try activate(result.get())
                    }
                }
                if outer != nil || (next < plan.count && next % (4 * 64) != 0) { continue }
                let writes = deferredWrites ?? []
                deferredWrites = nil
                // A batch that cannot commit loses its guard records with it: the cache is read again.
                do { try state.batch { for change in writes { change() } } } catch { forgetKnownGuards() }
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
        /// Nil for a manifest-only bundle.
        let libraryPath: String?
        let number: Int
        /// Runs in a worker process (`isolation: process`): the host never opens its library.
        var isolated = false
    }

    /// A build whose library is open and verified (or a manifest-only build, `library` nil), not yet activated.
    struct Opened {
        let build: Build
        let library: PluginLibrary?
        /// SHA-256 of the library, or of plugin.yaml for a manifest-only build.
        let checksum: String
        /// The library file as it was read, when it had settled; nil otherwise.
        var source: LibrarySource? = nil
    }

    /// Checks the bundle and its dependencies, copies the library to a private path, opens, verifies and activates
    /// it into a fresh context. Nothing is published; on failure nothing of it remains registered.
    /// - Parameter reusing: activate the library kept from the plugin's last orderly stop when its file is unchanged
    ///   (`ResidentLibraries`) instead of loading a fresh copy. The kept library is forgotten either way.
    func loadGeneration(_ id: String, reusing: Bool = false) throws(KernelError) -> Generation {
        let build = try build(id)
        // Taken out whatever happens next: a copy is activated by at most one generation, and a build that runs in a
        // worker or has no library leaves no use for it.
        let kept = build.libraryPath.flatMap { residents.take(id, path: $0) }
        // A library plugin.yaml names that is not there: said with what the folder most likely is, in the history like
        // any failed load.
        if kept == nil, let missing = build.bundle.missingLibrary {
            record(id, build.number, version: "\(build.manifest.version)", checksum: "", outcome: "failed", detail: missing)
            throw KernelError(.bundle, pluginID: id, reason: missing)
        }
        guard let libraryPath = build.libraryPath, !build.isolated else { return try activate(openManifestOnly(build)) }
        if let kept, reusing { return try activate(reopen(build, kept)) }
        let copy: GenerationStore.Copy
        do {
            copy = try generations.copy(libraryPath, id: id, generation: build.number, owned: configuration.pluginsDirectory,
                                        known: checksums[libraryPath])
            remember(copy, of: libraryPath)
        } catch {
            // A library that cannot be read (gone, unreadable, too large) is a failed load like any other: in the history.
            record(id, build.number, version: "\(build.manifest.version)", checksum: "", outcome: "failed", detail: error.reason)
            throw error
        }
        return try activate(open(build, copy))
    }

    /// Checks that plugin `id` can be loaded: a usable bundle, this host's version, its dependencies installed in
    /// a matching version and active (or in `pending`, about to be), and numbers its next generation.
    func build(_ id: String, pending: Set<String> = []) throws(KernelError) -> Build {
        guard let bundle = bundles[id] else {
            throw notInFolder(id)
        }
        if let problem = bundle.problem { throw KernelError(.bundle, pluginID: id, reason: problem) }
        guard let manifest = bundle.manifest else {
            throw KernelError(.bundle, pluginID: id, reason: "\(bundle.manifestPath): no usable manifest")
        }
        wakeMissingProviders(manifest, pending: pending)
        if let unmet = unmetDependency(id, manifest, pending: pending) { throw unmet }
        let last = startReads.map { $0.generations[id] ?? 0 } ?? ((try? state.lastGeneration(id)) ?? 0)
        let number = max(nextGeneration[id] ?? 0, last + 1)
        nextGeneration[id] = number + 1
        return Build(id: id, bundle: bundle, manifest: manifest, libraryPath: bundle.libraryPath, number: number,
                     isolated: bundle.libraryPath != nil && isolation(of: id, manifest) == .process)
    }

    /// Why `manifest`'s plugin cannot activate now for want of something outside it: a host version out of its
    /// range, a dependency not installed, of a version it does not accept, or not active (nor in `pending`, about to
    /// be), or a required interface that no active or pending plugin provides (never with `hostInterfacesUnknown`).
    /// Nil when nothing is missing.
    func unmetDependency(_ id: String, _ manifest: Manifest, pending: Set<String> = [],
                         hostInterfacesUnknown: Bool = false, tenancy: [String: Set<String>]? = nil) -> KernelError? {
        if let range = manifest.hostVersions, let host = Semver(Kernel.version), !range.contains(host) {
            return KernelError(.dependency, pluginID: id, reason: "plugin \"\(id)\" needs keel \(range), this is \(Kernel.version)")
        }
        for dep in manifest.dependencies {
            guard let other = bundles[dep.id], let otherManifest = other.manifest else {
                return KernelError(.dependency, pluginID: id, reason: "plugin \"\(id)\" needs \"\(dep.id)\" \(dep.versions), which is not installed")
            }
            guard dep.versions.contains(otherManifest.version) else {
                return KernelError(.dependency, pluginID: id,
                                   reason: "plugin \"\(id)\" needs \"\(dep.id)\" \(dep.versions), but \(otherManifest.version) is installed")
            }
            do throws(KernelError) { try requireActive(dep.id, of: id, pending: pending) } catch { return error }
        }
        return missingInterface(manifest, pending: pending, hostInterfacesUnknown: hostInterfacesUnknown, tenancy: tenancy)
            .map { KernelError(.dependency, pluginID: id, reason: $0) }
    }

    func requireActive(_ dependency: String, of id: String, pending: Set<String> = []) throws(KernelError) {
        guard active[dependency] != nil || pending.contains(dependency) else {
            // Enabled but not running (it failed, or safe mode): say so, with its reason, rather than "not enabled".
            if let record = (try? state.plugin(dependency)) ?? nil, record.enabled {
                let why = record.reason.map { ": \($0)" } ?? ""
                throw KernelError(.dependency, pluginID: id,
                                  reason: "plugin \"\(id)\" needs \"\(dependency)\", which is enabled but not running (\(record.status.rawValue)\(why))")
            }
            throw KernelError(.dependency, pluginID: id, reason: "plugin \"\(id)\" needs \"\(dependency)\", which is not enabled")
        }
    }

    /// A build the host does not open: a manifest-only one (its checksum is its plugin.yaml's) or one that runs in a
    /// worker (its library's).
    func openManifestOnly(_ build: Build) throws(KernelError) -> Opened {
        let file = build.isolated ? build.libraryPath ?? build.bundle.manifestPath : build.bundle.manifestPath
        guard let checksum = GenerationStore.checksum(file) else {
            throw KernelError(.bundle, pluginID: build.id, reason: "\(file): cannot be read")
        }
        return Opened(build: build, library: nil, checksum: checksum)
    }

    /// Probes (when configured and not yet passed), opens and verifies the private copy of a build, then removes
    /// the copy. Failures are recorded in the plugin's history.
    func open(_ build: Build, _ copy: GenerationStore.Copy) throws(KernelError) -> Opened {
        defer { generations.discard(copy) }
        let id = build.id, version = "\(build.manifest.version)"
        if let refusal = staleCopyRefusal(id, shownPath: build.libraryPath ?? copy.path) {
            record(id, build.number, version: version, checksum: copy.checksum, outcome: "failed", detail: refusal)
            throw KernelError(.staleCopyLimit, pluginID: id, reason: refusal)
        }
        if let probe = configuration.probe, !((try? state.probePassed(copy.checksum)) ?? false) {
            // The build is the library with the manifest it was probed against (its trial activation reads both).
            // Its trial activation gets the configuration the real one will (a configuration that is not valid is
            // said as the activation would say it, without running the probe).
            let config = try configJSON(id, bundle: build.bundle)
            let probed = ProbedBuild(library: copy.checksum, manifest: FileStamp(path: build.bundle.manifestPath), config: config.stamp)
            if let known = recentProbeFailure(probed) { throw KernelError(.loadFailed, pluginID: id, reason: known) }
            let slow = noteSlowProbe(id, timeout: probe.timeout)
            defer { slow.cancel() }
            switch probe.run(library: copy.path, descriptor: copy.descriptor >= 0 ? copy.descriptor : nil,
                             manifestPath: build.bundle.manifestPath, shownPath: build.libraryPath ?? "", config: config.json) {
            case .passed:
                let state = self.state
                write { try? state.recordProbePassed(copy.checksum, detail: "\(id) \(version)") }
            case let .failed(reason, byPluginCode):
                failedProbes = failedProbes.filter { .now - $0.value.at < Self.probeFailureKept }
                // Only the plugin's own failures stand (they recur with the build), a bounded number of them; a
                // refusal about the manifest or a probe that could not run is tried again at the next load.
                if byPluginCode, failedProbes.count < 256 { failedProbes[probed] = (String(reason.prefix(2000)), .now) }
                record(id, build.number, version: version, checksum: copy.checksum, outcome: "probe-failed", detail: reason)
                throw KernelError(.loadFailed, pluginID: id, reason: reason)
            }
        }
        // A copy mapped is a copy this process keeps until it exits, unless it is closed (`deactivate` and
        // `finishRetiring` mark the plugin when they close one).
        let mappedBefore = libraryLedger.copies
        defer { if libraryLedger.copies > mappedBefore { copiesOpened[id] = false } }
        do {
            // dlopen runs the library's constructors, then its entry: plugin code, marked for the stall watch.
            let library = try lifecycleWatch.during(id, generation: build.number, checksum: copy.checksum, "load") { () throws(LoadError) in
                try PluginLibrary.open(path: copy.path, expectedID: id, reportAs: build.libraryPath ?? "", header: (copy.header, copy.size),
                                       ledger: libraryLedger)
            }
            try library.verify(against: build.manifest, manifestPath: build.bundle.manifestPath)
            return Opened(build: build, library: library, checksum: copy.checksum,
                          source: copy.source.map { LibrarySource(path: build.libraryPath ?? "", stamp: $0) })
        } catch {
            record(id, build.number, version: version, checksum: copy.checksum, outcome: "failed", detail: error.description)
            throw KernelError(.loadFailed, pluginID: id, reason: error.description)
        }
    }

    /// `authorNotes` of active plugin `id` in one line, for a command's note; nil when there are none.
    func authorNote(_ id: String) -> String? {
        guard active[id] != nil, let notes = authorNotes[id] else { return nil }
        return notes.joined(separator: "; ")
    }

    /// The kept library of a plugin's last orderly stop, verified against the bundle's current manifest (which may
    /// have changed while the library did not). Its probe passed when it was first opened (the same checksum).
    func reopen(_ build: Build, _ kept: ResidentLibraries.Entry) throws(KernelError) -> Opened {
        do { try kept.library.verify(against: build.manifest, manifestPath: build.bundle.manifestPath) } catch {
            record(build.id, build.number, version: "\(build.manifest.version)", checksum: kept.checksum, outcome: "failed",
                   detail: error.description)
            throw KernelError(.loadFailed, pluginID: build.id, reason: error.description)
        }
        return Opened(build: build, library: kept.library, checksum: kept.checksum, source: kept.source)
    }

    /// Activates an opened build into a fresh context, with its grants and configuration. Nothing is published.
    func activate(_ opened: Opened) throws(KernelError) -> Generation {
        let started = ContinuousClock.now
        var ok = false
        defer { metrics.report(.activated(plugin: opened.build.id, seconds: KernelMetrics.seconds(since: started), ok: ok)) }
        let generation = try activateNow(opened)
        ok = true
        return generation
    }

    private func activateNow(_ opened: Opened) throws(KernelError) -> Generation {
        let build = opened.build, library = opened.library, checksum = opened.checksum
        let id = build.id, manifest = build.manifest
        for dep in manifest.dependencies { try requireActive(dep.id, of: id) }
        wakeMissingProviders(manifest)
        if let missing = missingInterface(manifest) { throw KernelError(.dependency, pluginID: id, reason: missing) }
        let granted = startReads.map { $0.grants[id] ?? [] } ?? ((try? state.grants(id)) ?? [])
        let prefixes = manifest.routePrefixes.filter { granted.contains(Capability.routePrefix($0)) }
        let (config, stamp) = try configJSON(id, bundle: build.bundle)
        let context = ActivationContext(pluginID: id, grants: effectiveGrants(manifest, granted: granted), routePrefixes: prefixes,
                                        requestedRoutePrefixes: manifest.routePrefixes, requestedCapabilities: manifest.capabilities,
                                        config: config, limits: configuration.limits,
                                        budgets: configuration.budgets,
                                        identity: ServiceIdentity(version: "\(manifest.version)", generation: build.number,
                                                                  provides: manifest.provides, consumes: manifest.consumes,
                                                                  calls: manifest.calls),
                                        grantHint: configuration.grantHint, environment: pluginEnvironment)
        var seed = Contributions()
        seed.menus = manifest.menus.map { MenuRegistration(entry: $0, fromManifest: true) }
        do { seed.commands = try library?.prepareCommands(manifest.commands, context: context) ?? [] } catch {
            record(id, build.number, version: "\(manifest.version)", checksum: checksum, outcome: "failed", detail: error.description)
            throw KernelError(.loadFailed, pluginID: id, reason: error.description)
        }
        // Upstream apps: on this machine, or anywhere once the operator granted proxy-remote.
        for p in manifest.proxies where !p.isLoopback && !context.grants.contains(.proxyRemote) {
            throw KernelError(.loadFailed, pluginID: id,
                              reason: "proxy \(p.prefix): upstream \(p.upstream) is not on this machine; \(configuration.grantHint.text(id: id, capability: Capability.proxyRemote.rawValue))")
        }
        seed.proxies = manifest.proxies
        // The grants that confine a worker only: in the host's process the plugin has the host's rights either way.
        for (capability, without) in [(Capability.network, "opens no socket"), (.processes, "starts threads only, no process")]
        where manifest.capabilities.contains(capability) {
            if build.isolated, !context.grants.contains(capability) {
                log(.warn, id, "\(capability.rawValue): asked for in plugin.yaml, not granted: its worker \(without); \(configuration.grantHint.text(id: id, capability: capability.rawValue))")
            } else if !build.isolated {
                log(.info, id, "\(capability.rawValue): no effect in the host's process, where the plugin has the host's rights granted or not; `isolation: process` confines it")
            }
        }
        // The bundle's assets/ folder, served by the host under /ext/<id>/assets/ with the plugin's routes.
        if let assets = BundleAssets(bundleFolder: build.bundle.folder),
           let route = RouteRegistration.hostServed("/assets/*", context: context, everyTenant: true, serve: assets.serve) {
            seed.routes.append(route)
        } else if let refusal = BundleAssets.refusal(bundleFolder: build.bundle.folder) {
            log(.warn, id, refusal)
        }
        try seedConsole(manifest, bundle: build.bundle, context: context, into: &seed)
        if build.isolated {
            return try activateInWorker(build, context: context, seed: seed, checksum: checksum, config: config, configStamp: stamp)
        }
        guard let library else {
            // Manifest-only: no code runs; what the host contributes on its behalf goes live as it is.
            let plugin = ActivePlugin(library: nil, context: context, manifest: manifest, generation: build.number, checksum: checksum,
                                      configStamp: stamp)
            return Generation(plugin: plugin, contributions: context.activateWithoutCode(seed))
        }
        let contributions: Contributions
        // The mark survives only if the process dies inside activate: the next start quarantines the plugin.
        activationMark.set("\(id) \(build.number) \(checksum)")
        defer { activationMark.clear() }
        do {
            contributions = try lifecycleWatch.during(id, generation: build.number, checksum: checksum, "activate") { () throws(LoadError) in
                try library.activate(context, seed: seed)
            }
        } catch {
            record(id, build.number, version: "\(manifest.version)", checksum: checksum, outcome: "failed", detail: error.description)
            throw KernelError(.loadFailed, pluginID: id, reason: error.description)
        }
        let plugin = ActivePlugin(library: library, context: context, manifest: manifest, generation: build.number,
                                  checksum: checksum, source: opened.source, configStamp: stamp)
        let notes = (contributions.ignoredRefusal.map { ["its " + Contributions.ignoredRefusalNote($0, running: true)] } ?? [])
            + contributions.routeMistakes(pluginID: id)
        authorNotes[id] = notes.isEmpty ? nil : notes
        return Generation(plugin: plugin, contributions: contributions)
    }

    /// Revokes a plugin's contributions, waits for its calls to drain, and runs its deactivate.
    /// - Parameter keepingLibrary: an orderly stop (a disable, a lazy plugin's idle time-out): when deactivate
    ///   returned without a problem, the library is kept for the plugin's next activation (`ResidentLibraries`).
    func deactivate(_ id: String, keepingLibrary: Bool = false) {
        guard let plugin = removeActive(id) else { return }
        removeActivated(id)
        let before = registry.snapshot.services
        registry.revoke(pluginID: id)
        access.setDeclared(id, nil)
        // Consumers hear of the change before the provider is drained: leases they hold keep it up until released.
        notifyServiceChanges(since: before)
        let timeout = configuration.drainTimeout
        let problem = takeDown(id, plugin, stillRunning: plugin.context.drain(timeout: timeout), drainTimeout: timeout)
        if let problem { log(.warn, id, problem) }
        if unloadIfSafe(id, plugin) { copiesOpened[id] = true }
        if keepingLibrary && problem == nil { residents.keep(id, plugin) } else { residents.forget(id) }
        // Written after the plugin's code ran: with a disable's audit row when it is one (see `write`).
        write { [self] in record(id, plugin, outcome: "deactivated") }
        log(.info, id, "deactivated")
    }

    /// Takes an unpublished or replaced generation down: stops admitting calls, waits for the running ones to drain
    /// (up to `drainTimeout`) in a task that holds no thread while it waits, then deactivates the generation on the
    /// kernel's own thread (its deactivate is lifecycle code) and closes it when unload-safe. Neither lifecycle work
    /// nor requests wait for the drain.
    nonisolated func retire(_ plugin: ActivePlugin, id: String, outcome: String) {
        let timeout = configuration.drainTimeout
        plugin.context.stopAdmitting()
        Task { [self] in
            // Bounded before the conversion (a day): an infinite or huge time-out would trap there.
            let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int64(min(max(0, timeout), 86_400) * 1000)))
            while plugin.context.callsInFlight > 0 && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(1))
            }
            await finishRetiring(plugin, id: id, outcome: outcome, timeout: timeout)
        }
    }

    /// The end of `retire`, on the kernel's executor.
    func finishRetiring(_ plugin: ActivePlugin, id: String, outcome: String, timeout: Double) {
        let running = plugin.context.callsInFlight
        let problem = takeDown(id, plugin, stillRunning: running, drainTimeout: timeout)
        if let problem { log(.warn, id, "generation \(plugin.generation): \(problem)") }
        if unloadIfSafe(id, plugin) { copiesOpened[id] = true }
        record(id, plugin, outcome: outcome, detail: problem ?? "")
    }

    /// Ends an activation whose calls were drained (`running` still in flight; see `ActivePlugin.finishTakingDown`).
    /// The plugin's own deactivate, when it runs in this process, is marked for the stall watch; the drain before it
    /// is not (it is bounded by `drainTimeout`), nor a worker's stop (bounded by its own time-out).
    func takeDown(_ id: String, _ plugin: ActivePlugin, stillRunning running: Int, drainTimeout: Double) -> String? {
        guard plugin.worker == nil, plugin.library != nil else {
            return plugin.finishTakingDown(stillRunning: running, drainTimeout: drainTimeout)
        }
        return lifecycleWatch.during(id, generation: plugin.generation, checksum: plugin.checksum, "deactivate") {
            plugin.finishTakingDown(stillRunning: running, drainTimeout: drainTimeout)
        }
    }

    /// Closes the plugin's library when it is unload-safe (its destructors run: marked for the stall watch). True
    /// when it was closed.
    func unloadIfSafe(_ id: String, _ plugin: ActivePlugin) -> Bool {
        guard let library = plugin.library else { return false }
        return lifecycleWatch.during(id, generation: plugin.generation, checksum: plugin.checksum, "unload") { library.unloadIfSafe() }
    }

    nonisolated func record(_ id: String, _ plugin: ActivePlugin, outcome: String, detail: String = "") {
        record(id, plugin.generation, version: "\(plugin.manifest.version)", checksum: plugin.checksum, outcome: outcome, detail: detail)
    }

    nonisolated func record(_ id: String, _ generation: Int, version: String, checksum: String, outcome: String, detail: String = "") {
        try? state.recordLoad(id, StateStore.Load(generation: generation, version: version, checksum: checksum,
                                                  outcome: outcome, detail: detail))
    }
}
