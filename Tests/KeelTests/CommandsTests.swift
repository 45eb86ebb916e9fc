// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelLoader
import KeelManifest
import Synchronization
import KeelState
import Testing

/// The "calc" plugin (Fixtures/plugins/commands.c) with its commands declared.
struct CommandsFixture {
    let f = KernelFixture()

    static let calcManifest = """
        permissions:
          - {key: calc.math, actions: [run]}
        commands:
          - {name: add, symbol: calc_add, signature: "(i64, i64) -> i64", description: Adds two numbers., permission: "calc.math:run", probe: [2, 40]}
          - {name: neg32, symbol: calc_neg32, signature: "(i32) -> i32"}
          - {name: twice32, symbol: calc_twice32, signature: "(u32) -> u32"}
          - {name: half, symbol: calc_half, signature: "(f64) -> f64"}
          - {name: not, symbol: calc_not, signature: "(bool) -> bool"}
          - {name: len, symbol: calc_len, signature: "(bytes) -> u64"}
          - {name: nothing, symbol: calc_nothing, signature: "() -> void"}
          - {name: div, symbol: calc_div, signature: "(i64, i64) -> status(json)"}
          - {name: greet, symbol: calc_greet, signature: "(str) -> status(str)"}
          - {name: tag, symbol: calc_tag, signature: "(i64) -> status(str)"}
          - {name: big, symbol: calc_big, signature: "(u64) -> status(str)"}
          - {name: broken, symbol: calc_broken, signature: "() -> status(json)"}
        """

    func calc(id: String = "calc", tag: String = "-", extra: String = "", manifest: String = CommandsFixture.calcManifest) throws {
        try bundle(id, ["TAG=\"\(tag)\""], extra: manifest + "\n" + extra)
    }

    func bundle(_ id: String, _ defines: [String], extra: String) throws {
        let lib = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/commands.c", name: id,
                                                  defines: ["PLUGIN_ID=\"\(id)\""] + defines)
        try TestEnvironment.makeBundle(in: f.plugins, folder: id, manifest: TestEnvironment.manifest(
            id: id, library: "lib\(id).so", abi: "1.1", capabilities: ["routes"], extra: extra), library: lib)
    }
}

let admin = Kernel.operatorPrincipal

func run(_ kernel: Kernel, _ name: String, _ args: [CommandArgument], as principal: Principal = admin, plugin: String = "calc") -> String {
    switch kernel.call(plugin, name, arguments: args, as: principal) {
    case let .success(v): return v.json
    case let .failure(e): return "\(e.code.rawValue): \(e.message)"
    }
}

@Suite("commands: plugin functions called by name", .scheduled)
struct CommandsTests {
    @Test("every type crosses: integers, floats, booleans, strings, bytes, void, status(json), status(str)")
    func types() async throws {
        let c = CommandsFixture()
        try c.calc()
        let kernel = try c.f.kernel()
        await kernel.start()
        try await kernel.enable("calc")
        #expect(run(kernel, "add", [.text("2"), .text("40")]) == "42")
        #expect(run(kernel, "add", [.int(-5), .uint(7)]) == "2")
        #expect(run(kernel, "add", [.int(Int64.max), .int(0)]) == "\(Int64.max)")
        #expect(run(kernel, "neg32", [.text("7")]) == "-7")
        #expect(run(kernel, "twice32", [.int(21)]) == "42")
        #expect(run(kernel, "half", [.text("5")]) == "2.5")
        #expect(run(kernel, "not", [.bool(false)]) == "true")
        #expect(run(kernel, "not", [.text("true")]) == "false")
        #expect(run(kernel, "len", [.string(Data([0, 1, 2, 255]).base64EncodedString())]) == "4")
        #expect(run(kernel, "nothing", []) == "null")
        #expect(run(kernel, "div", [.int(84), .int(2)]) == "{\"quotient\":42}")
        #expect(run(kernel, "greet", [.string("Ada \"Lovelace\" ✓")]) == "\"hello, Ada \\\"Lovelace\\\" ✓\"")
        await kernel.shutdown()
    }

    @Test("bad calls: unknown command, wrong count, wrong type, out of range, not base64, NUL; each names the command and argument")
    func badArguments() async throws {
        let c = CommandsFixture()
        try c.calc()
        let kernel = try c.f.kernel()
        await kernel.start()
        try await kernel.enable("calc")
        #expect(run(kernel, "add", [.text("two"), .text("40")]) == "bad-argument: argument 1 of calc.add: \"two\" is not an i64")
        #expect(run(kernel, "add", [.int(1)]) == "bad-argument: calc.add takes 2 argument(s) (i64, i64) -> i64, got 1")
        #expect(run(kernel, "add", [.int(1), .double(2.5)]) == "bad-argument: argument 2 of calc.add: 2.5 is not an i64")
        #expect(run(kernel, "add", [.text("99999999999999999999"), .int(1)]) == "bad-argument: argument 1 of calc.add: \"99999999999999999999\" is not an i64")
        #expect(run(kernel, "add", [.uint(UInt64.max), .int(1)]) == "bad-argument: argument 1 of calc.add: \(UInt64.max) is out of range for i64")
        #expect(run(kernel, "neg32", [.int(3_000_000_000)]) == "bad-argument: argument 1 of calc.neg32: 3000000000 is out of range for i32")
        #expect(run(kernel, "twice32", [.int(-1)]) == "bad-argument: argument 1 of calc.twice32: -1 is out of range for u32")
        #expect(run(kernel, "not", [.text("yes")]) == "bad-argument: argument 1 of calc.not: \"yes\" is not a bool")
        #expect(run(kernel, "len", [.string("%%%")]) == "bad-argument: argument 1 of calc.len: \"%%%\" is not base64")
        #expect(run(kernel, "greet", [.string("a\u{0}b")]).hasPrefix("bad-argument: argument 1 of calc.greet:"))
        #expect(run(kernel, "greet", [.int(5)]) == "bad-argument: argument 1 of calc.greet: 5 is not a str")
        #expect(run(kernel, "ghost", []) == "unknown-command: no command calc.ghost")
        #expect(run(kernel, "add", [], plugin: "nobody") == "unknown-command: no command nobody.add (no active plugin \"nobody\")")
        await kernel.shutdown()
    }

    @Test("a plugin another tenant runs gets the same unknown-command words as one that does not exist: a caller learns nothing of other tenants' plugins")
    func otherTenantsPluginIsNone() async throws {
        let c = CommandsFixture()
        try c.calc()
        let kernel = try c.f.kernel()
        await kernel.start()
        try await kernel.execute(.createTenant(name: "acme"))
        try await kernel.execute(.createTenant(name: "globex"))
        try await kernel.execute(.enable(id: "calc", tenant: "acme"))
        let alice = Principal(id: "alice", tenant: "acme", roles: ["admin"], authenticatedBy: "test")
        let bob = Principal(id: "bob", tenant: "globex", roles: ["admin"], authenticatedBy: "test")
        #expect(run(kernel, "add", [.int(1), .int(2)], as: alice) == "3")
        #expect(run(kernel, "add", [.int(1), .int(2)], as: bob) == run(kernel, "add", [.int(1), .int(2)], as: bob, plugin: "ghost")
            .replacingOccurrences(of: "ghost", with: "calc"))
        #expect(run(kernel, "add", [], as: bob) == "unknown-command: no command calc.add (no active plugin \"calc\")")
        #expect(run(kernel, "ghost", [], as: bob) == "unknown-command: no command calc.ghost (no active plugin \"calc\")",
                "an unknown command of it too")
        #expect(run(kernel, "ghost", [], as: alice) == "unknown-command: no command calc.ghost", "its own tenant is told the plugin is there")

        // The operator (the CLI's `keel call`) calls in the default tenant unless it names another: told which
        // tenants the plugin serves, then served in one of them. A tenant that does not exist is refused.
        await #expect { try await kernel.execute(.call(plugin: "calc", command: "add", arguments: ["1", "2"])) } throws: { error in
            "\(error)".contains("no command calc.add for tenant default: calc serves tenant(s) acme only (call it in one: keel call --tenant NAME)")
        }
        let inAcme = try await kernel.execute(.call(plugin: "calc", command: "add", arguments: ["1", "2"], tenant: "acme"))
        #expect(inAcme.output == "3")
        await #expect { try await kernel.execute(.call(plugin: "calc", command: "add", arguments: ["1", "2"], tenant: "nowhere")) } throws: { error in
            "\(error)".contains("no tenant \"nowhere\"")
        }
        // A tenant's own admin is not told: the same words as for no plugin at all.
        #expect(run(kernel, "add", [], as: Principal(id: "bob", tenant: "globex", roles: ["admin"], authenticatedBy: "test"))
                == "unknown-command: no command calc.add (no active plugin \"calc\")")
        await kernel.shutdown()
    }

    @Test("failures: an error status with the plugin's message, output past 1 MiB, output that is not JSON; the host goes on")
    func failures() async throws {
        let c = CommandsFixture()
        try c.calc()
        let kernel = try c.f.kernel()
        await kernel.start()
        try await kernel.enable("calc")
        #expect(run(kernel, "div", [.int(1), .int(0)]) == "command-failed: calc.div returned KEEL_ERR_INVALID_ARGUMENT: division by zero")
        #expect(run(kernel, "big", [.int(2 << 20)]) == "result-too-large: calc.big wrote more than 1048576 bytes")
        #expect(run(kernel, "broken", []) == "command-failed: calc.broken wrote output that is not JSON: {not json")
        #expect(run(kernel, "add", [.int(1), .int(1)]) == "2", "the plugin keeps serving")
        await kernel.shutdown()
    }

    @Test("who may call: the command's permission through role grants; a command without one is for admins only")
    func permissions() async throws {
        let c = CommandsFixture()
        try c.calc()
        let kernel = try c.f.kernel()
        await kernel.start()
        try await kernel.enable("calc")
        let ada = Principal(id: "ada", roles: ["mathematician"], authenticatedBy: "test")
        #expect(run(kernel, "add", [.int(1), .int(2)], as: ada) == "forbidden: calc.add needs permission calc.math:run, which \"ada\" does not hold")
        try await kernel.execute(.createRole(name: "mathematician"))
        try await kernel.execute(.setRolePermission(role: "mathematician", permission: "calc.math:run", granted: true))
        #expect(run(kernel, "add", [.int(1), .int(2)], as: ada) == "3")
        #expect(run(kernel, "neg32", [.int(1)], as: ada) == "forbidden: calc.neg32 is for admins only; \"ada\" is not one")
        #expect(run(kernel, "add", [.int(1), .int(2)], as: .anonymous).hasPrefix("forbidden: calc.add needs permission calc.math:run, which an anonymous caller"))
        await kernel.shutdown()
    }

    /// A started kernel with `calc` (tag "slow": its `tag` command sleeps as long as asked) enabled, and `other`
    /// staged, for the tests of lifecycle changes made while a command call runs.
    static func slowCalcAndOther() async throws -> (CommandsFixture, Kernel) {
        let c = CommandsFixture()
        try c.calc(tag: "slow")
        try c.f.fixtureBundle("other", capabilities: ["routes"])
        let kernel = try c.f.kernel()
        await kernel.start()
        try await kernel.enable("calc")
        return (c, kernel)
    }

    @Test("a command call through Kernel.execute (the CLI's, or queued to a server) runs off the kernel's thread: a lifecycle change made meanwhile does not wait for it")
    func callOffTheKernelsThread() async throws {
        let (c, kernel) = try await Self.slowCalcAndOther()
        let order = Mutex<[String]>([])
        let slow = Task.detached {
            let result = try await kernel.execute(.call(plugin: "calc", command: "tag", arguments: ["1500"]), actor: "cli")
            order.withLock { $0.append("call") }
            return result.output
        }
        try await Task.sleep(for: .milliseconds(200))
        try await kernel.execute(.enable(id: "other", tenant: nil), actor: "cli")
        order.withLock { $0.append("enable") }
        #expect(try await slow.value == "\"slow\"")
        #expect(order.withLock { $0 } == ["enable", "call"], "the enable waited for the command call")
        let rows = try StateStore(path: c.f.state).audit(since: nil, limit: 10).map { "\($0.command) \($0.target) \($0.outcome)" }
        #expect(rows.contains("call calc.tag ok"), "\(rows)")
        await kernel.shutdown()
    }

    /// Queues a call of slow calc's `tag` sleeping `ms` as the CLI queues it, and waits (until `deadline`) for a
    /// server to take it; returns its sequence number.
    static func queueTaggedCall(sleeping ms: Int, _ client: StateStore, until deadline: ContinuousClock.Instant) async throws -> Int64 {
        let body = String(decoding: try JSONEncoder().encode(RemoteCommand.call(plugin: "calc", command: "tag", arguments: ["\(ms)"])),
                          as: UTF8.self)
        let call = try client.submitCommand(op: "call", pluginID: "calc", body: body, timeout: 120)
        while try client.command(call)?.state == "pending", ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        return call
    }

    @Test("a command call queued by the CLI runs beside the server's queue: an enable queued after it is not held by it")
    func queuedCallDoesNotHoldTheQueue() async throws {
        let (c, kernel) = try await Self.slowCalcAndOther()
        let server = Task { await RemoteControl.serve(kernel, token: nil, interval: .milliseconds(20)) }
        let client = try StateStore(path: c.f.state)
        // A call that takes 10 s, queued as the CLI queues it; then, once the server has taken it, an enable.
        // Generous deadlines (a loaded machine delays the server's polls); only the order is asserted, read from the
        // audit trail, whose rows are written as each command finishes.
        let deadline = ContinuousClock.now + .seconds(120)
        let call = try await Self.queueTaggedCall(sleeping: 10_000, client, until: deadline)
        try await RemoteControl.submit(.enable(id: "other", tenant: nil), state: client, timeout: .seconds(120))
        #expect(kernel.activePlugins.contains("other"))
        while try client.command(call)?.state == "running", ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let finished = try client.command(call)
        #expect(finished?.state == "done")
        #expect(finished?.result.contains("slow") == true, "\(finished?.result ?? "")")
        let rows = try client.audit(since: nil, limit: 50).map { "\($0.command) \($0.target) \($0.outcome)" }
        let enabled = rows.firstIndex(of: "enable other ok"), called = rows.firstIndex(of: "call calc.tag ok")
        #expect(enabled != nil && called != nil && enabled! < called!, "the queued enable waited for the command call: \(rows)")
        server.cancel()
        await server.value
        await kernel.shutdown()
    }

    @Test("a queued command call still running when the queue stops and the kernel shuts down writes nothing afterwards: the state may be the next kernel's")
    func queuedCallAfterShutdownRecordsNothing() async throws {
        let (c, kernel) = try await Self.slowCalcAndOther()
        let server = Task { await RemoteControl.serve(kernel, token: nil, interval: .milliseconds(20)) }
        let client = try StateStore(path: c.f.state)
        let call = try await Self.queueTaggedCall(sleeping: 3000, client, until: ContinuousClock.now + .seconds(60))
        #expect(try client.command(call)?.state == "running")
        // The queue stops and the kernel shuts down (as `keel_close` does) while the call is in plugin code.
        server.cancel()
        await server.value
        await kernel.shutdown()
        let audited = try client.audit(since: nil, limit: 100).count
        // The call ends (3 s) after the shutdown: neither its command row nor the audit trail is written.
        try await Task.sleep(for: .seconds(4))
        #expect(try client.command(call)?.state == "running", "the call's outcome was written after the queue stopped")
        let rows = try client.audit(since: nil, limit: 100)
        #expect(rows.count == audited && !rows.contains { $0.command == "call" }, "\(rows.map(\.command))")
    }

    @Test("a reload during a call finishes the call on the old generation; the next call reaches the new one")
    func reloadDuringCall() async throws {
        let c = CommandsFixture()
        try c.calc(tag: "old")
        let kernel = try c.f.kernel()
        await kernel.start()
        try await kernel.enable("calc")
        let slow = Task.detached { run(kernel, "tag", [.int(300)]) }
        try await Task.sleep(for: .milliseconds(50))
        try c.calc(tag: "new")
        try await kernel.reload("calc")
        #expect(await slow.value == "\"old\"", "the call in flight finished on its own generation")
        #expect(run(kernel, "tag", [.int(0)]) == "\"new\"")
        await kernel.shutdown()
    }

    @Test("a plugin calls another's command through keel.commands/1: declared under calls:, as the request's principal")
    func pluginToPlugin() async throws {
        let c = CommandsFixture()
        try c.calc()
        try c.bundle("user", ["CALLER"], extra: "calls: [calc.add]\n")
        try c.bundle("rogue", ["CALLER"], extra: "")
        try c.bundle("forger", ["CALLER", "FORGE"], extra: "calls: [calc.add]\n")
        try c.bundle("tamperer", ["CALLER", "TAMPER"], extra: "calls: [calc.add]\n")
        let kernel = try c.f.kernel()
        await kernel.start()
        for id in ["calc", "user", "rogue", "forger", "tamperer"] { try await kernel.enable(id) }
        func use(_ plugin: String, _ args: String, as principal: Principal) -> (Int, String) {
            let request = PluginRequest(method: "GET", path: "/ext/\(plugin)/use", routePath: "/use", query: args, principal: principal)
            guard let match = kernel.registry.snapshot.route(method: "GET", path: "/ext/\(plugin)/use"),
                  case let .success(r) = match.route.handler.handle(request) else { return (0, "") }
            return (r.status, r.bodyText)
        }
        #expect(use("user", "2,40", as: admin) == (200, "42"))
        #expect(use("user", "\"two\",40", as: admin) == (502, "status=\(StatusCode.invalidArgument)"))
        let ada = Principal(id: "ada", roles: [], authenticatedBy: "test")
        #expect(use("user", "2,40", as: ada) == (502, "status=\(StatusCode.denied)"), "the caller's principal needs the permission")
        #expect(use("rogue", "2,40", as: admin) == (502, "status=\(StatusCode.denied)"), "not declared under calls:")
        #expect(c.f.log.lines.contains { $0.contains("rogue") && $0.contains("called calc.add, which it does not declare under calls: in plugin.yaml: denied") })
        #expect(use("forger", "2,40", as: ada) == (502, "status=\(StatusCode.denied)"), "a made-up admin principal is refused")
        #expect(c.f.log.lines.contains { $0.contains("forger") && $0.contains("for a principal that is not the caller of the request it is serving: denied") })
        // The request's own principal, its roles written over by the plugin: the call is made as the host knows the
        // caller, not as the struct now says (before 2026-12-02 it read the admin role back through the pointer).
        #expect(use("tamperer", "2,40", as: ada) == (502, "status=\(StatusCode.denied)"), "roles written into the request's principal do not count")
        #expect(use("tamperer", "2,40", as: admin) == (200, "42"))
        await kernel.shutdown()
    }

    @Test("only the plugin whose handler serves the request acts for its caller: not code of another plugin it calls in-process")
    func noActingThroughAnotherPlugin() async throws {
        let c = CommandsFixture()
        try c.calc()
        let relayFile = TestEnvironment.makeTemporaryDirectory("relay") + "/address"
        // "relay" declares calc.add and hands out a function that calls it (as a provider's service table would);
        // "asker" declares nothing and calls that function from its handler with its request's principal.
        try c.bundle("relay", ["CALLER", "RELAY=\"\(relayFile)\""], extra: "calls: [calc.add]\n")
        try c.bundle("asker", ["CALLER", "VIA_RELAY=\"\(relayFile)\""], extra: "")
        let kernel = try c.f.kernel()
        await kernel.start()
        for id in ["calc", "relay", "asker"] { try await kernel.enable(id) }
        let request = PluginRequest(method: "GET", path: "/ext/asker/use", routePath: "/use", query: "", principal: admin)
        guard let match = kernel.registry.snapshot.route(method: "GET", path: "/ext/asker/use"),
              case let .success(r) = match.route.handler.handle(request) else { Issue.record("no answer from asker"); return }
        // Before 2026-12-07 "relay" acted as the admin calling "asker" (its own calls:, the pointer handed along): 42.
        #expect((r.status, r.bodyText) == (502, "status=\(StatusCode.denied)"), "\(r.status) \(r.bodyText)")
        #expect(c.f.log.lines.contains { $0.contains("relay") && $0.contains("not the caller of the request it is serving: denied") })
        // The relay's own handler still acts for its own caller.
        let own = PluginRequest(method: "GET", path: "/ext/relay/use", routePath: "/use", query: "2,40", principal: admin)
        guard let mine = kernel.registry.snapshot.route(method: "GET", path: "/ext/relay/use"),
              case let .success(answer) = mine.route.handler.handle(own) else { Issue.record("no answer from relay"); return }
        #expect((answer.status, answer.bodyText) == (200, "42"))
        await kernel.shutdown()
    }

    @Test("a message a call left without failing never becomes the reason of a later call's failure on the same thread")
    func staleMessageDropped() async throws {
        let c = CommandsFixture()
        try c.calc(manifest: CommandsFixture.calcManifest + """

              - {name: note, symbol: calc_note, signature: "(i64) -> i64"}
              - {name: fail, symbol: calc_fail, signature: "() -> status(str)"}
            """)
        let kernel = try c.f.kernel()
        await kernel.start()
        try await kernel.enable("calc")
        #expect(run(kernel, "note", [.int(7)]) == "7")
        let failed = run(kernel, "fail", [])
        #expect(failed == "command-failed: calc.fail returned KEEL_ERR_INTERNAL" && !failed.contains("a note left by an earlier call"), "\(failed)")
        await kernel.shutdown()
    }

    @Test("a symbol missing from the library fails the activation, naming the command and the symbol")
    func missingSymbol() async throws {
        let c = CommandsFixture()
        try c.calc(manifest: "commands:\n  - {name: ghost, symbol: calc_ghost, signature: \"() -> void\"}\n")
        let kernel = try c.f.kernel()
        await kernel.start()
        await #expect { try await kernel.enable("calc") } throws: { error in
            "\(error)".contains("command \"ghost\": the library exports no function calc_ghost (export it: KEEL_EXPORT in C, @_cdecl in Swift, #[no_mangle] or keel_plugin::command! in Rust)")
        }
        await kernel.shutdown()
    }
}

@Suite("commands: the admin API, the CLI and the probe", .serialized, .scheduled)
struct CommandsFrontEndTests {
    @Test("POST /api/v1/plugins/calc/commands/add {\"args\": [2, 40]} answers {\"result\": 42}; errors have stable codes")
    func adminAPI() async throws {
        let c = CommandsFixture()
        try c.calc()
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", c.f.plugins, "--state", c.f.state]
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "calc"] + at).status == 0)
        // "idp" answers "Bearer <id>" with tenant acme and the role admin (AUTH_MODE=1): an admin, but a plugin's.
        try c.f.fixtureBundle("idp", defines: ["AUTH_MODE=1"])
        try TestEnvironment.grantSensitive("idp", plugins: c.f.plugins, state: c.f.state)
        #expect(try TestEnvironment.run(keel, ["tenants", "create", "acme"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "idp"] + at).status == 0)
        let server = try ServerProcess(plugins: c.f.plugins, state: c.f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        func post(_ name: String, _ body: String, admin: Bool = true) async throws -> ServerProcess.Reply {
            try await server.request("POST", "/api/v1/plugins/calc/commands/\(name)", admin: admin, body: Data(body.utf8))
        }
        var r = try await post("add", #"{"args": [2, 40]}"#)
        #expect(r.status == 200 && r.text == #"{"result":42}"#, "\(r.text)")
        r = try await post("div", #"{"args": [84, 2]}"#)
        #expect(r.text == #"{"result":{"quotient":42}}"#)
        r = try await post("add", #"{"args": ["two", 40]}"#)
        #expect(r.status == 400 && r.errorCode == "bad-argument", "\(r.text)")
        #expect(r.text.contains(#"argument 1 of calc.add: \"two\" is not an i64"#))
        r = try await post("ghost", #"{"args": []}"#)
        #expect(r.status == 404 && r.errorCode == "unknown-command")
        r = try await post("add", #"{"args": [2, 40]}"#, admin: false)
        #expect(r.status == 403 && r.errorCode == "forbidden", "anonymous callers lack calc.math:run")
        // The command's own refusal (KEEL_ERR_INVALID_ARGUMENT) is the caller's 400, as a route handler's is (500 until
        // 2026-12-08: a client's bad input read as the server's outage).
        r = try await post("div", #"{"args": [1, 0]}"#)
        #expect(r.status == 400 && r.errorCode == "command-failed" && r.text.contains("division by zero"), "\(r.status) \(r.text)")
        // ... and its plugin's log says so (a failed command left no line at all before).
        let logs = try await server.request("GET", "/api/v1/plugins/calc/logs", admin: true).text
        #expect(logs.contains("command div failed: calc.div returned KEEL_ERR_INVALID_ARGUMENT: division by zero"), "\(logs)")
        r = try await post("add", #"{"args": [2, 40"#)
        #expect(r.status == 400 && r.errorCode == "malformed-json")
        // A misspelt key is named with the one meant, not dropped (the call would run in the caller's tenant).
        r = try await post("add", #"{"args": [2, 40], "tennant": "default"}"#)
        #expect(r.status == 400 && r.errorCode == "unknown-key", "\(r.text)")
        #expect(r.text.contains(#"unknown key \"tennant\" in the JSON body (did you mean \"tenant\"?); this endpoint takes args, tenant"#), "\(r.text)")
        // The host's admin may name the tenant to call in; a tenant that does not exist is 404; nobody else may name one.
        r = try await post("add", #"{"args": [2, 40], "tenant": "default"}"#)
        #expect(r.status == 200 && r.text == #"{"result":42}"#, "\(r.text)")
        r = try await post("add", #"{"args": [2, 40], "tenant": "nowhere"}"#)
        #expect(r.status == 404 && r.text.contains("no tenant") && r.text.contains("nowhere"), "\(r.text)")
        r = try await post("add", #"{"args": [2, 40], "tenant": "acme"}"#, admin: false)
        #expect(r.status == 403 && r.errorCode == "forbidden", "\(r.text)")
        // An admin a plugin's hook authenticated calls in its own tenant, and may not name another.
        func asZoe(_ body: String) async throws -> ServerProcess.Reply {
            try await server.request("POST", "/api/v1/plugins/calc/commands/add", headers: ["Authorization": "Bearer zoe"], body: Data(body.utf8))
        }
        r = try await asZoe(#"{"args": [2, 40]}"#)
        #expect(r.status == 200 && r.text == #"{"result":42}"#, "zoe is admin in acme: \(r.text)")
        r = try await asZoe(#"{"args": [2, 40], "tenant": "acme"}"#)
        #expect(r.status == 200, "naming its own tenant is no change: \(r.text)")
        r = try await asZoe(#"{"args": [2, 40], "tenant": "default"}"#)
        #expect(r.status == 403 && r.errorCode == "forbidden", "a plugin's admin may not call in another tenant: \(r.text)")
        // Each such refusal is a row of the audit trail, as any refused call is (until 2026-12-07 none was written).
        let audit = try TestEnvironment.run(keel, ["audit", "--json"] + at)
        #expect(audit.stdout.contains("only the host's admin may call a command in another tenant (asked for \\\"default\\\")")
                && audit.stdout.contains("\"zoe\""), "\(audit.stdout.suffix(1500))")
        let listed = try await server.request("GET", "/api/v1/commands?plugin=calc", admin: true)
        #expect((listed.json as? [[String: Any]])?.first?["signature"] as? String == "(i64, i64) -> i64")
        // Anyone else is shown the commands they may call (a 401 before 2026-12-08): none for an anonymous caller,
        // every one of calc's for zoe, admin in acme, where calc runs.
        let anonymous = try await server.request("GET", "/api/v1/commands?plugin=calc")
        #expect(anonymous.status == 200 && anonymous.text == "[]", "\(anonymous.status) \(anonymous.text)")
        let zoes = try await server.request("GET", "/api/v1/commands?plugin=calc", headers: ["Authorization": "Bearer zoe"])
        #expect((zoes.json as? [[String: Any]])?.count == (listed.json as? [[String: Any]])?.count, "\(zoes.text)")

        // The CLI goes through the running server.
        let call = try TestEnvironment.run(keel, ["call", "calc", "add", "2", "40"] + at)
        #expect(call.status == 0 && call.stdout == "42\n", "\(call.stdout) \(call.stderr)")
        let greet = try TestEnvironment.run(keel, ["call", "calc", "greet", "Ada"] + at)
        #expect(greet.stdout == "hello, Ada\n")
        // --json wherever it is written prints the result as JSON; after "--" it is an argument like any other.
        let quoted = try TestEnvironment.run(keel, ["call", "calc", "greet", "Ada", "--json"] + at)
        #expect(quoted.stdout == "\"hello, Ada\"\n", "\(quoted.stdout) \(quoted.stderr)")
        let literal = try TestEnvironment.run(keel, ["call", "calc", "greet"] + at + ["--", "--json"])
        #expect(literal.stdout == "hello, --json\n", "\(literal.stdout) \(literal.stderr)")
        let bad = try TestEnvironment.run(keel, ["call", "calc", "add", "two", "40"] + at)
        #expect(bad.status == 1 && bad.stderr == "keel: error: argument 1 of calc.add: \"two\" is not an i64\n", "\(bad.stderr)")
        let list = try TestEnvironment.run(keel, ["commands", "calc"] + at)
        #expect(list.stdout.hasPrefix("calc add (i64, i64) -> i64  [calc.math:run]\n  Adds two numbers.\n"), "\(list.stdout)")
        // The plugin list names them too (it showed none although enable said "2 command(s)").
        let plugins = try TestEnvironment.run(keel, ["plugins", "list"] + at)
        #expect(plugins.stdout.contains("  commands: add (i64, i64) -> i64, "), "\(plugins.stdout)")
        // The operator is told the command meant, and why a plugin it knows has none now (2026-12-08).
        let typo = try TestEnvironment.run(keel, ["call", "calc", "ad", "1", "1"] + at)
        #expect(typo.stderr == "keel: error: no command calc.ad (did you mean \"add\"?)\n", "\(typo.stderr)")
        #expect(try TestEnvironment.run(keel, ["plugins", "disable", "calc"] + at).status == 0)
        let off = try TestEnvironment.run(keel, ["call", "calc", "add", "1", "1"] + at)
        #expect(off.stderr == "keel: error: no command calc.add: plugin \"calc\" is not enabled (keel plugins enable calc)\n", "\(off.stderr)")
        let listedOff = try TestEnvironment.run(keel, ["commands", "calc"] + at)
        #expect(listedOff.stdout.hasPrefix("calc add (i64, i64) -> i64  [calc.math:run]  (not enabled)\n"), "\(listedOff.stdout)")
        #expect(try await server.request("POST", "/api/v1/plugins/calc/commands/add", body: Data(#"{"args": [1, 1]}"#.utf8)).text
                .contains("(no active plugin \\\"calc\\\")"), "anyone else learns no more than before")
    }

    @Test("keel call without a server loads the plugins itself; inspect runs the probe calls in a child, a crash is contained")
    func offlineAndProbe() async throws {
        let c = CommandsFixture()
        try c.calc()
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", c.f.plugins, "--state", c.f.state]
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "calc"] + at).status == 0)
        let call = try TestEnvironment.run(keel, ["call", "calc", "half", "5"] + at)
        #expect(call.stdout == "2.5\n", "\(call.stderr)")
        let inspect = try TestEnvironment.run(keel, ["plugins", "inspect", c.f.plugins + "/calc"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(inspect.stdout.contains("\ncommands:     add (i64, i64) -> i64, neg32 (i32) -> i32, "), "\(inspect.stdout)")

        try c.calc(id: "crashy", manifest: "commands:\n  - {name: crash, symbol: calc_crash, signature: \"() -> void\", probe: []}\n")
        let crashed = try TestEnvironment.run(keel, ["plugins", "inspect", c.f.plugins + "/crashy"])
        #expect(crashed.status == 1)
        #expect(crashed.stderr.contains("crashed with SIGSEGV"), "\(crashed.stderr)")
        try c.calc(id: "failing", manifest: "commands:\n  - {name: div, symbol: calc_div, signature: \"(i64, i64) -> status(json)\", probe: [1, 0]}\n")
        let failing = try TestEnvironment.run(keel, ["plugins", "inspect", c.f.plugins + "/failing"])
        #expect(failing.stderr.contains("command \"div\" failed its probe call: failing.div returned KEEL_ERR_INVALID_ARGUMENT: division by zero"), "\(failing.stderr)")
    }

    @Test("keel call of a plugin enabled for one tenant only, without a server (its kernel starts plugins idle): told which tenant, served with --tenant")
    func offlineTenantCall() async throws {
        let c = CommandsFixture()
        try c.calc()
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", c.f.plugins, "--state", c.f.state]
        #expect(try TestEnvironment.run(keel, ["tenants", "create", "acme"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "calc", "--tenant", "acme"] + at).status == 0)
        let plain = try TestEnvironment.run(keel, ["call", "calc", "half", "5"] + at)
        #expect(plain.status == 1 && plain.stderr.contains("no command calc.half for tenant default: calc serves tenant(s) acme only (call it in one: keel call --tenant NAME)"),
                "\(plain.stderr)")
        let inAcme = try TestEnvironment.run(keel, ["call", "--tenant", "acme", "calc", "half", "5"] + at)
        #expect(inAcme.status == 0 && inAcme.stdout == "2.5\n", "\(inAcme.stdout)\(inAcme.stderr)")
    }
}

@Suite("plugin.yaml: commands", .scheduled)
struct CommandManifestTests {
    func error(_ tail: String) -> String {
        do {
            _ = try ManifestLoader().parse(Data("id: x\nname: X\nversion: 1.0.0\nabi: \"1.1\"\nlibrary: lib.so\n\(tail)".utf8), file: "x/plugin.yaml")
            return "no error"
        } catch { return error.description }
    }

    @Test("signatures parse, and bad ones are refused naming the key")
    func signatures() throws {
        #expect("\(try CommandSignature(parsing: "( i64,str ,bytes)->status(json)"))" == "(i64, str, bytes) -> status(json)")
        #expect("\(try CommandSignature(parsing: "() -> void"))" == "() -> void")
        #expect(error("commands:\n  - {name: a, symbol: f, signature: \"(i128) -> i64\"}\n").hasSuffix("key \"commands[0].signature\": argument 1 type \"i128\" is not one of i32, i64, u32, u64, f64, bool, str, bytes"))
        #expect(error("commands:\n  - {name: a, symbol: f, signature: \"(i64)\"}\n").hasSuffix("\"(i64)\" has no result: write -> TYPE (or -> void)"))
        #expect(error("commands:\n  - {name: a, symbol: f, signature: \"() -> str\"}\n").hasSuffix("a result of type str cannot be returned by value: use status(str) and write it to the keel_output"))
        #expect(error("commands:\n  - {name: a, symbol: f, signature: \"() -> void\"}\n  - {name: a, symbol: g, signature: \"() -> void\"}\n").hasSuffix("command \"a\" is declared twice"))
        #expect(error("commands:\n  - {name: a, symbol: \"f()\", signature: \"() -> void\"}\n").hasSuffix("\"f()\" is not a C function name"))
        #expect(error("commands:\n  - {name: a, symbol: f, signature: \"() -> void\", permission: \"x.y:run\"}\n").hasSuffix("\"x.y:run\" must be KEY:ACTION of a permission item declared under permissions: in this file"))
        #expect(error("commands:\n  - {name: a, symbol: f, signature: \"(i64) -> void\", probe: []}\n").hasSuffix("expected a list of 1 sample argument(s)"))
        #expect(error("calls: [calc]\n").hasSuffix("expected PLUGIN.COMMAND such as calc.add, found \"calc\""))
    }
}

@Suite("commands: budgets", .scheduled)
struct CommandBudgetTests {
    @Test("a command over the handler budget is logged with its name; failed calls count toward disabling the plugin, refusals of bad input do not")
    func budgets() async throws {
        let c = CommandsFixture()
        try c.calc(extra: "  - {name: fail, symbol: calc_fail, signature: \"() -> status(str)\"}")
        let kernel = try c.f.kernel(budgets: CallBudgets(handler: 0.05, hook: 0.25, failureThreshold: 3))
        await kernel.start()
        try await kernel.enable("calc")
        #expect(run(kernel, "tag", [.int(120)]) == "\"-\"")
        #expect(c.f.log.lines.contains { $0.contains("command tag took") && $0.contains("over its budget of 50 ms") })
        // KEEL_ERR_INVALID_ARGUMENT refuses the caller's input: any caller could send it, so it never disables.
        for _ in 0..<6 { _ = run(kernel, "div", [.int(1), .int(0)]) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(kernel.activePlugins.contains("calc"), "refusals of bad arguments disabled it")
        // KEEL_ERR_INTERNAL says the plugin is broken.
        for _ in 0..<3 { _ = run(kernel, "fail", []) }
        for _ in 0..<100 where kernel.activePlugins.contains("calc") { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!kernel.activePlugins.contains("calc"), "three failed calls in a row disabled it")
        let reason = try await kernel.plugin("calc").reason ?? ""
        #expect(reason == "disabled automatically: 3 calls in a row failed (last: command fail: calc.fail returned KEEL_ERR_INTERNAL)", "\(reason)")
        await kernel.shutdown()
    }
}
