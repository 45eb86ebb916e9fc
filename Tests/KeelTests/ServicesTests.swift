// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABIGrown
import Foundation
import Keel
import KeelLoader
import KeelManifest
import Synchronization
import Testing

/// Plugins built from Fixtures/plugins/services.c: providers of "test.echo/1" and consumers of it.
struct ServicesFixture {
    let f = KernelFixture()

    /// Makes bundle `id` lazy (`activation: lazy` added to the manifest the fixture wrote).
    func makeLazy(_ id: String) throws {
        let manifestPath = f.plugins + "/\(id)/plugin.yaml"
        try (String(contentsOfFile: manifestPath, encoding: .utf8) + "\nactivation: lazy\n").write(toFile: manifestPath, atomically: true, encoding: .utf8)
    }

    /// A provider bundle: `provides` is the manifest's entry text (after "interface:").
    func provider(_ id: String, tag: String, ranking: Int = 0, version: String? = nil, defines: [String] = [],
                  provides: String = "test.echo/1", consumes: String = "") throws {
        var extra = "provides:\n  - interface: \(provides)\n    ranking: \(ranking)\n"
        if let version { extra += "    version: \"\(version)\"\n" }
        if !consumes.isEmpty { extra += "consumes:\n  - interface: \(consumes)\n" }
        try bundle(id, ["PROVIDER", "TAG=\"\(tag)\""] + defines, extra: extra)
    }

    /// A consumer bundle: `consumes` is its manifest's `consumes:` list.
    func consumer(_ id: String, consumes: String = "[{interface: test.echo, version: \"^1\"}]", defines: [String] = []) throws {
        try bundle(id, ["CONSUMER"] + defines, extra: "consumes: \(consumes)\n")
    }

    func bundle(_ id: String, _ defines: [String], extra: String) throws {
        let lib = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/services.c", name: id,
                                                  defines: ["PLUGIN_ID=\"\(id)\""] + defines)
        try TestEnvironment.makeBundle(in: f.plugins, folder: id, manifest: TestEnvironment.manifest(
            id: id, library: "lib\(id).so", abi: "1.1", capabilities: ["routes", "menus"], extra: extra), library: lib)
    }

    func kernel() throws -> Kernel { try f.kernel() }

    /// Two providers of test.echo/1 ("alpha", tag A; "beta", tag B at `betaRanking`) and a consumer "user", staged and
    /// found by a started kernel; none enabled yet.
    func twoProvidersAndUser(betaRanking: Int = 0) async throws -> Kernel {
        try provider("alpha", tag: "A")
        try provider("beta", tag: "B", ranking: betaRanking)
        try consumer("user")
        let kernel = try kernel()
        await kernel.start()
        return kernel
    }
}

/// `call` on a thread of its own: a handler whose acquire wakes an idle provider waits for the kernel, which must
/// not hold one of Swift's pool threads.
func callOffPool(_ kernel: Kernel, _ path: String, query: String = "", tenant: String = Principal.defaultTenant) async -> (status: Int, text: String) {
    await withCheckedContinuation { done in
        Thread.detachNewThread { done.resume(returning: call(kernel, path, query: query, tenant: tenant)) }
    }
}

/// Calls a consumer's route in-process, as `tenant`.
func call(_ kernel: Kernel, _ path: String, query: String = "", tenant: String = Principal.defaultTenant) -> (status: Int, text: String) {
    let snapshot = kernel.registry.snapshot
    guard let match = snapshot.route(method: "GET", path: path) else { return (404, "no route") }
    let request = PluginRequest(method: "GET", path: path, routePath: match.routePath, query: query, parameters: match.parameters,
                                principal: Principal(id: "tester", tenant: tenant, authenticatedBy: "keel"))
    switch match.route.handler.handle(request) {
    case let .success(r): return (r.status, r.bodyText)
    case let .failure(e): return (500, e.description)
    }
}

@Suite("services between plugins", .scheduled)
struct ServicesTests {
    @Test("a consumer calls the provider the rule picks, then the one the operator picks, host-wide and per tenant; choices survive a restart")
    func chooseProvider() async throws {
        let s = ServicesFixture()
        try s.provider("alpha", tag: "A", ranking: 5)
        try s.provider("beta", tag: "B", ranking: 10, version: "1.2.0")
        try s.consumer("user")
        let kernel = try s.kernel()
        await kernel.start()
        for id in ["alpha", "beta", "user"] { try await kernel.enable(id) }

        var r = call(kernel, "/ext/user/call", query: "hi")
        #expect(r.status == 200)
        #expect(r.text == "tag=B echo=hi provider=beta gen=1 v=1.2.0", "highest ranking serves: \(r.text)")
        #expect(s.f.log.lines.contains {
            $0.contains("test.echo/1 is now served by \"beta\" (highest ranking) instead of \"alpha\"; keep the old one with `keel services use test.echo/1 alpha`")
        }, "a takeover by ranking is logged, with the command that undoes it")
        var info = try #require(await kernel.services().first { $0.interface == "test.echo/1" })
        #expect(info.serving.first?.provider == "beta")
        #expect(info.serving.first?.reason == "highest ranking")
        #expect(info.providers.map(\.plugin) == ["beta", "alpha"])
        #expect(info.consumers.map(\.plugin) == ["user"])

        try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: "alpha", tenant: nil))
        r = call(kernel, "/ext/user/call", query: "again")
        #expect(r.text.hasPrefix("tag=A echo=again provider=alpha"), "\(r.text)")
        #expect(call(kernel, "/ext/user/heard").text == "notes=1 last=alpha", "the listener was told of the switch")
        info = try #require(await kernel.services().first { $0.interface == "test.echo/1" })
        #expect(info.serving.first?.reason == "chosen by the operator")

        try await kernel.execute(.createTenant(name: "acme"))
        try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: "beta", tenant: "acme"))
        #expect(call(kernel, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=beta"))
        #expect(call(kernel, "/ext/user/call", query: "x").text.contains("provider=alpha"), "other tenants keep the host-wide choice")
        #expect(call(kernel, "/ext/user/heard").text == "notes=2 last=beta@acme")
        let inspect = try await kernel.plugin("beta")
        #expect(inspect.provides == ["test.echo/1 1.2.0 ranking 10, serving tenant acme"], "\(inspect.provides)")
        await kernel.shutdown()

        let again = try s.kernel()
        await again.start()
        #expect(call(again, "/ext/user/call", query: "x").text.contains("provider=alpha"), "the host-wide choice is stored")
        #expect(call(again, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=beta"), "so is the tenant's")
        // A tenant removed takes its choice with it: a new tenant of the same name starts with the host-wide one.
        try await again.execute(.deleteTenant(name: "acme", cascade: true))
        var serving = try #require(await again.services().first { $0.interface == "test.echo/1" }).serving
        #expect(serving.map { "\($0.tenant)=\($0.provider ?? "-")" } == ["=alpha"], "\(serving)")
        try await again.execute(.createTenant(name: "acme"))
        #expect(call(again, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=alpha"))
        serving = try #require(await again.services().first { $0.interface == "test.echo/1" }).serving
        #expect(serving.map { "\($0.tenant)=\($0.provider ?? "-")" } == ["=alpha"], "\(serving)")
        try await again.execute(.useProvider(interface: "test.echo/1", plugin: nil, tenant: nil))
        #expect(call(again, "/ext/user/call", query: "x").text.contains("provider=beta"), "forgetting the choice brings the rule back")
        await again.shutdown()
    }

    @Test("a provider enabled for some tenants only serves those tenants' acquires, never another tenant's nor one made for no tenant")
    func tenantLimitedProvider() async throws {
        let s = ServicesFixture()
        try s.provider("alpha", tag: "A", ranking: 5)
        try s.provider("beta", tag: "B", ranking: 10)
        try s.consumer("user")
        try s.consumer("relaxed", consumes: "[{interface: test.echo/1, optional: true}]")
        try s.consumer("outsider", consumes: "[{interface: test.echo/1, optional: true}]")
        let kernel = try s.kernel()
        await kernel.start()
        try await kernel.execute(.createTenant(name: "acme"))
        try await kernel.execute(.createTenant(name: "evilco"))
        try await kernel.execute(.enable(id: "beta", tenant: "acme"))
        // A consumer enabled for evilco only cannot lease acme's provider by naming acme (it could until 2026-12-08:
        // a security review's plugin read acme's provider's configuration so); for its own tenant it finds none.
        try await kernel.execute(.enable(id: "outsider", tenant: "evilco"))
        #expect(call(kernel, "/ext/outsider/call", query: "x", tenant: "acme") == (503, "status=\(StatusCode.denied)"))
        #expect(call(kernel, "/ext/outsider/call", query: "x", tenant: "evilco") == (503, "status=\(StatusCode.notFound)"))
        #expect(kernel.logs.lines("outsider").contains { $0.message.contains("for tenant \"acme\" denied: \"outsider\" is not enabled for that tenant") })
        // Requiring the interface for every tenant, with acme's provider alone, is refused; for acme it is not.
        await #expect { try await kernel.enable("user") } throws: { error in
            "\(error)".hasPrefix("plugin \"user\" is enabled for every tenant and needs interface test.echo/1 ^1 in each, but its "
                + "providers are enabled for some tenants only (\"beta\" for acme)")
        }
        try await kernel.execute(.enable(id: "user", tenant: "acme"))
        try await kernel.enable("relaxed")
        // beta ranks higher but is acme's only: every other caller gets no provider at all.
        #expect(call(kernel, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=beta"))
        #expect(call(kernel, "/ext/relaxed/call", query: "x") == (503, "status=\(StatusCode.notFound)"), "the default tenant's acquire finds none")
        #expect(call(kernel, "/ext/relaxed/call", query: "x", tenant: "") == (503, "status=\(StatusCode.notFound)"), "nor does one for no tenant")
        // user, running for acme, is not widened to every tenant while acme's provider is all there is.
        await #expect { try await kernel.execute(.enable(id: "user", tenant: nil)) } throws: { error in
            "\(error)".contains("is enabled for every tenant and needs interface test.echo/1 ^1 in each")
        }
        #expect(try await kernel.plugin("user").tenants == ["acme"], "a refused widening stores nothing")
        // With a provider for everyone, the others get it, and the operator's host-wide choice of beta does not reach them.
        try await kernel.enable("alpha")
        try await kernel.execute(.enable(id: "user", tenant: nil))
        #expect(call(kernel, "/ext/user/call", query: "x").text.contains("provider=alpha"))
        #expect(call(kernel, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=beta"))
        let chosen = try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: "beta", tenant: nil))
        #expect(call(kernel, "/ext/user/call", query: "x").text.contains("provider=alpha"))
        // Stored, and the answer says it does not serve and why (the CLI prints it in place of "served by beta").
        #expect(chosen.note == "beta is chosen, but does not serve host-wide: it is enabled for tenant(s) acme only; serving now: alpha",
                "\(String(describing: chosen.note))")
        let info = try #require(await kernel.services().first { $0.interface == "test.echo/1" })
        #expect(info.serving.map { "\($0.tenant)=\($0.provider ?? "-")" } == ["=alpha", "acme=beta"],
                "host-wide alpha serves; beta serves acme: \(info.serving)")
        #expect(try await kernel.plugin("beta").provides == ["test.echo/1 1.0.0 ranking 10, serving tenant acme"])
        // The consumer's listener hears of each tenant's provider, a change of tenancy included.
        #expect(call(kernel, "/ext/user/heard").text == "notes=1 last=alpha", "alpha came for everyone but acme")
        try await kernel.execute(.disable(id: "beta", tenant: "acme", cascade: false))
        #expect(call(kernel, "/ext/user/heard").text == "notes=2 last=alpha@acme", "acme is served by alpha now")
        #expect(call(kernel, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=alpha"))
        await kernel.shutdown()
    }

    @Test("a required interface without a provider keeps the consumer down, naming it; an optional one activates and hears when a provider comes")
    func requiredAndOptional() async throws {
        let s = ServicesFixture()
        try s.provider("alpha", tag: "A")
        try s.consumer("needy")
        try s.consumer("relaxed", consumes: "[{interface: test.echo/1, optional: true}]")
        try s.consumer("picky", consumes: "[{interface: test.echo, version: \"^1.3\"}]")
        let kernel = try s.kernel()
        await kernel.start()

        await #expect { try await kernel.enable("needy") } throws: { error in
            "\(error)" == "plugin \"needy\" needs interface test.echo/1 ^1, which no enabled plugin provides (enable one of \"alpha\")"
        }
        // Refused, nothing stored: not left wanted and failed.
        let needy = try await kernel.plugin("needy")
        #expect(needy.status == .installed && !needy.enabled, "\(needy)")
        try await kernel.enable("relaxed")
        #expect(call(kernel, "/ext/relaxed/call").text == "status=\(StatusCode.notFound)", "no provider yet")
        try await kernel.enable("alpha")
        #expect(call(kernel, "/ext/relaxed/heard").text == "notes=1 last=alpha", "told when the provider appeared")
        #expect(call(kernel, "/ext/relaxed/call", query: "now").text.hasPrefix("tag=A echo=now"))
        try await kernel.enable("needy")
        #expect(call(kernel, "/ext/needy/call", query: "ok").status == 200)
        await #expect { try await kernel.enable("picky") } throws: { error in
            "\(error)".contains("needs interface test.echo/1 ^1.3, which no enabled plugin provides")
        }
        await kernel.shutdown()
    }

    @Test("disabling the last provider of a required interface is refused unless --cascade; a second provider takes over")
    func disableLastProvider() async throws {
        let s = ServicesFixture()
        let kernel = try await s.twoProvidersAndUser()
        for id in ["alpha", "beta", "user"] { try await kernel.enable(id) }
        #expect(call(kernel, "/ext/user/call").text.contains("provider=alpha"), "a ranking tie: the first enabled")

        try await kernel.disable("alpha")
        #expect(call(kernel, "/ext/user/call").text.contains("provider=beta"), "the other provider serves at once")
        #expect(call(kernel, "/ext/user/heard").text == "notes=1 last=beta")
        await #expect { try await kernel.disable("beta") } throws: { error in
            "\(error)" == "plugin \"beta\" is needed by enabled plugin(s) \"user\" (through interface test.echo/1); disable them first or use --cascade"
        }
        #expect(call(kernel, "/ext/user/call").status == 200, "a refused disable changes nothing")
        try await kernel.disable("beta", cascade: true)
        #expect(kernel.activePlugins.isEmpty)
        await kernel.shutdown()
    }

    @Test("a provider that serves every tenant is not disabled, nor taken out of a tenant, while a consumer needs it there; --cascade takes the consumer out of that tenant with it")
    func tenantCoverageOnDisable() async throws {
        let s = ServicesFixture()
        let kernel = try await s.twoProvidersAndUser(betaRanking: 5)
        for tenant in ["acme", "zeta"] { try await kernel.execute(.createTenant(name: tenant)) }
        try await kernel.enable("alpha")
        try await kernel.execute(.enable(id: "beta", tenant: "acme"))
        try await kernel.enable("user")
        // beta serves acme only: user, enabled for every tenant, still needs alpha, whole and in each tenant.
        await #expect { try await kernel.disable("alpha") } throws: { error in
            "\(error)" == "plugin \"alpha\" is needed by enabled plugin(s) \"user\" (through interface test.echo/1); disable them first or use --cascade"
        }
        await #expect { try await kernel.execute(.disable(id: "alpha", tenant: "zeta", cascade: false)) } throws: { error in
            "\(error)" == "plugin \"alpha\" cannot stop serving tenant zeta: enabled plugin(s) \"user\" (through interface test.echo/1) would "
                + "be left without a provider in some tenant they serve; disable them for zeta first (`keel plugins disable user --tenant zeta`) "
                + "or use --cascade"
        }
        #expect(try await kernel.plugin("alpha").tenants == nil, "a refused disable stores nothing")
        // With --cascade, user leaves zeta with alpha.
        let cascaded = try await kernel.execute(.disable(id: "alpha", tenant: "zeta", cascade: true))
        #expect(cascaded.note == "also disabled for tenant zeta, as they need it: user", "\(String(describing: cascaded.note))")
        #expect(try await kernel.plugin("user").tenants == ["acme", "default"])
        #expect(try await kernel.plugin("alpha").tenants == ["acme", "default"])
        // The default tenant is still alpha's alone; acme has beta too.
        await #expect { try await kernel.execute(.disable(id: "alpha", tenant: "default", cascade: false)) } throws: { error in
            "\(error)".hasPrefix("plugin \"alpha\" cannot stop serving tenant default")
        }
        try await kernel.execute(.disable(id: "alpha", tenant: "acme", cascade: false))
        #expect(call(kernel, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=beta"))
        #expect(call(kernel, "/ext/user/call", query: "x").text.contains("provider=alpha"))
        // Once user serves acme alone, beta is enough, and alpha may go.
        try await kernel.execute(.disable(id: "user", tenant: "default", cascade: false))
        try await kernel.disable("alpha")
        #expect(call(kernel, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=beta"))
        await #expect { try await kernel.disable("beta") } throws: { error in
            "\(error)".hasPrefix("plugin \"beta\" is needed by enabled plugin(s) \"user\"")
        }
        await kernel.shutdown()
    }

    @Test("a tenant removed with --cascade takes its own provider along, and a consumer that keeps other tenants stays; an unknown tenant is named before coverage is judged")
    func tenantRemovalKeepsConsumer() async throws {
        let s = ServicesFixture()
        let kernel = try await s.twoProvidersAndUser()
        for tenant in ["acme", "zeta"] { try await kernel.execute(.createTenant(name: tenant)) }
        try await kernel.execute(.enable(id: "alpha", tenant: "acme"))
        try await kernel.execute(.enable(id: "beta", tenant: "zeta"))
        await #expect { try await kernel.execute(.enable(id: "user", tenant: "nowhere")) } throws: { "\($0)" == "unknown tenant \"nowhere\"" }
        try await kernel.execute(.enable(id: "user", tenant: "acme"))
        try await kernel.execute(.enable(id: "user", tenant: "zeta"))
        // zeta goes, and beta (zeta's only) with it; user keeps acme, which alpha serves.
        try await kernel.execute(.deleteTenant(name: "zeta", cascade: true))
        let user = try await kernel.plugin("user")
        #expect(user.enabled && user.status == .enabled && user.tenants == ["acme"], "\(user)")
        #expect(try await kernel.plugin("beta").enabled == false)
        #expect(call(kernel, "/ext/user/call", query: "x", tenant: "acme").text.contains("provider=alpha"))
        await kernel.shutdown()
    }

    @Test("a cycle through interfaces is refused at start-up, naming the plugins and the interfaces")
    func cycle() async throws {
        let s = ServicesFixture()
        try s.provider("one", tag: "1", provides: "x.one/1", consumes: "x.two/1")
        try s.provider("two", tag: "2", provides: "x.two/1", consumes: "x.one/1")
        let kernel = try s.kernel()
        for id in ["one", "two"] { try kernel.state.setEnabled(id, true, status: .installed) }
        await kernel.start()
        #expect(kernel.activePlugins.isEmpty)
        let reason = try await kernel.plugin("one").reason ?? ""
        #expect(reason == "dependency cycle: one → two (x.two/1) → one (x.one/1)", "\(reason)")
        await kernel.shutdown()
    }

    @Test("bad registrations fail the provider's activation with one line each, register nothing, and leave other plugins serving")
    func badProviders() async throws {
        let s = ServicesFixture()
        try s.provider("good", tag: "G")
        try s.consumer("user")
        try s.provider("undeclared", tag: "U", defines: ["PROVIDE_ID=\"other.thing/1\""])
        try s.provider("twice", tag: "T", defines: ["PROVIDE_TWICE"])
        try s.provider("tiny", tag: "S", defines: ["TABLE_SIZE=4"])
        try s.provider("silent", tag: "N", defines: ["NO_PROVIDE"])
        let kernel = try s.kernel()
        await kernel.start()
        try await kernel.enable("good")
        try await kernel.enable("user")
        let expected = [
            "undeclared": "service other.thing/1: not declared under provides: in plugin.yaml (declared: test.echo/1)",
            "twice": "service test.echo/1 is provided twice by plugin \"twice\"",
            "tiny": "service test.echo/1: the table's struct_size is 4",
            "silent": "declares provides test.echo/1 in plugin.yaml but registered no table for it during activate",
        ]
        for (id, reason) in expected.sorted(by: { $0.key < $1.key }) {
            await #expect(throws: KernelError.self) { try await kernel.enable(id) }
            let info = try await kernel.plugin(id)
            #expect(info.status == .failed)
            #expect(info.reason?.contains(reason) == true, "\(id): \(info.reason ?? "")")
            #expect(info.routes.isEmpty)
        }
        let info = try #require(await kernel.services().first { $0.interface == "test.echo/1" })
        #expect(info.providers.filter(\.active).map(\.plugin) == ["good"], "nothing half-registered")
        #expect(call(kernel, "/ext/user/call", query: "still").text.hasPrefix("tag=G echo=still"))

        await #expect { try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: "user", tenant: nil)) } throws: { error in
            "\(error)" == "plugin \"user\" does not provide test.echo/1 (it is provided by \"good\", \"silent\", \"tiny\", \"twice\", \"undeclared\")"
        }
        await #expect { try await kernel.execute(.useProvider(interface: "Test echo", plugin: "good", tenant: nil)) } throws: { error in
            "\(error)" == "\"Test echo\" is not an interface id like gitops.sync/1"
        }
        await #expect { try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: "nosuch", tenant: nil)) } throws: { error in
            "\(error)" == "no plugin \"nosuch\" in the plugin folder (test.echo/1 is provided by \"good\", \"silent\", \"tiny\", \"twice\", \"undeclared\")"
        }
        // Misspelt: the provider, or the interface, it likely meant.
        await #expect { try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: "goood", tenant: nil)) } throws: { error in
            "\(error)".hasSuffix("\"undeclared\"; did you mean \"good\"?)")
        }
        await #expect { try await kernel.execute(.useProvider(interface: "test.echp/1", plugin: "good", tenant: nil)) } throws: { error in
            "\(error)" == "plugin \"good\" does not provide test.echp/1 (no installed plugin provides it; did you mean test.echo/1?)"
        }
        // A bare name, as plugin.yaml writes it, stands for the one major version installed plugins provide.
        try await kernel.execute(.useProvider(interface: "test.echo", plugin: "good", tenant: nil))
        #expect(try kernel.state.serviceSelections().contains { $0.interface == "test.echo/1" && $0.plugin == "good" })
        await #expect { try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: "good", tenant: "nowhere")) } throws: { error in
            "\(error)" == "no tenant \"nowhere\""
        }
        await kernel.shutdown()
    }

    @Test("a consumer asking for an undeclared interface is denied and logged; one needing a bigger table gets UNSUPPORTED, naming both sizes")
    func badConsumers() async throws {
        let s = ServicesFixture()
        try s.provider("good", tag: "G")
        try s.consumer("sneaky", defines: ["ACQUIRE_ID=\"secret.vault\"", "LISTEN_ID=\"test.echo\""])
        try s.consumer("greedy", defines: ["MIN_SIZE=64"])
        try s.consumer("deaf", defines: ["LISTEN_ID=\"secret.vault\""])
        let kernel = try s.kernel()
        await kernel.start()
        for id in ["good", "sneaky", "greedy"] { try await kernel.enable(id) }
        #expect(call(kernel, "/ext/sneaky/call").text == "status=\(StatusCode.denied)")
        #expect(s.f.log.lines.contains { $0.contains("sneaky") && $0.contains("service secret.vault denied: not declared under consumes:") })
        #expect(call(kernel, "/ext/greedy/call").text == "status=\(StatusCode.unsupported)")
        #expect(s.f.log.lines.contains { $0.contains("served by \"good\" with a table of 16 bytes; 64 are needed") })
        await #expect { try await kernel.enable("deaf") } throws: { error in
            "\(error)".contains("service listener for secret.vault: secret.vault is not declared under consumes:")
        }
        await kernel.shutdown()
    }

    @Test("a consumer that never releases is stopped at 4096 leases, and its leases are released when it is disabled")
    func leakingConsumer() async throws {
        let s = ServicesFixture()
        try s.provider("good", tag: "G")
        try s.consumer("leaky", defines: ["NO_RELEASE"])
        let kernel = try s.kernel()
        await kernel.start()
        for id in ["good", "leaky"] { try await kernel.enable(id) }
        for _ in 0..<4096 { #expect(call(kernel, "/ext/leaky/call").status == 200) }
        #expect(call(kernel, "/ext/leaky/call").text == "status=\(StatusCode.limit)")
        #expect(try #require(await kernel.services().first)?.providers.first?.leases == 4096)
        try await kernel.disable("leaky")
        #expect(try #require(await kernel.services().first)?.providers.first?.leases == 0)
        #expect(s.f.log.lines.contains { $0.contains("4096 service lease(s) still held after deactivate (test.echo/1); released by the host") })
        try await kernel.disable("good")
        #expect(s.f.log.lines.allSatisfy { !$0.contains("still running") }, "the provider drained at once")
        await kernel.shutdown()
    }

    @Test("a lease released twice, or a made-up one, is logged and ignored: the provider's count stays right")
    func doubleRelease() async throws {
        let s = ServicesFixture()
        try s.provider("good", tag: "G")
        try s.consumer("sloppy", defines: ["DOUBLE_RELEASE"])
        let kernel = try s.kernel()
        await kernel.start()
        for id in ["good", "sloppy"] { try await kernel.enable(id) }
        for _ in 0..<3 { #expect(call(kernel, "/ext/sloppy/call").status == 200) }
        #expect(try #require(await kernel.services().first)?.providers.first?.leases == 0)
        #expect(s.f.log.lines.filter { $0.contains("sloppy") && $0.contains("released a service lease that is not held (released twice?); ignored") }.count == 6)
        try await kernel.disable("good", cascade: true)
        #expect(s.f.log.lines.allSatisfy { !$0.contains("still running") })
        await kernel.shutdown()
    }

    @Test("a stale lease handle released again does not end another lease: handles are never handed out twice")
    func staleRelease() async throws {
        let s = ServicesFixture()
        try s.provider("good", tag: "G")
        try s.consumer("stale", defines: ["STALE_RELEASE"])
        let kernel = try s.kernel()
        await kernel.start()
        for id in ["good", "stale"] { try await kernel.enable(id) }
        for _ in 0..<5 {
            let r = call(kernel, "/ext/stale/call")
            #expect(r.status == 200 && r.text.hasSuffix(" second=ok"), "\(r.text)")
        }
        #expect(try #require(await kernel.services().first)?.providers.first?.leases == 0)
        #expect(s.f.log.lines.filter { $0.contains("stale") && $0.contains("released a service lease that is not held") }.count == 5)
        await kernel.shutdown()
    }

    @Test("a plugin cannot guess another plugin's lease: 4,096 made-up handles read and end nothing, the holder's lease stays")
    func forgedRelease() async throws {
        let s = ServicesFixture()
        try s.provider("good", tag: "G")
        try s.consumer("holder", defines: ["NO_RELEASE"])
        try s.consumer("evil", defines: ["FORGE"])
        let kernel = try s.kernel()
        await kernel.start()
        for id in ["good", "holder", "evil"] { try await kernel.enable(id) }
        for _ in 0..<3 { #expect(call(kernel, "/ext/holder/call").status == 200) }
        #expect(try #require(await kernel.services().first)?.providers.first?.leases == 3)
        // The first 4,096 numbers a counter would hand out (handles were 16, 32, ... until 2026-12-07: a plugin with no
        // grant ended other consumers' leases, and a provider went idle under a held one and was called unmapped).
        #expect(call(kernel, "/ext/evil/forge").text == "guessed=0")
        #expect(try #require(await kernel.services().first)?.providers.first?.leases == 3, "another plugin's leases were ended")
        // Each made-up release is logged, up to the plugin's log budget (200 lines a second); the rest are counted in
        // one line with the next second's first.
        func warned() -> Int { s.f.log.lines.filter { $0.contains("evil") && $0.contains("released a service lease that is not held") }.count }
        #expect(warned() == 200, "\(warned())")
        try await Task.sleep(for: .milliseconds(1100))
        #expect(call(kernel, "/ext/evil/forge").text == "guessed=0")
        #expect(warned() == 400, "\(warned())")
        #expect(s.f.log.lines.contains { $0.contains("evil") && $0.contains("dropped 3896 log line(s) of the host's warnings about the plugin's calls (over 200 per second; 3896 since it started)") },
                "\(s.f.log.lines.suffix(3))")
        await kernel.shutdown()
    }

    @Test("the host (or an embedding program) provides an interface: consumers waiting for it activate and call it")
    func hostProvides() async throws {
        let s = ServicesFixture()
        try s.consumer("user")
        let kernel = try s.kernel()
        await kernel.start()
        await #expect(throws: KernelError.self) { try await kernel.enable("user") }
        try await kernel.provide("test.echo/1", version: "1.4.0", table: HostTable(keel_test_host_echo_table()))
        try await kernel.enable("user")
        #expect(call(kernel, "/ext/user/call", query: "gpio").text == "tag=host echo=gpio provider=keel gen=0 v=1.4.0")
        await #expect { try await kernel.provide("test.echo/1", table: HostTable(keel_test_host_echo_table())) } throws: { error in
            "\(error)" == "the host already provides test.echo/1"
        }
        await kernel.shutdown()
    }

    @Test("50 switches and disables under concurrent calls: no failed call, no call into a deactivated provider")
    func switchUnderLoad() async throws {
        let s = ServicesFixture()
        try s.provider("alpha", tag: "A", defines: ["CALL_SLEEP_US=200"])
        try s.provider("beta", tag: "B", defines: ["CALL_SLEEP_US=200"])
        try s.consumer("user")
        let kernel = try s.kernel()
        await kernel.start()
        for id in ["alpha", "beta", "user"] { try await kernel.enable(id) }

        let stop = StopFlag()
        let tally = Mutex<(ok: Int, failed: Int, a: Int, b: Int, failures: [String])>((0, 0, 0, 0, []))
        // Callers on threads of their own, as the server's plugin lanes are.
        let callers = (0..<4).map { _ in
            let t = Thread {
                while !stop.isSet {
                    let r = call(kernel, "/ext/user/call", query: "x")
                    tally.withLock { t in
                        if r.status == 200 {
                            t.ok += 1
                            if r.text.hasPrefix("tag=A") { t.a += 1 } else { t.b += 1 }
                        } else {
                            t.failed += 1
                            if t.failures.count < 5 { t.failures.append("\(r.status) \(r.text)") }
                        }
                    }
                }
            }
            t.start()
            return t
        }
        for i in 0..<50 {
            let (target, other) = i % 2 == 0 ? ("beta", "alpha") : ("alpha", "beta")
            if i % 4 < 2 {
                try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: target, tenant: nil))
            } else {
                // Take the serving provider down under traffic: the rule moves calls to the other, and the old one is
                // deactivated only after its leases are released.
                try await kernel.execute(.useProvider(interface: "test.echo/1", plugin: nil, tenant: nil))
                try await kernel.disable(other)
                try await kernel.enable(other)
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        stop.set()
        while callers.contains(where: { $0.isExecuting }) { try await Task.sleep(for: .milliseconds(5)) }
        let t = tally.withLock { $0 }
        #expect(t.failed == 0, "\(t.failures)")
        #expect(t.a > 0 && t.b > 0, "both providers served: \(t)")
        #expect(call(kernel, "/ext/user/dead").text == "dead=0", "no call reached a deactivated provider")
        let info = try #require(await kernel.services().first { $0.interface == "test.echo/1" })
        #expect(info.providers.allSatisfy { $0.leases == 0 }, "every lease was released")
        await kernel.shutdown()
    }
}

@Suite("services through the admin API and the CLI", .serialized, .scheduled)
struct ServicesFrontEndTests {
    @Test("GET/PUT/DELETE /api/v1/services and `keel services list|use|clear` switch a running server's provider")
    func frontEnds() async throws {
        let s = ServicesFixture()
        try s.provider("alpha", tag: "A", ranking: 5)
        try s.provider("beta", tag: "B", ranking: 1)
        try s.consumer("user")
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", s.f.plugins, "--state", s.f.state]
        for id in ["alpha", "beta", "user"] {
            #expect(try TestEnvironment.run(keel, ["plugins", "enable", id] + at).status == 0)
        }
        let server = try ServerProcess(plugins: s.f.plugins, state: s.f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/user/call?hello").text.hasPrefix("tag=A echo=hello provider=alpha"))

        let listed = try await server.request("GET", "/api/v1/services", admin: true)
        let first = (listed.json as? [[String: Any]])?.first
        #expect(first?["interface"] as? String == "test.echo/1")
        #expect(((first?["serving"] as? [[String: Any]])?.first?["provider"]) as? String == "alpha")
        #expect(try await server.request("GET", "/api/v1/services").status == 401, "admin only")

        let put = try await server.request("PUT", "/api/v1/services/test.echo/1/provider", admin: true,
                                           body: Data(#"{"plugin": "beta"}"#.utf8))
        #expect(put.status == 200, "\(put.text)")
        #expect(try await server.request("GET", "/ext/user/call?x").text.contains("provider=beta"))
        let wrong = try await server.request("PUT", "/api/v1/services/test.echo/1/provider", admin: true,
                                             body: Data(#"{"plugin": "user"}"#.utf8))
        #expect(wrong.status == 409 && wrong.errorCode == "dependency", "\(wrong.text)")
        // A misspelt required key is named as the misspelling, not as the key it misses.
        let typo = try await server.request("PUT", "/api/v1/services/test.echo/1/provider", admin: true,
                                            body: Data(#"{"plugn": "beta"}"#.utf8))
        #expect(typo.status == 400 && typo.errorCode == "unknown-key" && typo.text.contains(#"unknown key \"plugn\" in the JSON body (did you mean \"plugin\"?)"#),
                "\(typo.text)")
        #expect(try await server.request("DELETE", "/api/v1/services/test.echo/1/provider", admin: true).status == 200)
        #expect(try await server.request("GET", "/ext/user/call?x").text.contains("provider=alpha"), "the ranking rule again")
        // The audit trail tells the choice from its clearing, and says for whom.
        let audit = try await server.request("GET", "/api/v1/audit?since=1h", admin: true).json as? [[String: Any]] ?? []
        let choices = audit.filter { $0["command"] as? String == "use-provider" && $0["outcome"] as? String == "ok" }.map { $0["detail"] as? String ?? "-" }
        #expect(choices.suffix(2) == ["chose beta host-wide", "cleared the choice host-wide"], "\(choices)")

        // The CLI goes through the running server (its queue), and reads the server's live view.
        let use = try TestEnvironment.run(keel, ["services", "use", "test.echo/1", "beta"] + at)
        #expect(use.status == 0, "\(use.stderr)")
        #expect(try await server.request("GET", "/ext/user/call?x").text.contains("provider=beta"))
        let list = try TestEnvironment.run(keel, ["services", "list"] + at)
        #expect(list.stdout.contains("test.echo/1\n  serving: beta (chosen by the operator)\n"), "\(list.stdout)")
        #expect(list.stdout.contains("consumer user  ^1 required, active"))
        let bad = try TestEnvironment.run(keel, ["services", "use", "test.echo/1", "nobody"] + at)
        #expect(bad.status == 1)
        #expect(bad.stderr == "keel: error: no plugin \"nobody\" in the plugin folder (test.echo/1 is provided by \"alpha\", \"beta\")\n", "\(bad.stderr)")
        // Bad usage, exit 64: the two swapped, or no interface id at all.
        let swapped = try TestEnvironment.run(keel, ["services", "use", "beta", "test.echo/1"] + at)
        #expect(swapped.status == 64 && swapped.stderr.hasPrefix("keel: error: \"test.echo/1\" is not a plugin id (the interface comes first"), "\(swapped.stderr)")
        let noInterface = try TestEnvironment.run(keel, ["services", "clear", "Test Echo/1"] + at)
        #expect(noInterface.status == 64 && noInterface.stderr.hasPrefix("keel: error: \"Test Echo/1\" is not an interface id like gitops.sync/1"), "\(noInterface.stderr)")
        // A bare name, as plugin.yaml's provides: writes it: the answer names the interface the server changed.
        let cleared = try TestEnvironment.run(keel, ["services", "clear", "test.echo"] + at)
        #expect(cleared.status == 0 && cleared.stdout == "test.echo/1: no choice; the ranking rule decides\n", "\(cleared.stdout)\(cleared.stderr)")
        #expect(try await server.request("GET", "/ext/user/call?x").text.contains("provider=alpha"))
        let bare = try TestEnvironment.run(keel, ["services", "use", "test.echo", "alpha"] + at)
        #expect(bare.status == 0 && bare.stdout == "test.echo/1: served by alpha\n", "\(bare.stdout)\(bare.stderr)")
        let targets = (try await server.request("GET", "/api/v1/audit?since=1h", admin: true).json as? [[String: Any]] ?? [])
            .filter { $0["command"] as? String == "use-provider" }.map { $0["target"] as? String ?? "-" }
        #expect(Set(targets) == ["test.echo/1"], "the audit rows name the interface, however it was typed: \(targets)")
    }
}

@Suite("the README's services walk-through", .serialized, .scheduled)
struct ServicesReadmeTests {
    @Test("Choosing an implementation: argo-sync (C) and flux-sync (Rust) serve deployer (C); keel services use switches the running server")
    func walkThrough() async throws {
        let f = KernelFixture()
        let rustOut = TestEnvironment.makeTemporaryDirectory("rust")
        let built = try TestEnvironment.run(TestEnvironment.repository.path + "/Scripts/build-rust-example.sh", [rustOut])
        #expect(built.status == 0, "\(built.stderr)")
        let libraries = ["argo-sync": try TestEnvironment.builtLibrary("libargo-sync.so"),
                         "flux-sync": rustOut + "/libflux-sync.so", "deployer": try TestEnvironment.builtLibrary("libdeployer.so")]
        for (folder, library) in libraries {
            try TestEnvironment.makeBundle(in: f.plugins, folder: folder, manifest: String(
                contentsOfFile: TestEnvironment.repository.path + "/Plugins/\(folder)/plugin.yaml", encoding: .utf8), library: library)
        }
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        func run(_ arguments: [String]) throws -> String {
            let r = try TestEnvironment.run(keel, arguments + at)
            #expect(r.status == 0, "keel \(arguments.joined(separator: " ")): \(r.stderr)")
            return r.stdout
        }
        for id in ["argo-sync", "flux-sync", "deployer"] { _ = try run(["plugins", "enable", id]) }
        // Without a server the CLI's kernel starts plugins idle: enabled providers are said to be idle, not "not
        // enabled" (which `keel plugins list` contradicted).
        let offline = try run(["services", "list"])
        #expect(offline.contains("  serving: none (no provider running; argo-sync (idle) is loaded by the first acquire)\n"), "\(offline)")
        #expect(offline.contains("  provider argo-sync 1.0.0  implements 1.1.0, ranking 10, enabled, idle (loaded by its first use)\n"), "\(offline)")
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }

        var reply = try await server.request("GET", "/ext/deployer/sync/shop")
        #expect(reply.text.hasPrefix("argocd synced shop to main (provider argo-sync 1.0.0 generation "), "\(reply.text)")
        #expect(reply.text.contains(", gitops.sync 1.1.0)"))
        let list = try run(["services", "list"])
        #expect(list.hasPrefix("gitops.sync/1\n  serving: argo-sync (highest ranking)\n  provider argo-sync 1.0.0  implements 1.1.0, ranking 10, active"), "\(list)")
        #expect(list.contains("  provider flux-sync 1.0.0  implements 1.0.0, ranking 5, active"))
        #expect(list.hasSuffix("  consumer deployer  ^1 required, active\n"))
        #expect(try run(["services", "use", "gitops.sync/1", "flux-sync"]) == "gitops.sync/1: served by flux-sync\n")
        reply = try await server.request("GET", "/ext/deployer/sync/shop?rev=v2")
        #expect(reply.text.hasPrefix("flux synced shop to v2 (provider flux-sync 1.0.0 generation "), "\(reply.text)")
        _ = try run(["tenants", "create", "acme"])
        _ = try run(["services", "use", "gitops.sync/1", "argo-sync", "--tenant", "acme"])
        #expect(try run(["services", "list"]).contains("  tenant acme: argo-sync (chosen for the tenant)\n"))
        _ = try run(["services", "clear", "gitops.sync/1"])
        reply = try await server.request("GET", "/ext/deployer/provider")
        #expect(reply.text.contains("\"provider\":\"argo-sync\""), "\(reply.text)")
    }
}

@Suite("plugin.yaml: provides and consumes", .scheduled)
struct InterfaceManifestTests {
    func parse(_ tail: String) throws(ManifestError) -> Manifest {
        try ManifestLoader().parse(Data("id: x\nname: X\nversion: 1.0.0\nabi: \"1.1\"\nlibrary: lib.so\n\(tail)".utf8), file: "x/plugin.yaml").0
    }

    func error(_ tail: String) -> String {
        do { _ = try parse(tail); return "no error" } catch { return error.description }
    }

    @Test("provides and consumes parse, with defaults: version <major>.0.0, ranking 0, range ^<major>, required")
    func parses() throws {
        let m = try parse("""
            provides:
              - interface: gitops.sync/1
                version: "1.2.0"
                ranking: 10
              - interface: logs.sink/2
            consumes:
              - {interface: gitops.sync, version: "^1.1"}
              - {interface: appliance.gpio/3, optional: true}
            """)
        #expect(m.provides.map { "\($0.interface) \($0.version) \($0.ranking)" } == ["gitops.sync/1 1.2.0 10", "logs.sink/2 2.0.0 0"])
        #expect(m.consumes.map { "\($0.interface) \($0.versions) \($0.optional)" } == ["gitops.sync/1 ^1.1 false", "appliance.gpio/3 ^3 true"])
        #expect(m.consumed("gitops.sync")?.interface.major == 1 && m.consumed("appliance.gpio/3") != nil && m.consumed("nope") == nil)
    }

    @Test("bad interface declarations name the file, line and key")
    func errors() {
        #expect(error("provides:\n  - interface: gitops.sync\n") == "x/plugin.yaml:7: key \"provides[0].interface\": \"gitops.sync\" is not an interface id like gitops.sync/1 (a name of lowercase letters, digits, '.', '-', '_', then /MAJOR)")
        #expect(error("provides:\n  - {interface: a.b/1, version: \"2.0.0\"}\n") == "x/plugin.yaml:7: key \"provides[0].version\": version 2.0.0 is not in major version 1 of a.b/1")
        #expect(error("provides:\n  - {interface: a.b/1, ranking: high}\n").hasSuffix("key \"provides[0].ranking\": expected an integer, found \"high\""))
        #expect(error("provides:\n  - {interface: a.b/1}\n  - {interface: a.b/1}\n").hasSuffix("a.b/1 is declared twice: a plugin provides an interface once"))
        #expect(error("consumes:\n  - {interface: a.b, version: \"*\"}\n").hasSuffix("\"a.b\" needs a major version: write a.b/1, or a range with a lower bound such as version: \"^1\""))
        #expect(error("consumes:\n  - {interface: A.B/1}\n").hasSuffix("\"A.B/1\" is not an interface name (lowercase letters, digits, '.', '-', '_', optionally /MAJOR)"))
        #expect(error("consumes:\n  - {interface: a.b/1, optional: maybe}\n").hasSuffix("expected true or false, found \"maybe\""))
        #expect(error("consumes: gitops\n").hasSuffix("expected a list such as [{interface: gitops.sync, version: \"^1\"}], found \"gitops\""))
    }
}
