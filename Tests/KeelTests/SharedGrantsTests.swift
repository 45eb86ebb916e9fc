// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelState
import KeelStatePostgres
import Testing

extension PostgresBackedTests {
    /// Grants on a shared PostgreSQL state: a grant or revoke made through one host reaches every host of the state,
    /// as an enable does. Two kernels in this process, each observing as its own host, with its own plugin folder.
    @Suite("grants on a shared PostgreSQL state")
    struct SharedGrantsTests {
        struct Host {
            let kernel: Kernel
            let log: LogCollector
        }

        /// A host "name" on the state at `url`, with plugin "g" (a route answering its configuration; `routes` is not
        /// trusted without a grant here).
        static func host(_ name: String, _ url: String, trusted: Set<Capability> = [.menus], schema: String? = nil,
                         extra: String = "", more: [(id: String, extra: String)] = []) throws -> Host {
            let f = KernelFixture()
            try f.fixtureBundle("g", defines: ["CONFIG_ECHO"], capabilities: ["routes"], extra: extra)
            for bundle in more { try f.fixtureBundle(bundle.id, capabilities: ["routes"], extra: bundle.extra) }
            try schema?.write(toFile: f.plugins + "/g/config.schema.yaml", atomically: true, encoding: .utf8)
            let log = f.log
            var configuration = KernelConfiguration(pluginsDirectory: f.plugins, stateFile: url) { log.append($0.description) }
            configuration.trustedCapabilities = trusted
            configuration.openState = { () throws(StateError) -> StateStore in
                let store = try PostgresStore.open(url)
                store.observe(as: name)
                return store
            }
            return Host(kernel: try Kernel(configuration: configuration), log: log)
        }

        @Test("a lazy plugin enabled through one host is left idle on the others until first used; disabled through one, it is idle nowhere",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set"))
        func lazyPluginsFollow() async throws {
            let url = StateEngine.postgres.freshLocation()
            let a = try Self.host("host-a", url, trusted: [.menus, .routes], extra: "activation: lazy\n")
            let b = try Self.host("host-b", url, trusted: [.menus, .routes], extra: "activation: lazy\n")
            await a.kernel.start()
            await b.kernel.start()
            try await a.kernel.execute(.enable(id: "g", tenant: nil), actor: "cli")
            #expect(a.kernel.isIdle("g"))
            let applied = await b.kernel.applyDesiredState()
            #expect(applied.parked == ["g"] && applied.activated.isEmpty, "\(applied) \(b.log.lines)")
            #expect(b.kernel.isIdle("g") && b.kernel.registry.snapshot.routes.isEmpty)
            #expect(await b.kernel.applyDesiredState().isEmpty, "converged: nothing more to do")
            // Disabled through host a: host b's idle copy goes too, and no request wakes it there.
            try await a.kernel.execute(.disable(id: "g", tenant: nil, cascade: false), actor: "cli")
            let off = await b.kernel.applyDesiredState()
            #expect(off.deactivated == ["g"], "\(off)")
            #expect(!b.kernel.isIdle("g"))
            await #expect(throws: KernelError.self) { try await b.kernel.wake("g") }
            #expect(b.kernel.registry.snapshot.routes.isEmpty)
            #expect(try await Self.status(b) == "disabled")
            // Enabled again and woken on host b: active there, not idle as well.
            try await a.kernel.execute(.enable(id: "g", tenant: nil), actor: "cli")
            #expect(await b.kernel.applyDesiredState().parked == ["g"])
            try await b.kernel.wake("g")
            #expect(!b.kernel.isIdle("g") && b.kernel.registry.snapshot.routes.map(\.pluginID) == ["g"])
            #expect(await b.kernel.applyDesiredState().isEmpty)
            await a.kernel.shutdown()
            await b.kernel.shutdown()
        }

        @Test("an eager plugin enabled through one host wakes, on the others, the lazy plugin it needs that is idle there",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set"))
        func eagerWakesIdleDependency() async throws {
            let url = StateEngine.postgres.freshLocation()
            let top = [(id: "top", extra: "dependencies:\n  g: \"*\"")]
            let a = try Self.host("host-a", url, trusted: [.menus, .routes], extra: "activation: lazy\n", more: top)
            let b = try Self.host("host-b", url, trusted: [.menus, .routes], extra: "activation: lazy\n", more: top)
            await a.kernel.start()
            await b.kernel.start()
            try await a.kernel.execute(.enable(id: "g", tenant: nil), actor: "cli")
            #expect(await b.kernel.applyDesiredState().parked == ["g"])
            try await a.kernel.execute(.enable(id: "top", tenant: nil), actor: "cli")
            let applied = await b.kernel.applyDesiredState()
            #expect(applied.activated == ["g", "top"], "\(applied) \(b.log.lines)")
            #expect(Set(b.kernel.activePlugins) == ["g", "top"] && !b.kernel.isIdle("g"))
            await a.kernel.shutdown()
            await b.kernel.shutdown()
        }

        static func status(_ host: Host) async throws -> String? {
            try await host.kernel.plugins().first { $0.id == "g" }?.status.rawValue
        }

        @Test("a grant through one host starts the plugin on every host where it failed for want of it; a revoke stops it on every host",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set"))
        func grantsReachEveryHost() async throws {
            let url = StateEngine.postgres.freshLocation()
            let a = try Self.host("host-a", url), b = try Self.host("host-b", url)
            await a.kernel.start()
            await b.kernel.start()
            await #expect(throws: KernelError.self) { try await a.kernel.execute(.enable(id: "g", tenant: nil), actor: "cli") }
            _ = await b.kernel.applyDesiredState()
            let (sa, sb) = (try await Self.status(a), try await Self.status(b))
            #expect(sa == "failed" && sb == "failed")
            #expect(b.kernel.registry.snapshot.routes.isEmpty)

            // Granted through host a: it starts there, and host b, following the state, starts it too.
            try await a.kernel.execute(.grants(id: "g", grant: ["routes"], revoke: []), actor: "cli")
            #expect(a.kernel.registry.snapshot.routes.map(\.pluginID) == ["g"])
            let applied = await b.kernel.applyDesiredState()
            #expect(applied.activated == ["g"], "\(b.log.lines)")
            #expect(b.kernel.registry.snapshot.routes.map(\.pluginID) == ["g"])
            #expect(try await Self.status(b) == "enabled")
            // Nothing more to do on a second pass (a host does not reload for a grant it already runs with).
            let (again, onA) = (await b.kernel.applyDesiredState(), await a.kernel.applyDesiredState())
            #expect(again.isEmpty && onA.isEmpty, "\(again) \(onA)")

            // Configured through host a: host b reloads it with the new configuration too.
            try await a.kernel.execute(.config(id: "g", yaml: "colour: blue\n", file: nil), actor: "cli")
            #expect(get(a.kernel, "/ext/g/ping")?.1.contains(#"config={"colour":"blue"}"#) == true, "\(get(a.kernel, "/ext/g/ping")?.1 ?? "")")
            let configured = await b.kernel.applyDesiredState()
            #expect(configured.reloaded == ["g"], "\(configured)")
            #expect(get(b.kernel, "/ext/g/ping")?.1.contains(#"config={"colour":"blue"}"#) == true, "\(get(b.kernel, "/ext/g/ping")?.1 ?? "")")
            // Its history says what changed (a configuration alone read "grants changed" until 2026-12-07).
            let reloadedFor = try b.kernel.state.loads(for: "g").map(\.detail)
            #expect(reloadedFor.contains { $0.hasSuffix(": configuration changed on the shared state") }, "\(reloadedFor)")

            // Revoked through host a: it stops there, and on host b, which ran it with the grant.
            try await a.kernel.execute(.grants(id: "g", grant: [], revoke: ["routes"]), actor: "cli")
            #expect(a.kernel.registry.snapshot.routes.isEmpty)
            let shared = try PostgresStore.open(url)
            let wishes = { try shared.events(for: "g").filter { $0.kind == "enable" || $0.kind == "disable" }.count }
            let wishesBefore = try wishes()
            let revoked = await b.kernel.applyDesiredState()
            #expect(revoked.deactivated == ["g"], "\(revoked)")
            #expect(b.kernel.registry.snapshot.routes.isEmpty, "host b still serves a plugin whose grant was revoked: \(b.log.lines)")
            #expect(try await Self.status(b) == "failed")
            // Host b recorded its own observation only: the desired state is not written again, so host a's failure
            // stands (writing the wish would clear it, and undo a disable made meanwhile).
            #expect(try await Self.status(a) == "failed", "\(a.log.lines)")
            let kinds = try shared.events(for: "g").map(\.kind)
            #expect(try wishes() == wishesBefore, "\(kinds)")
            await a.kernel.shutdown()
            await b.kernel.shutdown()
        }

        /// The README's case: a plugin running on the host that ran the grant (it trusts the capability) but failed on
        /// another for want of it. The grant reloads it where it runs; the other host, seeing the grants change, tries
        /// it again (it was retried only after an enable or disable).
        @Test("a grant to a plugin running on one host and failed on another for want of it starts it there too",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set"))
        func grantStartsItWhereItFailed() async throws {
            let url = StateEngine.postgres.freshLocation()
            let a = try Self.host("host-a", url, trusted: [.menus, .routes]), b = try Self.host("host-b", url)
            await a.kernel.start()
            await b.kernel.start()
            _ = await b.kernel.applyDesiredState()  // b's first pass, as a host makes at its start
            try await a.kernel.execute(.enable(id: "g", tenant: nil), actor: "cli")
            _ = await b.kernel.applyDesiredState()
            let (sa, sb) = (try await Self.status(a), try await Self.status(b))
            #expect(sa == "enabled" && sb == "failed", "\(b.log.lines)")
            try await a.kernel.execute(.grants(id: "g", grant: ["routes"], revoke: []), actor: "cli")
            let applied = await b.kernel.applyDesiredState()
            #expect(applied.activated == ["g"], "\(applied) \(b.log.lines)")
            #expect(get(b.kernel, "/ext/g/ping")?.0 == 200)
            await a.kernel.shutdown()
            await b.kernel.shutdown()
        }

        /// A configuration this host's build refuses (its schema wants a number): the reload fails, the running
        /// generation keeps serving, and it is not tried again at every pass (each try loads the library again).
        @Test("a configuration another host stored that this host's build refuses is tried once, not at every pass",
              .enabled(if: StateEngine.postgresURL != nil, "KEEL_TEST_POSTGRES is not set"))
        func refusedConfigurationTriedOnce() async throws {
            let url = StateEngine.postgres.freshLocation()
            let a = try Self.host("host-a", url, trusted: [.menus, .routes])
            let b = try Self.host("host-b", url, trusted: [.menus, .routes], schema: "type: object\nproperties:\n  colour: {type: integer}\n")
            await a.kernel.start()
            await b.kernel.start()
            _ = await b.kernel.applyDesiredState()
            try await a.kernel.execute(.enable(id: "g", tenant: nil), actor: "cli")
            #expect(await b.kernel.applyDesiredState().activated == ["g"])
            try await a.kernel.execute(.config(id: "g", yaml: "colour: blue\n", file: nil), actor: "cli")
            let failures = { b.log.lines.filter { $0.contains("reload failed") }.count }
            for _ in 0..<3 { _ = await b.kernel.applyDesiredState() }
            #expect(failures() == 1, "\(b.log.lines)")
            #expect(get(b.kernel, "/ext/g/ping")?.0 == 200, "the running generation keeps serving")
            // One the plugin's own code refuses on host a: never stored (it was stored, then put back: another host
            // could run it meanwhile), so host b never runs it.
            let shared = try PostgresStore.open(url)
            let configEvents = { try shared.events(for: "g").filter { $0.kind.hasPrefix("config") }.count }
            let before = try configEvents()
            await #expect(throws: KernelError.self) {
                try await a.kernel.execute(.config(id: "g", yaml: "colour: refused\n", file: nil), actor: "cli")
            }
            #expect(try shared.config("g")?.yaml == "colour: blue\n")
            #expect(try configEvents() == before, "nothing stored, nothing put back")
            #expect(await b.kernel.applyDesiredState().isEmpty)
            // Changed again, to what this build accepts: tried, and it runs with it.
            try await a.kernel.execute(.config(id: "g", yaml: "colour: 7\n", file: nil), actor: "cli")
            #expect(await b.kernel.applyDesiredState().reloaded == ["g"])
            #expect(get(b.kernel, "/ext/g/ping")?.1.contains(#"config={"colour":7}"#) == true, "\(get(b.kernel, "/ext/g/ping")?.1 ?? "")")
            await a.kernel.shutdown()
            await b.kernel.shutdown()
        }
    }
}
