// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState
import Synchronization

/// Lazy activation (`activation: lazy` in plugin.yaml): an enabled lazy plugin is *idle* — its library is neither
/// copied nor opened, only its manifest's menu entries are published — until something needs it: a request under
/// `/ext/<id>/` (`PluginDispatcher`), one of its commands called, one of its interfaces acquired or required by a
/// plugin being activated. Then it is activated through the kernel like any other (serialised with every lifecycle
/// change: concurrent first uses wait for the one activation) and goes back to idle after its `idle-timeout:` unused.
extension Kernel {
    /// True when `id` starts idle: its manifest asks for lazy activation, or this kernel starts every plugin idle
    /// (`KernelConfiguration.startsIdle`); and it has a library to load.
    func isLazy(_ id: String) -> Bool {
        guard let manifest = bundles[id]?.manifest else { return false }
        return (manifest.activation == .lazy || configuration.startsIdle) && manifest.library != nil
    }

    /// The idle time-out for a lazy plugin, in seconds: the operator's, else its manifest's; nil for none.
    func idleTimeout(_ manifest: Manifest) -> Double? {
        guard manifest.activation == .lazy else { return nil }
        let seconds = configuration.lazyIdleTimeout ?? manifest.idleTimeout
        return seconds.flatMap { $0 > 0 ? $0 : nil }
    }

    /// Splits the plugins to start into those to activate now — eager ones and the lazy ones they need, as
    /// dependencies or providers of interfaces they require — and those left idle. Of the lazy providers of a
    /// required interface that no eager plugin provides, only the one the registry would prefer is activated
    /// (`preferredProviders`), unless some are enabled for some tenants only (then all, as several may be needed to
    /// serve each of the consumer's tenants).
    func splitLazy(_ wanted: Set<String>) -> (activate: Set<String>, idle: Set<String>) {
        var now = wanted.filter { !isLazy($0) }
        var queue = Array(now)
        let tenancy = access.directory.pluginTenants
        while let id = queue.popLast() {
            guard let manifest = bundles[id]?.manifest else { continue }
            var needed = manifest.dependencies.map(\.id)
            // A need the active plugins meet already (a host following a shared state) wakes nothing.
            for need in manifest.consumes where !need.optional && unmetNeed(need, of: manifest) != nil {
                let candidates = wanted.filter { $0 != id && bundles[$0]?.manifest?.provides.contains(where: need.accepts) == true }
                if candidates.contains(where: { !(tenancy[$0]?.isEmpty ?? true) }) {
                    needed += candidates.sorted()
                } else if !candidates.contains(where: now.contains) {
                    needed += preferredProviders(of: need, among: candidates).prefix(1)
                }
            }
            for dep in needed where wanted.contains(dep) && !now.contains(dep) {
                now.insert(dep)
                queue.append(dep)
            }
        }
        return (now, wanted.subtracting(now))
    }

    /// Wakes idle providers of what `manifest` requires when the active plugins (and `pending`, about to be) leave
    /// a required interface unprovided: the preferred lazy provider failed at start, or every provider went idle
    /// before a reload. Any activation asks this first, so that it is not refused while an idle one could serve.
    func wakeMissingProviders(_ manifest: Manifest, pending: Set<String> = []) {
        guard !idle.isEmpty, manifest.consumes.contains(where: { !$0.optional }),
              missingInterface(manifest, pending: pending) != nil else { return }
        try? wakeDependencies(of: manifest.id)
    }

    /// Leaves enabled lazy plugin `id` idle: nothing loaded, its manifest's menu entries and permission items shown.
    func park(_ id: String) { park([id]) }

    /// Leaves enabled lazy plugins `ids` idle, in one change of `idle`. Start-up parks many at once and passes
    /// `batched`: the status records are then written in one transaction (only while nothing else writes), and the
    /// `records` it has just read (their statuses are what parking compares with; none is read again). Without
    /// `recording`, no status is written (a kernel that starts everything idle leaves a stored failure as it was).
    func park(_ ids: [String], batched: Bool = false, records: [PluginRecord]? = nil, recording: Bool = true) {
        // Each bundle looked up once (a lookup copies the bundle out of the dictionary).
        let parked = ids.compactMap { id in active[id] == nil ? bundles[id]?.manifest.map { (id: id, manifest: $0) } : nil }
        // Idle already (a reload of an idle plugin parks it again): its old manifest's menu entries go.
        let again = idle.isEmpty ? [] : Set(parked.lazy.map(\.id).filter { self.idle.contains($0) })
        markIdle(parked)
        access.setDeclared(parked)
        // Many at once: one read of every record, not one per plugin.
        let statuses = parked.count > 1 && recording
            ? Dictionary((records ?? (try? state.plugins()) ?? []).map { ($0.id, $0.status) }, uniquingKeysWith: { first, _ in first }) : [:]
        func each() {
            // Menu entries are published in the order of the plugins' ids, whatever order `ids` came in (of two claiming
            // one entry, the first keeps it); only those plugins are sorted (a start parks a thousand, most with none).
            let publishing = parked.filter { again.contains($0.id) || !$0.manifest.menus.isEmpty }
            for (id, manifest) in publishing.count > 1 ? publishing.sorted(by: { $0.id < $1.id }) : publishing {
                if again.contains(id) { registry.revoke(pluginID: id) }
                if !manifest.menus.isEmpty {
                    var placeholder = Contributions()
                    placeholder.menus = manifest.menus.map { MenuRegistration(entry: $0, fromManifest: true) }
                    do { try registry.publish(pluginID: id, placeholder) } catch {
                        log(.warn, id, "its menu entries are not shown while idle: \(error.description)")
                    }
                }
            }
            guard recording else { return }
            for (id, _) in parked where (statuses[id] ?? ((try? state.plugin(id)) ?? nil)?.status) != .enabled { try? state.setStatus(id, .enabled) }
        }
        if !batched || (try? state.batch(each)) == nil { each() }
    }

    /// Ends `id`'s idle state without activating it (disabled, removed, or its activation failed).
    func unpark(_ id: String) {
        guard unmarkIdle(id) else { return }
        registry.revoke(pluginID: id)
        access.setDeclared(id, nil)
    }

    /// Activates idle plugin `id` now (its idle lazy dependencies first); nothing when it is active already, so
    /// requests that queued up behind the first one's activation find it done.
    /// - Throws: `KernelError` when `id` is neither active nor idle (disabled, failed, unknown), or fails to
    ///   activate: it is then recorded `failed` with the reason and stays wanted, and is not retried until enabled
    ///   again or the host restarts.
    public func wake(_ id: String) throws(KernelError) {
        // A kernel shut down runs no plugin code again (a request or queued call that arrives while it closes).
        guard !isShutDown else { throw KernelError(.loadFailed, pluginID: id, reason: "the host is shutting down") }
        try wake(id, visiting: [])
    }

    private func wake(_ id: String, visiting: Set<String>) throws(KernelError) {
        if active[id] != nil { return }
        guard idle.contains(id) else {
            // Its activation failed while this call waited (the first use's): that failure, not "not enabled".
            if let record = (try? state.plugin(id)) ?? nil, record.enabled, record.status == .failed {
                throw KernelError(.loadFailed, pluginID: id, reason: record.reason ?? "plugin \"\(id)\" failed to activate")
            }
            throw KernelError(.notEnabled, pluginID: id, reason: "plugin \"\(id)\" is not enabled")
        }
        // The first use's record (status and load history) is committed without waiting for the disk: the request
        // that woke the plugin does not wait for a sync. A crash of the process loses none of it (it is in the
        // operating system's cache); a power cut before the next durable commit may lose it, and then the history
        // misses that activation, while the wish (enabled) was stored durably before.
        let wait = activationRecordsWait
        activationRecordsWait = false
        defer { activationRecordsWait = wait }
        do throws(KernelError) {
            do { try wakeDependencies(of: id, visiting: visiting.union([id])) } catch {
                // `activate` logs its own failure; this one is a dependency's, logged under the dependency's id.
                log(.error, id, error.reason)
                throw error
            }
            try activate(id)
        } catch {
            unpark(id)
            try? state.setStatus(id, .failed, reason: error.reason)
            throw error
        }
        unmarkIdle(id)
        log(.info, id, "activated on first use")
        if let plugin = active[id], idleTimeout(plugin.manifest) != nil {
            if Self.leavesIdle(plugin) {
                lastUse[id] = .now
                startIdleSweeper()
            } else if plugin.library != nil {
                log(.info, id, "stays active, its idle-timeout not applied: its library declares neither KEEL_PLUGIN_FLAG_UNLOAD_SAFE nor "
                    + "KEEL_PLUGIN_FLAG_REACTIVATABLE, so going idle would free no memory and each wake would map another copy")
            }
        }
    }

    /// Whether active lazy plugin `plugin` goes idle after its time-out unused: only when that gives something back
    /// (never one in a worker process, which has no library in the host).
    /// A library that is not unload-safe stays mapped after its plugin stops, and one that is not reactivatable gets
    /// a fresh copy at its next activation: idling such a plugin would free no memory, and each wake would map one
    /// more copy for the life of the process (a plugin with a short `idle-timeout:`, woken by anyone's requests,
    /// added a copy every few seconds until the process ran out of mappings or memory). It stays active instead.
    static func leavesIdle(_ plugin: ActivePlugin) -> Bool {
        guard let library = plugin.library else { return false }
        return library.descriptor.unloadSafe || library.descriptor.reactivatable
    }

    /// Wakes the idle plugins `id` needs: its plugin dependencies, and, for each interface it requires that the
    /// active plugins leave unprovided (for some of its tenants), idle providers one at a time in the order the
    /// registry prefers them (`preferredProviders`) until it is provided: not every idle provider of it.
    /// - Throws: `KernelError` naming `id`, the plugin it needed and that plugin's reason, when a dependency could not
    ///   be activated, or when a provider could not and the others leave the interface unprovided (one provider that
    ///   fails does not fail its consumer while another can serve it).
    func wakeDependencies(of id: String, visiting: Set<String> = []) throws(KernelError) {
        guard let manifest = bundles[id]?.manifest else { return }
        let inward = visiting.union([id])
        for dep in manifest.dependencies where idle.contains(dep.id) && !visiting.contains(dep.id) {
            do { try wake(dep.id, visiting: inward) } catch {
                throw KernelError(error.code, pluginID: id,
                                  reason: "plugin \"\(id)\" needs plugin \"\(dep.id)\", which could not be activated: \(error.reason)")
            }
        }
        for need in manifest.consumes where !need.optional {
            var failed: (id: String, error: KernelError)?
            // Each pass wakes one provider or fails one; either way it leaves `idle`, so this ends.
            while unmetNeed(need, of: manifest) != nil,
                  let next = preferredProviders(of: need, among: idle.subtracting(inward).subtracting([manifest.id])).first {
                do { try wake(next, visiting: inward) } catch { failed = (next, error) }
            }
            if let failed, unmetNeed(need, of: manifest) != nil {
                throw KernelError(failed.error.code, pluginID: id, reason: "plugin \"\(id)\" needs interface \(need.interface), whose "
                                  + "provider \"\(failed.id)\" could not be activated: \(failed.error.reason)")
            }
        }
    }

    /// Wakes `need` (an idle plugin, or an idle provider of an interface) from a thread that is not the kernel's,
    /// waiting for the activation. For synchronous callers: commands, service acquires. [thread-safe; never on the
    /// kernel's thread, where it refuses, nor on Swift's cooperative pool, which it would block]
    /// - Returns: nil when there is nothing to wake or it is active now, else why it is not.
    nonisolated func wakeBlocking(_ need: KernelEnvironment.Need) -> KernelError? {
        let id: String
        switch need {
        case let .plugin(plugin):
            guard environment.idleManifest(plugin) != nil else { return nil }
            id = plugin
        case let .interface(interface, serving, chosen):
            guard let provider = environment.idleProvider(of: interface, serving: serving, chosen: chosen) else { return nil }
            id = provider
        }
        guard !executor.isCurrentThread else {
            return KernelError(.loadFailed, pluginID: id, reason: "plugin \"\(id)\" is idle and cannot be activated from lifecycle code")
        }
        // The wake would wait behind plugin code stuck on the kernel's thread, holding this thread (a lane's, a
        // worker call's) with it.
        if let stall = lifecycleStall {
            return KernelError(.loadFailed, pluginID: id, reason: "plugin \"\(id)\" is idle and cannot be activated now: \(stall.description)")
        }
        let outcome = WakeOutcome()
        Task { [self] in
            do throws(KernelError) { try await wake(id) } catch { outcome.error.withLock { $0 = error } }
            outcome.done.signal()
        }
        // Bounded: plugin code that waits for this thread while it activates (an `activate` that joins a thread of its
        // own, which acquires) would otherwise hold both for good. Past the stall limit the lifecycle is reported
        // stalled anyway; the wake goes on, and a later call finds the plugin active.
        let limit = configuration.stallLimit
        guard outcome.done.wait(timeout: .now() + limit) == .success else {
            return KernelError(.loadFailed, pluginID: id, reason: "plugin \"\(id)\" did not finish activating within \(Int(limit)) s")
        }
        return outcome.error.withLock { $0 }
    }

    /// How `wakeBlocking` hears from its task.
    private final class WakeOutcome: Sendable {
        let done = DispatchSemaphore(value: 0)
        let error = Mutex<KernelError?>(nil)
    }

    /// True while `id` is enabled, lazy and not loaded. [thread-safe]
    public nonisolated func isIdle(_ id: String) -> Bool { environment.idleManifest(id) != nil }

    /// The manifest of `id` while it is idle (enabled, lazy, not loaded); nil otherwise. [thread-safe]
    public nonisolated func idleManifest(_ id: String) -> Manifest? { environment.idleManifest(id) }

    // MARK: idle time-out

    /// Starts the idle sweeper when one of `ids`, just activated without a wake (a lazy plugin an eager one needs at
    /// start), has an idle time-out that gives something back: once nothing needs it, it goes idle as a woken one does.
    func watchIdleTimeouts(_ ids: some Sequence<String>) {
        guard idleSweeper == nil else { return }
        if ids.contains(where: { id in active[id].map { Self.leavesIdle($0) && idleTimeout($0.manifest) != nil } ?? false }) {
            startIdleSweeper()
        }
    }

    /// Starts the task that deactivates lazy plugins left unused past their idle time-out, unless it runs.
    func startIdleSweeper() {
        guard idleSweeper == nil else { return }
        idleSweeper = Task { [weak self] in
            while !Task.isCancelled {
                guard let pause = await self?.sweepIdle() else { return }
                try? await Task.sleep(for: pause)
            }
        }
    }

    /// Takes every active lazy plugin unused for its idle time-out back to idle, through `deactivate` (its calls in
    /// flight drain first). In use means: a call admitted since the last look, a call running, a lease a consumer
    /// holds on one of its tables, or an active plugin that needs it. Returns how long to wait before the next look
    /// (a quarter of the shortest time-out, 50 ms to 5 s), or nil, ending the sweeper, when no plugin has one.
    func sweepIdle() -> Duration? {
        let now = ContinuousClock.now
        let snapshot = registry.snapshot
        var shortest: Double?
        for id in activationOrder {
            guard let plugin = active[id], Self.leavesIdle(plugin), let timeout = idleTimeout(plugin.manifest) else { continue }
            shortest = min(shortest ?? timeout, timeout)
            let leased = snapshot.plugins[id]?.services.contains { $0.leasesHeld > 0 } ?? false
            let used = plugin.context.takeUsed()
            guard let since = lastUse[id], !used, plugin.context.usesInFlight <= 0, !leased, dependents(of: id).isEmpty else {
                lastUse[id] = now
                continue
            }
            guard now - since >= .milliseconds(Int64(timeout * 1000)) else { continue }
            goIdle(id, after: timeout)
        }
        guard let shortest else {
            idleSweeper = nil
            return nil
        }
        return .milliseconds(Int64(min(5000, max(50, shortest * 250))))
    }

    /// Deactivates lazy plugin `id` and leaves it idle. It is idle before its routes go, so that a request arriving
    /// meanwhile wakes it again (after this change, in the kernel's order) instead of finding nothing.
    func goIdle(_ id: String, after timeout: Double) {
        if let manifest = bundles[id]?.manifest { markIdle([(id, manifest)]) }
        deactivate(id, keepingLibrary: true)
        lastUse[id] = nil
        unmarkIdle(id)
        park(id)
        log(.info, id, "unused for \(timeout)s: deactivated, idle until next used")
    }
}
