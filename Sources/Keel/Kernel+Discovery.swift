// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState

/// Discovery: the plugin folder as the kernel sees it, and the order plugins start in.
extension Kernel {
    /// Re-reads the plugin folder and brings the stored records up to date (new bundles become `installed`,
    /// vanished ones `missing`, unusable ones `failed` with the reason). Active plugins keep running.
    public func rescan() { rescan(records: nil) }

    /// `rescan()`, with the plugin records, and the plugin folder's listing and manifest cache, when the caller has
    /// just read them (nil: read here).
    /// - Parameter deferringChecks: take cached manifests without comparing their files first, and return that
    ///   comparison as a check started on another thread (`StampCheck`); the caller settles it (`settle(_:)`) before
    ///   any of those plugins' code runs. Only start-up defers.
    /// - Returns: whether it wrote a record (or tried to), and the check it left, if any.
    @discardableResult
    func rescan(records given: [PluginRecord]?, prefetched: BundleScanner.Prefetch? = nil,
                deferringChecks: Bool = false) -> (wrote: Bool, check: StampCheck?) {
        var found: [Bundle]
        var check: StampCheck?
        do {
            let scanner = BundleScanner(), directory = configuration.pluginsDirectory
            let warn: (String) -> Void = { self.log(.warn, nil, $0) }
            if deferringChecks, let cache = manifestCache {
                (found, check) = try scanner.scanDeferringChecks(directory, bundleFolders: configuration.bundleFolders, cache: cache,
                                                                 prefetched: prefetched, log: warn)
                // The comparisons run on another core while this thread compares the records and parks.
                if let check, check.count > 0 { check.start() } else { check = nil }
            } else {
                found = try scanner.scan(directory, bundleFolders: configuration.bundleFolders, cache: manifestCache,
                                         prefetched: prefetched, log: warn)
            }
        } catch {
            log(.error, nil, error.description)
            return (false, nil)
        }
        // One read of every record, not one per bundle: `discovered` changes no status, so these stay current.
        let records = given ?? (try? state.plugins()) ?? []
        let known = BundleReconciler.byID(records)
        // A plugin.yaml broken in a folder that belongs to a plugin: the bundle keeps that plugin's id, not its
        // folder's name, so a serving build is not taken for removed (it would be retired), an installed one is not
        // taken for missing beside a second record named after the folder, and the record says why.
        if found.contains(where: { $0.manifest == nil }) {
            let lastScan = bundles.map { ($0.value.folder, $0.key) } + droppedBundles.map { ($0.key, $0.value.id) }
            Self.nameBrokenBundles(&found, lastScan: lastScan, records: records)
        }
        var wrote = false
        // An id claimed twice keeps the folder it already lives in (by its record, else by the last scan): another
        // folder claiming it takes neither its record nor, once its own plugin.yaml is fixed, its place (both are
        // refused as duplicates). When none of them is that folder, the record is left as it is.
        let (next, homeless, dropped) = Self.chooseClaimants(found) { id in
            known[id].flatMap { $0.bundlePath.isEmpty ? nil : $0.bundlePath } ?? self.bundles[id]?.folder
        }
        let kept = dropped.isEmpty ? found : found.filter { next[$0.id]?.folder == $0.folder }
        // An unusable bundle is logged when this kernel first finds it so, or finds another problem: not again at
        // every rescan of the folder (any bundle's change rescans it).
        var logged = Set<String>()
        for bundle in found {
            // (Compared with this folder's problem at the last scan: a duplicate's names the other folders.)
            let before = bundles[bundle.id].flatMap { $0.folder == bundle.folder ? $0 : nil } ?? droppedBundles[bundle.folder]
            // Warnings likewise: logged when they first appear or change, not at every rescan (a hot reload rescans
            // the folder more than once).
            if !bundle.warnings.isEmpty, bundle.warnings.map(\.description) != before?.warnings.map(\.description) {
                for warning in bundle.warnings { log(.warn, bundle.id, warning.description) }
            }
            if let problem = bundle.problem, before?.problem != problem {
                log(.error, bundle.id, problem)
                logged.insert(bundle.id)
            }
            guard next[bundle.id]?.folder == bundle.folder, !homeless.contains(bundle.id) else { continue }
            // An unreadable plugin.yaml of a known plugin does not blank the record: its serving build's, else its
            // record's, name and version are kept.
            let manifest = bundle.manifest ?? active[bundle.id]?.manifest
            var name = manifest?.name ?? "", version = manifest.map { "\($0.version)" } ?? ""
            if manifest == nil, bundle.knownAs != nil, let record = known[bundle.id] { (name, version) = (record.name, record.version) }
            // A record that already says so needs no write (`discovered` would change nothing).
            if let record = known[bundle.id], record.name == name, record.version == version,
               record.bundlePath == bundle.folder { continue }
            wrote = true
            do {
                try state.discovered(id: bundle.id, name: name, version: version, bundlePath: bundle.folder)
            } catch {
                log(.error, bundle.id, error.description)
            }
        }
        // A quarantine is a failure the operator did not ask for, kept until a new build or `enable`: read only when a
        // record could be one (failed, not wanted), so a start with none pays nothing for it.
        let quarantined = records.contains { $0.status == .failed && !$0.enabled }
            ? Set(((try? state.quarantinedChecksums()) ?? [:]).keys) : []
        for change in BundleReconciler.changes(found: kept, records: records, active: Set(active.keys),
                                               quarantined: quarantined, recordsByID: known, foundByID: next) {
            // An install or upgrade on its way (its download runs off this thread) owns its records' transient
            // states: they are not left over from a crash.
            if extensionChange != nil, let status = known[change.id]?.status, status == .installing || status == .upgrading { continue }
            wrote = true
            do { try state.setStatus(change.id, change.status, reason: change.reason) } catch {
                log(.error, change.id, error.description)
                continue
            }
            if change.isProblem, !logged.contains(change.id), let reason = change.reason { log(.error, change.id, reason) }
        }
        bundles = next
        droppedBundles = dropped
        // An idle plugin whose bundle went or became unusable is idle no more (the records above say why).
        for id in idle where bundles[id]?.manifest == nil || bundles[id]?.problem != nil || !isLazy(id) { unpark(id) }
        return (wrote, check)
    }

    /// The bundle each id goes by when several folders claim it: the one in `home(id)`'s folder, else the last one
    /// found. Returns the bundles by id, the ids claimed twice none of whose folders is home (their records are left
    /// as they are), and the bundles not chosen, by folder. Pure; one pass, and nothing more when no id is claimed twice.
    static func chooseClaimants(_ found: [Bundle], home: (String) -> String?)
        -> (byID: [String: Bundle], homeless: Set<String>, dropped: [String: Bundle]) {
        var next = [String: Bundle](minimumCapacity: found.count)
        var homeless = Set<String>()
        for bundle in found {
            guard let held = next[bundle.id] else { next[bundle.id] = bundle; continue }
            guard let home = home(bundle.id) else { next[bundle.id] = bundle; continue }
            if sameFolder(held.folder, home) { continue }
            if sameFolder(bundle.folder, home) { homeless.remove(bundle.id) } else { homeless.insert(bundle.id) }
            next[bundle.id] = bundle
        }
        guard next.count != found.count else { return (next, homeless, [:]) }
        var dropped: [String: Bundle] = [:]
        for bundle in found where next[bundle.id]?.folder != bundle.folder { dropped[bundle.folder] = bundle }
        return (next, homeless, dropped)
    }

    /// Gives each bundle without a usable manifest the id of the plugin its folder belongs to (`PluginBundle.knownAs`):
    /// the id the last scan found in that folder (`lastScan`, folder and id; every claimant of an id claimed twice),
    /// else the one record (not missing) that names the folder, then refuses every bundle that claims an id another
    /// folder now goes by (as `BundleScanner` refuses duplicates): a folder cannot take a plugin's id while that
    /// plugin's own plugin.yaml is broken.
    static func nameBrokenBundles(_ found: inout [Bundle], lastScan: [(folder: String, id: String)], records: [PluginRecord]) {
        var owner: [String: String] = [:]
        var claimed: [String: Int] = [:]
        let cwd = FileManager.default.currentDirectoryPath
        let paths = records.map { $0.status != .missing && !$0.bundlePath.isEmpty ? absoluteFolder($0.bundlePath, in: cwd) : nil }
        for case let path? in paths { claimed[path, default: 0] += 1 }
        for (record, path) in zip(records, paths) { if let path, claimed[path] == 1 { owner[path] = record.id } }
        for (folder, id) in lastScan { owner[absoluteFolder(folder, in: cwd)] = id }
        var named = false
        for i in found.indices where found[i].manifest == nil {
            guard let id = owner[absoluteFolder(found[i].folder, in: cwd)], id != found[i].id else { continue }
            found[i].knownAs = id
            named = true
        }
        if named { BundleScanner.refuseDuplicates(&found) }
    }

    /// True when both name one folder, however spelled (relative to the working directory or not, `.` segments, a
    /// trailing `/`): a CLI and a server may name the plugin folder differently, and its records keep the last one's.
    static func sameFolder(_ a: String, _ b: String) -> Bool {
        guard a != b else { return true }
        let cwd = FileManager.default.currentDirectoryPath
        return absoluteFolder(a, in: cwd) == absoluteFolder(b, in: cwd)
    }

    /// `path` made absolute against `cwd` and cleaned as text (empty and `.` segments dropped, `..` taken back): no
    /// file-system look-up, so it costs nothing per record but the string work.
    static func absoluteFolder(_ path: String, in cwd: String) -> String {
        var parts: [Substring] = []
        for part in ((path.hasPrefix("/") ? "" : cwd + "/") + path).split(separator: "/") {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Waits for a check that `rescan(records:prefetched:deferringChecks:)` left, and clears it. When a plugin.yaml
    /// was not the file its cached manifest came from, scans the folder again, comparing every file first.
    /// - Parameter inBatch: the caller runs inside a `StateStore.batch` already (the scan's writes join it; a batch
    ///   cannot nest: PostgreSQL would commit the outer one early).
    /// - Returns: true when it scanned again (the bundles may have changed).
    func settle(_ check: inout StampCheck?, inBatch: Bool = false) -> Bool {
        guard let pending = check else { return false }
        check = nil
        let changed = pending.changedFolders()
        guard !changed.isEmpty else { return false }
        log(.debug, nil, "\(changed.count) plugin.yaml file(s) changed since their manifests were cached (\(changed.prefix(3).joined(separator: ", "))\(changed.count > 3 ? ", …" : "")): the plugin folder is scanned again")
        // Its records in one transaction, as the start's own scan.
        if inBatch || (try? state.batch({ rescan() })) == nil { rescan() }
        return true
    }

    /// Where parsed manifests are kept between starts (`ManifestCache`): `<state file>.manifests`, beside the state
    /// and the activation mark; none when the state lives in memory (nothing is written to disk then).
    var manifestCache: ManifestCache? {
        state.isInMemory ? nil : ManifestCache(path: configuration.stateFile + ".manifests")
    }

    /// Where library checksums are kept between starts (`LibrarySums`): `<state file>.libraries`, beside the state;
    /// none when the state lives in memory.
    var librarySums: LibrarySums? {
        state.isInMemory ? nil : LibrarySums(path: configuration.stateFile + ".libraries")
    }

    /// Keeps the checksum of a library loaded where it lies for its next load, when the file had settled before it
    /// was read (`LibrarySums` says why only those). The same checksum of the same file is no change: the entry keeps
    /// the time it was first recorded, and the file is not written again for it.
    func remember(_ copy: GenerationStore.Copy, of path: String) {
        guard copy.inPlace, let stamp = copy.source, checksums[path]?.sum(for: stamp) != copy.checksum else { return }
        checksums[path] = LibrarySums.Entry(stamp: stamp, sum: copy.checksum)
        if checksumsChanged { return }
        checksumsChanged = true
        // Learnt outside a start (a lazy plugin's first use, an enable, a reload): written a second later, off the
        // path of the request that woke the plugin, once for a burst, so that a host that is killed rather than
        // stopped keeps it too. A start writes its own at its end (this one then finds nothing left to write).
        Task { [weak self] in
            try? await Task.sleep(for: .seconds(1))
            await self?.saveLibrarySums()
        }
    }

    /// Writes the checksums back when they changed, keeping those of the bundles' current files only.
    func saveLibrarySums() {
        guard checksumsChanged, let sums = librarySums else { return }
        checksumsChanged = false
        let current = Set(bundles.values.compactMap(\.buildPath))
        checksums = checksums.filter { current.contains($0.key) }
        if let problem = sums.save(checksums) { log(.warn, nil, problem) }
    }

    /// Orders `ids` so that each comes after the plugins it depends on (`DependencyPlanner`). Members of a cycle are
    /// recorded as failed, naming the cycle, and left out.
    func activationPlan(for ids: Set<String>) -> [String] {
        let plan = DependencyPlanner.plan(ids) { id in startupDependencies(id).map(\.id) }
        var failed: Set<String> = []
        for cycle in plan.cycles {
            // Each step names the interface it goes through, if it does: "a → b (gitops.sync/1) → a".
            let steps = cycle.enumerated().map { i, id -> String in
                guard i > 0, let via = startupDependencies(cycle[i - 1]).first(where: { $0.id == id })?.via else { return id }
                return "\(id) (\(via))"
            }
            let text = "dependency cycle: " + steps.joined(separator: " → ")
            for member in cycle where failed.insert(member).inserted {
                try? state.setStatus(member, .failed, reason: text)
                log(.error, member, text)
            }
        }
        return plan.order
    }
}
