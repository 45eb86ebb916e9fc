// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelExtensions
import Testing

/// The admin API endpoints the console's views use (AdminAPI+Console.swift), against a real `keel serve`.
@Suite("the console's admin API", .serialized, .scheduled)
struct ConsoleAPITests {
    /// The examples enabled (hello ships a config schema), "tuned" failed for want of a configuration.
    static func server() throws -> (KernelFixture, ServerProcess) {
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("tuned", capabilities: ["routes"])
        try "type: object\nrequired: [level]\nproperties:\n  level: {type: integer, minimum: 1, maximum: 3}\n"
            .write(toFile: f.plugins + "/tuned/config.schema.yaml", atomically: true, encoding: .utf8)
        for id in ["hello", "greeter"] {
            try TestEnvironment.grantSensitive(id, plugins: f.plugins, state: f.state)
            #expect(try TestEnvironment.run(keel, ["plugins", "enable", id] + at).status == 0)
        }
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "tuned"] + at).status != 0)
        return (f, try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"]))
    }

    @Test("GET /api/v1/overview: version, uptime, counts by state, failures with reasons, the recent change events; admin only")
    func overview() async throws {
        let (_, server) = try Self.server()
        defer { server.stop() }
        #expect(try await server.request("GET", "/api/v1/overview").status == 401)
        #expect(try await server.request("POST", "/api/v1/plugins/greeter/disable", admin: true).status == 200)
        let reply = try await server.request("GET", "/api/v1/overview", admin: true)
        let o = try #require(reply.json as? [String: Any], "\(reply.text)")
        #expect((o["version"] as? String)?.isEmpty == false)
        #expect((o["uptimeSeconds"] as? Int).map { $0 >= 0 } == true)
        let counts = o["byState"] as? [String: Int] ?? [:]
        #expect(counts["enabled"] == 1 && counts["disabled"] == 1 && counts["failed"] == 1 && counts["missing"] == 0, "\(counts)")
        #expect(o["plugins"] as? Int == 3)
        let failures = o["failures"] as? [[String: Any]] ?? []
        #expect(failures.count == 1 && failures.first?["id"] as? String == "tuned", "\(failures)")
        #expect((failures.first?["reason"] as? String)?.contains("needs a valid configuration") == true, "\(failures)")
        let events = o["events"] as? [[String: Any]] ?? []
        let last = try #require(events.last, "no events: \(reply.text)")
        #expect(last["op"] as? String == "disable" && last["subject"] as? String == "greeter", "\(last)")
        #expect(last["actor"] as? String == "admin-api" && last["ok"] as? Bool == true, "\(last)")
    }

    @Test("config: the schema as JSON (null without one, 404 for no plugin); a value it refuses is 422 bad-config, a good one is stored")
    func config() async throws {
        let (_, server) = try Self.server()
        defer { server.stop() }
        let schema = try await server.request("GET", "/api/v1/plugins/tuned/config/schema", admin: true)
        let body = try #require(schema.json as? [String: Any], "\(schema.text)")
        let level = ((body["schema"] as? [String: Any])?["properties"] as? [String: Any])?["level"] as? [String: Any]
        #expect(level?["type"] as? String == "integer" && level?["maximum"] as? Int == 3, "\(schema.text)")
        #expect(try await server.request("GET", "/api/v1/plugins/greeter/config/schema", admin: true).text == #"{"schema":null}"#)
        #expect(try await server.request("GET", "/api/v1/plugins/nosuch/config/schema", admin: true).errorCode == "unknown-plugin")
        #expect(try await server.request("GET", "/api/v1/plugins/tuned/config/schema").status == 401)

        let refused = try await server.request("PUT", "/api/v1/plugins/tuned/config", admin: true, body: Data(#"{"level": 9}"#.utf8))
        #expect(refused.status == 422 && refused.errorCode == "bad-config", "\(refused.text)")
        #expect(refused.text.contains("level") && refused.text.contains("above the maximum 3"), "\(refused.text)")
        #expect(!refused.text.contains(server.plugins), "no host path in the message: \(refused.text)")
        let good = try await server.request("PUT", "/api/v1/plugins/tuned/config", admin: true, body: Data("level: 2\n".utf8))
        #expect(good.status == 200, "\(good.text)")
        let stored = try await server.request("GET", "/api/v1/plugins/tuned/config", admin: true)
        #expect((stored.json as? [String: Any])?["json"] as? String == #"{"level":2}"#, "\(stored.text)")
        // What a GET gives is what a PUT takes: the object, or the YAML text.
        #expect(stored.text == #"{"config":{"level":2},"json":"{\"level\":2}","yaml":"level: 2\n"}"#, "\(stored.text)")
        let back = try await server.request("PUT", "/api/v1/plugins/tuned/config", admin: true, body: Data(#"{"level":2}"#.utf8))
        #expect(back.status == 200, "\(back.text)")
        #expect(try await server.request("GET", "/api/v1/plugins/greeter/config", admin: true).text == #"{"config":null,"json":"","yaml":""}"#)
    }

    @Test("trust keys: listed, added (a key that is not 32 bytes of base64 is 400 bad-key); a repository removed")
    func trustAndRepositories() async throws {
        let (f, server) = try Self.server()
        defer { server.stop() }
        #expect(try await server.request("GET", "/api/v1/trust", admin: true).text == "[]")
        let bad = try await server.request("POST", "/api/v1/trust", admin: true, body: Data(#"{"name":"acme","publicKey":"c2hvcnQ="}"#.utf8))
        #expect(bad.status == 400 && bad.errorCode == "bad-key", "\(bad.text)")
        let key = Data(repeating: 7, count: 32).base64EncodedString()
        let added = try await server.request("POST", "/api/v1/trust", admin: true, body: Data(#"{"name":"acme","publicKey":"\#(key)"}"#.utf8))
        #expect(added.status == 201, "\(added.text)")
        let listed = try await server.request("GET", "/api/v1/trust", admin: true)
        #expect((listed.json as? [[String: String]]) == [["name": "acme", "publicKey": key, "fingerprint": ExtensionStore.fingerprint(key)]],
                "\(listed.text)")
        let cli = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["trust", "list", "--plugins", f.plugins, "--state", f.state])
        #expect(cli.stdout.contains("acme"), "the CLI sees the same store: \(cli.stdout)")
        let removed = try await server.request("DELETE", "/api/v1/trust/acme", admin: true)
        #expect(removed.status == 200 && (removed.json as? [String: String]) == ["deleted": "acme", "note": "key \(ExtensionStore.fingerprint(key))"],
                "\(removed.text)")
        #expect(try await server.request("GET", "/api/v1/trust", admin: true).text == "[]")
        let gone = try await server.request("DELETE", "/api/v1/trust/acme", admin: true)
        #expect(gone.status == 404 && gone.errorCode == "not-found", "\(gone.status) \(gone.text)")
        // The CLI's `keel trust remove`, on the same store.
        let keel = TestEnvironment.binPath + "/keel", at = ["--plugins", f.plugins, "--state", f.state]
        #expect(try await server.request("POST", "/api/v1/trust", admin: true, body: Data(#"{"name":"acme","publicKey":"\#(key)"}"#.utf8)).status == 201)
        let untrusted = try TestEnvironment.run(keel, ["trust", "remove", "acme"] + at)
        #expect(untrusted.status == 0 && untrusted.stdout == "no longer trusting acme (key \(ExtensionStore.fingerprint(key)))\n",
                "\(untrusted.stdout) \(untrusted.stderr)")
        #expect(try await server.request("GET", "/api/v1/trust", admin: true).text == "[]")
        let unknown = try TestEnvironment.run(keel, ["trust", "remove", "acme"] + at)
        #expect(unknown.status == 1 && unknown.stderr == "keel: error: unknown trusted key \"acme\" (keel trust list names them)\n", "\(unknown.stderr)")

        let repo = TestEnvironment.makeTemporaryDirectory("repo")
        #expect(try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["repo", "index", repo]).status == 0)
        let add = try await server.request("POST", "/api/v1/repositories", admin: true,
                                           body: Data(#"{"name":"local","location":"\#(repo)"}"#.utf8))
        #expect(add.status == 201, "\(add.text)")
        #expect(try await server.request("DELETE", "/api/v1/repositories/local", admin: true).status == 200)
        #expect(try await server.request("GET", "/api/v1/repositories", admin: true).text == "[]")
        let again = try await server.request("DELETE", "/api/v1/repositories/local", admin: true)
        #expect(again.status == 404 && again.errorCode == "not-found", "\(again.text)")
    }
}
