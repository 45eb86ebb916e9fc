// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelState
import Testing

/// A command the CLI gave up on never runs.
extension KernelTests {
    @Test("a published view another Keel version wrote (a key missing, not JSON) is refused in one line naming the state, never Foundation's text")
    func unreadableLiveView() throws {
        let f = KernelFixture()
        let state = try StateStore(path: f.state)
        try state.setLivePluginsJSON(#"[{"id": "calc"}]"#)
        #expect { try RemoteControl.livePlugins(state: state) } throws: { error in
            "\(error)".hasPrefix("\(f.state): the running server's view of its plugins cannot be read (it has no \"") && !"\(error)".contains("4865")
        }
        try state.setLiveServicesJSON("{not json")
        #expect { try RemoteControl.liveServices(state: state) } throws: { error in
            "\(error)" == "\(f.state): the running server's view of its interfaces cannot be read (it is not JSON); is the server another Keel version? Restart it with this one"
        }
    }

    @Test("a command the client cancelled after its timeout, or whose deadline passed, never runs")
    func cancelledCommandNeverRuns() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("rc")
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("rc")
        let client = try StateStore(path: f.state)

        // No server serves the queue: the client gives up and cancels.
        do {
            try await RemoteControl.submit(.disable(id: "rc", tenant: nil, cascade: false), state: client, timeout: .milliseconds(200))
            Issue.record("a command was answered with no server running")
        } catch {
            #expect(error.description.contains("it was cancelled and nothing changed"), "\(error.description)")
        }
        // A client killed before it could cancel: its command's deadline has passed.
        let body = String(decoding: try JSONEncoder().encode(RemoteCommand.uninstall(id: "rc", cascade: false, keepData: false)), as: UTF8.self)
        let orphan = try client.submitCommand(op: "uninstall", pluginID: "rc", body: body, timeout: 0)

        // Now a server runs the queue: the next command is answered, the two before it never run.
        let server = Task { await RemoteControl.serve(kernel, token: nil, interval: .milliseconds(20)) }
        // A generous deadline: the suite runs tests in parallel on a two-thread pool, and a busy machine can delay
        // the server's first poll by seconds. Only whether the command runs is asserted, never how soon.
        try await RemoteControl.submit(.reload(id: "rc"), state: client, timeout: .seconds(120))
        server.cancel()
        await server.value
        #expect(kernel.activePlugins == ["rc"])
        #expect(try client.plugin("rc")?.enabled == true)
        #expect(try client.command(orphan)?.state == "cancelled")
        #expect(FileManager.default.fileExists(atPath: f.plugins + "/rc/plugin.yaml"))
        await kernel.shutdown()
    }
}
