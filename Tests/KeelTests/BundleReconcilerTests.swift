// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
@testable import KeelManifest
@testable import KeelState
import Testing

@Suite("the bundle reconciler, alone", .scheduled)
struct BundleReconcilerTests {
    func bundle(_ id: String, problem: String? = nil) throws -> PluginBundle {
        let yaml = "id: \(id)\nname: \(id)\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib\(id).so\ncapabilities: [routes]\n"
        let manifest = problem == nil ? try ManifestLoader().parse(Data(yaml.utf8), file: "\(id)/plugin.yaml").0 : nil
        return PluginBundle(folder: "/p/\(id)", manifestPath: "/p/\(id)/plugin.yaml", manifest: manifest, warnings: [], problem: problem)
    }

    func record(_ id: String, _ status: PluginStatus, enabled: Bool = false, reason: String? = nil) -> PluginRecord {
        PluginRecord(id: id, name: id, version: "1.0.0", bundlePath: "/p/\(id)", enabled: enabled, status: status, reason: reason,
                     changedAt: "")
    }

    @Test("each rule: unusable, back from missing, leftover transient states, gone, interrupted install; active plugins untouched")
    func rules() throws {
        let found = [try bundle("ok"), try bundle("back"), try bundle("wanted"), try bundle("broken", problem: "bad yaml"),
                     try bundle("running", problem: "rewritten badly")]
        let records = [record("ok", .installed), record("back", .missing),
                       record("wanted", .upgrading, enabled: true, reason: "it crashed"),
                       record("gone", .enabled, enabled: true), record("half", .installing), record("lost", .missing),
                       record("running", .enabled, enabled: true)]
        let changes = BundleReconciler.changes(found: found, records: records, active: ["running"])
        #expect(changes == [
            .init(id: "back", status: .disabled, reason: nil, isProblem: false),
            .init(id: "wanted", status: .failed, reason: "it crashed", isProblem: false),
            .init(id: "broken", status: .failed, reason: "bad yaml", isProblem: true),
            .init(id: "gone", status: .missing, reason: "bundle no longer in the plugin folder", isProblem: false),
            .init(id: "half", status: .installFailed, reason: "install interrupted; run keel install again", isProblem: false),
        ])
    }

    @Test("a quarantined plugin (failed, not wanted) keeps its reason; an unquarantined one is installed again")
    func quarantineKept() throws {
        let found = [try bundle("crashed"), try bundle("fixed")]
        let records = [record("crashed", .failed, reason: "crashed the host with SIGSEGV"),
                       record("fixed", .failed, reason: "/p/fixed/plugin.yaml: bad yaml")]
        #expect(BundleReconciler.changes(found: found, records: records, active: [], quarantined: ["crashed"]) == [
            .init(id: "fixed", status: .installed, reason: nil, isProblem: false),
        ])
    }

    @Test("a plugin the host disabled automatically (and its dependents) keeps its failure and reason through a rescan")
    func verdictKept() throws {
        let found = [try bundle("flaky"), try bundle("user"), try bundle("fixed"), try bundle("blank"), try bundle("relative")]
        let records = [record("flaky", .failed, reason: "disabled automatically: 20 calls in a row failed"),
                       record("user", .failed, reason: "was disabled automatically"),
                       record("fixed", .failed, reason: "/p/fixed/plugin.yaml:3: key \"version\": bad"),
                       record("blank", .failed),
                       // Recorded by a CLI that named the plugin folder relatively.
                       record("relative", .failed, reason: "plugins/relative/plugin.yaml: missing: a plugin bundle needs a plugin.yaml")]
        #expect(BundleReconciler.changes(found: found, records: records, active: []) == [
            .init(id: "fixed", status: .installed, reason: nil, isProblem: false),
            .init(id: "blank", status: .installed, reason: nil, isProblem: false),
            .init(id: "relative", status: .installed, reason: nil, isProblem: false),
        ])
    }

    @Test("an unusable bundle already recorded with the same problem changes nothing (one log line, not one per rescan)")
    func problemRecordedOnce() throws {
        let found = [try bundle("broken", problem: "bad yaml"), try bundle("worse", problem: "worse yaml")]
        let records = [record("broken", .failed, reason: "bad yaml"), record("worse", .failed, reason: "bad yaml")]
        #expect(BundleReconciler.changes(found: found, records: records, active: []) == [
            .init(id: "worse", status: .failed, reason: "worse yaml", isProblem: true),
        ])
    }
}
