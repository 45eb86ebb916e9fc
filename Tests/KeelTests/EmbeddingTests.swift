// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Keel
import KeelHTTP
import Synchronization
import Testing

@Suite("embedding the kernel", .scheduled)
struct EmbeddingTests {
    @Test("the README's embedding snippet works as written")
    func readmeSnippet() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let pluginsDir = f.plugins, stateFile = f.state

        // --- README: embedding (keep in sync) ---
        let kernel = try Kernel(configuration: KernelConfiguration(pluginsDirectory: pluginsDir, stateFile: stateFile))
        await kernel.start()                                   // activates what was enabled last time
        try await kernel.setGrants("hello", grant: ["authenticate"]) // auth hooks need the operator's grant
        try await kernel.enable("hello")                       // persisted before it returns
        let snapshot = kernel.registry.snapshot                // lock-free view for request threads
        if let match = snapshot.route(method: "GET", path: "/ext/hello/greet/ada") {
            let request = PluginRequest(method: "GET", path: "/ext/hello/greet/ada",
                                        routePath: match.routePath, parameters: match.parameters)
            let response = try match.route.handler.handle(request).get()
            print(response.status, response.bodyText)          // 200 hello, ada (as anonymous)
            #expect(response.status == 200 && response.bodyText == "hello, ada (as anonymous)\n")
        } else {
            Issue.record("route not found")
        }
        await kernel.shutdown()                                // deactivates in reverse order
        // --- end ---
        // Nothing loads plugin code after the shutdown: nothing would deactivate it again.
        for attempt in [{ try await kernel.enable("hello") }, { try await kernel.enable("hello", tenant: nil) },
                        { try await kernel.reload("hello") }] as [@Sendable () async throws -> Void] {
            do { try await attempt(); Issue.record("ran after shutdown") } catch let error as KernelError {
                #expect(error.reason.hasPrefix("the host is shut down; "), "\(error)")
            }
        }
        #expect(kernel.registry.snapshot.route(method: "GET", path: "/ext/hello/greet/ada") == nil)

        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        #expect(readme.contains("try await kernel.enable(\"hello\")"))
        #expect(readme.contains("snapshot.route(method: \"GET\", path: \"/ext/hello/greet/ada\")"))
    }

    @Test("Kernel.dispatch serves plugin routes without HTTP, through the auth chain: hooks, tenants, canonical path")
    func dispatchWithoutHTTP() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("guard", defines: ["AUTHZ_MODE=2"], capabilities: ["routes", "authorize"])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("hello")
        try await kernel.enable("guard")
        func call(_ path: String, _ headers: [(name: String, value: String)] = []) -> (Int, String) {
            let r = kernel.dispatch(PluginRequest(method: "GET", path: path, headers: headers))
            return (r.status, r.bodyText)
        }
        #expect(call("/ext/hello/greet/ada") == (200, "hello, ada (as anonymous)\n"))
        // The authenticate hook sees the header as from HTTP (any case in, lower case to plugins).
        #expect(call("/ext/hello/greet/ada", [(name: "Authorization", value: "Bearer hello-demo-key")]) == (200, "hello, ada (as demo)\n"))
        // One canonical path, a query split off, as HTTP does.
        #expect(call("/ext//hello/greet/%62ob/?x=1") == (200, "hello, bob (as anonymous)\n"))
        #expect(call("/ext/hello/../hello/greet/x").0 == 400)
        #expect(call("/ext/nobody/here").0 == 404)
        // The authorize hook of another plugin denies (any deny wins).
        #expect(call("/ext/hello/greet/secret") == (403, #"{"error":{"code":"forbidden","message":"access denied"}}"#))
        await kernel.shutdown()
    }

    @Test("a kernel with its state in memory writes nothing to disk: no state file, no activation mark, no copy")
    func stateInMemory() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("memory")
        let bundles = dir + "/bundles"
        try TestEnvironment.stageExamples(into: bundles)
        func files() -> [String] { ((try? FileManager.default.subpathsOfDirectory(atPath: dir)) ?? []).sorted() }
        let before = files()
        let here = FileManager.default.currentDirectoryPath
        let helloBundle = bundles + "/hello-c"
        // Bundles registered from code, by path: no plugin folder at all.
        // --- README: in memory (keep in sync) ---
        var configuration = KernelConfiguration(pluginsDirectory: "", stateFile: StateStore.inMemory)
        configuration.bundleFolders = [helloBundle]        // e.g. "/usr/lib/appliance/bundles/hello-c"
        configuration.trustedCapabilities = Set(Capability.allCases)  // it trusts the plugins it ships
        let kernel = try Kernel(configuration: configuration)
        await kernel.start()
        try await kernel.enable("hello")
        let response = kernel.dispatch(PluginRequest(method: "GET", path: "/ext/hello/greet/ada"))  // no HTTP; auth chain applied
        // --- end ---
        #expect(response.bodyText == "hello, ada (as anonymous)\n")
        #expect(kernel.state.isInMemory)
        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        #expect(readme.contains("configuration.bundleFolders = [helloBundle]        // e.g. \"/usr/lib/appliance/bundles/hello-c\""))
        #expect(readme.contains("let response = kernel.dispatch(PluginRequest(method: \"GET\", path: \"/ext/hello/greet/ada\"))"))
        #expect(try kernel.state.plugins().map(\.id) == ["hello"], "greeter-swift was not registered")
        try await kernel.disable("hello")
        await kernel.shutdown()
        #expect(files() == before)
        // The activation mark and file copies would go beside the state file, i.e. in the current folder.
        #expect(!FileManager.default.fileExists(atPath: here + "/" + StateStore.inMemory + ".activating"))
        #expect(!FileManager.default.fileExists(atPath: here + "/generations"))

        // A second in-memory kernel starts empty: the state ended with the first.
        let second = try Kernel(configuration: configuration)
        #expect(try second.state.plugins().isEmpty)
    }

    @Test("an embedded KeelServer on a state in memory: the admin token ensure() returns opens the admin API, which refuses any other")
    func serverInMemory() async throws {
        let bundles = TestEnvironment.makeTemporaryDirectory("memory-server") + "/bundles"
        try TestEnvironment.stageExamples(into: bundles)
        var configuration = KernelConfiguration(pluginsDirectory: "", stateFile: StateStore.inMemory)
        configuration.bundleFolders = [bundles + "/hello-c"]
        configuration.trustedCapabilities = Set(Capability.allCases)
        let kernel = try Kernel(configuration: configuration)
        await kernel.start()
        try await kernel.enable("hello")
        try #require(ProcessInfo.processInfo.environment[AdminToken.environmentVariable] == nil, "the test runs without $KEEL_ADMIN_TOKEN")
        // --- README: admin token (keep in sync) ---
        let token = AdminToken(state: kernel.state)              // $KEEL_ADMIN_TOKEN, else the one stored in the state
        let fresh = try token.ensure()                           // none yet (always so in memory): made, returned this once
        if let fresh { print("admin token: \(fresh)") }
        let server = KeelServer(kernel: kernel, token: token, configuration: .init(port: 0))
        // --- end ---
        let made = try #require(fresh)
        #expect(try token.ensure() == nil, "made once")
        let port = Mutex<Int>(0)
        let serving = Task { try await server.run { p in port.withLock { $0 = p } } }
        var bound = 0
        for _ in 0..<200 where bound == 0 {
            try await Task.sleep(for: .milliseconds(20))
            bound = port.withLock { $0 }
        }
        try #require(bound > 0)
        func status(_ path: String, bearer: String?) async throws -> Int {
            var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(bound)\(path)")))
            if let bearer { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
            let (_, response) = try await URLSession.shared.data(for: request)
            return (response as? HTTPURLResponse)?.statusCode ?? 0
        }
        #expect(try await status("/api/v1/plugins", bearer: made) == 200)
        #expect(try await status("/api/v1/plugins", bearer: "keel_wrong") == 401)
        #expect(try await status("/api/v1/plugins", bearer: nil) == 401)
        #expect(try await status("/ext/hello/greet/ada", bearer: nil) == 200)
        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        #expect(readme.contains("let fresh = try token.ensure()                           // none yet (always so in memory): made, returned this once"))
        serving.cancel()
        _ = try? await serving.value
        await kernel.shutdown()
    }

    @Test("with the state in memory, a library that cannot be copied into memory fails to load instead of going to disk")
    func inMemoryNoFileCopies() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("memory-files")
        try TestEnvironment.stageExamples(into: dir + "/plugins")
        var configuration = KernelConfiguration(pluginsDirectory: dir + "/plugins", stateFile: StateStore.inMemory,
                                                log: KernelConfiguration.silentLog)
        configuration.copiesInMemory = false
        let kernel = try Kernel(configuration: configuration)
        await kernel.start()
        await #expect { try await kernel.enable("hello") } throws: { error in
            "\(error)".contains("the state lives in memory, so no file copy is written")
        }
        #expect(!FileManager.default.fileExists(atPath: FileManager.default.currentDirectoryPath + "/generations"))
        await kernel.shutdown()
    }

    @Test("a bundle folder registered by path that does not exist is reported, naming it")
    func missingBundleFolder() async throws {
        var configuration = KernelConfiguration(pluginsDirectory: "", stateFile: StateStore.inMemory, log: KernelConfiguration.silentLog)
        configuration.bundleFolders = ["/nonexistent/keel-bundle"]
        let kernel = try Kernel(configuration: configuration)
        await kernel.start()
        let record = try #require(try kernel.state.plugins().first)
        #expect(record.status == .failed && (record.reason ?? "").contains("/nonexistent/keel-bundle/plugin.yaml"), "\(record)")
        await kernel.shutdown()
    }
}
