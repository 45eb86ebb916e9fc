// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import KeelState
import Testing

extension PostgresBackedTests {
    /// The step that adds `plugin_signers` migrates a state an earlier keel wrote, on each engine.
    @Suite("the signer pins' migration")
    struct SignerMigrationTests {
        /// The signature record as the installer writes it (JSONEncoder, as `ExtensionStore.signatureRecord` does).
        struct Record: Codable { var library: String; var status: String }

        static func record(_ status: String) throws -> String {
            String(decoding: try JSONEncoder().encode(Record(library: "sum", status: status)), as: UTF8.self)
        }

        @Test("a plugin an earlier keel installed signed by a trusted key is pinned to that key; nothing else is lost",
              arguments: StateEngine.available)
        func migratesEarlierState(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let acme = Data(repeating: 1, count: 32).base64EncodedString(), acme2 = Data(repeating: 2, count: 32).base64EncodedString()
            // JSONEncoder's key order is not fixed from one call to the next: each record is encoded once.
            let records = try ["signed": "signed by acme", "other": "signed by acme2", "untrusted": "signed by untrusted beta (allowed by the operator)",
                                "unsigned": "unsigned (allowed by the operator)", "gone": "signed by gone"].mapValues(Self.record)
            do {
                // The state as schema 12 had it (before signer pinning): no plugin_signers table.
                let old = try engine.open(path)
                for (id, record) in records {
                    try old.discovered(id: id, name: id, version: "1.0.0", bundlePath: "/p/\(id)")
                    try old.setSignatureRecord(id, record)
                }
                try old.setSignatureRecord("orphan", try Self.record("signed by acme"))  // no plugin record
                _ = try old.trustKey(name: "acme", publicKey: acme)
                _ = try old.trustKey(name: "acme2", publicKey: acme2)
                try old.setGrants("signed", grant: ["authorize"], revoke: [])
                try old.setConfig("signed", yaml: "a: 1\n", json: #"{"a":1}"#)
                let previous = 12
                try old.withDatabase { db throws(StateError) in
                    try db.execute("DROP TABLE plugin_signers")
                    // Undone too: the steps after it that are not written to run twice (an ALTER TABLE ADD COLUMN).
                    try db.execute("ALTER TABLE commands DROP COLUMN target_host")
                    try db.execute("ALTER TABLE trusted_keys DROP COLUMN only_ids")
                    try db.execute("ALTER TABLE loads DROP COLUMN host")
                    try db.execute("ALTER TABLE audit DROP COLUMN host")
                    if engine == .sqlite {
                        try db.execute("PRAGMA user_version = \(previous)")
                    } else {
                        try db.execute("UPDATE keel_schema SET version = \(previous) WHERE component = 'state'")
                    }
                }
            }
            let store = try engine.open(path)
            #expect(try store.pinnedSigners() == ["signed": .init(name: "acme", publicKey: acme, pinnedAt: try #require(store.pinnedSigner("signed")?.pinnedAt)),
                                                   "other": .init(name: "acme2", publicKey: acme2, pinnedAt: try #require(store.pinnedSigner("other")?.pinnedAt))])
            #expect(try store.pinnedSigner("signed")?.pinnedAt.hasSuffix("Z") == true)
            // Everything else reads as before.
            #expect(try Set(store.plugins().map(\.id)) == Set(records.keys))
            for (id, record) in records { #expect(try store.signatureRecord(id) == record) }
            #expect(try store.grants("signed") == ["authorize"])
            #expect(try store.config("signed")?.json == #"{"a":1}"#)
            #expect(try store.trustedKeys() == ["acme": acme, "acme2": acme2])

            // The new table works as the store promises: a pin survives forgetting the record with data kept, and
            // goes with everything.
            try store.setPinnedSigner("unsigned", .init(name: "acme", publicKey: acme))
            try store.forgetPlugin("unsigned", everything: false)
            #expect(try store.pinnedSigner("unsigned")?.publicKey == acme)
            try store.forgetPlugin("unsigned", everything: true)
            #expect(try store.pinnedSigner("unsigned") == nil)
            #expect(try store.events(for: "unsigned").map(\.kind).contains("signer"))
        }
    }
}
