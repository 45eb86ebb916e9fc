// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import Keel
import KeelState
import Testing

/// The live view a running server keeps for `keel plugins list` (Kernel+LiveView.swift): each command rebuilds only
/// the parts it can have changed, and what it stores is what a full build gives.
@Suite("the live view", .scheduled)
struct LiveViewTests {
    @Test("after every kind of command the stored live view is what a full build gives; a command on one plugin builds only its part and the providers'")
    func incrementalEqualsFull() async throws {
        let s = ServicesFixture()
        try TestEnvironment.stageExamples(into: s.f.plugins)
        try s.provider("p1", tag: "one", ranking: 10)
        try s.provider("p2", tag: "two", ranking: 5)
        try s.consumer("c")
        for i in 0..<20 { try s.bundle("idle\(i)", [], extra: "activation: lazy\n") }
        let kernel = try s.kernel()
        await kernel.start()
        let subscription = await RemoteControl.publishOnChange(kernel)
        let other = try StateStore(path: s.f.state)

        func expectCurrent(after what: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let stored = try RemoteControl.livePlugins(state: other)
            let full = try await kernel.plugins()
            #expect(stored.count == full.count, "\(what): \(stored.count) parts, \(full.count) plugins", sourceLocation: sourceLocation)
            for (a, b) in zip(stored, full) where a != b {
                Issue.record("\(what): the live view shows \(a.id) as \(a.status)/\(a.activity ?? "-")/\(a.grants)/\(a.tenants ?? [])/\(a.provides), a full build as \(b.status)/\(b.activity ?? "-")/\(b.grants)/\(b.tenants ?? [])/\(b.provides)",
                             sourceLocation: sourceLocation)
            }
        }
        func run(_ command: KernelCommand, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            _ = try? await kernel.execute(command, actor: "test")
            try await expectCurrent(after: "\(command.name) \(command.subject)", sourceLocation: sourceLocation)
        }
        for id in ["p1", "p2", "c", "hello", "greeter", "idle3", "idle4"] { try await run(.enable(id: id, tenant: nil)) }
        try await run(.grants(id: "hello", grant: ["authenticate"], revoke: []))
        try await run(.config(id: "hello", yaml: "api_key: k1\n"))
        try await run(.createTenant(name: "acme"))
        try await run(.enable(id: "greeter", tenant: "acme"))
        try await run(.useProvider(interface: "test.echo", plugin: "p2", tenant: nil))
        try await run(.disable(id: "p2", tenant: nil, cascade: true))
        try await run(.reload(id: "greeter"))
        try await run(.grants(id: "hello", grant: [], revoke: ["authenticate"]))
        try await run(.uninstall(id: "idle3", cascade: false, keepData: false))
        // A change to a plugin that is not running: no generation or record of it changes, only what the command named.
        try await run(.isolation(id: "idle6", mode: .process))
        // A lazy plugin woken by a request, with no command: published as the kernel's own change.
        #expect(kernel.isIdle("idle4"))
        try await kernel.wake("idle4")
        #expect(await Lazy.eventually(10) { (try? RemoteControl.livePlugins(state: other).first { $0.id == "idle4" }?.activity) == "active" })
        try await expectCurrent(after: "idle4's wake")

        // One plugin's enable and disable build its part and the providers' (whose serving depends on the others),
        // not the 20 idle plugins' and the rest.
        // Nor are the others' records read: only the ones the command wrote, the providers' and its own.
        let before = await kernel.liveViewPartsBuilt, read = await kernel.liveViewRecordsRead
        try await run(.enable(id: "idle5", tenant: nil))
        try await run(.disable(id: "idle5", tenant: nil, cascade: false))
        let built = await kernel.liveViewPartsBuilt - before, total = try await kernel.plugins().count
        #expect(built <= 2 * 3, "\(built) parts built for two commands on one plugin among \(total)")
        let records = await kernel.liveViewRecordsRead - read
        #expect(records <= 2 * 3, "\(records) records read for two commands on one plugin among \(total)")

        // A record another process changed is not among those a command reads: the server finds it when it sees the
        // other connection's commit (`dataVersion`) and publishes (`RemoteControl.serve`), comparing every record then.
        try other.setStatus("idle7", .failed, reason: "changed by another process")
        await RemoteControl.publishLive(kernel)
        #expect(try RemoteControl.livePlugins(state: other).first { $0.id == "idle7" }?.status == .failed)
        try await run(.enable(id: "idle5", tenant: nil))
        try await expectCurrent(after: "another process's change")

        // The admin API's JSON of the plugins, written by hand and partly from the live view, is JSONEncoder's text.
        let encoded = String(decoding: try Kernel.encoder().encode(try await kernel.plugins()), as: UTF8.self)
        #expect(try await kernel.pluginsJSON() == encoded)
        for id in ["p1", "c", "idle5", "idle7"] {
            #expect(try await kernel.pluginJSON(id) == String(decoding: try Kernel.encoder().encode(try await kernel.plugin(id)), as: UTF8.self))
        }

        kernel.events.unsubscribe(subscription)
        await kernel.shutdown()
    }
}
