// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelManifest
import KeelState

extension Kernel {
    /// Upgrades an installed plugin from the repositories: to `version`, or to the recommended version when it is
    /// newer. The new version is fetched, verified (checksum, signature) and probed before anything changes; then the
    /// bundle folders are swapped and an active plugin is reloaded. If the new version fails to load or activate, the
    /// old folder is put back and the old version keeps running (rollback), and the reason is stored as
    /// `upgrade-failed`. Enabled state, grants, tenants and history are keyed by id and survive.
    /// The download, its checks and the probe run off the kernel's thread: other lifecycle changes, lazy wakes and
    /// command calls go on meanwhile (the swap is done on the kernel, with the bundle checked again first).
    /// A plugin pinned to a signing key takes only a package signed by that key, unless `signer` moves it to another
    /// trusted key (`.key`) or forgets the pin (`.forget`); an unsigned plugin is pinned to the key of its first signed
    /// package. That check comes first: a refused signer changes nothing, not even the plugin's status.
    /// - Returns: what it did to the plugin's pinned signer (for the audit trail), or nil when the pin stayed; with no
    ///   `version` and nothing newer offered, or `version` the one installed, `"ID" VERSION is up to date (...)`, and
    ///   nothing changed.
    /// - Throws: `KernelError` naming the plugin and the reason; `signerMismatch` for a package not signed by the
    ///   pinned (or named) key.
    @discardableResult
    public func upgrade(_ id: String, to version: String? = nil, store: ExtensionStore, allowUnsigned: Bool = false,
                        signer change: SignerChange? = nil) async throws(KernelError) -> String? {
        await beginExtensionChange(id)
        defer { endExtensionChange() }
        rescan()
        let bundle = try installedBundle(id)
        guard let current = bundle.manifest else { throw KernelError(.bundle, pluginID: id, reason: "\"\(id)\" has no usable manifest") }
        // The indexes are read off the kernel's thread too: a repository that answers slowly (or a FIFO in a local
        // one) would hold every lifecycle change meanwhile.
        let offer = try await Self.offKernel { () -> Result<ExtensionStore.Offer, KernelError> in
            do {
                let (offers, problems) = try store.indexes()
                return .success(try store.resolve(id, version: version, offers: offers, problems: problems))
            } catch {
                return .failure(Self.installError(error, pluginID: id))
            }
        }.get()
        guard let next = Semver(offer.entry.version) else { throw KernelError(.bundle, pluginID: id, reason: "bad version in the index") }
        // Up to date: an earlier upgrade's failure no longer describes it (the version that failed is not offered
        // now, or the operator chose to stay), so a serving plugin's status says so again.
        func upToDate(_ why: String) -> String {
            if active[id] != nil, (try? state.plugin(id))??.status == .upgradeFailed { try? state.setStatus(id, .enabled) }
            return "\"\(id)\" \(current.version) is up to date (\(why))"
        }
        if version == nil && next <= current.version {
            // Nothing newer: done, not failed (the audit says ok; the CLI exits 0).
            return upToDate("the repositories offer \(next)")
        }
        if next == current.version {
            // The version it runs: nothing to fetch or swap (a reload would only restart it).
            return upToDate("the version asked for")
        }
        // An enabled plugin that needs this one in a range the new version leaves: it would be stopped, failed, by an
        // upgrade that succeeded (disable and uninstall refuse likewise).
        let enabled = ((try? state.plugins()) ?? []).filter { $0.enabled && $0.id != id }
        let outside = enabled.compactMap { record -> String? in
            guard let need = bundles[record.id]?.manifest?.dependencies.first(where: { $0.id == id }), !need.versions.contains(next) else { return nil }
            return "\"\(record.id)\" needs \(id) \(need.versions)"
        }.sorted()
        if !outside.isEmpty {
            throw KernelError(.dependency, pluginID: id, reason: "\"\(id)\" is not upgraded to \(next): enabled plugin(s) need another version ("
                              + outside.joined(separator: "; ") + "); upgrade them first, or disable them, or pick a version they take with --to")
        }
        let check = try signerCheck(offer, change: change, store: store, command: "upgrade", allowUnsigned: allowUnsigned)
        // The new version takes the old one's folder; the work folders carry our pid, so that recovery in another
        // process leaves them alone while we live.
        let target = bundle.folder
        let work = configuration.pluginsDirectory + "/.upgrading-\(id)-\(getpid())"
        let previous = configuration.pluginsDirectory + "/.previous-\((target as NSString).lastPathComponent)-\(getpid())"
        let before = (try? state.plugin(id))?.status ?? .installed
        try? state.setStatus(id, .upgrading)
        func fail(_ failure: String) -> KernelError {
            try? FileManager.default.removeItem(atPath: work)
            // The work folder is gone with the failure: its files are named by the archive they came from.
            let reason = failure.replacingOccurrences(of: work, with: offer.entry.archive)
            try? state.setStatus(id, .upgradeFailed, reason: "upgrade to \(next) failed, \(current.version) kept: \(reason)")
            log(.error, id, "upgrade to \(next) failed, \(current.version) kept: \(reason)")
            return KernelError(.loadFailed, pluginID: id, reason: "upgrade of \"\(id)\" to \(next) failed, \(current.version) kept: \(reason)")
        }
        try? FileManager.default.removeItem(atPath: work)
        let probe = configuration.probe
        // The stored configuration, which the new version's trial activation gets as its activation will.
        let stored = (try? state.config(id)) ?? nil
        let fetched = await Self.offKernel { () -> (Manifest?, String?) in
            let manifest: Manifest
            do { manifest = try store.fetchVerified(offer, into: work, allowUnsigned: allowUnsigned, signer: check) } catch { return (nil, "\(error)") }
            // A plugin that runs in a worker is not probed: the worker is its probe, confined as the probe is not
            // (a new version's constructor would run there with the network, processes and the host's files).
            if let probe, let library = manifest.library, self.isolation(of: id, manifest) != .process,
               // Named as the package's file (`fail` writes the work folder as the archive's name): the path it will
               // have once installed is the running version's library, which is not the one that failed.
               case let .failed(reason, _) = probe.run(library: work + "/" + library, manifestPath: work + "/" + ManifestLoader.fileName,
                                                    shownPath: work + "/" + library,
                                                    config: Self.trialConfig(stored, id: id, bundle: work)) {
                return (nil, reason)
            }
            return (manifest, nil)
        }
        guard let manifest = fetched.0 else { throw fail(fetched.1 ?? "the new version could not be fetched") }
        // The host shut down during the fetch: nothing is swapped, reloaded or recorded (the state may be another
        // kernel's by now; its status stays "upgrading", which the next start recovers from).
        if isShutDown {
            try? FileManager.default.removeItem(atPath: work)
            try requireRunning("upgrade \(id)")
        }
        // The kernel went on meanwhile: the swap goes to the bundle the upgrade started from, or not at all (a
        // bundle edited in place since could be a version the check above never saw).
        rescan()
        guard let now = try? installedBundle(id), now.folder == target, now.manifest == current else {
            throw fail("its bundle changed while the new version was fetched")
        }
        do { try store.confirmPin(offer, check) } catch { throw fail("\(error)") }
        let wasActive = active[id] != nil
        // Swap the folders; put the old one back if the new version does not come up.
        try? FileManager.default.removeItem(atPath: previous)
        guard rename(target, previous) == 0 else { throw fail("cannot move the old bundle aside: \(String(cString: strerror(errno)))") }
        guard rename(work, target) == 0 else {
            rename(previous, target)
            throw fail("cannot move the new bundle into place: \(String(cString: strerror(errno)))")
        }
        if wasActive {
            do { try reload(id, cause: "upgraded from \(current.version) to \(next)") } catch {
                try? FileManager.default.removeItem(atPath: target)
                rename(previous, target)
                rescan()
                throw fail(error.reason)
            }
        } else {
            rescan()
        }
        try? FileManager.default.removeItem(atPath: previous)
        try? state.discovered(id: id, name: manifest.name, version: "\(manifest.version)", bundlePath: target)
        store.recordSignature(offer, library: target + "/" + (manifest.library ?? ManifestLoader.fileName), check: check)
        // A status another change set meanwhile (a disable, a revoke that stopped it) is its own, and stays.
        if wasActive {
            try? state.setStatus(id, .enabled)
        } else if (try? state.plugin(id))?.status == .upgrading {
            try? state.setStatus(id, before == .upgradeFailed || before == .upgrading ? .installed : before)
        }
        log(.info, id, "upgraded \(current.version) → \(manifest.version)")
        if let note = check.note { log(change == nil ? .info : .warn, id, note) }
        return check.note
    }

    /// `store.checkSigner`, its refusal as `signerMismatch`, any other failure as `bundle` (`execute` logs either).
    nonisolated func signerCheck(_ offer: ExtensionStore.Offer, change: SignerChange?, store: ExtensionStore,
                                 command: String, allowUnsigned: Bool) throws(KernelError) -> ExtensionStore.SignerCheck {
        do { return try store.checkSigner(offer, change: change, command: command, allowUnsigned: allowUnsigned) } catch {
            throw Self.installError(error, pluginID: offer.id)
        }
    }

    /// An install's or upgrade's failure as a `KernelError`: `signerMismatch` for a refused signer, `notOffered` when no
    /// repository offers the plugin or version, else `bundle`.
    nonisolated static func installError(_ error: any Error, pluginID: String) -> KernelError {
        if let mismatch = error as? SignerMismatch {
            return KernelError(.signerMismatch, pluginID: mismatch.pluginID, reason: mismatch.description)
        }
        if let store = error as? ExtensionStore.StoreError, store.notOffered {
            return KernelError(.notOffered, pluginID: pluginID, reason: store.reason)
        }
        return KernelError(.bundle, pluginID: pluginID, reason: "\(error)")
    }

    /// Finishes or undoes what a crashed process left: hidden install/upgrade/uninstall folders are removed, and an
    /// old bundle moved aside for an upgrade goes back when the new one never arrived. Work folders carry the pid of
    /// the process doing the work (`.installing-<id>-<pid>`, `.upgrading-<id>-<pid>`, `.previous-<folder>-<pid>`,
    /// `.uninstalling-<id>-<pid>`); those of a live process are left alone. Runs at every kernel start.
    /// - Parameter hidden: the hidden entries of the plugin folder when the caller listed it (nil: listed here).
    /// - Returns: true when it changed the plugin folder.
    @discardableResult
    func recoverInterruptedChanges(hidden: [String]? = nil) -> Bool {
        let dir = configuration.pluginsDirectory
        var changed = false
        for name in hidden ?? (try? BundleScanner.list(dir))?.hidden ?? [] {
            guard let work = WorkFolder(name), !work.ownerIsAlive else { continue }
            changed = true
            let path = dir + "/" + name
            if work.kind != .previous {
                try? FileManager.default.removeItem(atPath: path)
            } else if FileManager.default.fileExists(atPath: dir + "/" + work.subject) {
                try? FileManager.default.removeItem(atPath: path)
            } else {
                rename(path, dir + "/" + work.subject)
                log(.warn, nil, "an upgrade was interrupted: the previous version is back in \"\(work.subject)\"")
            }
        }
        return changed
    }

    /// The one bundle of installed plugin `id`: found by scanning the plugin folder and matched by the id its manifest
    /// declares, never by folder name.
    /// - Throws: `KernelError` when none declares it, more than one claims it, or the one found has no usable manifest.
    func installedBundle(_ id: String) throws(KernelError) -> Bundle {
        let claims = ExtensionStore.bundles(claiming: id, in: configuration.pluginsDirectory)
        guard let bundle = claims.first else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "\"\(id)\" is not installed")
        }
        guard claims.count == 1 else {
            let folders = claims.map { "\"\(($0.folder as NSString).lastPathComponent)\"" }.joined(separator: ", ")
            throw KernelError(.conflict, pluginID: id, reason: "\(claims.count) bundles claim \"\(id)\" (folders \(folders)); remove all but one by hand")
        }
        guard bundle.manifest?.id == id else {
            throw KernelError(.bundle, pluginID: id,
                              reason: "folder \"\((bundle.folder as NSString).lastPathComponent)\" has no usable manifest; fix or remove it by hand")
        }
        return bundle
    }

    /// Installs `id` (and the dependencies it is missing) from the repositories. Returns what was installed, in order.
    /// The downloads, their checks and the moves into the plugin folder run on a thread of their own: other lifecycle
    /// changes, lazy wakes and command calls go on meanwhile. One install or upgrade runs at a time; the next waits.
    /// A plugin still pinned to a signing key (see `upgrade`) must come signed by it unless `signer` says otherwise.
    /// - Throws: `KernelError` with the reason (`conflict` when `id` is already installed, in any folder;
    ///   `signerMismatch` for a package not signed by the pinned key, refused before anything is fetched); an
    ///   install that failed otherwise is recorded `install-failed` and can be retried.
    public func install(_ id: String, version: String? = nil, store: ExtensionStore, allowUnsigned: Bool = false,
                        signer: SignerChange? = nil) async throws(KernelError) -> [String] {
        try await installNoting(id, version: version, store: store, allowUnsigned: allowUnsigned, signer: signer).installed
    }

    /// `install`, also returning what it did to the pinned signers (one note per plugin whose pin it set or moved).
    func installNoting(_ id: String, version: String?, store: ExtensionStore, allowUnsigned: Bool,
                       signer: SignerChange?) async throws(KernelError) -> (installed: [String], notes: [String]) {
        await beginExtensionChange(id)
        defer { endExtensionChange() }
        try refuseInstalled(id)
        let done = await Self.offKernel { Self.installPlan(id, version: version, store: store, allowUnsigned: allowUnsigned, signer: signer) }
        rescan()
        let result = try done.get()
        for note in result.notes { log(signer == nil ? .info : .warn, id, note) }
        return result
    }

    private func refuseInstalled(_ id: String) throws(KernelError) {
        if let present = ExtensionStore.bundles(claiming: id, in: configuration.pluginsDirectory).first {
            throw KernelError(.conflict, pluginID: id, reason: ExtensionStore.alreadyInstalled(id, folder: present.folder))
        }
    }

    /// Fetches, verifies and moves into place `id` and the dependencies it lacks; touches no kernel state. `signer`
    /// applies to `id` alone; each dependency keeps its own pin.
    private nonisolated static func installPlan(_ id: String, version: String?, store: ExtensionStore, allowUnsigned: Bool,
                                                signer: SignerChange?) -> Result<(installed: [String], notes: [String]), KernelError> {
        var done: [String] = [], notes: [String] = []
        do {
            let (plan, problems) = try store.planNoting(id, version: version)
            notes += problems.map { "not read: \($0); the plan used the repositories that were" }
            // Every signer first: a refused one (the plugin's own or a dependency's) installs nothing, not even the
            // dependencies that come before it (a package another key signed could otherwise bring its own first).
            // So does a dependency no trusted key signed, whatever `allowUnsigned` says about `id`.
            let checks = try plan.map { offer in
                try store.checkSigner(offer, change: offer.id == id ? signer : nil, command: "install", allowUnsigned: allowUnsigned && offer.id == id)
            }
            try ExtensionStore.refuseUntrustedDependencies(of: id, plan: plan, checks: checks)
            for offer in plan {
                if let note = try store.install(offer, allowUnsigned: allowUnsigned && offer.id == id, signer: offer.id == id ? signer : nil) {
                    notes.append(note)
                }
                done.append("\(offer.id) \(offer.entry.version)")
            }
        } catch {
            return .failure(installError(error, pluginID: id))
        }
        return .success((done, notes))
    }

    /// Waits for its turn, then marks `id`'s install or upgrade as the one running: they change the plugin folder
    /// through work folders named by id and pid, so two at once could meet in one. Pair with `endExtensionChange()`.
    func beginExtensionChange(_ id: String) async {
        await waitForExtensionChanges()
        extensionChange = id
    }

    /// Returns once no install or upgrade is running (another may start before the caller's next suspension).
    func waitForExtensionChanges() async {
        while extensionChange != nil { await withCheckedContinuation { extensionChangeWaiters.append($0) } }
    }

    /// Ends the running install or upgrade and wakes every waiter; the first to run takes the next turn, the others
    /// wait again.
    func endExtensionChange() {
        extensionChange = nil
        let waiters = extensionChangeWaiters
        extensionChangeWaiters = []
        for waiter in waiters { waiter.resume() }
    }

    /// Disables `id` (and, with `cascade`, its dependents), removes its bundle folder (the one whose manifest declares
    /// `id`) and forgets it with its signature status; with `keepData` its grants, tenants and configuration stay for a
    /// later reinstall. Interrupted, it is finished at the next start.
    /// - Returns: the plugins `cascade` disabled because they need it (empty without).
    @discardableResult
    public func uninstall(_ id: String, cascade: Bool = false, keepData: Bool = false) throws(KernelError) -> [String] {
        if let running = extensionChange {
            throw KernelError(.conflict, pluginID: id, reason: "an install or upgrade of \"\(running)\" is running; retry when it is done")
        }
        rescan()
        if ExtensionStore.bundles(claiming: id, in: configuration.pluginsDirectory).isEmpty, let record = try? state.plugin(id),
           [.installFailed, .missing].contains(record.status) {
            // A failed install (or a bundle already gone) can always be removed: only the record is left.
            try forget(id, everything: !keepData)
            return []
        }
        let bundle = try installedBundle(id)
        let also = try disable(id, cascade: cascade)
        residents.forget(id)
        try? state.setStatus(id, .uninstalling)
        // Out of the plugin folder in one step, then removed: a crash leaves a hidden folder recovery removes.
        let doomed = configuration.pluginsDirectory + "/.uninstalling-\(id)-\(getpid())"
        guard rename(bundle.folder, doomed) == 0 else {
            throw KernelError(.bundle, pluginID: id, reason: "folder \"\((bundle.folder as NSString).lastPathComponent)\" cannot be removed: \(String(cString: strerror(errno)))")
        }
        try? FileManager.default.removeItem(atPath: doomed)
        try forget(id, everything: !keepData)
        rescan()
        return also
    }

    /// Forgets a plugin's record, its signature status and its guard record (and, with `everything`, its grants, tenants, configuration).
    private func forget(_ id: String, everything: Bool) throws(KernelError) {
        do {
            try state.forgetPlugin(id, everything: everything)
            try state.setSignatureRecord(id, nil)
            if guardian(of: id) == id {
                try state.setGuardRecord(id, needs: nil)
                guardCache.withLock { $0?[id] = nil }
            }
        } catch { throw KernelError(.state, pluginID: id, reason: error.description) }
    }

    /// Finishes uninstalls a crash interrupted: the recorded bundle folder is removed only when its manifest still
    /// declares the plugin's id (a folder since reused by another plugin is left alone).
    /// - Returns: the plugin records it read when it changed none of them (start-up's discovery goes on with them);
    ///   nil when it forgot one or could not read them.
    /// - Parameter given: the records when the caller read them (nil: read here).
    func finishUninstalls(_ given: [PluginRecord]? = nil) -> [PluginRecord]? {
        guard let records = given ?? (try? state.plugins()) else { return nil }
        let unfinished = records.filter { $0.status == .uninstalling }
        for record in unfinished {
            let folder = record.bundlePath, name = (folder as NSString).lastPathComponent
            if !name.isEmpty, !name.hasPrefix("."), folder == configuration.pluginsDirectory + "/" + name,
               (try? ManifestLoader().load(path: folder + "/" + ManifestLoader.fileName))?.0.id == record.id {
                try? FileManager.default.removeItem(atPath: folder)
            }
            try? forget(record.id, everything: true)
        }
        return unfinished.isEmpty ? records : nil
    }

    /// The configuration (JSON) a new version's trial activation gets: `stored` checked against the schema of the
    /// new version's bundle in `bundle`, as its activation will check it; the stored JSON as it is when that check
    /// fails (the activation then says why).
    nonisolated static func trialConfig(_ stored: (yaml: String, json: String)?, id: String, bundle: String) -> String {
        (try? PluginConfig.activationJSON(yaml: stored?.yaml, file: "configuration of \(id)", schemaPath: PluginConfig.schema(inBundle: bundle)))
            ?? stored?.json ?? ""
    }
}

/// A hidden folder in the plugin folder holding unfinished work: `.<kind>-<subject>-<pid>`, or without the pid when an
/// older keel made it.
struct WorkFolder {
    enum Kind: String, CaseIterable { case installing, upgrading, uninstalling, previous }
    let kind: Kind
    /// The plugin id, or for `.previous` the bundle folder it came from.
    let subject: String
    let pid: pid_t?

    init?(_ name: String) {
        guard let kind = Kind.allCases.first(where: { name.hasPrefix(".\($0.rawValue)-") }) else { return nil }
        var rest = name.dropFirst(kind.rawValue.count + 2)
        // An install's or upgrade's archive lies beside its folder as `.<kind>-<id>-<pid>.download`: same owner.
        if kind != .previous, rest.hasSuffix(ExtensionStore.downloadSuffix) { rest = rest.dropLast(ExtensionStore.downloadSuffix.count) }
        self.kind = kind
        if let dash = rest.lastIndex(of: "-"), let pid = pid_t(rest[rest.index(after: dash)...]), pid > 0 {
            subject = String(rest[..<dash])
            self.pid = pid
        } else {
            subject = String(rest)
            pid = nil
        }
    }

    /// True while the process that made it runs (a folder without a pid has no live owner).
    var ownerIsAlive: Bool {
        guard let pid else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }
}
