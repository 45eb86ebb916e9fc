// Keel — a microkernel plugin host. Licensed under Apache-2.0.

@testable import KeelState
import Testing

@Suite("the state store")
struct StateStoreTests {
    /// The typed settings use the keys earlier versions wrote, so a state file from before them reads the same.
    @Test("typed settings read and write the keys existing state files hold")
    func typedSettingsKeepStoredKeys() throws {
        let path = TestEnvironment.makeTemporaryDirectory("store") + "/state.db"
        do {
            // Written as an earlier keel wrote them: string keys.
            let old = try StateStore(path: path)
            try old.setSetting("quarantine.p", "sum1")
            try old.setSetting("signature.p", #"{"library":"sum1","status":"signed by k"}"#)
            try old.setSetting("live.plugins", "[]")
            try old.setSetting("admin.token.sha256", "digest")
        }
        let store = try StateStore(path: path)
        #expect(try store.quarantinedChecksum("p") == "sum1")
        #expect(try store.signatureRecord("p") == #"{"library":"sum1","status":"signed by k"}"#)
        #expect(try store.livePluginsJSON() == "[]")
        #expect(try store.adminTokenDigest() == "digest")
        #expect(try store.quarantinedChecksum("other") == nil)

        try store.setQuarantine("q", checksum: "sum2")
        try store.setSignatureRecord("q", "record")
        try store.setLivePluginsJSON("[{}]")
        try store.setAdminTokenDigest("digest2")
        #expect(try store.setting("quarantine.q") == "sum2")
        #expect(try store.setting("signature.q") == "record")
        #expect(try store.setting("live.plugins") == "[{}]")
        #expect(try store.setting("admin.token.sha256") == "digest2")

        try store.setQuarantine("q", checksum: nil)
        try store.setSignatureRecord("q", nil)
        #expect(try store.setting("quarantine.q") == nil)
        #expect(try store.setting("signature.q") == nil)
    }

    /// What `StateStoring` promises a second store must do, checked on the SQLite one through the protocol alone.
    @Test("through StateStoring: one change per call, claim and cancel exclude each other, data_version moves")
    func protocolContract() throws {
        let path = TestEnvironment.makeTemporaryDirectory("store") + "/state.db"
        let store: any StateStoring = try StateStore(path: path)
        let other: any StateStoring = try StateStore(path: path)

        try store.discovered(id: "p", name: "P", version: "1.0.0", bundlePath: "/x/p")
        try store.setStatus("p", .failed, reason: "boom")
        try store.setEnabled("p", true, status: .installed)
        #expect(try other.plugin("p")?.enabled == true)
        #expect(try other.plugin("p")?.status == .installed)
        #expect(try other.events(for: "p").map(\.kind) == ["discovered", "failed", "enable"])

        // A refused directory change leaves nothing written.
        guard case .refused = try store.setPluginTenants("p", ["nobody"]) else {
            Issue.record("an unknown tenant was accepted")
            return
        }
        #expect(try store.directory().pluginTenants["p"] == nil)

        // A commit by the other connection is seen as a new data version.
        let before = try store.dataVersion()
        let cancelled = try other.submitCommand(op: "reload", pluginID: "p", body: "{}", timeout: 60)
        #expect(try store.dataVersion() != before)
        #expect(try store.pendingCommands().map(\.seq) == [cancelled])

        // Exactly one of cancel and claim wins, in either order.
        #expect(try other.cancelCommand(cancelled))
        #expect(try !store.claimCommand(cancelled))
        let claimed = try other.submitCommand(op: "reload", pluginID: "p", body: "{}", timeout: 60)
        #expect(try store.claimCommand(claimed))
        #expect(try !other.cancelCommand(claimed))
        try store.finishCommand(claimed, failed: false, result: "ok")
        #expect(try other.command(claimed)?.state == "done")
        #expect(try other.command(cancelled)?.state == "cancelled")

        // The convenience overloads resolve on the protocol.
        try store.setConfig("p", yaml: "a: 1", json: #"{"a":1}"#)
        #expect(try other.config("p")?.json == #"{"a":1}"#)
        try store.setConfig("p", nil)
        #expect(try other.config("p") == nil)
        #expect(try store.loads(for: "p").isEmpty)
    }
}
