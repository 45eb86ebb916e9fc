// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState

/// One plugin's part of the live view: what it was built from, its info and that info's JSON. A class: a command
/// looks at every part and keeps most, which for a struct copied each info out of the map and destroyed it again.
final class LiveViewPart {
    /// What a part depends on that can change without a command naming the plugin: its state record (status,
    /// reason, wish), which generation is active, whether it is parked idle, and its worker process.
    struct Key: Equatable {
        var record: PluginRecord
        var generation: Int?
        var idle: Bool
        var workerPID: Int32?
        var workerRestarts: Int?
    }
    let key: Key
    let info: PluginInfo
    let json: String

    init(key: Key, info: PluginInfo, json: String) {
        self.key = key
        self.info = info
        self.json = json
    }
}

/// The live view on the kernel's side: built and stored on its executor, with no hop per part.
///
/// A command or event rebuilds only the parts that can have changed: a part whose `LiveViewPart.Key` is as before,
/// whose plugin no command has named since (`liveViewDirty`: its grants, configuration, isolation, signer) and which
/// provides no interface (who serves an interface depends on the other providers) is kept. Everything is rebuilt
/// after a change of the bundles (a rescan, an install, a watched reload), of the tenants, a command that names no
/// plugin, or another host's changes (`liveViewStale`). Before, each command built every plugin's info again (ten
/// milliseconds with 1,000 plugins installed).
extension Kernel {
    /// Whether each command stores the live view with its audit row (`RemoteControl.publishOnChange`).
    func setPublishesLiveView(_ on: Bool) {
        liveViewPublishers = max(0, liveViewPublishers + (on ? 1 : -1))
        liveViewStale = true
    }

    /// Notes what a command may have changed in the live view beyond the keys of its parts: the plugin it names (or
    /// calls), or everything when it names none.
    func noteForLiveView(_ command: KernelCommand) {
        guard liveViewPublishers > 0 else { return }
        if case let .call(plugin, _, _, _) = command { liveViewDirty.insert(plugin) } else if let id = command.pluginID {
            liveViewDirty.insert(id)
        } else {
            liveViewStale = true
        }
    }

    /// What changed in the live view since it was last built (every part, replacing all, when `liveViewStale` or the
    /// tenants changed), or nil when the records cannot be read. A plugin whose info is as last time is not encoded
    /// again. Updates the kept parts: the caller stores the change, or marks the view stale when it cannot.
    ///
    /// With `onlyTouched` (a command of this kernel's), only the records that can have changed are read: those written
    /// through this kernel's store since (`StateStore.takeTouchedRecords`), the plugins whose activity changed, those
    /// named, and the providers; every record is compared otherwise, which is how a change another process made
    /// (seen by `RemoteControl` through `dataVersion`) is found. A command on a host with 1,000 plugins installed
    /// read and compared all 1,000 records.
    func liveViewChange(onlyTouched: Bool = false) -> StateStore.LiveViewChange? {
        let touchedRecords = state.takeTouchedRecords()
        var change = StateStore.LiveViewChange(replacesAll: false, parts: [], removed: [], services: nil)
        let now = self.services()
        if liveViewServices?.value != now {
            guard let json = try? Kernel.encoder().encode(now) else { return nil }
            let services = String(decoding: json, as: UTF8.self)
            liveViewServices = (now, services)
            change.services = services
        }
        let directory = access.directory
        let everything = liveViewStale || directory != liveViewDirectory
        if everything, let services = liveViewServices?.json {
            change.replacesAll = true
            change.services = services
        }
        let records: [PluginRecord]
        var gone: [String]?
        if onlyTouched, !everything, !state.isShared {
            var found: [PluginRecord] = [], missing: [String] = []
            // Plugins in workers too: a worker's restart changes their part without a record or a command.
            let inWorkers = active.compactMap { $0.value.worker == nil ? nil : $0.key }
            for id in touchedRecords.union(liveViewTouched).union(liveViewDirty).union(liveViewProviders).union(inWorkers).sorted() {
                do {
                    if let record = try state.plugin(id) { found.append(record) } else if liveViewParts[id] != nil { missing.append(id) }
                } catch { return nil }
            }
            (records, gone) = (found, missing)
        } else {
            guard let all = try? state.plugins() else { return nil }
            records = all
        }
        liveViewRecordsRead += records.count
        let context = InfoContext(snapshot: registry.snapshot, directory: directory)
        // The pins in one read when every part is built, else one read per part built.
        let pins: [String: StateStore.PinnedSigner]? = everything ? ((try? state.pinnedSigners()) ?? [:]) : nil
        for record in records {
            let worker = active[record.id]?.worker
            let key = LiveViewPart.Key(record: record, generation: active[record.id]?.generation, idle: idle.contains(record.id),
                                       workerPID: worker?.workerPID, workerRestarts: worker?.restarts)
            let known = liveViewParts[record.id]
            if !everything, let known, known.key == key, known.info.provides.isEmpty, !liveViewDirty.contains(record.id) { continue }
            let pin = pins.map { $0[record.id] } ?? ((try? state.pinnedSigner(record.id)) ?? nil)
            let info = info(record, context, pin: pin)
            liveViewPartsBuilt += 1
            let unchanged = known.map { $0.info == info } ?? false
            let json = unchanged ? known?.json ?? info.json : info.json
            liveViewParts[record.id] = LiveViewPart(key: key, info: info, json: json)
            if info.provides.isEmpty { liveViewProviders.remove(record.id) } else { liveViewProviders.insert(record.id) }
            if everything || !unchanged { change.parts.append((record.id, json)) }
        }
        if let gone {
            for id in gone { forgetLiveViewPart(id, in: &change) }
        } else if liveViewParts.count != records.count {
            let ids = Set(records.map(\.id))
            for id in liveViewParts.keys where !ids.contains(id) { forgetLiveViewPart(id, in: &change) }
        }
        liveViewDirty = []
        liveViewTouched = []
        liveViewStale = false
        liveViewDirectory = directory
        return change
    }

    private func forgetLiveViewPart(_ id: String, in change: inout StateStore.LiveViewChange) {
        liveViewParts[id] = nil
        liveViewProviders.remove(id)
        change.removed.append(id)
    }

    /// The encoder of the live view and of the admin API's answers: sorted keys, slashes as they are.
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// Plugin `id`'s info as JSON (`encoder`'s text, written without it): the live view's text of it when that is
    /// current, else encoded now. The admin API's answer about one plugin.
    /// - Throws: `KernelError.Code.unknownPlugin`.
    public func pluginJSON(_ id: String) throws(KernelError) -> String {
        do {
            let text = json(of: try plugin(id))
            lastAnswered[id] = text
            return text
        } catch where error.code == .state {
            // The state does not answer (a shared state away): this host's last answer (the console stays useful;
            // changes are refused meanwhile).
            guard let known = lastAnswered[id] ?? liveViewParts[id]?.json else { throw error }
            return known
        }
    }

    /// Every plugin's info as a JSON array, as `encoder` writes `plugins()`: the admin API's list of plugins. While the
    /// state does not answer, the last answer about each plugin (`lastAnswered`), when there is one.
    /// - Throws: `KernelError.Code.state` when the records cannot be read and nothing was answered before.
    public func pluginsJSON() throws(KernelError) -> String {
        do {
            let infos = try plugins()
            let texts = infos.map(json(of:))
            lastAnswered = Dictionary(zip(infos.map(\.id), texts), uniquingKeysWith: { a, _ in a })
            return "[" + texts.joined(separator: ",") + "]"
        } catch where error.code == .state {
            guard !lastAnswered.isEmpty else { throw error }
            return "[" + lastAnswered.sorted { $0.key < $1.key }.map(\.value).joined(separator: ",") + "]"
        }
    }

    private func json(of info: PluginInfo) -> String {
        if let known = liveViewParts[info.id], known.info == info { return known.json }
        return info.json
    }

    /// Stores what changed in the live view (nothing when nothing did). Inside a state transaction, it reads and
    /// stores the state as that transaction left it (`execute` calls it after the command's records). On a store
    /// several hosts share, every part is written each time (the rows are every host's: another host may have
    /// written its own view since).
    func publishLiveView(onlyTouched: Bool = false) {
        if state.isShared { liveViewStale = true }
        // Not built (a record could not be read): what it had taken as changed is gone, so all is compared next time.
        guard let change = liveViewChange(onlyTouched: onlyTouched) else {
            liveViewStale = true
            return
        }
        do {
            try state.updateLiveView(change)
        } catch {
            liveViewStale = true
            log(.warn, nil, "live view not stored: \(error)")
        }
    }
}
