// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelSystem
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState

/// Reload under traffic, the load history, and watching the plugin folder.
extension Kernel {
    // MARK: reload

    /// Loads the plugin's current build as a new generation and swaps it in: routes, menus and hooks change over
    /// in one atomic step; requests already running finish on the old generation, which is then drained and
    /// deactivated in the background. If the new build fails to load, verify, activate or publish, the old one keeps
    /// serving and the failure is recorded (history and `reason`): a reload never makes things worse.
    /// A plugin that is not active is activated when it is wanted, else only re-read.
    /// - Parameter cause: why, as the load history's row of the new generation says it after the generation it
    ///   replaced (`replaced generation 3: configuration changed`); nil says nothing more.
    /// - Throws: `KernelError` for an unknown plugin or a failed new build.
    public func reload(_ id: String, cause: String? = nil) throws(KernelError) {
        try requireRunning("reload \(id)")
        let started = ContinuousClock.now
        do throws(KernelError) { try reloadNow(id, cause: cause) } catch {
            metrics.report(.reloaded(plugin: id, seconds: KernelMetrics.seconds(since: started), ok: false))
            throw error
        }
        metrics.report(.reloaded(plugin: id, seconds: KernelMetrics.seconds(since: started), ok: true))
    }

    /// Loads plugin `id`'s current build when it is not the serving generation's (library checksum or plugin.yaml
    /// differ), as the folder watcher does: a build the watcher already reloaded is left serving, not loaded again.
    /// A plugin that is not serving, or whose bundle is unusable, goes through `reload` (which says why).
    /// A bundle put back to the serving build after a build that failed to load (its reload failed) has that
    /// failure cleared from the plugin's record: it no longer describes the folder.
    /// - Returns: a note when the bundle went back so (nothing was loaded: the serving generation is its build).
    /// - Throws: as `reload`.
    @discardableResult
    public func refresh(_ id: String) throws(KernelError) -> String? {
        try requireRunning("refresh \(id)")
        rescan()
        if let current = active[id], bundles[id]?.problem == nil, let path = bundles[id]?.buildPath,
           !buildChanged(id, from: current, checksum: GenerationStore.checksum(path)) {
            // Loaded already (by the folder watcher, or an earlier refresh), or the failed build undone: then its
            // failure (the watcher's test) no longer describes the folder.
            failedReloads[id] = nil
            guard let reason = ((try? state.plugin(id)) ?? nil)?.reason,
                  reason.hasPrefix("reload failed") || reason.hasPrefix("reload refused") else { return nil }
            try? state.setStatus(id, .enabled)
            return "the bundle holds generation \(current.generation)'s build again (the one that failed to load is gone); nothing was loaded"
        }
        try reload(id, cause: "a new build (refresh)")
        return nil
    }

    /// Whether plugin `id`'s bundle now holds another build than `current` runs: `checksum`, of its build file (the
    /// library, or plugin.yaml for a manifest-only bundle), or its plugin.yaml differs. The watcher's test and `refresh`'s.
    func buildChanged(_ id: String, from current: ActivePlugin, checksum: String?) -> Bool {
        checksum != current.checksum || bundles[id]?.manifest != current.manifest
    }

    private func reloadNow(_ id: String, cause: String?) throws(KernelError) {
        // A reload always loads afresh, now or at the plugin's next enable or first use: no kept copy outlives it.
        residents.forget(id)
        rescan()
        guard bundles[id] != nil else {
            guard active[id] != nil else { throw notInFolder(id) }
            // Not a failed build: the operator took the bundle away. What served is stopped, as the folder watcher
            // stops it, and the caller is told so.
            retireMissing(id)
            let place = configuration.pluginsDirectory.isEmpty ? "among the bundle folders given" : "in the plugin folder"
            throw KernelError(.unknownPlugin, pluginID: id,
                              reason: "no plugin \"\(id)\" \(place) any more: its bundle is gone, so the build that was serving was stopped (recorded missing)")
        }
        guard let old = active[id] else {
            // An idle lazy plugin stays idle: its next use loads the current build.
            if idle.contains(id) { return park(id) }
            if (try? state.plugin(id))?.enabled == true {
                // As an enable does: a lazy one is parked (its next use loads the new build), an eager one's idle
                // dependencies are woken first.
                if isLazy(id) { return park(id) }
                try wakeDependencies(of: id)
                try activate(id, reusing: false)
                return
            }
            // Disabled: nothing is loaded (its next enable loads the current build), unless that build cannot be
            // loaded at all, which fails the command (and its audit row) with the bundle's reason.
            if let problem = bundles[id]?.problem {
                throw KernelError(.bundle, pluginID: id, reason: "\(id) is disabled, and its current build cannot be loaded: \(problem)")
            }
            return
        }
        let generation: Generation
        do { generation = try loadGeneration(id) } catch {
            // The build that failed, as its record names it (none when the library could not even be read).
            if let tried = (try? state.loads(for: id, limit: 1))?.last, tried.generation > old.generation,
               tried.outcome != "activated" {
                failedReloads[id] = (tried.checksum, bundles[id]?.manifest)
            }
            try? state.setStatus(id, .enabled, reason: "reload failed, generation \(old.generation) still serving: \(error.reason)")
            log(.error, id, "reload failed, generation \(old.generation) keeps serving: \(error.reason)")
            // The command's own log line says "as logged above" rather than the reason a second time (its caller is
            // told the old build serves on: `execute`).
            loggedDuringCommand?.insert(LoggedFailure(pluginID: id, reason: error.reason))
            throw error
        }
        let before = registry.snapshot.services
        do { try registry.publish(pluginID: id, generation.contributions) } catch {
            retire(generation.plugin, id: id, outcome: "refused")
            try? state.setStatus(id, .enabled, reason: "reload refused, generation \(old.generation) still serving: \(error.description)")
            throw KernelError(.conflict, pluginID: id, reason: error.description)
        }
        notifyServiceChanges(since: before)
        noteGuards(id, generation.contributions)
        setActive(id, generation.plugin)
        access.setDeclared(id, generation.plugin.manifest)
        // A lazy plugin kept active because its last build could not go idle: this one may (`leavesIdle`).
        if idleTimeout(generation.plugin.manifest) != nil, Self.leavesIdle(generation.plugin) { startIdleSweeper() }
        // Both records in one transaction: one wait for the disk on the swap's path, not two.
        _ = try? state.transaction {
            try? state.setStatus(id, .enabled)
            record(id, generation.plugin, outcome: "activated", detail: "replaced generation \(old.generation)" + (cause.map { ": " + $0 } ?? ""))
        }
        log(.info, id, "reloaded: generation \(generation.plugin.generation) replaces \(old.generation)")
        retire(old, id: id, outcome: "retired")
    }

    /// The bundle of an active plugin is gone: take everything it registered away and record it missing.
    func retireMissing(_ id: String) {
        deactivate(id)
        try? state.setStatus(id, .missing, reason: "bundle removed from the plugin folder")
    }

    /// The load history of a plugin, oldest first.
    public func history(_ id: String) throws(KernelError) -> [StateStore.Load] {
        guard bundles[id] != nil || ((try? state.plugin(id)) ?? nil) != nil else {
            throw notInFolder(id, known: false)
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
        let folder = configuration.pluginsDirectory
        if let problem = SystemFile.makeFolders(folder) {
            throw KernelError(.bundle, reason: "\(problem) (the plugin folder, to watch)")
        }
        let w = try PluginWatcher(directory: configuration.pluginsDirectory) { [weak self] folders in
            guard let self else { return }
            Task { await self.bundlesChanged(folders) }
        }
        watcher = w
    }

    /// A reload the folder watcher starts, audited as the host's own (`auditHostAction`): `why` is the detail, the
    /// outcome the error's code when it fails (the plugin's reason says the rest).
    private func reloadForChange(_ id: String, _ why: String) {
        do { try reload(id, cause: why) } catch {
            return auditHostAction("reload", id, outcome: error.code.description, detail: why)
        }
        auditHostAction("reload", id, detail: why)
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
        // A bundle made unusable or usable again by another folder (a duplicate of its id come or gone). Such a change
        // activates an enabled plugin only when its bundle became usable: a folder that comes and goes does not make
        // the host retry others' failed activations at will.
        var byOtherFolder = Set<String>()
        for (id, bundle) in bundles where !ids.contains(id) && (before[id].map { $0.problem != bundle.problem } ?? false) {
            ids.insert(id)
            byOtherFolder.insert(id)
        }
        for id in ids.sorted() {
            if bundles[id] == nil {
                residents.forget(id)
                if active[id] != nil { retireMissing(id); log(.info, id, "bundle removed: retired") }
                continue
            }
            if let current = active[id] {
                // A bundle that cannot be read now (plugin.yaml broken mid-edit): the serving build goes on, and the
                // plugin's reason says why nothing was reloaded (the scan logged the problem).
                if let problem = bundles[id]?.problem {
                    try? state.setStatus(id, .enabled, reason: "reload failed, generation \(current.generation) still serving: \(problem)")
                    continue
                }
                guard let path = bundles[id]?.buildPath else { continue }
                guard GenerationStore.waitUntilSettled(path) else {
                    // Not there at all (plugin.yaml's `library:` names a file the folder lacks): the reload is tried, so
                    // that it fails as a manual one does, naming the file and the nearest name, in the plugin's reason;
                    // the serving build goes on.
                    if Glibc.access(path, F_OK) != 0 {
                        // Said once for this plugin.yaml: other files of the folder changing do not try it again (each
                        // try is a history row, a generation and an audit row).
                        let missing = "missing " + path
                        if let failed = failedReloads[id], failed.checksum == missing, failed.manifest == bundles[id]?.manifest { continue }
                        reloadForChange(id, "its library \((path as NSString).lastPathComponent) is not in its folder")
                        failedReloads[id] = (missing, bundles[id]?.manifest)
                    } else {
                        log(.warn, id, "\(path) is still being written 5 s after its change; not reloading until it changes again")
                    }
                    continue
                }
                let sum = GenerationStore.checksum(path), manifest = bundles[id]?.manifest
                let changed = buildChanged(id, from: current, checksum: sum)
                if changed, let failed = failedReloads[id], failed.checksum == sum, failed.manifest == manifest {
                    // The build whose reload just failed (the dev loop's, or this watcher's): the failure stands.
                    log(.debug, id, "the build whose reload failed is unchanged; not tried again")
                } else if changed { reloadForChange(id, "its files changed in the plugin folder") } else if let reason = ((try? state.plugin(id)) ?? nil)?.reason,
                                                        reason.hasPrefix("reload failed") || reason.hasPrefix("reload refused") {
                    // Back to what serves (a broken plugin.yaml fixed, a failed build put back): no reload, and the
                    // reload's failure is no longer true. Any other reason (a failed upgrade's) stays.
                    try? state.setStatus(id, .enabled, reason: nil)
                }
            } else if !byOtherFolder.contains(id) || bundles[id]?.problem == nil {
                if let path = bundles[id]?.buildPath { _ = GenerationStore.waitUntilSettled(path) }
                // A quarantined plugin given a new build (another checksum) is let out, as at the next start: the build
                // that took the host down is not this one.
                if !byOtherFolder.contains(id) { _ = releaseRebuiltQuarantines(only: [id]) }
                guard (try? state.plugin(id))?.enabled == true else { continue }
                // A lazy plugin is left idle: its next use loads the new build, as at start (not loaded now).
                if isLazy(id) { park(id) } else {
                    try? wakeDependencies(of: id)  // a failure is the dependency's; `activate` records what it leaves
                    // Audited when it worked, or when the bundle is new here: an enabled plugin that keeps failing is
                    // tried at each change of its folder, and a row for each would fill the trail.
                    let why = before[id] == nil ? "its bundle appeared in the plugin folder, enabled" : "its files changed in the plugin folder"
                    do { try activate(id); auditHostAction("activate", id, detail: why) } catch {
                        if before[id] == nil { auditHostAction("activate", id, outcome: error.code.description, detail: why) }
                    }
                }
            }
        }
        if !ids.isEmpty { noteChanged() }
    }
}
