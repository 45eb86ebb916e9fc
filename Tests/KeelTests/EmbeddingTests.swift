// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Testing

@Suite("embedding the kernel")
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

        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        #expect(readme.contains("try await kernel.enable(\"hello\")"))
        #expect(readme.contains("snapshot.route(method: \"GET\", path: \"/ext/hello/greet/ada\")"))
    }
}
