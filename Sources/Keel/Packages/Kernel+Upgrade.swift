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
    /// - Throws: `KernelError` naming the plugin and the reason.
    public func upgrade(_ id: String, to version: String? = nil, store: ExtensionStore, allowUnsigned: Bool = false) throws(KernelError) {
        rescan()
        guard let current = bundles[id]?.manifest else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "\"\(id)\" is not installed in \(configuration.pluginsDirectory)")
        }
        let offer: ExtensionStore.Offer
        do { offer = try store.resolve(id, version: version, offers: try store.indexes().offers) } catch {
            throw KernelError(.bundle, pluginID: id, reason: "\(error)")
        }
        guard let next = Semver(offer.entry.version) else { throw KernelError(.bundle, pluginID: id, reason: "bad version in the index") }
        if version == nil && next <= current.version {
            throw KernelError(.bundle, pluginID: id, reason: "\"\(id)\" \(current.version) is up to date (the repositories offer \(next))")
        }
        let target = configuration.pluginsDirectory + "/" + id
        let work = configuration.pluginsDirectory + "/.upgrading-\(id)"
        let previous = configuration.pluginsDirectory + "/.previous-\(id)"
        let wasActive = active[id] != nil
        let before = (try? state.plugin(id))?.status ?? .installed
        try? state.setStatus(id, .upgrading)
        func fail(_ reason: String) -> KernelError {
            try? FileManager.default.removeItem(atPath: work)
            try? state.setStatus(id, .upgradeFailed, reason: "upgrade to \(next) failed, \(current.version) kept: \(reason)")
            log(.error, id, "upgrade to \(next) failed, \(current.version) kept: \(reason)")
            return KernelError(.loadFailed, pluginID: id, reason: "upgrade of \"\(id)\" to \(next) failed, \(current.version) kept: \(reason)")
        }
        try? FileManager.default.removeItem(atPath: work)
        let manifest: Manifest
        do { manifest = try store.fetchVerified(offer, into: work, allowUnsigned: allowUnsigned) } catch { throw fail("\(error)") }
        if let probe = configuration.probe {
            if case let .failed(reason) = probe.run(library: work + "/" + manifest.library, manifestPath: work + "/" + ManifestLoader.fileName,
                                                     shownPath: target + "/" + manifest.library) {
                throw fail(reason)
            }
        }
        // Swap the folders; put the old one back if the new version does not come up.
        try? FileManager.default.removeItem(atPath: previous)
        guard rename(target, previous) == 0 else { throw fail("cannot move the old bundle aside: \(String(cString: strerror(errno)))") }
        guard rename(work, target) == 0 else {
            rename(previous, target)
            throw fail("cannot move the new bundle into place: \(String(cString: strerror(errno)))")
        }
        if wasActive {
            do { try reload(id) } catch {
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
        try? state.setSetting(ExtensionStore.signatureKey(id), store.signatureStatus(offer))
        try? state.setStatus(id, wasActive ? .enabled : (before == .upgradeFailed || before == .upgrading ? .installed : before))
        log(.info, id, "upgraded \(current.version) → \(manifest.version)")
    }

    /// Finishes or undoes what a crash interrupted: hidden install/upgrade folders are removed, and an old bundle
    /// moved aside for an upgrade goes back when the new one never arrived. Runs at start.
    func recoverInterruptedChanges() {
        let dir = configuration.pluginsDirectory
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            let path = dir + "/" + name
            if name.hasPrefix(".installing-") || name.hasPrefix(".upgrading-") {
                try? FileManager.default.removeItem(atPath: path)
            } else if name.hasPrefix(".previous-") {
                let id = String(name.dropFirst(".previous-".count))
                if FileManager.default.fileExists(atPath: dir + "/" + id) {
                    try? FileManager.default.removeItem(atPath: path)
                } else {
                    rename(path, dir + "/" + id)
                    log(.warn, id, "an upgrade was interrupted: the previous version is back")
                }
            }
        }
    }

    /// Installs `id` (and the dependencies it is missing) from the repositories. Returns what was installed, in order.
    /// - Throws: `KernelError` with the reason; an install that failed is recorded `install-failed` and can be retried.
    public func install(_ id: String, version: String? = nil, store: ExtensionStore, allowUnsigned: Bool = false) throws(KernelError) -> [String] {
        var done: [String] = []
        do {
            for offer in try store.plan(id, version: version) {
                try store.install(offer, allowUnsigned: allowUnsigned)
                done.append("\(offer.id) \(offer.entry.version)")
            }
        } catch {
            rescan()
            throw KernelError(.bundle, pluginID: id, reason: "\(error)")
        }
        rescan()
        return done
    }

    /// Disables `id` (and, with `cascade`, its dependents), removes its bundle folder and forgets it; with `keepData`
    /// its grants, tenants and configuration stay for a later reinstall. Interrupted, it is finished at the next start.
    public func uninstall(_ id: String, cascade: Bool = false, keepData: Bool = false) throws(KernelError) {
        let folder = configuration.pluginsDirectory + "/" + id
        if !FileManager.default.fileExists(atPath: folder), let record = try? state.plugin(id),
           [.installFailed, .missing].contains(record.status) {
            // A failed install (or a bundle already gone) can always be removed: only the record is left.
            do { try state.forgetPlugin(id, everything: !keepData) } catch { throw KernelError(.state, pluginID: id, reason: error.description) }
            return
        }
        guard FileManager.default.fileExists(atPath: folder) else {
            throw KernelError(.unknownPlugin, pluginID: id, reason: "\"\(id)\" is not installed in \(configuration.pluginsDirectory)")
        }
        try disable(id, cascade: cascade)
        try? state.setStatus(id, .uninstalling)
        do { try FileManager.default.removeItem(atPath: folder) } catch {
            throw KernelError(.bundle, pluginID: id, reason: "\(folder): cannot be removed: \(error.localizedDescription)")
        }
        do { try state.forgetPlugin(id, everything: !keepData) } catch { throw KernelError(.state, pluginID: id, reason: error.description) }
        rescan()
    }

    /// Finishes uninstalls a crash interrupted.
    func finishUninstalls() {
        for record in (try? state.plugins()) ?? [] where record.status == .uninstalling {
            try? FileManager.default.removeItem(atPath: configuration.pluginsDirectory + "/" + record.id)
            try? state.forgetPlugin(record.id, everything: true)
        }
    }
}
