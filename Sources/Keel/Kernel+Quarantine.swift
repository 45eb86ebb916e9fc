// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState
import KeelSystem

/// Failing plugins: crash-loop quarantine (a plugin whose activate took the host down is not started again until it
/// changes), the automatic disable of a plugin whose calls keep failing, builds whose probe failed lately, and the
/// note on a probe that runs long.
extension Kernel {
    /// How long a build whose code failed its probe (crashed, exited, hung) stands failed: the folder watcher's try
    /// and the operator's enable that follows it do not each wait for a build that hangs (the probe's time-out), nor
    /// record it twice.
    static let probeFailureKept: Duration = .seconds(60)

    /// What a probe tried: a library (its SHA-256) with the plugin.yaml it was checked against (its file identity) and
    /// the configuration it was given.
    struct ProbedBuild: Hashable {
        var library: String
        var manifest: FileStamp?
        var config: Int
    }

    /// Why the probe of `build` failed in the plugin's code, when that was less than `probeFailureKept` ago; nil
    /// otherwise (it is probed again). A changed library or plugin.yaml is another build, probed at once.
    func recentProbeFailure(_ build: ProbedBuild) -> String? {
        guard let failed = failedProbes[build] else { return nil }
        let age = ContinuousClock.now - failed.at
        guard age < Self.probeFailureKept else { return nil }
        let (seconds, kept) = (age.components.seconds, Self.probeFailureKept.components.seconds)
        return failed.reason + " (probed \(seconds) s ago; the same build is probed again after \(kept) s, a changed library or plugin.yaml at once)"
    }

    // MARK: crash-loop quarantine

    /// A crash record left from the last run names the plugin that took the host down while serving (or activating):
    /// disable it, with the reason. Else a mark left from the last run means that plugin's activate took the host
    /// down: the same, with that reason. Returns true when it changed a plugin's records.
    @discardableResult
    func quarantineAfterCrash() -> Bool {
        let parts = activationMark.read()?.split(separator: " ").map(String.init) ?? []
        activationMark.clear()
        // Planted where the state's folder lets others write: no mark is kept, so a plugin whose activate takes the
        // host down is not quarantined by it. Said, not left silent.
        if !state.isInMemory, let refusal = activationMark.refusal {
            log(.warn, nil, "\(activationMark.path) \(refusal): no activation mark is kept, so a plugin whose activate takes the "
                + "host down is not quarantined at the next start; remove it, or keep the state in a folder of your own")
        }
        let marked = parts.count == 3 ? (id: parts[0], generation: Int(parts[1]) ?? 0, checksum: parts[2]) : nil
        let crashed = quarantineRecordedCrash(marked: marked)
        guard let (id, generation, checksum) = marked else { return crashed != nil }
        // The same death, told better by the crash record.
        if id == crashed { return true }
        let reason = "quarantined: the host went down while activating generation \(generation) (checksum \(checksum.prefix(12))); install a new build or run \(configuration.enableCommand(id)) to try again"
        try? state.setEnabled(id, false, status: .failed, reason: reason)
        try? state.setQuarantine(id, checksum: checksum)
        record(id, generation, version: bundles[id]?.manifest.map { "\($0.version)" } ?? "", checksum: checksum,
               outcome: "quarantined", detail: "the host went down during activate")
        auditHostAction("quarantine", id, detail: reason)
        log(.error, id, reason)
        return true
    }

    /// A serving host's start names each plugin quarantined before it began (`records`, as read then), with the
    /// reason: a quarantined plugin is not enabled, so nothing else at a start names it, and its crash record may have
    /// been read by a CLI command run just after the crash (`keel plugins list`), whose output the operator may not
    /// connect with the host that then starts without it. Reads the quarantines only when a record could be one.
    func remindQuarantines(_ records: [PluginRecord]) {
        let failed = records.filter { $0.status == .failed && !$0.enabled }
        guard !failed.isEmpty, let quarantined = try? state.quarantinedChecksums(), !quarantined.isEmpty else { return }
        for record in failed where quarantined[record.id] != nil {
            let reason = record.reason ?? "a crash or hang of an earlier run"
            log(.warn, record.id, "not started, quarantined: " + (reason.hasPrefix("quarantined: ") ? String(reason.dropFirst(13)) : reason))
        }
    }

    /// Where the fatal-signal handler writes its crash record: beside the state file, as an absolute path (the
    /// handler cannot resolve one).
    /// (Not through `URL`: its first use in a process costs a lazy start about half a millisecond.)
    nonisolated var crashRecordPath: String {
        let path = configuration.stateFile + ".crash"
        guard !path.hasPrefix("/") else { return path }
        return FileManager.default.currentDirectoryPath + "/" + (path.hasPrefix("./") ? String(path.dropFirst(2)) : path)
    }

    /// Reads the crash record the last run left, if any, and moves it aside (`<record>.last`). A record naming a plugin
    /// disables and quarantines it (lifted by a new build, or by enabling it), with the reason, and adds it to its
    /// load history; a crash of the host's own is logged. A guard (`Kernel+Guards.swift`) that crashed while serving
    /// is not disabled: it moves into a worker process where it can, else it stays. Returns the plugin named.
    /// - Parameter marked: the activation mark the last run left, if any: the checksum of a generation that died in
    ///   its `activate`, which has no load-history row to take it from.
    func quarantineRecordedCrash(marked: (id: String, generation: Int, checksum: String)? = nil) -> String? {
        let path = crashRecordPath
        let data: [UInt8]
        do { data = try SystemFile.read(path, limit: 1 << 20, ownedHere: true) } catch {
            // Another user's record (planted where the state's folder lets others write) quarantines nothing.
            if error.owner != nil { log(.warn, nil, "\(path): ignored: it \(error.description)") }
            return nil
        }
        // Read once: a record that cannot be moved aside (a folder planted at `.last`) goes, or it would quarantine
        // the plugin again at every start.
        if rename(path, path + ".last") != 0 { unlink(path) }
        guard let crash = CrashRecord(text: String(decoding: data, as: UTF8.self)) else {
            log(.warn, nil, "\(path): not a readable crash record; kept as \(path).last")
            return nil
        }
        guard !crash.plugin.isEmpty else {
            log(.error, nil, "the last run crashed with \(crash.signalName) outside any plugin (\(crash.address.map { "address \($0), " } ?? "")instruction \(crash.pc)); the record is in \(path).last")
            return nil
        }
        let id = crash.plugin
        let load = ((try? state.loads(for: id, limit: 1000)) ?? []).last { $0.generation == crash.generation }
        let version = load?.version ?? bundles[id]?.manifest.map { "\($0.version)" } ?? ""
        // The library that did it, by checksum: from its load-history row, else the record (a stall record names it),
        // else the mark of the activation it died in, else the bundle's library as it is now. Never empty where the
        // library can be read: a plugin disabled without a quarantine would not count as a guard the host misses.
        let fromMark = marked.flatMap { $0.id == id && $0.generation == crash.generation ? $0.checksum : nil }
        let checksum = [load?.checksum, crash.checksum, fromMark].compactMap { $0 }.first { !$0.isEmpty }
            ?? bundles[id]?.libraryPath.flatMap(GenerationStore.checksum) ?? ""
        // A guard is not switched off by a crash a request can cause (anything but its own activate or deactivate):
        // it moves into a worker process, or stays.
        // A stall record (`hang`) is not a request's doing in the same way: a guard that hung the host is quarantined
        // like any plugin, which leaves the host closed (a guard it misses), not open, and does not hang the next start.
        if crash.hang == nil, !["activate", "deactivate"].contains(crash.site), let guardian = guardian(of: id) {
            let which = guardian == id ? "it has auth hooks" : "\"\(guardian)\", which has auth hooks, needs it"
            let outcome: String
            if let refusal = isolateCrashedGuard(id) {
                outcome = "it stays enabled in the host, where it can crash it again (it cannot run in a worker process: "
                    + "\(refusal)); `keel plugins disable \(id)` takes it down"
            } else {
                outcome = "it runs in a worker process from now on, where a crash ends only the worker and its calls fail "
                    + "closed (`keel plugins isolate \(id) in-process` puts it back)"
            }
            let text = "\(crash.reason); not disabled, because \(which) and disabling it would let through what they deny: \(outcome)"
            record(id, crash.generation, version: version, checksum: checksum, outcome: crash.hang == nil ? "crashed" : "hung", detail: crash.detail)
            auditHostAction("isolate", id, detail: text)
            log(.error, id, text)
            return id
        }
        let reason = "\(crash.reason); install a new build or run \(configuration.enableCommand(id)) to try again"
        try? state.setEnabled(id, false, status: .failed, reason: reason)
        if !checksum.isEmpty { try? state.setQuarantine(id, checksum: checksum) }
        record(id, crash.generation, version: version, checksum: checksum, outcome: crash.hang == nil ? "crashed" : "hung", detail: crash.detail)
        auditHostAction("quarantine", id, detail: reason)
        log(.error, id, reason)
        return id
    }

    /// A quarantined plugin whose library changed (a new build) is wanted again. Returns true when it lifted one.
    @discardableResult
    func releaseRebuiltQuarantines(only ids: Set<String>? = nil) -> Bool {
        var lifted = false
        // One read of every quarantine, not one per plugin.
        for (id, quarantined) in ((try? state.quarantinedChecksums()) ?? [:]).sorted(by: { $0.key < $1.key }) where ids?.contains(id) ?? true {
            guard let record = (try? state.plugin(id)) ?? nil,
                  let path = bundles[record.id]?.libraryPath, let current = GenerationStore.checksum(path),
                  current != quarantined else { continue }
            try? state.setQuarantine(record.id, checksum: nil)
            try? state.setEnabled(record.id, true, status: .installed)
            log(.info, record.id, "new build found: quarantine lifted")
            auditHostAction("quarantine-lifted", record.id, detail: "a new build of its library was found")
            lifted = true
        }
        return lifted
    }

    /// A plugin whose calls keep failing is taken down and recorded failed (and not wanted) with the reason, with
    /// the plugins that depend on it, unless one of them has auth hooks: disabling it would stop their denials, so a
    /// client who can make its calls fail (a crafted request that errors in its handler or its hook, or crashes its
    /// worker) could switch its rules off. It stays then; its failing calls keep failing closed, and the log says
    /// once per activation that the operator must disable it. A report from a generation no longer active (one a
    /// reload replaced, failing as it drains) changes nothing.
    func disableMisbehaving(_ id: String, generation: Int, reason: String) {
        guard let plugin = active[id] else { return }
        guard plugin.generation == generation else {
            return log(.info, id, "a failure report from generation \(generation), which generation \(plugin.generation) replaced, changes nothing: \(reason)")
        }
        let published = registry.snapshot.plugins
        let live = ([id] + dependents(of: id).map(\.id)).first { published[$0]?.guardsRequests == true }
        if let guarding = live ?? guardian(of: id, running: true) {
            let which = guarding == id ? "it has auth hooks" : "\"\(guarding)\", which depends on it, has auth hooks"
            log(.error, id, "not disabled automatically although \(reason): \(which), and disabling it would stop their "
                + "denials; its failing calls are denied (fail closed). `keel plugins disable \(id)` takes it down")
            return
        }
        takeDown(id, wanted: false, reason: "disabled automatically: \(reason)", dependentsReason: "was disabled automatically")
        auditHostAction("disable", id, detail: "disabled automatically: \(reason)")
    }

    /// A probe blocks what waits on its activation (a start, an enable) for up to its limit: said in the log after
    /// 2 s, so that an operator whose host is slow to come up knows what it waits for. Cancel the returned item
    /// once the probe ended. [any thread]
    nonisolated func noteSlowProbe(_ id: String, timeout: Double) -> DispatchWorkItem {
        let slow = DispatchWorkItem { [self] in
            log(.warn, id, "waiting for its probe: the trial load and activation in a child process has not answered for 2 s (it is stopped after \(Int(timeout)) s)")
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + 2, execute: slow)
        return slow
    }
}
