// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest

/// Guards: plugins with auth hooks (authenticate or authorize), and the plugins they need. The host never switches
/// one off for something a client can cause — calls that keep failing (`disableMisbehaving`), a crash of the host
/// while serving (`quarantineRecordedCrash`) — because that would stop its denials: whoever can make it fail with a
/// crafted request would get through what it denies.
extension Kernel {
    /// Records whether the generation of `id` just published guards requests, with the plugins it needs, when that
    /// changed since the last record: the next start must know it before anything is loaded (a crash record is read
    /// first). Called after every publish of an activation or a reload; costs a dictionary look-up for a plugin
    /// without hooks that had none before, a walk of its requirements for one with hooks, and one setting row when
    /// something changed (in the batch's or command's transaction, through `write`).
    func noteGuards(_ id: String, _ contributions: Contributions) {
        guard let records = knownGuards() else { return }
        let needs = contributions.guardsRequests ? requirements(of: id) : nil
        guard records[id] != needs else { return }
        // The cache changes only once the row is written; a batch that then fails to commit forgets the cache
        // (`activateAll`), so a lost row is written again at the next activation.
        write { [self] in
            guard (try? state.setGuardRecord(id, needs: needs)) != nil else { return guardCache.withLock { $0 = nil } }
            guardCache.withLock { $0?[id] = needs }
        }
    }

    /// The guard records (`StateStore.guardRecords`), read once and then kept in step with what this kernel writes;
    /// nil when they cannot be read (not cached then: the next call reads again).
    func knownGuards() -> [String: [String]]? {
        if let cached = guardCache.withLock({ $0 }) { return cached }
        guard let read = try? state.guardRecords() else { return nil }
        guardCache.withLock { $0 = read }
        return read
    }

    /// Forgets the cached guard records (another host sharing the state may have written some).
    func forgetKnownGuards() { guardCache.withLock { $0 = nil } }

    /// The plugin with auth hooks that makes `id` a guard (`id` itself, or one that needs it), from the records of
    /// the last activations (this run's or an earlier run's); nil when none does, or when they cannot be read. With
    /// `running`, only guards active now count (a guard the operator disabled protects nothing).
    func guardian(of id: String, running: Bool = false) -> String? {
        guard let records = knownGuards() else { return nil }
        let counted = { (guardID: String) in !running || self.active[guardID] != nil }
        if records[id] != nil, counted(id) { return id }
        return records.keys.sorted().first { counted($0) && records[$0]?.contains(id) == true }
    }

    /// True when `id` is quarantined (a crash took the host down); throws when the store cannot say.
    func isQuarantined(_ id: String) throws(StateError) -> Bool { try state.quarantinedChecksum(id) != nil }

    /// Every plugin `id` needs to run, transitively: its dependencies and every plugin whose manifest provides an
    /// interface it requires (all of them, not only the one chosen now: any may be chosen later).
    func requirements(of id: String) -> [String] {
        var seen: Set<String> = [id], queue = [id], found: [String] = []
        while let next = queue.popLast() {
            for dependency in startupDependencies(next) where seen.insert(dependency.id).inserted {
                found.append(dependency.id)
                queue.append(dependency.id)
            }
        }
        return found.sorted()
    }

    /// Where a guard that crashed the host while serving goes instead of out: into a worker process, where the
    /// next crash ends only the worker and its calls fail closed. Returns nil when it moved, else why it cannot
    /// (it then stays enabled in the host).
    func isolateCrashedGuard(_ id: String) -> String? {
        guard let manifest = bundles[id]?.manifest else { return "its bundle is gone" }
        guard manifest.library != nil else { return "it has no library" }
        guard configuration.workerExecutable != nil else { return "this host has no worker executable" }
        if let refusal = Self.servicesRefusal(id, manifest) { return refusal }
        do { try state.setIsolationChoice(id, Isolation.process.rawValue) } catch { return error.description }
        return nil
    }
}

extension Kernel {
    /// Closes the host while a guard it wants is not running, and opens it again once none is missing.
    ///
    /// A guard is missing when its record says it had auth hooks at its last activation, its bundle is in the folder,
    /// and it is wanted (enabled, or quarantined: the host took it out, not the operator) but neither active nor
    /// idle: its activation failed (a bad build, a worker that cannot start, a dependency gone), or a crash
    /// quarantined it. Its hooks would have denied some requests; without them the host would let those through,
    /// so every authorize question is denied instead (`Snapshot.missingGuards`) until it runs again or the operator
    /// disables it. A guard the operator disabled is not missing: that is the operator's choice. Nothing is missing
    /// in safe mode (no plugin runs, by the operator's choice) nor in a kernel that starts everything idle (one
    /// command of the CLI). A record that cannot be read keeps the set as it was: a failing store never opens the
    /// host. Called after start-up, after each command, after every take-down and activation failure, and after
    /// every run of changes (`noteChanged`: the watcher, the shared state, lazy plugins).
    func checkGuardsRunning() {
        // A kernel shutting down deactivates everything: nothing goes missing then.
        if isShutDown { return }
        let before = registry.snapshot.missingGuards
        var missing: [String: String] = [:]
        if !safeMode && !configuration.startsIdle {
            guard let records = knownGuards() else { return }
            for id in records.keys where active[id] == nil && !idle.contains(id) && bundles[id] != nil {
                do {
                    guard let record = try state.plugin(id) else { continue }
                    let wanted = try record.enabled || (record.status == .failed && isQuarantined(id))
                    if wanted { missing[id] = record.reason ?? "status \(record.status.rawValue)" }
                } catch {
                    // The store cannot say: as it was, never open because of a failing read.
                    if let was = before[id] { missing[id] = was }
                }
            }
        }
        guard missing != before else { return }
        registry.setMissingGuards(missing)
        for (id, why) in missing.sorted(by: { $0.key < $1.key }) where before[id] != why {
            log(.error, id, "a guard (it has auth hooks) is not running (\(why)): every request is denied (fail closed) "
                + "until it runs again or the operator disables it (`keel plugins disable \(id)`)")
        }
        if missing.isEmpty { log(.info, nil, "every guard runs again: requests are no longer denied for a missing one") }
    }
}
