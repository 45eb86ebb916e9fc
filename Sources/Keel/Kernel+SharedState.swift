// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelState

/// Several hosts on one shared state (PostgreSQL): each applies the desired state the others, or the CLI, wrote.
extension Kernel {
    /// Since when the state store has not answered, as the loop of a host on a shared state last found it (nil: it
    /// answers, or nothing watches it): `/healthz` says so. Set by that loop (`noteState(answering:)`). [thread-safe]
    public nonisolated var stateSilentSince: ContinuousClock.Instant? { stateSilence.withLock { $0 } }

    /// Records whether the state store answered the last time the shared state's loop asked it.
    public nonisolated func noteState(answering: Bool) {
        stateSilence.withLock { since in since = answering ? nil : (since ?? .now) }
    }

    /// What `applyDesiredState` changed on this host.
    public struct Convergence: Sendable, Equatable {
        public var activated: [String] = []
        public var deactivated: [String] = []
        /// Installed from the repositories because this host lacked the bundle ("id version").
        public var installed: [String] = []
        /// Reloaded because another host changed their grants or configuration.
        public var reloaded: [String] = []
        /// Lazy plugins enabled elsewhere, left idle here until first used.
        public var parked: [String] = []
        public var isEmpty: Bool { activated.isEmpty && deactivated.isEmpty && installed.isEmpty && reloaded.isEmpty && parked.isEmpty }
    }

    /// Brings this host in line with the stored desired state: installs from the repositories the plugins recorded
    /// enabled whose bundle this host lacks, activates the plugins recorded enabled that are not active here
    /// (dependencies first), deactivates the active ones recorded disabled (dependents first). Statuses are this
    /// host's own when the store observes for it (`StateStore.observe(as:)`): a plugin that failed here (or whose
    /// install failed here) is not retried until its desired state is set again (an enable or disable on any host),
    /// so hosts do not retry a broken build in a loop, and one host's failure does not stop the others. Idempotent:
    /// called after each change notification and periodically, it changes nothing once the host has converged.
    ///
    /// Runs on the kernel's executor like every lifecycle change; an install's download runs off it (as `install`'s
    /// does), and the records are read again after it. A state read that fails changes nothing (the host keeps
    /// serving what it has and catches up on a later call).
    public func applyDesiredState() async -> Convergence {
        // Not while an install or upgrade of this host is on its way (its download runs off this thread, writing
        // records and work folders this pass would also touch): the next pass catches up.
        guard extensionChange == nil, var records = try? state.plugins() else { return Convergence() }
        liveViewStale = true  // another host may have changed any plugin's grants, configuration or signer
        forgetKnownGuards()   // and recorded guards
        defer { checkGuardsRunning() }
        var changed = Convergence()
        var installed: Set<String> = []
        if records.contains(where: { $0.enabled && bundles[$0.id] == nil }) {
            rescan()
            let waited: Bool
            (changed.installed, installed, waited) = await installMissing(records)
            // The kernel went on during the downloads (a disable, a shutdown): act on what is stored now.
            if isShutDown { return changed }
            if waited { records = (try? state.plugins()) ?? records }
        }
        let byID = Dictionary(records.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for id in activationOrder.reversed() where byID[id].map({ !$0.enabled }) == true {
            deactivate(id)
            try? state.setStatus(id, .disabled)
            changed.deactivated.append(id)
        }
        // An idle lazy plugin disabled elsewhere is idle no more: its next request must not wake it.
        for id in idle.sorted() where byID[id].map({ !$0.enabled }) ?? true {
            unpark(id)
            if byID[id] != nil { try? state.setStatus(id, .disabled) }
            changed.deactivated.append(id)
        }
        // Grants and configuration changed elsewhere: a revoke is not left unheeded on this host.
        let (reloaded, stopped, regranted) = followGrantsAndConfiguration()
        changed.reloaded = reloaded
        changed.deactivated += stopped
        // A plugin failed here is tried again when its grants or configuration changed (what it lacked may be that),
        // unless it is quarantined.
        // Idle lazy plugins are wanted already: parked, they wake on first use.
        let wanted = Set(records.filter {
            $0.enabled && bundles[$0.id] != nil && active[$0.id] == nil && !idle.contains($0.id) && !stopped.contains($0.id)
                && ($0.status != .failed || installed.contains($0.id) || (regranted.contains($0.id) && (try? isQuarantined($0.id)) != true))
        }.map(\.id))
        if !wanted.isEmpty {
            // As at start: lazy ones enabled elsewhere are parked here, unless an eager one needs them now; those it
            // needs that are idle here already are woken (as an enable wakes them) before it is activated.
            let (now, lazy) = splitLazy(wanted.union(idle))
            let parked = lazy.subtracting(idle).sorted().filter { active[$0] == nil }
            park(parked)
            changed.parked = parked.filter { idle.contains($0) }
            let woken = now.intersection(idle).sorted().filter { (try? wake($0)) != nil }
            let plan = activationPlan(for: now.subtracting(idle)).filter { active[$0] == nil }
            activateAll(plan)
            watchIdleTimeouts(plan)
            changed.activated = woken + plan.filter { active[$0] != nil }
            // Woken for a consumer when the preferred one failed (`wakeMissingProviders`): no longer parked.
            changed.parked.removeAll { active[$0] != nil }
        }
        if !changed.isEmpty {
            log(.info, nil, "applied the shared state: installed [\(changed.installed.joined(separator: ", "))], activated [\(changed.activated.joined(separator: ", "))], deactivated [\(changed.deactivated.joined(separator: ", "))]"
                + (changed.reloaded.isEmpty ? "" : ", reloaded with changed grants or configuration [\(changed.reloaded.joined(separator: ", "))]")
                + (changed.parked.isEmpty ? "" : ", left idle until first used [\(changed.parked.joined(separator: ", "))]"))
            noteChanged()
        }
        return changed
    }

    /// Installs from the configured repositories every plugin `records` has enabled whose bundle this host lacks
    /// (verified as `keel install` verifies: checksum, and a signature by a trusted key), unless its install already
    /// failed here. A failure is recorded `install-failed` with the reason, for this host.
    /// Returns what was installed ("id version", dependencies included), the ids enabled that now have a bundle, and
    /// whether it waited for a download (the records may have changed meanwhile).
    private func installMissing(_ records: [PluginRecord]) async -> ([String], Set<String>, Bool) {
        let missing = records.filter { $0.enabled && bundles[$0.id] == nil && $0.status != .installFailed }.map(\.id)
        guard !missing.isEmpty else { return ([], [], false) }
        var done: [String] = [], ready: Set<String> = []
        for id in missing where bundles[id] == nil {
            do {
                done += try await install(id, store: extensions)
                if bundles[id] != nil { ready.insert(id) }
                log(.info, id, "installed from the repositories: enabled on the shared state, missing here")
            } catch {
                // Installed meanwhile by a command (the download let other work run): nothing failed.
                rescan()
                if bundles[id] != nil { ready.insert(id); continue }
                let reason = ((try? state.repositories()) ?? []).isEmpty
                    ? "enabled on the shared state but not installed here, and no repository is configured"
                    : "enabled on the shared state but not installed here: \(error.reason)"
                try? state.setStatus(id, .installFailed, reason: reason)
                log(.error, id, reason)
            }
        }
        return (done, ready, true)
    }

    /// Applies the desired state each time `wakes` yields, until it finishes: the loop of a host on a shared state.
    ///
    /// It runs on the kernel's own executor from the first wake to the last: a wake resumes it there directly, so
    /// neither the wake nor the work waits for Swift's cooperative pool (which blocking work elsewhere in the host may
    /// occupy under load). `onApplied` is called after each pass (on the kernel's executor: return quickly).
    public func followSharedState(_ wakes: AsyncStream<Void>, onApplied: @Sendable (Convergence) -> Void = { _ in }) async {
        for await _ in wakes { onApplied(await applyDesiredState()) }
    }

    /// Which plugins this host runs, at which generation (for the hosts table).
    public func runningGenerations() -> [String: Int] {
        active.mapValues(\.generation)
    }
}
