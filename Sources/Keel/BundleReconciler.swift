// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest
import KeelState

/// Decides how the stored plugin records follow what a scan of the plugin folder found. Pure: it reads what it is
/// given and returns the status changes; the kernel writes them and logs them. Active plugins are never changed
/// here (a running generation keeps running until it is reloaded or retired).
public enum BundleReconciler {
    /// One status change for one plugin's record.
    public struct Change: Sendable, Equatable {
        public var id: String
        public var status: PluginStatus
        public var reason: String?
        /// True when the change reports an unusable bundle (the kernel logs it as an error).
        public var isProblem: Bool

        public init(id: String, status: PluginStatus, reason: String?, isProblem: Bool) {
            self.id = id
            self.status = status
            self.reason = reason
            self.isProblem = isProblem
        }
    }

    /// The changes that bring `records` up to date with `found`, given the plugins that are `active`:
    /// - an unusable bundle is `failed` with its problem (no change when its record already says so);
    /// - a usable bundle whose record is left over from before (missing, or a transient install or upgrade state, or
    ///   failed with a problem of its bundle while not wanted) is `installed`, `disabled` (it was missing) or, when it is wanted, `failed` with
    ///   its old reason until it is activated;
    /// - a record whose bundle is gone is `missing`, except an interrupted install, which is `install-failed`.
    /// A plugin in `quarantined` (its crash took the host down) keeps its failure and reason: it is not left over.
    /// A caller that has the records by id and the found bundles by id at hand passes them (`recordsByID`,
    /// `foundByID`): a start with a thousand plugins then builds neither map a second time.
    public static func changes(found: [PluginBundle], records: [PluginRecord], active: Set<String>,
                               quarantined: Set<String> = [], recordsByID: [String: PluginRecord]? = nil,
                               foundByID: [String: PluginBundle]? = nil) -> [Change] {
        let byID = recordsByID ?? Self.byID(records)
        var changes: [Change] = []
        let seen = foundByID ?? Dictionary(found.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for bundle in found {
            guard !active.contains(bundle.id) else { continue }
            if let problem = bundle.problem {
                // Already recorded with this problem: no write, and no second log line at every rescan of the folder.
                if let record = byID[bundle.id], record.status == .failed, record.reason == problem { continue }
                changes.append(Change(id: bundle.id, status: .failed, reason: problem, isProblem: true))
            } else if let record = byID[bundle.id], isLeftover(record), !quarantined.contains(bundle.id),
                      record.status != .failed || isBundleProblem(record.reason, of: bundle) {
                let status: PluginStatus = record.enabled ? .failed : (record.status == .missing ? .disabled : .installed)
                changes.append(Change(id: bundle.id, status: status, reason: record.enabled ? record.reason : nil, isProblem: false))
            }
        }
        for record in records where seen[record.id] == nil && !active.contains(record.id)
            && record.status != .missing && record.status != .installFailed {
            if record.status == .installing {
                // An install interrupted by a crash: never left in a transient state.
                changes.append(Change(id: record.id, status: .installFailed, reason: "install interrupted; run keel install again", isProblem: false))
            } else {
                changes.append(Change(id: record.id, status: .missing, reason: "bundle no longer in the plugin folder", isProblem: false))
            }
        }
        return changes
    }

    /// The records by id (the first of a duplicate id wins), built in one pass without intermediate pairs.
    public static func byID(_ records: [PluginRecord]) -> [String: PluginRecord] {
        var byID = [String: PluginRecord](minimumCapacity: records.count)
        for record in records where byID[record.id] == nil { byID[record.id] = record }
        return byID
    }

    /// True when a failure's reason is a problem of the bundle itself (it names the bundle's plugin.yaml first, as
    /// `ManifestError` and the scanner do), or there is none: a fixed bundle clears it. Any other failure of a plugin
    /// that is not wanted (disabled automatically after failing calls, or as a dependent of one) is the host's
    /// verdict and stays, with its reason, until `enable`.
    /// The path is compared by its end (the bundle's folder name, and plugin.yaml): the CLI and a server may name the
    /// same plugin folder by a relative and an absolute path.
    static func isBundleProblem(_ reason: String?, of bundle: PluginBundle) -> Bool {
        guard let reason else { return true }
        guard let colon = reason.firstIndex(of: ":") else { return false }
        let path = reason[..<colon]
        let name = bundle.folder.split(separator: "/").last.map(String.init) ?? bundle.folder
        for named in [name + "/" + ManifestLoader.fileName, name] where path == named || path.hasSuffix("/" + named) {
            return true
        }
        return false
    }

    /// True when a usable bundle's record is left over from before: missing, a transient install or upgrade state,
    /// or failed while not wanted. (A switch, not a list literal: this runs for every bundle at every start.)
    static func isLeftover(_ record: PluginRecord) -> Bool {
        switch record.status {
        case .missing, .installing, .installFailed, .upgrading: true
        case .failed: !record.enabled
        default: false
        }
    }
}
