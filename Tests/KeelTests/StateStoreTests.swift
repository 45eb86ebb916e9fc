// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import Keel
@testable import KeelState
import KeelStatePostgres
import Synchronization
import Testing

extension PostgresBackedTests {
    /// Every test here runs on each engine of `StateEngine.available`: SQLite, and PostgreSQL when KEEL_TEST_POSTGRES
    /// is set (each test in a fresh schema).
    @Suite("the state store")
    struct StateStoreTests {
        /// Says, as a skipped test with its reason, that the PostgreSQL variants did not run.
        @Test("the state tests also run on PostgreSQL", .enabled(if: StateEngine.postgresURL != nil,
              "KEEL_TEST_POSTGRES is not set: the state tests ran on SQLite only (Scripts/postgres-test-server.sh start prints a URL)"))
        func postgresVariantsRun() throws {
            let store = try StateEngine.postgres.open(StateEngine.postgres.freshLocation())
            #expect(try store.integrityCheck() == "ok")
        }

        /// The PostgreSQL schema mirrors SQLite's step for step, so a schema version means the same on both.
        @Test("the state file and its -wal and -shm are readable by their owner only; an older file readable by others is narrowed")
        func ownerOnly() throws {
            let dir = TestEnvironment.makeTemporaryDirectory("state-mode")
            func mode(_ path: String) -> mode_t? {
                var st = stat()
                return stat(path, &st) == 0 ? st.st_mode & 0o777 : nil
            }
            let old = umask(0o022)
            defer { umask(old) }
            let fresh = try StateStore(path: dir + "/fresh.db")
            try fresh.setLivePluginsJSON("[]")
            for suffix in ["", "-wal", "-shm"] { #expect(mode(dir + "/fresh.db" + suffix) == 0o600, "fresh.db\(suffix)") }
            // A state made before (0644 by the umask), its log left behind by a host that stopped.
            for suffix in ["", "-wal", "-shm"] {
                if suffix.isEmpty {
                    _ = try StateStore(path: dir + "/old.db")
                }
                let path = dir + "/old.db" + suffix
                if FileManager.default.fileExists(atPath: path) { #expect(chmod(path, 0o644) == 0) }
            }
            #expect(mode(dir + "/old.db") == 0o644)
            let reopened = try StateStore(path: dir + "/old.db")
            try reopened.setLivePluginsJSON("[]")
            for suffix in ["", "-wal", "-shm"] where mode(dir + "/old.db" + suffix) != nil {
                #expect(mode(dir + "/old.db" + suffix) == 0o600, "old.db\(suffix)")
            }
            // The server's lock (its pid, address and plugin folder) and the activation mark (the plugin being
            // activated) beside it likewise: they were 0644 until 2026-12-07 (a security review).
            do {
                let lock = try ServerLock(stateFile: dir + "/fresh.db", info: "http://127.0.0.1:1")
                _ = lock
                ActivationMark(path: dir + "/fresh.db.activating").set("hello 1 00")
            }
            #expect(mode(dir + "/fresh.db.lock") == 0o600 && mode(dir + "/fresh.db.activating") == 0o600)
            for suffix in [".lock", ".activating"] {
                FileManager.default.createFile(atPath: dir + "/old.db" + suffix, contents: Data())
                #expect(chmod(dir + "/old.db" + suffix, 0o644) == 0)
            }
            do {
                let lock = try ServerLock(stateFile: dir + "/old.db", info: "http://127.0.0.1:1")
                _ = lock
                ActivationMark(path: dir + "/old.db.activating").set("hello 1 00")
            }
            #expect(mode(dir + "/old.db.lock") == 0o600 && mode(dir + "/old.db.activating") == 0o600)
        }

        @Test("a state file (or its log) that another user owns in a folder others may write is refused, not opened",
              .enabled(if: geteuid() == 0, "gives files to another user (chown): needs root, as CI runs"))
        func plantedStateRefused() throws {
            let shared = TestEnvironment.makeTemporaryDirectory("state-planted")
            #expect(chmod(shared, 0o1777) == 0)
            let other: uid_t = 65534
            // Planted by another user: the state itself, then only its write-ahead log beside a state of ours.
            let planted = try StateStore(path: shared + "/planted.db")
            try planted.setLivePluginsJSON("[]")
            _ = planted
            #expect(chown(shared + "/planted.db", other, other) == 0)
            var refused = ""
            do { _ = try StateStore(path: shared + "/planted.db") } catch { refused = error.description }
            #expect(refused.contains("planted.db belongs to uid 65534, not to this user") && refused.contains("another user could have written it"),
                    "\(refused)")
            let ours = try StateStore(path: shared + "/ours.db")
            try ours.setLivePluginsJSON("[]")
            FileManager.default.createFile(atPath: shared + "/ours.db-wal", contents: Data("x".utf8))
            #expect(chown(shared + "/ours.db-wal", other, other) == 0)
            refused = ""
            do { _ = try StateStore(path: shared + "/ours.db") } catch { refused = error.description }
            #expect(refused.contains("ours.db-wal belongs to uid 65534"), "\(refused)")
            // A service account's state in a folder only it writes: root may open it (`sudo keel ...`); others may not.
            if geteuid() == 0 {
                let service = TestEnvironment.makeTemporaryDirectory("state-service")
                let store = try StateStore(path: service + "/state.db")
                try store.setLivePluginsJSON("[]")
                for suffix in ["", "-wal", "-shm"] { _ = chown(service + "/state.db" + suffix, other, other) }
                #expect(chmod(service, 0o755) == 0)
                _ = try StateStore(path: service + "/state.db")
            }
        }

        @Test("a state file its user may read but not write (mode 0400) is refused by a kernel in one line, not at the first write with SQLite's words; reads still work",
              .enabled(if: geteuid() == 0, "runs keel as another user (runuser): needs root, as CI runs"))
        func readOnlyStateRefused() throws {
            let folder = TestEnvironment.makeTemporaryDirectory("state-readonly")
            #expect(chown(folder, 65534, 65534) == 0)
            let keel = TestEnvironment.binPath + "/keel", state = folder + "/s.db"
            let made = try TestEnvironment.run("/usr/sbin/runuser", ["-u", "nobody", "--", keel, "tenants", "create", "acme", "--state", state])
            #expect(made.status == 0, "\(made.stderr)")
            #expect(chmod(state, 0o400) == 0)
            let refused = try TestEnvironment.run("/usr/sbin/runuser", ["-u", "nobody", "--", keel, "tenants", "create", "globex", "--state", state])
            #expect(refused.status == 1 && refused.stderr == "keel: error: \(state): cannot be written: permission denied (the state and the write-ahead log SQLite keeps beside it must be writable)\n",
                    "\(refused.stderr)")
            // Reading it still works (a monitoring user, a backup).
            let read = try TestEnvironment.run("/usr/sbin/runuser", ["-u", "nobody", "--", keel, "tenants", "list", "--state", state])
            #expect(read.status == 0 && read.stdout.contains("acme"), "\(read.stdout)\(read.stderr)")
            // Made writable again, it is written again: the log and shared memory the read left (with the file's
            // read-only mode, as SQLite makes them) are made writable too.
            #expect(chmod(state, 0o600) == 0)
            let again = try TestEnvironment.run("/usr/sbin/runuser", ["-u", "nobody", "--", keel, "tenants", "create", "globex", "--state", state])
            #expect(again.status == 0, "\(again.stderr)")
        }

        @Test("the PostgreSQL schema has a step for every SQLite migration")
        func schemasKeepPace() {
            #expect(PostgresStore.schemaVersion == StateStore.schemaVersion)
        }

        /// `Timestamp` is written by hand: it must give exactly what the ISO 8601 format style gives.
        @Test("record times are ISO 8601 in UTC with milliseconds, as the format style writes them")
        func timestampsMatchFormatStyle() throws {
            for (seconds, millis) in [(0, 0), (951_782_400, 500), (1_796_083_199, 125), (1_764_460_800, 250), (4_102_444_799, 875)] {
                let date = Date(timeIntervalSince1970: Double(seconds) + Double(millis) / 1000)
                #expect(Timestamp.utc(seconds: seconds, milliseconds: millis) == StateStore.timestamp.format(date))
            }
            let now = StateStore.now()
            let parsed = try StateStore.timestamp.parse(now)
            #expect(abs(parsed.timeIntervalSinceNow) < 60 && now.count == 24 && now.hasSuffix("Z"))
        }

        /// The typed settings use the keys earlier versions wrote, so a state file from before them reads the same.
        @Test("typed settings read and write the keys existing state files hold", arguments: StateEngine.available)
        func typedSettingsKeepStoredKeys(engine: StateEngine) throws {
            let path = engine.freshLocation()
            do {
                // Written as an earlier keel wrote them: string keys.
                let old = try engine.open(path)
                try old.setSetting("quarantine.p", "sum1")
                try old.setSetting("signature.p", #"{"library":"sum1","status":"signed by k"}"#)
                try old.setSetting("live.plugins", "[]")
                try old.setSetting("admin.token.sha256", "digest")
            }
            let store = try engine.open(path)
            #expect(try store.quarantinedChecksum("p") == "sum1")
            #expect(try store.signatureRecord("p") == #"{"library":"sum1","status":"signed by k"}"#)
            #expect(try store.livePluginsJSON() == "[]")
            #expect(try store.adminTokenDigest() == "digest")
            #expect(try store.quarantinedChecksum("other") == nil)
            #expect(try store.quarantinedChecksums() == ["p": "sum1"])

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
        @Test("through StateStoring: one change per call, claim and cancel exclude each other, data_version moves",
              arguments: StateEngine.available)
        func protocolContract(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let store: any StateStoring = try engine.open(path)
            let other: any StateStoring = try engine.open(path)

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

            // A command's body (a configuration's keys) goes once it ran, was cancelled or missed its deadline; its
            // outcome stays for the client.
            let secret = #"{"config":{"id":"p","yaml":"api-key: s3cr3t"}}"#
            let ran = try other.submitCommand(op: "config", pluginID: "p", body: secret, timeout: 60)
            #expect(try store.command(ran)?.body == secret, "kept while pending")
            #expect(try store.claimCommand(ran))
            #expect(try store.command(ran)?.body == secret, "kept while running")
            try store.finishCommand(ran, failed: true, result: "bad key")
            let dropped = try other.submitCommand(op: "config", pluginID: "p", body: secret, timeout: 60)
            #expect(try other.cancelCommand(dropped))
            let late = try other.submitCommand(op: "config", pluginID: "p", body: secret, timeout: -1)
            #expect(try !store.claimCommand(late), "its deadline passed")
            for (seq, state) in [(ran, "failed"), (dropped, "cancelled"), (late, "cancelled")] {
                let row = try other.command(seq)
                #expect(row?.state == state && row?.body == "", "\(seq): \(String(describing: row))")
            }
            #expect(try other.command(ran)?.result == "bad key")

            // The convenience overloads resolve on the protocol.
            try store.setConfig("p", yaml: "a: 1", json: #"{"a":1}"#)
            #expect(try other.config("p")?.json == #"{"a":1}"#)
            try store.setConfig("p", nil)
            #expect(try other.config("p") == nil)
            #expect(try store.loads(for: "p").isEmpty)
        }

        @Test("a command queued for one host of a shared state is listed to that host only; one for any server, to every host",
              arguments: StateEngine.available)
        func targetedCommands(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let hostA = try engine.open(path), hostB = try engine.open(path), cli = try engine.open(path), single = try engine.open(path)
            hostA.observe(as: "machine-101")
            hostB.observe(as: "machine-202")
            try cli.discovered(id: "p", name: "P", version: "1.0.0", bundlePath: "/x/p")
            let forA = try cli.submitCommand(op: "reload", pluginID: "p", body: "{}", timeout: 60, target: "machine-101")
            let forAny = try cli.submitCommand(op: "reload", pluginID: "p", body: "{}", timeout: 60)
            #expect(try hostA.pendingCommands().map(\.seq) == [forA, forAny])
            #expect(try hostB.pendingCommands().map(\.seq) == [forAny], "another host's command is not listed")
            // A store that observes for no host: a state file's one server takes all; on a shared state (`keel dev
            // --serve`, an embedder's server) only those for any server.
            #expect(try single.pendingCommands().map(\.seq) == (single.isShared ? [forAny] : [forA, forAny]))
            #expect(try hostB.claimCommand(forA) == false && cli.command(forA)?.state == "pending", "another host cannot claim it, nor cancel it")
            #expect(try cli.command(forA)?.targetHost == "machine-101" && cli.command(forAny)?.targetHost == nil)
            #expect(try hostA.claimCommand(forA))
            #expect(try hostB.pendingCommands().map(\.seq) == [forAny])
        }

        /// `batch` commits its body's writes together, and none of them when the body throws.
        @Test("every commit is reported to the commit observer, a write alone or a transaction, and reads are not",
              arguments: StateEngine.available)
        func commitsObserved(engine: StateEngine) throws {
            let store = try engine.open(engine.freshLocation())
            let seen = Mutex<[Duration]>([])
            store.observeCommits { duration in seen.withLock { $0.append(duration) } }
            try store.discovered(id: "p", name: "P", version: "1.0.0", bundlePath: "/x/p")
            let afterOne = seen.withLock { $0.count }
            #expect(afterOne >= 1, "a write outside a transaction commits")
            _ = try store.plugins()
            #expect(seen.withLock { $0.count } == afterOne, "a read commits nothing")
            try store.transaction {
                try store.setStatus("p", .failed, reason: "boom")
                try store.setStatus("p", .disabled, reason: nil)
            }
            #expect(seen.withLock { $0.count } == afterOne + 1, "a transaction commits once")
            #expect(seen.withLock { $0.allSatisfy { $0 >= .zero } })
            store.observeCommits(nil)
            try store.setStatus("p", .failed, reason: "again")
            #expect(seen.withLock { $0.count } == afterOne + 1, "no observer, no calls")
        }

        @Test("batch is atomic: all of its writes or none", arguments: StateEngine.available)
        func batchIsAtomic(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let store = try engine.open(path)
            let other = try engine.open(path)
            struct Stop: Error {}
            #expect(throws: Stop.self) {
                try store.batch {
                    try store.discovered(id: "a", name: "A", version: "1.0.0", bundlePath: "/x/a")
                    try store.setEnabled("a", true, status: .enabled)
                    throw Stop()
                }
            }
            #expect(try other.plugins().isEmpty)
            #expect(try store.events(for: "a").isEmpty)
            try store.batch {
                try store.discovered(id: "a", name: "A", version: "1.0.0", bundlePath: "/x/a")
                try store.setEnabled("a", true, status: .enabled)
            }
            #expect(try other.plugin("a")?.enabled == true)
            #expect(try other.events(for: "a").map(\.kind) == ["discovered", "enable"])
        }

        /// `transaction` commits its body's writes (made through the store's own methods) together, none when the
        /// body throws, and holds the store meanwhile: another thread's write waits instead of joining it.
        @Test("transaction is atomic and holds the store: another thread's write waits for its end",
              arguments: StateEngine.available)
        func transactionHoldsTheStore(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let store = try engine.open(path)
            let other = try engine.open(path)
            struct Stop: Error {}
            #expect(throws: Stop.self) {
                try store.transaction {
                    try store.setEnabled("a", true, status: .enabled)
                    throw Stop()
                }
            }
            #expect(try other.plugins().isEmpty)
            let done = DispatchSemaphore(value: 0)
            try store.transaction {
                try store.setEnabled("a", true, status: .enabled)
                Thread.detachNewThread {
                    try? store.setEnabled("b", true, status: .installed)
                    done.signal()
                }
                // The other thread's write is held up (with `batch` it would have joined this transaction).
                #expect(done.wait(timeout: .now() + 0.2) == .timedOut)
                #expect(try other.plugin("b") == nil)
                #expect(try other.plugin("a") == nil)
                try store.recordAudit(StateStore.AuditEntry(actor: "cli", command: "enable", target: "a", outcome: "ok"))
            }
            done.wait()
            #expect(try other.plugin("a")?.enabled == true)
            #expect(try other.plugin("b")?.enabled == true)
            #expect(try other.audit(since: nil, limit: 10).map(\.target) == ["a"])
        }

        /// `settling`: each commit inside is seen by other connections at once and is on disk once it returns; only
        /// the settling thread's commits skip the wait (SQLite: synchronous NORMAL inside, FULL again after).
        @Test("settling: commits are seen at once, and the connection waits for the disk again after it",
              arguments: StateEngine.available)
        func settlingCommits(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let store = try engine.open(path)
            let other = try engine.open(path)
            func synchronous() throws -> Int64? {
                try store.withDatabase { db throws(StateError) in try db.query("PRAGMA synchronous").first?["synchronous"]?.int }
            }
            try store.settling { () throws in
                try store.setEnabled("a", true, status: .installed)
                #expect(try other.plugin("a")?.enabled == true)
                try store.setStatus("a", .enabled)
                if engine == .sqlite { #expect(try synchronous() == 1) }
            }
            if engine == .sqlite { #expect(try synchronous() == 2) }
            let reopened = try engine.open(path)
            #expect(try reopened.plugin("a")?.status == .enabled)
            #expect(try reopened.events(for: "a").map(\.kind) == ["enable", "enabled"])
            try store.setLiveView(plugins: "[3]", services: "[4]")
            #expect(try reopened.livePluginsJSON() == "[3]")
            #expect(try reopened.liveServicesJSON() == "[4]")
        }

        /// The live view is kept a plugin per row: a command rewrites the rows of what it changed; a reader gets the
        /// parts in the plugins' order as one array.
        @Test("the live view: all parts, then only the changed ones; a reader sees one array in id order", arguments: StateEngine.available)
        func liveViewRows(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let store = try engine.open(path), other = try engine.open(path)
            #expect(try other.livePluginsJSON() == nil)
            try store.updateLiveView(.init(replacesAll: true, parts: [("b", #"{"id":"b"}"#), ("a", #"{"id":"a"}"#), ("c", "{}")],
                                           removed: [], services: "[1]"))
            #expect(try other.livePluginsJSON() == #"[{"id":"a"},{"id":"b"},{}]"#)
            #expect(try other.liveServicesJSON() == "[1]")
            try store.updateLiveView(.init(replacesAll: false, parts: [("a", #"{"id":"a","x":1}"#), ("d", #"{"id":"d"}"#)],
                                           removed: ["c"], services: nil))
            #expect(try other.livePluginsJSON() == #"[{"id":"a","x":1},{"id":"b"},{"id":"d"}]"#)
            #expect(try other.liveServicesJSON() == "[1]")
            // A full replacement drops what it does not name.
            try store.updateLiveView(.init(replacesAll: true, parts: [("z", "{}")], removed: [], services: "[]"))
            #expect(try other.livePluginsJSON() == "[{}]")
            #expect(try other.liveServicesJSON() == "[]")
            // A whole text (as earlier versions wrote it) reads as it is.
            try store.setLivePluginsJSON("[7]")
            #expect(try other.livePluginsJSON() == "[7]")
        }

        /// A command stores its live view in the transaction of its audit row: a write of the view that fails
        /// part-way (here a trigger refuses one row, after every old row was deleted) leaves the view as it was and
        /// keeps the command's other records.
        @Test("a live-view write that fails part-way inside a transaction leaves the view and the other writes", arguments: StateEngine.available)
        func liveViewWriteIsAtomic(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let store = try engine.open(path), other = try engine.open(path)
            try store.updateLiveView(.init(replacesAll: true, parts: [("a", #"{"id":"a"}"#)], removed: [], services: "[]"))
            try store.withDatabase { db throws(StateError) in
                switch engine {
                case .sqlite:
                    try db.execute("CREATE TRIGGER refuse_bad BEFORE INSERT ON live_plugins WHEN NEW.id = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END;")
                case .postgres:
                    try db.query("CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN IF NEW.id = ''bad'' THEN RAISE EXCEPTION ''refused''; END IF; RETURN NEW; END'", [])
                    try db.query("CREATE TRIGGER refuse_bad BEFORE INSERT ON live_plugins FOR EACH ROW EXECUTE FUNCTION refuse_bad()", [])
                }
            }
            var failed = false
            try store.transaction {
                try store.setEnabled("p", true, status: .installed)
                do {
                    try store.updateLiveView(.init(replacesAll: true, parts: [("b", "{}"), ("bad", "{}")], removed: [], services: "[1]"))
                } catch { failed = true }
                try store.setStatus("p", .enabled)
            }
            #expect(failed)
            #expect(try other.livePluginsJSON() == #"[{"id":"a"}]"#)
            #expect(try other.liveServicesJSON() == "[]")
            #expect(try other.plugin("p")?.status == .enabled && other.plugin("p")?.enabled == true)
        }

        /// Each activation reads the plugin's highest generation: through an index, so that it does not visit every
        /// load the plugin ever had (it did, and each enable or reload slowed with the history).
        @Test("the highest generation is read through an index, not the plugin's whole history", arguments: StateEngine.available)
        func lastGenerationUsesAnIndex(engine: StateEngine) throws {
            let store = try engine.open(engine.freshLocation())
            for g in 1...200 { try store.recordLoad(g % 2 == 0 ? "p" : "q", .init(generation: g, version: "1.0.0", checksum: "c", outcome: "activated")) }
            #expect(try store.lastGeneration("p") == 200 && store.lastGeneration("q") == 199)
            let uses = try store.withDatabase { db throws(StateError) in
                switch engine {
                case .sqlite:
                    try db.query("EXPLAIN QUERY PLAN SELECT MAX(generation) AS g FROM loads WHERE plugin_id = ?", [.text("p")])
                        .compactMap { $0["detail"]?.text }.joined(separator: "; ")
                case .postgres:
                    try db.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'loads_generation' AND schemaname = current_schema()", [])
                        .compactMap { $0["indexdef"]?.text }.joined(separator: "; ")
                }
            }
            #expect(uses.contains("loads_generation"), "\(uses)")
            if engine == .sqlite { #expect(!uses.contains("SCAN"), "\(uses)") }
        }

        /// Every activation is a row of the load history, a lazy plugin's wake too: the history keeps each plugin's last
        /// `loadHistoryGenerations` generations, so the state file does not grow with every wake.
        @Test("the load history keeps each plugin's last 1,000 generations, retirements with them; the highest stays", arguments: StateEngine.available)
        func loadHistoryIsBounded(engine: StateEngine) throws {
            let store = try engine.open(engine.freshLocation())
            let keep = StateStore.loadHistoryGenerations
            try store.recordLoad("other", .init(generation: 1, version: "1.0.0", checksum: "c", outcome: "activated"))
            for g in 1...(keep + 205) {
                try store.recordLoad("p", .init(generation: g, version: "1.0.0", checksum: "c", outcome: "activated"))
                // The generation before is retired once this one serves, as a reload or a lazy idle does.
                if g > 1 { try store.recordLoad("p", .init(generation: g - 1, version: "1.0.0", checksum: "c", outcome: "retired")) }
            }
            let kept = try store.loads(for: "p", limit: 10 * keep)
            #expect(Set(kept.map(\.generation)) == Set(206...(keep + 205)), "\(kept.first.map { "\($0)" } ?? "none")")
            #expect(kept.count == 2 * keep - 1)
            #expect(try store.lastGeneration("p") == keep + 205)
            #expect(try store.lastGenerations() == ["p": keep + 205, "other": 1])
            #expect(try store.loads(for: "other", limit: 10).map(\.generation) == [1])
        }

        @Test("the plugins' histories keep the last 100,000 events in all (up to 255 more), the newest whole", arguments: StateEngine.available)
        func eventsAreBounded(engine: StateEngine) throws {
            let store = try engine.open(engine.freshLocation())
            let capacity = StateStore.eventCapacity
            // A long-running host's worth of history, written at once.
            try store.locked { db throws(StateError) in
                try db.query("""
                    WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?)
                    INSERT INTO events (at, plugin_id, kind, detail) SELECT 'then', 'old', 'enabled', '' FROM n
                    """, [.int(Int64(capacity + 300))])
            }
            for i in 0..<300 { try store.setStatus("p", i % 2 == 0 ? .enabled : .disabled, reason: nil) }
            let count = try store.locked { db throws(StateError) in try db.query("SELECT COUNT(*) AS n FROM events", []).first?["n"]?.int ?? 0 }
            #expect(count >= Int64(capacity) && count < Int64(capacity + 256), "\(count) rows")
            #expect(try store.events(for: "p").count == 300)
        }

        @Test("a command finished over an hour ago goes when the next is queued; a recent one stays", arguments: StateEngine.available)
        func finishedCommandsGo(engine: StateEngine) throws {
            let store = try engine.open(engine.freshLocation())
            let old = try store.submitCommand(op: "enable", pluginID: "p", body: "{}", timeout: 10)
            let recent = try store.submitCommand(op: "enable", pluginID: "p", body: "{}", timeout: 10)
            for seq in [old, recent] {
                #expect(try store.claimCommand(seq))
                try store.finishCommand(seq, failed: false, result: String(repeating: "r", count: 1000))
            }
            try store.locked { db throws(StateError) in
                try db.query("UPDATE commands SET done_at = ? WHERE seq = ?",
                             [.text(StateStore.timestamp.format(Date().addingTimeInterval(-7200))), .int(old)])
            }
            let next = try store.submitCommand(op: "disable", pluginID: "p", body: "{}", timeout: 10)
            #expect(try store.command(old) == nil)
            #expect(try store.command(recent)?.state == "done")
            #expect(try store.pendingCommands().map(\.seq) == [next])
        }

        @Test("hosts silent for a day are forgotten with their observations (a killed host leaves its row)",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set"))
        func silentHostsGo() throws {
            let store = try StateEngine.postgres.open(StateEngine.postgres.freshLocation())
            for id in ["gone", "alive"] {
                try store.heartbeat(.init(id: id, address: "", version: "1", startedAt: "then", plugins: ["p": 1]))
            }
            try store.locked { db throws(StateError) in
                try db.query("UPDATE hosts SET heartbeat = ? WHERE id = 'gone'",
                             [.text(StateStore.timestamp.format(Date().addingTimeInterval(-2 * 86_400)))])
            }
            try store.forgetHosts(silentFor: 86_400)
            #expect(try store.hosts().map(\.id) == ["alive"])
        }

        /// Every kind of record reads back as written, with the same ordering and refusals on both engines.
        @Test("every operation reads back what it wrote", arguments: StateEngine.available)
        func operationsRoundTrip(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let store = try engine.open(path)
            let other = try engine.open(path)
            // Loads: oldest first, the last `limit`; generations; probes replace.
            for g in 1...3 { try store.recordLoad("p", .init(generation: g, version: "1.0.\(g)", checksum: "c\(g)", outcome: "activated")) }
            #expect(try other.loads(for: "p", limit: 2).map(\.generation) == [2, 3])
            #expect(try other.lastGeneration("p") == 3)
            #expect(try other.lastGeneration("none") == 0)
            // A retired generation is recorded after its successor: the highest number counts, not the newest row.
            try store.recordLoad("p", .init(generation: 2, version: "1.0.2", checksum: "c2", outcome: "retired"))
            #expect(try other.lastGeneration("p") == 3)
            try store.recordProbePassed("c1", detail: "first")
            try store.recordProbePassed("c1", detail: "again")
            #expect(try other.probePassed("c1"))
            #expect(try !other.probePassed("c2"))
            // Grants: a grant given twice is one grant.
            try store.setGrants("p", grant: ["authenticate", "authenticate", "routes"], revoke: [])
            try store.setGrants("p", grant: [], revoke: ["routes"])
            #expect(try other.grants("p") == ["authenticate"])
            // Directory: refusals write nothing; members and permissions twice are once.
            guard case .ok = try store.createTenant("acme"), case .ok = try store.createRole("viewer") else {
                Issue.record("creating a tenant or a role was refused")
                return
            }
            guard case .refused = try store.createTenant("acme"), case .refused = try store.createTenant("Bad Name") else {
                Issue.record("a duplicate or bad tenant name was accepted")
                return
            }
            _ = try store.setRolePermission("viewer", "p:read", granted: true)
            _ = try store.setRolePermission("viewer", "p:read", granted: true)
            _ = try store.setMember(tenant: "acme", principal: "ann", role: "viewer", member: true)
            _ = try store.setMember(tenant: "acme", principal: "ann", role: "viewer", member: true)
            _ = try store.setPluginTenants("p", ["acme"])
            let d = try other.directory()
            #expect(d.tenants == ["acme", "default"])
            #expect(d.roles == ["admin", "viewer"])
            #expect(d.rolePermissions["viewer"] == ["p:read"])
            #expect(d.members["acme"]?["ann"] == ["viewer"])
            #expect(d.pluginTenants["p"] == ["acme"])
            guard case .refused = try store.deleteTenant("acme", cascade: false), case .ok = try store.deleteTenant("acme", cascade: true) else {
                Issue.record("deleting a tenant in use was not refused, or with --cascade was refused")
                return
            }
            #expect(try other.directory().pluginTenants["p"] == nil)
            // Repositories and keys: by priority then name.
            _ = try store.addRepository(.init(name: "b", location: "/b", priority: 1))
            _ = try store.addRepository(.init(name: "a", location: "/a", priority: 1))
            _ = try store.addRepository(.init(name: "z", location: "/z", priority: 9))
            guard case .refused = try store.addRepository(.init(name: "a", location: "/a2", priority: 0)) else {
                Issue.record("a duplicate repository was accepted")
                return
            }
            #expect(try other.repositories().map(\.name) == ["z", "a", "b"])
            // A name keeps its key, on every store (two hosts racing to trust one name: the second is refused).
            _ = try store.trustKey(name: "k", publicKey: "one")
            guard case .refused = try other.trustKey(name: "k", publicKey: "two") else {
                Issue.record("a trusted name's key was replaced")
                return
            }
            guard case .ok = try other.trustKey(name: "k", publicKey: "one") else { Issue.record("the same key again"); return }
            #expect(try other.trustedKeys() == ["k": "one"])
            // Configuration replaces; service selections replace and forget, with history on both plugins.
            try store.setConfig("p", yaml: "a: 1", json: "{}")
            try store.setConfig("p", yaml: "a: 2", json: #"{"a":2}"#)
            #expect(try other.config("p")?.yaml == "a: 2")
            try store.setServiceSelection(interface: "i/1", tenant: "", plugin: "p")
            try store.setServiceSelection(interface: "i/1", tenant: "", plugin: "q")
            #expect(try other.serviceSelections() == [.init(interface: "i/1", tenant: "", plugin: "q")])
            #expect(try other.events(for: "p").map(\.kind).suffix(2) == ["service-selected", "service-unselected"])
            try store.setServiceSelection(interface: "i/1", tenant: "", plugin: nil)
            #expect(try other.serviceSelections().isEmpty)
            // The proxy secret is made once and kept.
            let secret = try store.proxySecret()
            #expect(try other.proxySecret() == secret)
            // Forgetting a plugin with everything removes its grants, tenants and configuration, and records it.
            try store.setEnabled("p", true, status: .enabled)
            try store.forgetPlugin("p", everything: true)
            #expect(try other.plugin("p") == nil)
            #expect(try other.grants("p").isEmpty)
            #expect(try other.config("p") == nil)
            #expect(try other.events(for: "p").last?.kind == "uninstalled")
        }

        /// Before, every host wrote its status into the one shared row: a host that failed a plugin recorded it
        /// `failed` for all, and the others stopped trying it; the hosts list could not say which host failed.
        @Test("each host records its own status, reason and generation; an enable is tried again by every host",
              arguments: StateEngine.available)
        func perHostObservations(engine: StateEngine) throws {
            let path = engine.freshLocation()
            let a = try engine.open(path), b = try engine.open(path), cli = try engine.open(path)
            a.observe(as: "host-a")
            b.observe(as: "host-b")
            try cli.discovered(id: "p", name: "P", version: "1.0.0", bundlePath: "/x/p")
            try a.setEnabled("p", true, status: .installed)
            #expect(try cli.plugin("p")?.status == .enabled && cli.plugin("p")?.enabled == true)
            try a.setStatus("p", .enabled)
            try a.recordLoad("p", .init(generation: 3, version: "1.0.0", checksum: "c", outcome: "activated"))
            try b.setStatus("p", .failed, reason: "ABI 2.0, this host supports 1.0")
            // Each reads its own status; the shared row and a store of no host are untouched by the observations.
            #expect(try a.plugin("p")?.status == .enabled)
            #expect(try b.plugin("p")?.status == .failed && b.plugins().first?.reason == "ABI 2.0, this host supports 1.0")
            #expect(try cli.plugin("p")?.status == .enabled)
            let seen = try cli.observations()
            #expect(seen["host-a"]?["p"] == .init(status: "enabled", reason: nil, generation: 3, changedAt: seen["host-a"]?["p"]?.changedAt ?? ""))
            #expect(seen["host-b"]?["p"]?.status == "failed" && seen["host-b"]?["p"]?.reason == "ABI 2.0, this host supports 1.0")
            // An enable through any host is a new desired state: every host's failure of it is forgotten.
            try a.setEnabled("p", true, status: .enabled)
            #expect(try b.plugin("p")?.status == .enabled)
            #expect(try cli.observations()["host-b"]?["p"] == nil)
            // A disable on one host is that host's observation and the shared wish.
            try b.setEnabled("p", false, status: .disabled)
            #expect(try cli.plugin("p")?.enabled == false && cli.plugin("p")?.status == .disabled)
            #expect(try a.plugin("p")?.status == .enabled)
            try cli.forgetPlugin("p", everything: false)
            #expect(try cli.observations().isEmpty)
        }
    }
}
