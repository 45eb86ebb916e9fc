// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

extension CLITests {
    @Test("admin API errors name no host path")
    func apiErrorsWithoutPaths() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let unknown = try await server.request("POST", "/api/v1/plugins/ghost/enable", admin: true)
        #expect(unknown.status == 404 && unknown.text.contains("no plugin \\\"ghost\\\" in the plugin folder"), "\(unknown.text)")
        let gone = try await server.request("DELETE", "/api/v1/plugins/ghost", admin: true)
        #expect(gone.status == 404, "\(gone.text)")
        let again = try await server.request("POST", "/api/v1/plugins/hello/install", admin: true, body: Data("{}".utf8))
        #expect(again.status == 409 && again.text.contains("already installed (folder \\\"hello-c\\\")"), "\(again.text)")
        for reply in [unknown, gone, again] {
            #expect(!reply.text.contains(TestEnvironment.scratch), "\(reply.text)")
        }
    }
}
