// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelState
import Synchronization
import Testing

/// The audit trail (KeelState/Audit.swift, Kernel+Audit.swift) and the reasons for denials (issue 21).
@Suite("audit trail", .serialized, .scheduled)
struct AuditTests {
    static let secret = "s3cr3t-value-that-must-not-leak"

    @Test("every executed command is a row: who, from where, what, outcome; a configuration's values are in no row and no log line")
    func kernelRows() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.execute(.enable(id: "hello", tenant: nil), actor: "cli", principal: "alice", origin: "local")
        try await kernel.execute(.config(id: "hello", yaml: "api_key: \(Self.secret)\n"), actor: "admin-api", principal: "admin",
                                 origin: "127.0.0.1")
        // Refused configurations whose error text would quote the value: bad YAML, a value of the wrong kind.
        let refused = await #expect(throws: KernelError.self) {
            try await kernel.execute(.config(id: "hello", yaml: "api_key: [\(Self.secret)\n"), actor: "console")
        }
        // The caller's error names the line and the problem (it used to quote the YAML library's dump of the value,
        // and the log line carried that very text).
        #expect(refused?.reason.contains("configuration of hello:1: not valid YAML") == true, "\(String(describing: refused))")
        await #expect(throws: KernelError.self) {
            try await kernel.execute(.config(id: "hello", yaml: "api_key: \(Self.secret)\nother: \(Self.secret)\n"), actor: "console")
        }
        await #expect(throws: KernelError.self) { try await kernel.execute(.disable(id: "nosuch", tenant: nil, cascade: false)) }
        // A refusal whose reason names only names keeps it as the row's detail ("directory" alone says little).
        await #expect(throws: KernelError.self) { try await kernel.execute(.deleteTenant(name: "nowhere", cascade: false), actor: "cli") }
        // The configuration works (the plugin got the key) ...
        #expect(get(kernel, "/ext/hello/greet/ada", headers: [(name: "authorization", value: "Bearer \(Self.secret)")])?.1 == "hello, ada (as demo)\n")
        await kernel.shutdown()

        let rows = try kernel.auditTrail()
        let summary = rows.map { "\($0.actor) \($0.principal ?? "-") \($0.origin ?? "-") \($0.command) \($0.target) \($0.outcome)" }
        #expect(summary == [
            "cli alice local enable hello ok",
            "admin-api admin 127.0.0.1 config hello ok",
            "console - - config hello bad-config",
            "console - - config hello bad-config",
            "embedder - - disable nosuch unknown-plugin",
            "cli - - delete-tenant nowhere not-found",
        ], "\(summary)")
        #expect(rows.last?.detail?.contains("nowhere") == true, "\(String(describing: rows.last?.detail))")
        #expect(rows.dropLast().allSatisfy { $0.detail == nil }, "\(rows.map(\.detail))")
        #expect(rows.allSatisfy { !$0.at.isEmpty } && rows.map(\.seq) == rows.map(\.seq).sorted())
        // ... and yet the secret is nowhere but in the configuration itself.
        let encoded = String(decoding: try JSONEncoder().encode(rows), as: UTF8.self)
        #expect(!encoded.contains(Self.secret))
        let logged = f.log.lines.joined(separator: "\n")
        #expect(!logged.contains(Self.secret), "\(logged)")
        #expect(logged.contains("console: config hello: failed (bad-config)"), "\(logged)")
    }

    /// Enable and disable write their records and the audit row in one go at the end (Kernel.execute): when
    /// execute returns, another connection sees all of it, in order, and the connection waits for the disk again.
    @Test("enable and disable: the state, the load history and the audit row are all stored when execute returns")
    func commandRecordsStoredTogether() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let kernel = try f.kernel()
        await kernel.start()
        let other = try StateStore(path: f.state)
        try await kernel.execute(.enable(id: "hello", tenant: nil), actor: "admin-api", principal: "admin")
        #expect(try other.plugin("hello")?.status == .enabled)
        #expect(try other.plugin("hello")?.enabled == true)
        #expect(try other.loads(for: "hello").map(\.outcome) == ["activated"])
        #expect(try other.audit(since: nil, limit: 10).map { "\($0.command) \($0.outcome)" } == ["enable ok"])
        try await kernel.execute(.disable(id: "hello", tenant: nil, cascade: false), actor: "admin-api", principal: "admin")
        await #expect(throws: KernelError.self) { try await kernel.execute(.enable(id: "nosuch", tenant: nil)) }
        #expect(try other.plugin("hello")?.status == .disabled)
        #expect(try other.plugin("hello")?.enabled == false)
        #expect(try other.loads(for: "hello").map(\.outcome) == ["activated", "deactivated"])
        #expect(try other.events(for: "hello").map(\.kind).suffix(3) == ["enable", "enabled", "disable"])
        #expect(try other.audit(since: nil, limit: 10).map { "\($0.command) \($0.outcome)" }
                == ["enable ok", "disable ok", "enable unknown-plugin"])
        let mode = try kernel.state.withDatabase { db throws(StateError) in try db.query("PRAGMA synchronous").first?["synchronous"]?.int }
        #expect(mode == 2)
        await kernel.shutdown()
    }

    /// An enable or a disable is two commits, and one wait for the disk: the wish before the plugin's code runs,
    /// then the records written after it, the audit row and (while a server keeps it) the live view, together. It
    /// used to be four and three, and the live view a commit of its own after a hop off the kernel's thread and back.
    @Test("enable and disable: the wish, then records, audit row and live view in one transaction; the live view as the command left it")
    func twoCommitsPerCommand() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let kernel = try f.kernel()
        await kernel.start()
        let subscription = await RemoteControl.publishOnChange(kernel)
        let commits = Mutex(0)
        kernel.state.observeCommits { _ in commits.withLock { $0 += 1 } }
        func commitsOf(_ command: KernelCommand) async throws -> Int {
            commits.withLock { $0 = 0 }
            try await kernel.execute(command, actor: "admin-api")
            return commits.withLock { $0 }
        }
        let other = try StateStore(path: f.state)
        func live() throws -> PluginInfo? { try RemoteControl.livePlugins(state: other).first { $0.id == "hello" } }

        #expect(try await commitsOf(.enable(id: "hello", tenant: nil)) == 2)
        #expect(try live()?.status == .enabled && live()?.enabled == true)
        #expect(try await commitsOf(.disable(id: "hello", tenant: nil, cascade: false)) == 2)
        #expect(try live()?.status == .disabled && live()?.enabled == false)
        #expect(try await commitsOf(.enable(id: "hello", tenant: nil)) == 2)
        #expect(try live()?.status == .enabled)
        #expect(try other.loads(for: "hello").map(\.outcome) == ["activated", "deactivated", "activated"])
        #expect(try other.audit(since: nil, limit: 10).map { "\($0.command) \($0.outcome)" } == ["enable ok", "disable ok", "enable ok"])
        kernel.state.observeCommits(nil)
        kernel.events.unsubscribe(subscription)
        await kernel.shutdown()
    }

    /// The live view and the admin API's answer write `PluginInfo` by hand (PluginInfo+JSON.swift): the text must
    /// be JSONEncoder's, byte for byte, for a plugin with every field set and strings that need escaping.
    @Test("plugin info as JSON is JSONEncoder's text (sorted keys, slashes as they are), every field set")
    func pluginInfoJSON() throws {
        let odd = "a\"b\\c/d\n\r\t\u{08}\u{0C}\u{00}\u{01}\u{0B}\u{10}\u{1E}\u{1F}\u{7F} é ✓ \u{2028} 😀"
        let fields: [String: Any] = [
            "id": "hello", "name": odd, "version": "1.2.3", "description": "says \"hello\"", "abi": "1.1", "bundlePath": "/p/hello",
            "library": "lib.so", "manifestOnly": false, "enabled": true, "status": "failed", "reason": odd,
            "changedAt": "2026-11-30T00:00:00.000Z", "capabilities": ["routes", "route-prefix:/x"], "grants": [String](),
            "dependencies": ["b": "^1", "a": ">=2 <3", "Z": "*"], "routes": ["GET /ext/hello/greet/:name"], "menus": ["m1", "m2"],
            "authenticators": ["auth"], "authorizers": [String](), "warnings": [odd], "tenants": ["acme", "beta"],
            "permissions": ["notes:read"], "signature": "signed by acme", "signer": "acme (key 3f2a9c81d4e0b7a2)", "provides": ["gitops.sync/1 1.1.0 ranking 10"],
            "consumes": ["x/1 ^1 required"], "proxies": ["/ext/hello/app/ → http://127.0.0.1:9"], "activation": "lazy",
            "activity": "idle", "isolation": "process", "workerPID": 4242, "workerRestarts": 3,
            "pages": ["/ext/hello/pages/items"], "consoleFetch": ["GET /api/v1/audit (reads beyond its own: console-read)"],
            "commands": [["plugin": "hello", "name": "ping", "signature": "(text) -> text", "description": odd, "permission": ""]],
        ]
        let info = try JSONDecoder().decode(PluginInfo.self, from: JSONSerialization.data(withJSONObject: fields))
        #expect(info.workerRestarts == 3 && info.commands.count == 1 && info.tenants?.count == 2)
        // A field added to PluginInfo fails here until it is set above, and then below until PluginInfo+JSON.swift
        // writes it.
        #expect(Set(Mirror(reflecting: info).children.compactMap(\.label)) == Set(fields.keys), "PluginInfo's fields and this test's")
        #expect(info.json == String(decoding: try Kernel.encoder().encode(info), as: UTF8.self))
        #expect(try JSONDecoder().decode(PluginInfo.self, from: Data(info.json.utf8)) == info)
        // Without the optional fields, and with empty collections.
        var bare = fields
        for key in ["reason", "tenants", "signature", "signer", "activity", "workerPID", "workerRestarts"] { bare[key] = nil }
        (bare["commands"], bare["dependencies"], bare["routes"]) = ([Any](), [String: String](), [String]())
        let plain = try JSONDecoder().decode(PluginInfo.self, from: JSONSerialization.data(withJSONObject: bare))
        #expect(plain.json == String(decoding: try Kernel.encoder().encode(plain), as: UTF8.self))
    }

    @Test("the trail keeps the last 10,000 rows: each insert drops the oldest beyond them")
    func bounded() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("audit")
        let state = try StateStore(path: dir + "/state.db")
        try state.batch {
            for i in 0..<(StateStore.auditCapacity + 5) {
                try state.recordAudit(StateStore.AuditEntry(actor: "cli", command: "enable", target: "p\(i)", outcome: "ok"))
            }
        }
        let rows = try state.audit(since: nil, limit: StateStore.auditCapacity * 2)
        #expect(rows.count == StateStore.auditCapacity)
        #expect(rows.first?.target == "p5" && rows.last?.target == "p\(StateStore.auditCapacity + 4)")
        #expect(try state.audit(since: nil, limit: 3).map(\.target) == (StateStore.auditCapacity + 2...StateStore.auditCapacity + 4).map { "p\($0)" })
    }

    @Test("--since and ?since= take a duration back from now or an ISO 8601 time or date")
    func since() throws {
        let now = try Date("2026-11-29T10:00:00Z", strategy: .iso8601)
        #expect(StateStore.auditTime("15m", now: now) == "2026-11-29T09:45:00.000Z")
        #expect(StateStore.auditTime("2h", now: now) == "2026-11-29T08:00:00.000Z")
        #expect(StateStore.auditTime("1d", now: now) == "2026-11-28T10:00:00.000Z")
        #expect(StateStore.auditTime("90s", now: now) == "2026-11-29T09:58:30.000Z")
        #expect(StateStore.auditTime("2026-11-29T09:00:00Z") == "2026-11-29T09:00:00.000Z")
        #expect(StateStore.auditTime("2026-11-29T09:00:00.250Z") == "2026-11-29T09:00:00.250Z")
        #expect(StateStore.auditTime("2026-11-28") == "2026-11-28T00:00:00.000Z")
        #expect(StateStore.auditTime("yesterday") == nil && StateStore.auditTime("-5m") == nil && StateStore.auditTime("") == nil)
    }

    @Test("a real server: admin API and console calls are audited with principal and address; GET /api/v1/audit and keel audit show them; no secret in the server's output or the plugin's log")
    func server() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "hello"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "-v"])
        defer { server.stop() }
        #expect(try await server.request("PUT", "/api/v1/plugins/hello/config", admin: true,
                                         body: Data("api_key: \(Self.secret)\n".utf8)).status == 200)
        let bad = try await server.request("PUT", "/api/v1/plugins/hello/config", admin: true, headers: ["X-Keel-Client": "console"],
                                           body: Data("api_key: [\(Self.secret)\n".utf8))
        #expect(bad.status == 422 && bad.errorCode == "bad-config", "\(bad.text)")
        #expect(try await server.request("POST", "/api/v1/tenants", admin: true, headers: ["X-Keel-Client": "console"],
                                         body: Data(#"{"name": "acme"}"#.utf8)).status == 201)
        #expect(try await server.request("GET", "/api/v1/audit").status == 401)
        // The CLI while the server runs: queued, and audited with its OS user.
        #expect(try TestEnvironment.run(keel, ["plugins", "disable", "hello"] + at).status == 0)

        let reply = try await server.request("GET", "/api/v1/audit?since=1h", admin: true)
        let rows = try #require(reply.json as? [[String: Any]], "\(reply.text)")
        let summary = rows.map { r in ["actor", "principal", "origin", "command", "target", "outcome"].map { r[$0] as? String ?? "-" }.joined(separator: " ") }
        #expect(summary.suffix(4) == [
            "admin-api admin 127.0.0.1 config hello ok",
            "console admin 127.0.0.1 config hello bad-config",
            "console admin 127.0.0.1 create-tenant acme ok",
            "cli \(NSUserName()) local disable hello ok",
        ], "\(summary)")
        #expect(summary.prefix(2) == ["cli \(NSUserName()) local grants hello ok", "cli \(NSUserName()) local enable hello ok"], "\(summary)")
        #expect(!reply.text.contains(Self.secret))
        #expect(try await server.request("GET", "/api/v1/audit?since=2999-01-01", admin: true).text == "[]")
        #expect(try await server.request("GET", "/api/v1/audit?since=soon", admin: true).errorCode == "bad-since")
        // A parameter it does not take, or a limit that is no count, is said (each answered the whole trail before).
        #expect(try await server.request("GET", "/api/v1/audit?lmit=2", admin: true).text.contains(#"unknown query parameter \"lmit\" (did you mean \"limit\"?)"#))
        for bad in ["abc", "-1", "0", "99999999999999999999"] {
            #expect(try await server.request("GET", "/api/v1/audit?limit=\(bad)", admin: true).errorCode == "bad-limit", "\(bad)")
        }
        let one = try await server.request("GET", "/api/v1/audit?limit=1", admin: true).json as? [[String: Any]]
        #expect(one?.count == 1)

        let text = try TestEnvironment.run(keel, ["audit", "--since", "1h"] + at)
        #expect(text.status == 0 && text.stdout.contains("  console admin@127.0.0.1  create-tenant acme  ok\n"), "\(text.stdout) \(text.stderr)")
        let json = try TestEnvironment.run(keel, ["audit", "--json"] + at)
        #expect((try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [Any])?.count == rows.count)
        #expect(try TestEnvironment.run(keel, ["audit", "--since", "soon"] + at).status == 64)
        // The plugin's own log (its ring: GET .../logs, keel logs) has the failed configuration's line, not the value.
        let ring = try await server.request("GET", "/api/v1/plugins/hello/logs", admin: true).text
        #expect(ring.contains("config hello: failed (bad-config)") && !ring.contains(Self.secret), "\(ring)")
        let logs = try TestEnvironment.run(keel, ["logs", "hello"] + at, environment: ["KEEL_ADMIN_TOKEN": ServerProcess.token])
        #expect(logs.status == 0 && logs.stdout.contains("config hello: ok") && !logs.stdout.contains(Self.secret), "\(logs.stdout)")
        server.stop()
        let output = server.output.value + server.errors.value
        #expect(output.contains("config hello: failed (bad-config)"), "\(output)")
        #expect(!output.contains(Self.secret), "\(output)")
    }
}

/// A denied request: the operator learns which hook or which missing permission denied it, the client only `forbidden`.
@Suite("denial reasons", .serialized, .scheduled)
struct DenialReasonTests {
    @Test("an authorize hook's deny names plugin and hook in the log, and in the audit row of an admin call; the client sees forbidden")
    func hookDenial() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("guard", defines: ["AUTHZ_MODE=2", "ROUTE_PATH=\"/secret\""], capabilities: ["routes", "authorize"])
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("guard", plugins: f.plugins, state: f.state, capabilities: ["authorize"])
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "guard"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "-v"])
        defer { server.stop() }
        let route = try await server.request("GET", "/ext/guard/secret")
        #expect(route.status == 403 && route.text == #"{"error":{"code":"forbidden","message":"access denied"}}"#, "\(route.text)")
        let call = try await server.request("POST", "/api/v1/tenants", admin: true, body: Data(#"{"name": "secret-team"}"#.utf8))
        #expect(call.status == 201, "the hook sees the path only: \(call.text)")
        let admin = try await server.request("POST", "/api/v1/plugins/secretive/enable", admin: true)
        // The operator's token is told which hook denied it.
        #expect(admin.status == 403 && admin.text.hasPrefix(#"{"error":{"code":"forbidden","message":"access denied: authorize hook \"rules\" of plugin \"guard\" denied"#),
                "\(admin.text)")

        let rows = try #require(try await server.request("GET", "/api/v1/audit", admin: true).json as? [[String: Any]])
        let refused = try #require(rows.last)
        #expect(refused["command"] as? String == "POST /api/v1/plugins/secretive/enable" && refused["outcome"] as? String == "forbidden", "\(rows)")
        #expect(refused["principal"] as? String == "admin")
        #expect((refused["detail"] as? String)?.contains(#"authorize hook "rules" of plugin "guard" denied"#) == true, "\(refused)")
        server.stop()
        let log = server.errors.value + server.output.value
        #expect(log.contains(#"GET /ext/guard/secret denied to an anonymous caller: authorize hook "rules" of plugin "guard" denied"#), "\(log)")
        #expect(log.contains(#"POST /api/v1/plugins/secretive/enable denied to "admin""#), "\(log)")
    }

    @Test("a failing authenticate hook denies: the audit row of the refused call names its plugin; the client sees forbidden")
    func authenticateFailure() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("broken", defines: ["AUTH_MODE=2"], capabilities: ["routes", "authenticate"])
        let keel = TestEnvironment.binPath + "/keel"
        try TestEnvironment.grantSensitive("broken", plugins: f.plugins, state: f.state, capabilities: ["authenticate"])
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "broken", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let r = try await server.request("POST", "/api/v1/session/page", body: Data(#"{"plugin": "broken"}"#.utf8))
        #expect(r.status == 403 && r.text == #"{"error":{"code":"forbidden","message":"access denied"}}"#, "\(r.text)")
        let rows = try #require(try await server.request("GET", "/api/v1/audit", admin: true).json as? [[String: Any]])
        let refused = try #require(rows.last)
        #expect(refused["command"] as? String == "POST /api/v1/session/page" && refused["outcome"] as? String == "forbidden", "\(rows)")
        #expect(refused["detail"] as? String == #"authenticate hook of plugin "broken" failed"#, "\(refused)")
        server.stop()
        #expect(server.errors.value.contains("authenticate hook failed, request denied"), "\(server.errors.value)")
    }

    @Test("a command call without the command's permission: the log and the audit row name the permission; the client sees forbidden")
    func missingPermission() async throws {
        let c = CommandsFixture()
        try c.calc()
        let keel = TestEnvironment.binPath + "/keel"
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "calc", "--plugins", c.f.plugins, "--state", c.f.state]).status == 0)
        let server = try ServerProcess(plugins: c.f.plugins, state: c.f.state, extraArguments: ["--no-watch", "-v"])
        defer { server.stop() }
        let r = try await server.request("POST", "/api/v1/plugins/calc/commands/add", body: Data(#"{"args": [2, 40]}"#.utf8))
        #expect(r.status == 403 && r.text == #"{"error":{"code":"forbidden","message":"access denied"}}"#, "\(r.text)")
        let rows = try #require(try await server.request("GET", "/api/v1/audit", admin: true).json as? [[String: Any]])
        let refused = try #require(rows.last)
        #expect(refused["command"] as? String == "POST /api/v1/plugins/calc/commands/add" && refused["outcome"] as? String == "forbidden")
        #expect(refused["principal"] == nil || refused["principal"] is NSNull, "\(refused)")
        #expect((refused["detail"] as? String)?.contains("calc.add needs permission calc.math:run, which an anonymous caller does not hold") == true, "\(refused)")
        server.stop()
        let log = server.errors.value + server.output.value
        #expect(log.contains("POST /api/v1/plugins/calc/commands/add denied: calc.add needs permission calc.math:run"), "\(log)")
    }
}
