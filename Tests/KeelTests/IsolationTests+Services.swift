// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelLoader
import KeelManifest
import Testing

/// Plugins built from Fixtures/plugins/gitops.c: providers and consumers of gitops.sync/1
/// (Plugins/deployer/gitops_sync.h), with the example's `functions:`.
struct GitOpsFixture {
    let f = KernelFixture()

    /// `functions:` of gitops.sync/1, as the example plugins declare them.
    static let functions = """
            functions:
              - {name: engine, signature: "() -> str"}
              - {name: sync, signature: "(str, str) -> status(buf)"}

        """

    func provider(_ id: String, extra: String = "", functions: String = GitOpsFixture.functions) throws {
        try bundle(id, ["PROVIDER", "ENGINE=\"\(id)\""], extra: "provides:\n  - interface: gitops.sync/1\n" + functions + extra)
    }

    func consumer(_ id: String, extra: String = "", functions: String = GitOpsFixture.functions) throws {
        try bundle(id, ["CONSUMER"], extra: "consumes:\n  - interface: gitops.sync/1\n" + functions + extra)
    }

    func bundle(_ id: String, _ defines: [String], extra: String) throws {
        let lib = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/gitops.c", name: id,
                                                  defines: ["PLUGIN_ID=\"\(id)\""] + defines,
                                                  extraFlags: ["-I", TestEnvironment.repository.path + "/Plugins/deployer"])
        try TestEnvironment.makeBundle(in: f.plugins, folder: id, manifest: TestEnvironment.manifest(
            id: id, library: "lib\(id).so", abi: "1.1", capabilities: ["routes"], extra: extra), library: lib)
    }
}

/// Services between plugins across the worker boundary: a provider in a worker serves consumers in the host through
/// a proxy table of its declared `functions:`.
extension IsolationTests {
    /// Waits (up to 10 s) until `id`'s worker was restarted `count` times.
    func waitForRestarts(_ kernel: Kernel, _ id: String, _ count: Int) async throws {
        let deadline = Date().addingTimeInterval(10)
        while try await kernel.plugin(id).workerRestarts ?? 0 < count, Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test("argo-sync in a worker serves the in-process deployer: GET /ext/deployer/sync/shop answers from argocd")
    func exampleProviderInAWorker() async throws {
        let f = KernelFixture()
        for folder in ["argo-sync", "deployer"] {
            try TestEnvironment.makeBundle(in: f.plugins, folder: folder, manifest: String(
                contentsOfFile: TestEnvironment.repository.path + "/Plugins/\(folder)/plugin.yaml", encoding: .utf8),
                library: try TestEnvironment.builtLibrary("lib\(folder).so"))
        }
        let at = ["--plugins", f.plugins, "--state", f.state]
        for arguments in [["plugins", "enable", "argo-sync"], ["plugins", "enable", "deployer"], ["plugins", "isolate", "argo-sync", "process"]] {
            let r = try TestEnvironment.run(keel, arguments + at)
            #expect(r.status == 0, "keel \(arguments.joined(separator: " ")): \(r.stderr)")
        }
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        #expect(try await info(server, "argo-sync")["workerPID"] as? Int != nil)
        let reply = try await server.request("GET", "/ext/deployer/sync/shop?rev=v2")
        #expect(reply.status == 200)
        #expect(reply.text.hasPrefix("argocd synced shop to v2 (provider argo-sync 1.0.0 generation "), "\(reply.text)")
        let provider = try await server.request("GET", "/ext/deployer/provider")
        #expect(provider.text.contains("\"provider\":\"argo-sync\""), "\(provider.text)")
    }

    @Test("a provider in a worker: str and status(buf) cross, a small out_cap gets KEEL_ERR_LIMIT with the needed size, a crash in sync is KEEL_ERR_UNAVAILABLE and the next call works")
    func providerInAWorker() async throws {
        let g = GitOpsFixture()
        try g.provider("remote", extra: "isolation: process\n")
        try g.consumer("user")
        let kernel = try g.f.kernel(workerExecutable: keel)
        await kernel.start()
        try await kernel.enable("remote")
        try await kernel.enable("user")
        #expect(try await kernel.plugin("remote").workerPID != nil)
        #expect(try await kernel.plugin("user").workerPID == nil)

        var r = call(kernel, "/ext/user/sync/shop")
        #expect(r.status == 200 && r.text == "remote synced shop to main engine=remote", "\(r)")
        // "remote synced shop to main" needs 26 bytes.
        r = call(kernel, "/ext/user/sync/shop", query: "cap=4")
        #expect(r.status == 502 && r.text == "status=8 len=26 engine=remote", "\(r)")
        r = call(kernel, "/ext/user/sync/shop", query: "cap=0")
        #expect(r.text == "status=8 len=26 engine=remote", "\(r)")

        r = call(kernel, "/ext/user/sync/crash")
        #expect(r.status == 502 && r.text.hasPrefix("status=10 "), "the consumer gets KEEL_ERR_UNAVAILABLE: \(r)")
        #expect(await logged(g.f.log, "[remote]", "service gitops.sync/1 sync: the worker process crashed with SIGSEGV during the call"))
        try await waitForRestarts(kernel, "remote", 1)
        r = call(kernel, "/ext/user/sync/app2")
        #expect(r.status == 200 && r.text == "remote synced app2 to main engine=remote", "\(r)")
        #expect(try await kernel.plugin("remote").status == .enabled)
        let info = try #require(await kernel.services().first { $0.interface == "gitops.sync/1" })
        #expect(info.providers.first?.leases == 0, "every lease was released")
        // Disabling the provider waits for leases as in the host; the consumer then finds none.
        try await kernel.execute(.disable(id: "remote", tenant: nil, cascade: true))
        await kernel.shutdown()
    }

    @Test("a provider's worker that forges answers claiming more bytes than the caller's buffer holds: refused, KEEL_ERR_UNAVAILABLE, nothing written past out_cap, logged")
    func forgedOverlongAnswer() async throws {
        let g = GitOpsFixture()
        try g.bundle("forger", ["PROVIDER", "ENGINE=\"forger\"", "FORGE_ANSWERS"],
                     extra: "provides:\n  - interface: gitops.sync/1\n" + GitOpsFixture.functions + "isolation: process\n")
        try g.consumer("user")
        let kernel = try g.f.kernel(workerExecutable: keel)
        await kernel.start()
        try await kernel.enable("forger")
        try await kernel.enable("user")
        #expect(try await kernel.plugin("forger").workerPID != nil)
        // A buffer of 256 and of 16 bytes: the forged 1,000-byte answer fits neither. The second call's forged frame can
        // be beaten by the first call's leftovers (read and dropped before the call was made): then the real answer
        // (27 bytes, over 16) comes through as KEEL_ERR_LIMIT. Either way nothing is written past the buffer (the
        // consumer's canary would answer 500).
        var refused16 = false
        for cap in ["", "cap=16"] {
            let r = call(kernel, "/ext/user/sync/forge", query: cap)
            let limit = cap == "cap=16" && r.status == 502 && r.text == "status=8 len=27 engine=forger"
            #expect((r.status == 502 && r.text.hasPrefix("status=10 ")) || limit, "\(cap): \(r)")
            if cap == "cap=16" { refused16 = !limit }
        }
        #expect(await logged(g.f.log, "[forger]", "its worker answered 1000 bytes for a buffer of 256; refused"))
        if refused16 { #expect(await logged(g.f.log, "[forger]", "its worker answered 1000 bytes for a buffer of 16; refused")) }
        // The real answers that came after the forged ones answered nothing; the worker kept serving. Forged frames for
        // call ids the host had not used yet may still be on their way (the host reads them as they come): the calls
        // they reach get them as any answer of the worker's (a `sync` refused, an `engine` name of X's), never more
        // bytes than their buffer holds, until the real answers come through.
        var r = call(kernel, "/ext/user/sync/shop")
        for _ in 0..<512 where r.text != "forger synced shop to main engine=forger" {
            #expect((r.status == 502 && r.text.hasPrefix("status=10 len=0 engine=")) || (r.status == 200 && r.text.hasSuffix("XXXX")),
                    "a forged answer is refused or bounded: \(r.status) \(r.text.prefix(80))")
            r = call(kernel, "/ext/user/sync/shop")
        }
        #expect(r.status == 200 && r.text == "forger synced shop to main engine=forger", "\(r)")
        #expect(try await kernel.plugin("forger").workerRestarts == 0)
        await kernel.shutdown()
    }

    @Test("provider and consumer functions: that disagree: acquire is KEEL_ERR_UNSUPPORTED, logged naming both plugins and the function")
    func functionsMismatch() async throws {
        let g = GitOpsFixture()
        try g.provider("remote", extra: "isolation: process\n")
        try g.consumer("user", functions: """
                functions:
                  - {name: engine, signature: "() -> str"}
                  - {name: sync, signature: "(str) -> status(buf)"}

            """)
        let kernel = try g.f.kernel(workerExecutable: keel)
        await kernel.start()
        try await kernel.enable("remote")
        try await kernel.enable("user")
        let r = call(kernel, "/ext/user/sync/shop")
        #expect(r.status == 503 && r.text == "acquire=6", "\(r)")
        #expect(await logged(g.f.log, "[user]", "gitops.sync/1: the functions: of consumer \"user\" and provider \"remote\" disagree: function 2 \"sync\" is (str) -> status(buf) for the consumer but \"sync\" (str, str) -> status(buf) for the provider"))
        await kernel.shutdown()
    }

    @Test("deployer in a worker consumes the in-process argo-sync; its listener hears a switch of provider")
    func exampleConsumerInAWorker() async throws {
        let g = GitOpsFixture()
        for folder in ["argo-sync", "deployer"] {
            var manifest = try String(contentsOfFile: TestEnvironment.repository.path + "/Plugins/\(folder)/plugin.yaml", encoding: .utf8)
            if folder == "deployer" { manifest += "isolation: process\n" }
            try TestEnvironment.makeBundle(in: g.f.plugins, folder: folder, manifest: manifest,
                                           library: try TestEnvironment.builtLibrary("lib\(folder).so"))
        }
        try g.provider("other")
        let kernel = try g.f.kernel(workerExecutable: keel)
        await kernel.start()
        for id in ["argo-sync", "other", "deployer"] { try await kernel.enable(id) }
        #expect(try await kernel.plugin("deployer").workerPID != nil)
        var r = call(kernel, "/ext/deployer/sync/shop", query: "rev=v2")
        #expect(r.status == 200 && r.text == "argocd synced shop to v2 (provider argo-sync 1.0.0 generation 1, gitops.sync 1.1.0)\n", "\(r)")
        r = call(kernel, "/ext/deployer/provider")
        #expect(r.text.contains("\"provider\":\"argo-sync\""), "\(r)")
        try await kernel.execute(.useProvider(interface: "gitops.sync/1", plugin: "other", tenant: nil))
        #expect(await logged(g.f.log, "[deployer]", "gitops.sync/1 now served by other 1.0.0 (host-wide)"), "the listener in the worker was told")
        r = call(kernel, "/ext/deployer/sync/shop")
        #expect(r.text.hasPrefix("other synced shop to main (provider other 1.0.0"), "\(r)")
        let info = try #require(await kernel.services().first { $0.interface == "gitops.sync/1" })
        #expect(info.providers.allSatisfy { $0.leases == 0 }, "the worker's leases were released on the host")
        await kernel.shutdown()
    }

    @Test("a worker that makes 40 host calls at once gets 32 of them, the rest refused as unavailable at once; the slots come back, and the host serves on")
    func hostCallsAtOnce() async throws {
        let g = GitOpsFixture()
        try g.bundle("slow", ["PROVIDER", "ENGINE=\"slow\"", "SYNC_SLEEP_MS=1500"], extra: "provides:\n  - interface: gitops.sync/1\n" + GitOpsFixture.functions)
        try g.bundle("fan", ["CONSUMER", "FANOUT=40"], extra: "consumes:\n  - interface: gitops.sync/1\n" + GitOpsFixture.functions + "isolation: process\n")
        let kernel = try g.f.kernel(workerExecutable: keel)
        await kernel.start()
        for id in ["slow", "fan"] { try await kernel.enable(id) }
        #expect(try await kernel.plugin("fan").workerPID != nil)
        // Each admitted call holds its slot for 1.5 s in the provider: all 40 are asked while the first 32 run.
        let started = ContinuousClock.now
        var r = await Task.detached { call(kernel, "/ext/fan/fan") }.value
        #expect(r.status == 200 && r.text == "ok=32 unavailable=8 other=0", "\(r)")
        #expect(ContinuousClock.now - started < .seconds(8), "the refused calls did not wait for a slot")
        // Every slot came back (32 kept would refuse all 40 again), and the worker was not killed for asking.
        r = await Task.detached { call(kernel, "/ext/fan/fan") }.value
        #expect(r.status == 200 && r.text == "ok=32 unavailable=8 other=0", "\(r)")
        #expect(try await kernel.plugin("fan").workerRestarts ?? 0 == 0)
        let info = try #require(await kernel.services().first { $0.interface == "gitops.sync/1" })
        #expect(info.providers.first?.leases == 0)
        await kernel.shutdown()
    }

    @Test("a consumer and a provider, each in a worker: calls cross both, KEEL_ERR_LIMIT with the needed size; lease ids are the worker's own")
    func bothInWorkers() async throws {
        let g = GitOpsFixture()
        try g.provider("remote", extra: "isolation: process\n")
        try g.consumer("user", extra: "isolation: process\n")
        try g.bundle("rogue", ["CONSUMER", "RAW_FRAMES"], extra: "consumes:\n  - interface: gitops.sync/1\n" + GitOpsFixture.functions + "isolation: process\n")
        let kernel = try g.f.kernel(workerExecutable: keel)
        await kernel.start()
        for id in ["remote", "user", "rogue"] { try await kernel.enable(id) }
        var r = call(kernel, "/ext/user/sync/shop")
        #expect(r.status == 200 && r.text == "remote synced shop to main engine=remote", "\(r)")
        r = call(kernel, "/ext/user/sync/shop", query: "cap=4")
        #expect(r.status == 502 && r.text == "status=8 len=26 engine=remote", "\(r)")
        // The rogue releases and calls lease 1, which is not its own: refused and logged, the worker not killed.
        #expect(call(kernel, "/ext/rogue/raw").text == "sent")
        #expect(await logged(g.f.log, "[rogue]", "released a service lease it does not hold"))
        r = call(kernel, "/ext/rogue/sync/app")
        #expect(r.status == 200 && r.text == "remote synced app to main engine=remote", "\(r)")
        #expect(try await kernel.plugin("rogue").workerRestarts ?? 0 == 0)
        let info = try #require(await kernel.services().first { $0.interface == "gitops.sync/1" })
        #expect(info.providers.first?.leases == 0)
        await kernel.shutdown()
    }

    @Test("a consumer in a worker cannot call a provider that declares no functions: KEEL_ERR_UNSUPPORTED, logged naming it")
    func undeclaredProviderForAWorker() async throws {
        let s = ServicesFixture()
        try s.provider("echoer", tag: "E")
        try s.consumer("user", consumes: "[{interface: test.echo/1, functions: [{name: echo, signature: \"(str) -> i32\"}]}]\nisolation: process")
        let kernel = try s.f.kernel(workerExecutable: keel)
        await kernel.start()
        try await kernel.enable("echoer")
        try await kernel.enable("user")
        #expect(try await kernel.plugin("user").workerPID != nil)
        let r = call(kernel, "/ext/user/call", query: "hi")
        #expect(r.status == 503 && r.text == "status=6", "\(r)")
        #expect(await logged(s.f.log, "[user]", "test.echo/1 is served by \"echoer\", which does not declare its functions under functions:, so a consumer in a worker process cannot call it"))
        await kernel.shutdown()
    }

    @Test("a provider without functions: is refused in a worker, saying to declare them; a consumer is refused with its reason")
    func servicesRefusedInAWorker() async throws {
        let s = ServicesFixture()
        try s.provider("echoer", tag: "E")
        try s.consumer("user")
        let kernel = try s.f.kernel(workerExecutable: keel)
        await kernel.start()
        try await kernel.enable("echoer")
        try await kernel.enable("user")
        // The operator moves the consumer: refused up front, and it goes on serving in the host.
        await #expect { try await kernel.setIsolation("user", .process) } throws: { error in
            "\(error)".contains("plugin \"user\" consumes test.echo/1, whose functions are not declared, so it cannot call the table from a worker process; declare them under functions: of its consumes: entry")
        }
        #expect(try await kernel.plugin("user").workerPID == nil)
        #expect(call(kernel, "/ext/user/call", query: "hi").status == 200)
        // A provider whose manifest asks for a worker, without functions:, fails to activate, with the reason.
        try s.bundle("remote-echoer", ["PROVIDER", "TAG=\"R\""], extra: "provides:\n  - interface: test.echo/1\nisolation: process\n")
        await #expect(throws: KernelError.self) { try await kernel.enable("remote-echoer") }
        let info = try await kernel.plugin("remote-echoer")
        #expect(info.status == .failed)
        #expect(info.reason?.contains("plugin \"remote-echoer\" provides test.echo/1, whose functions are not declared, so its table cannot cross a process boundary; declare them under functions: of its provides: entry in plugin.yaml") == true, "\(info.reason ?? "")")
        await kernel.shutdown()
    }
}

@Suite("plugin.yaml: functions of an interface", .scheduled)
struct ServiceFunctionManifestTests {
    func parse(_ tail: String) throws(ManifestError) -> Manifest {
        try ManifestLoader().parse(Data("id: x\nname: X\nversion: 1.0.0\nabi: \"1.1\"\nlibrary: lib.so\n\(tail)".utf8), file: "x/plugin.yaml").0
    }

    func error(_ tail: String) -> String {
        do { _ = try parse(tail); return "no error" } catch { return error.description }
    }

    @Test("functions: parse in order, with str and status(buf) results; the example plugins declare them")
    func parses() throws {
        let m = try parse("provides:\n  - interface: gitops.sync/1\n" + GitOpsFixture.functions
                          + "consumes:\n  - interface: other.thing/1\n    functions: [{name: add, signature: \"(i64, i64) -> i64\"}]\n")
        #expect(m.provides.first?.functions.map { "\($0.name) \($0.signature)" } == ["engine () -> str", "sync (str, str) -> status(buf)"])
        #expect(m.consumes.first?.functions.map { "\($0.name) \($0.signature)" } == ["add (i64, i64) -> i64"])
        for folder in ["argo-sync", "flux-sync", "deployer"] {
            let (example, _) = try ManifestLoader().load(path: TestEnvironment.repository.path + "/Plugins/\(folder)/plugin.yaml")
            let functions = example.provides.first?.functions ?? example.consumes.first?.functions ?? []
            #expect(functions.map(\.name) == ["engine", "sync"], "\(folder)")
        }
    }

    @Test("a function signature that does not parse is a manifest error naming the line and key")
    func errors() {
        #expect(error("provides:\n  - interface: a.b/1\n    functions:\n      - {name: f, signature: \"(str) -> status(json)\"}\n")
            == "x/plugin.yaml:9: key \"provides[0].functions[0].signature\": a service function cannot return status(json): use status(buf) (trailing char *out, size_t out_cap, size_t *out_len) or str")
        #expect(error("consumes:\n  - interface: a.b/1\n    functions:\n      - {name: f, signature: \"(int) -> str\"}\n")
            .hasSuffix("key \"consumes[0].functions[0].signature\": argument 1 type \"int\" is not one of i32, i64, u32, u64, f64, bool, str, bytes"))
        #expect(error("provides:\n  - interface: a.b/1\n    functions: sync\n").hasSuffix("expected a list such as [{name: sync, signature: \"(str, str) -> status(buf)\"}], found \"sync\""))
        #expect(error("provides:\n  - interface: a.b/1\n    functions:\n      - {name: F, signature: \"() -> void\"}\n")
            .contains("\"F\" is not a function name"))
    }
}
