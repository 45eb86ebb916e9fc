// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelLoader
import Synchronization
import Testing

/// What a plugin in a worker asks of the host: other plugins' commands, the permission check, its log (rate-limited);
/// services are in IsolationTests+Services. The host checks again whatever a worker asks.
extension IsolationTests {
    /// Waits (up to 10 s) for a line of `log` that contains every one of `parts`.
    func logged(_ log: LogCollector, _ parts: String...) async -> Bool {
        let deadline = Date().addingTimeInterval(10)
        repeat {
            if log.lines.contains(where: { line in parts.allSatisfy { line.contains($0) } }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        } while Date() < deadline
        return false
    }

    @Test("a plugin in a worker calls another's command through keel.commands/1: declared under calls:, as the request's principal")
    func commandFromAWorker() async throws {
        let c = CommandsFixture()
        try c.calc()
        try c.bundle("user", ["CALLER"], extra: "calls: [calc.add]\nisolation: process\n")
        try c.bundle("rogue", ["CALLER"], extra: "isolation: process\n")
        try c.bundle("forger", ["CALLER", "FORGE"], extra: "calls: [calc.add]\nisolation: process\n")
        // Calls a command of its own: the host calls back into the same worker while a handler there waits.
        try c.bundle("looper", ["CALLER", "CALL_PLUGIN=\"looper\""], extra:
            "calls: [looper.add]\ncommands:\n  - {name: add, symbol: calc_add, signature: \"(i64, i64) -> i64\"}\nisolation: process\n")
        let kernel = try c.f.kernel(workerExecutable: keel)
        await kernel.start()
        for id in ["calc", "user", "rogue", "forger", "looper"] { try await kernel.enable(id) }
        #expect(try await kernel.plugin("user").workerPID != nil)
        func use(_ plugin: String, _ args: String, as principal: Principal) -> (Int, String) {
            let request = PluginRequest(method: "GET", path: "/ext/\(plugin)/use", routePath: "/use", query: args, principal: principal)
            guard let match = kernel.registry.snapshot.route(method: "GET", path: "/ext/\(plugin)/use"),
                  case let .success(r) = match.route.handler.handle(request) else { return (0, "") }
            return (r.status, r.bodyText)
        }
        #expect(use("user", "2,40", as: admin) == (200, "42"))
        #expect(use("looper", "1,2", as: admin) == (200, "3"))
        #expect(use("user", "\"two\",40", as: admin) == (502, "status=\(StatusCode.invalidArgument)"))
        let ada = Principal(id: "ada", roles: [], authenticatedBy: "test")
        #expect(use("user", "2,40", as: ada) == (502, "status=\(StatusCode.denied)"), "the caller's principal needs the permission")
        #expect(use("rogue", "2,40", as: admin) == (502, "status=\(StatusCode.denied)"), "not declared under calls:")
        #expect(use("forger", "2,40", as: ada) == (502, "status=\(StatusCode.denied)"), "a made-up admin principal is refused")
        #expect(await logged(c.f.log, "forger", "for a principal that is not the caller of the request it is serving: denied"))
        await kernel.shutdown()
    }

    @Test("a plugin in a worker being disabled whose call in flight needs an idle plugin's command: refused at once, the disable does not wait for its drain time-out")
    func noWakeForAWorkerBeingStopped() async throws {
        let c = CommandsFixture()
        try c.calc(extra: "activation: lazy\n")
        try c.bundle("leaving", ["CALLER", "CALL_AFTER_MS=600"], extra: "calls: [calc.add]\nisolation: process\n")
        let kernel = try c.f.kernel(workerExecutable: keel)
        await kernel.start()
        for id in ["calc", "leaving"] { try await kernel.enable(id) }
        #expect(kernel.isIdle("calc"))
        let request = PluginRequest(method: "GET", path: "/ext/leaving/use", routePath: "/use", query: "2,40", principal: admin)
        let match = try #require(kernel.registry.snapshot.route(method: "GET", path: "/ext/leaving/use"))
        let answered = Mutex<(Int, String)?>(nil)
        Thread.detachNewThread {
            let r = try? match.route.handler.handle(request).get()
            answered.withLock { $0 = (r?.status ?? 0, r?.bodyText ?? "") }
        }
        try await Task.sleep(for: .milliseconds(200))
        let started = ContinuousClock.now
        try await kernel.disable("leaving")
        let took = ContinuousClock.now - started
        #expect(took < .seconds(3), "the drain waited for a wake queued behind it: \(took)")
        let deadline = ContinuousClock.now + .seconds(5)
        while answered.withLock({ $0 }) == nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let answer = answered.withLock { $0 }
        #expect(answer?.0 == 502 && answer?.1.hasPrefix("status=") == true, "its call was refused: \(String(describing: answer))")
        #expect(kernel.isIdle("calc"), "nothing was loaded for a plugin on its way out")
        await kernel.shutdown()
    }

    @Test("a worker that writes its own call frames gets nothing it did not declare, and no principal but its request's")
    func hostileWorkerIsCheckedAgain() async throws {
        let c = CommandsFixture()
        try c.calc()
        // Both bypass the worker's own checks and write a callCommand frame to the socket themselves.
        try c.bundle("undeclared", ["CALLER", "RAW_FRAME=1"], extra: "isolation: process\n")
        try c.bundle("impostor", ["CALLER", "RAW_FRAME=999999"], extra: "calls: [calc.add]\nisolation: process\n")
        let kernel = try c.f.kernel(workerExecutable: keel)
        await kernel.start()
        for id in ["calc", "undeclared", "impostor"] { try await kernel.enable(id) }
        for id in ["undeclared", "impostor"] {
            let request = PluginRequest(method: "GET", path: "/ext/\(id)/use", routePath: "/use", query: "2,40", principal: admin)
            let match = try #require(kernel.registry.snapshot.route(method: "GET", path: "/ext/\(id)/use"))
            #expect(try match.route.handler.handle(request).get().bodyText == "sent")
        }
        #expect(await logged(c.f.log, "[undeclared]", "called calc.add, which it does not declare under calls: in plugin.yaml: denied"),
                "\(c.f.log.lines.suffix(10))")
        #expect(await logged(c.f.log, "[impostor]", "called calc.add for no request it is serving (a principal of its own making): denied"),
                "\(c.f.log.lines.suffix(10))")
        // Neither worker was killed for it: a refused call is answered, not a protocol violation.
        #expect(try await kernel.plugin("impostor").status == .enabled)
        await kernel.shutdown()
    }

    @Test("the permission check from a worker answers as in the host, for the plugin's own items only")
    func permissionFromAWorker() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("asker")
        try TenancyTests.askerSource.write(toFile: dir + "/asker.c", atomically: true, encoding: .utf8)
        let lib = try TestEnvironment.buildPlugin(source: dir + "/asker.c", name: "asker")
        let f = KernelFixture()
        try TestEnvironment.makeBundle(in: f.plugins, folder: "asker", manifest: TestEnvironment.manifest(id: "asker", library: "libasker.so",
            capabilities: ["routes"], extra: "permissions:\n  - {key: asker.things, actions: [view]}\nisolation: process"), library: lib)
        let kernel = try f.kernel(workerExecutable: keel)
        await kernel.start()
        try await kernel.enable("asker")
        #expect(try await kernel.plugin("asker").workerPID != nil)
        try await kernel.createRole("reader")
        try await kernel.setRolePermission("reader", "asker.things:view")
        try await kernel.setMember(tenant: "default", principal: "ann", role: "reader")
        #expect(get(kernel, "/ext/asker/ask")?.1 == "undeclared:deny declared:deny")
        let match = try #require(kernel.registry.snapshot.route(method: "GET", path: "/ext/asker/ask"))
        let ann = kernel.access.enrich(Principal(id: "ann", authenticatedBy: "test"))
        let reply = try match.route.handler.handle(PluginRequest(method: "GET", path: "/ext/asker/ask", principal: ann)).get()
        #expect(reply.bodyText == "undeclared:deny declared:allow")
        #expect(await logged(f.log, "[asker] asked about permission \"other.things\", which it does not declare: denied"))
        await kernel.shutdown()
    }
}

extension IsolationTests {
    /// A plugin whose activate starts a thread that logs "flood <n>" (warnings) without end: 500 lines every 100 ms,
    /// a flood that leaves the CPU to the tests running beside it.
    static let flooderSource = """
        #define _POSIX_C_SOURCE 200809L
        #include <keel/keel.h>
        #include <pthread.h>
        #include <stdio.h>
        #include <time.h>
        static const keel_host *host; static keel_ctx *c;
        static void *flood(void *u) {
            (void)u;
            char line[64];
            for (unsigned long i = 0;; i++) {
                int n = snprintf(line, sizeof line, "flood %lu", i);
                host->log(c, KEEL_LOG_WARN, (keel_str){ line, (size_t)n });
                if (i % 500 == 499) {
                    struct timespec pause = { 0, 100000000L };
                    nanosleep(&pause, NULL);
                }
            }
            return NULL;
        }
        static keel_status act(const keel_host *h, keel_ctx *ctx) {
            host = h; c = ctx;
            pthread_t t;
            return pthread_create(&t, NULL, flood, NULL) == 0 ? KEEL_OK : KEEL_ERR_INTERNAL;
        }
        static const keel_plugin d = { sizeof d, KEEL_ABI_VERSION_INIT, KEEL_STR("flooder"), KEEL_STR("1.0.0"), 0, act, NULL, NULL };
        KEEL_PLUGIN_ENTRY(d)
        """

    @Test("a worker flooding its log is held to its log budget: the drops are reported in one line, /healthz answers throughout")
    func logFlood() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("flooder")
        try Self.flooderSource.write(toFile: dir + "/flooder.c", atomically: true, encoding: .utf8)
        let lib = try TestEnvironment.buildPlugin(source: dir + "/flooder.c", name: "flooder")
        let f = KernelFixture()
        try TestEnvironment.makeBundle(in: f.plugins, folder: "flooder", manifest: TestEnvironment.manifest(
            id: "flooder", library: "libflooder.so", capabilities: ["routes"], extra: "isolation: process"), library: lib)
        let enabled = try TestEnvironment.run(keel, ["plugins", "enable", "flooder", "--plugins", f.plugins, "--state", f.state])
        #expect(enabled.status == 0, "\(enabled.stderr)")
        let started = Date()
        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: CrashAttributionTests.environment)
        defer { server.stop() }
        for _ in 1...10 {
            #expect(try await server.request("GET", "/healthz").status == 200)
            try await Task.sleep(for: .milliseconds(100))
        }
        let deadline = Date().addingTimeInterval(10)
        while !server.errors.value.contains("log line(s) from the worker (over 200 per second"), Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let errors = server.errors.value
        #expect(errors.contains("[flooder]") && errors.contains("log line(s) from the worker (over 200 per second"), "\(errors.suffix(1500))")
        // At most the budget of each one-second window begun since the server started.
        let windows = Int(Date().timeIntervalSince(started).rounded(.up)) + 1
        let flood = errors.components(separatedBy: "\n").filter { $0.contains("flood ") }.count
        // 200: LogBudget.perSecond (KeelIsolation).
        #expect(flood <= 200 * windows, "\(flood) lines in \(windows) windows")
        #expect(server.process.isRunning)
    }
}

