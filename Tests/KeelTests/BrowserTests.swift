// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// The console in real headless Chromium. `.ci/run` installs Chromium, chromedriver and Selenium, and sets CI, so
/// there the test always runs; elsewhere it runs when they are installed.
@Suite("the console in Chromium", .serialized, .scheduled)  // one Chromium at a time
struct BrowserTests {
    static var available: Bool {
        if ProcessInfo.processInfo.environment["CI"] != nil { return true }
        guard FileManager.default.fileExists(atPath: "/usr/bin/chromium"),
              FileManager.default.fileExists(atPath: "/usr/bin/chromedriver") else { return false }
        return (try? TestEnvironment.run("/usr/bin/env", ["python3", "-c", "import selenium"]).status) == 0
    }

    @Test("log in, open a plugin page as the caller, a hostile page cannot reach the token, disable and enable, install, uninstall",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func consoleRoundTrip() throws {
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel"
        try TestEnvironment.stageExamples(into: f.plugins)
        for id in ["hello", "greeter"] {
            try TestEnvironment.grantSensitive(id, plugins: f.plugins, state: f.state)
            #expect(try TestEnvironment.run(keel, ["plugins", "enable", id, "--plugins", f.plugins, "--state", f.state]).status == 0)
        }
        // A repository offering one more plugin (unsigned), known to the server before it starts.
        try Self.catalogRepository(f)
        let root = (f.state as NSString).deletingLastPathComponent

        // A hostile plugin whose page tries to read the console's token and send it home (Fixtures/plugins/spy.c).
        let spy = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/spy.c", name: "spy")
        try TestEnvironment.makeBundle(in: f.plugins, folder: "spy", manifest: TestEnvironment.manifest(
            id: "spy", library: "libspy.so", capabilities: ["routes", "menus", "authenticate", "authorize"],
            extra: "menus:\n  - { id: spy.page, title: Spy, link: /ext/spy/page, order: 99 }\n  - { id: spy.site, title: Spy site, link: \"https://spy.example/\", order: 100 }"), library: spy)
        try TestEnvironment.grantSensitive("spy", plugins: f.plugins, state: f.state)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "spy", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let spyFile = root + "/spy.log"

        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: ["SPY_FILE": spyFile])
        defer { server.stop() }
        let script = TestEnvironment.repository.path + "/Tests/Browser/console_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--plugin", "greeter", "--menu", "greeter.hello",
                                                         "--install", "catalogdemo", "--install-menu", "catalogdemo.main",
                                                         "--hostile-menu", "spy.page", "--external-menu", "spy.site"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("11 passed, 0 failed"), "\(r.stdout)")
        #expect(!r.stdout.contains("FAILED"))
        // The page's script ran and reported home: it could reach neither the console's storage nor its token.
        let seen = (try? String(contentsOfFile: spyFile, encoding: .utf8)) ?? ""
        let loot = seen.split(separator: "\n").filter { $0.hasPrefix("loot ") }.joined(separator: "\n")
        #expect(loot.contains("parent%3Dblocked") && loot.contains("own%3Dblocked") && loot.contains("top%3Dblocked"), "\(loot)")
        #expect(!seen.contains(ServerProcess.token), "a plugin saw the admin token")
    }

    @Test("the Services section: who serves and why, pick a provider, back to the ranking rule, clear a tenant's choice, show a stale choice's error",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func servicesSection() async throws {
        let s = ServicesFixture()
        try s.provider("alpha", tag: "A", ranking: 5)
        try s.provider("beta", tag: "B", ranking: 10)
        try s.provider("gamma", tag: "G", ranking: 1)
        try s.consumer("user")
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", s.f.plugins, "--state", s.f.state]
        for id in ["alpha", "beta", "user"] {
            #expect(try TestEnvironment.run(keel, ["plugins", "enable", id] + at).status == 0)
        }
        #expect(try TestEnvironment.run(keel, ["tenants", "create", "acme"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["services", "use", "test.echo/1", "alpha", "--tenant", "acme"] + at).status == 0)
        let server = try ServerProcess(plugins: s.f.plugins, state: s.f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }

        let screenshot = ProcessInfo.processInfo.environment["KEEL_SERVICES_SCREENSHOT"]
        let script = TestEnvironment.repository.path + "/Tests/Browser/services_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--interface", "test.echo/1", "--top", "beta", "--other", "alpha",
                                                         "--inactive", "gamma", "--consumer", "user", "--tenant", "acme"]
                                                        + (screenshot.map { ["--screenshot", $0] } ?? []))
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("7 passed, 0 failed"), "\(r.stdout)")
        #expect(r.stdout.contains("call: tag=A echo=x provider=alpha"), "the page's choice reached the consumer: \(r.stdout)")
        #expect(r.stdout.contains("call: tag=B echo=x provider=beta"), "the ranking rule again: \(r.stdout)")
        // What the page did is what the server holds now: no choice left, host-wide or for acme; alpha is gone.
        let listed = try await server.request("GET", "/api/v1/services", admin: true)
        let echo = (listed.json as? [[String: Any]])?.first { $0["interface"] as? String == "test.echo/1" }
        let serving = echo?["serving"] as? [[String: Any]] ?? []
        #expect(serving.count == 1 && serving.first?["provider"] as? String == "beta" && !(serving.first?["choice"] is String), "\(listed.text)")
        #expect(try await server.request("GET", "/ext/user/call?x").text.contains("provider=beta"))
    }

    @Test("plugin console pages: the inventory page shows the caller and its route's items, also for a tenant-limited plugin; a hostile page cannot reach the token or beyond its plugin",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func consolePages() async throws {
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        try stageInventory(into: f.plugins)
        // hello's API key stands for "demo", a viewer in tenant acme: the caller of a tenant-limited plugin's page.
        try TestEnvironment.stageExamples(into: f.plugins)
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        for command in [["plugins", "enable", "hello"], ["tenants", "create", "acme"], ["roles", "create", "viewer"],
                        ["tenants", "add-member", "acme", "demo", "viewer"]] {
            #expect(try TestEnvironment.run(keel, command + at).status == 0, "\(command)")
        }
        // The hostile page comes with the spy plugin (Fixtures/plugins/spy.c), which writes down every header its
        // hooks and handlers see: the console's token must never be among them.
        let spy = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/spy.c", name: "spy")
        let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "spy", manifest: TestEnvironment.manifest(
            id: "spy", library: "libspy.so", capabilities: ["routes", "menus", "authenticate", "authorize"], extra: """
            console:
              pages:
                - {path: hostile, title: Hostile, entry: assets/hostile.js, menu: {order: 99}}
              fetch: ["GET /api/v1/session"]
            """), library: spy)
        try FileManager.default.createDirectory(atPath: bundle + "/assets", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: TestEnvironment.fixtures + "/pages/hostile.js", toPath: bundle + "/assets/hostile.js")
        try TestEnvironment.grantSensitive("spy", plugins: f.plugins, state: f.state)
        for id in ["inventory", "spy"] {
            #expect(try TestEnvironment.run(keel, ["plugins", "enable", id, "--plugins", f.plugins, "--state", f.state]).status == 0)
        }
        let spyFile = (f.state as NSString).deletingLastPathComponent + "/spy.log"
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"], environment: ["SPY_FILE": spyFile])
        defer { server.stop() }

        let screenshot = ProcessInfo.processInfo.environment["KEEL_PAGES_SCREENSHOT"]
        let script = TestEnvironment.repository.path + "/Tests/Browser/pages_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--menu", "inventory.page.items", "--items", "4",
                                                         "--hostile-menu", "spy.page.hostile", "--hostile-url", "/ext/spy/pages/hostile"]
                                                        + (screenshot.map { ["--screenshot", $0] } ?? []))
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("5 passed, 0 failed"), "\(r.stdout)")
        // keel.fetch reached the spy's own route, without the console's token or the page-session cookie.
        let seen = (try? String(contentsOfFile: spyFile, encoding: .utf8)) ?? ""
        #expect(seen.contains("handler-path /ext/spy/echo"), "\(seen)")
        #expect(!seen.contains(ServerProcess.token), "plugin code saw the admin token")
        #expect(!seen.contains("keel_page"), "plugin code saw the page-session cookie")

        // Enabled for acme only: the page opens for acme's caller (the frame's navigation carries the page session,
        // its assets load as public files, keel.fetch reaches the route as that caller).
        #expect(try await server.request("POST", "/api/v1/plugins/inventory/disable", admin: true).status == 200)
        #expect(try await server.request("POST", "/api/v1/plugins/inventory/enable", admin: true,
                                         headers: ["Content-Type": "application/json"], body: Data(#"{"tenant":"acme"}"#.utf8)).status == 200)
        let tenant = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", "hello-demo-key",
                                                              "--user", "demo", "--display-name", "Demo User", "--only-inventory"])
        #expect(tenant.status == 0 && tenant.stdout.contains("2 passed, 0 failed"), "\(tenant.stdout)\(tenant.stderr)")
    }

    /// A repository "local" offering the unsigned plugin "catalogdemo" (menu entry "catalogdemo.main"), added to the
    /// state of `f` with the real CLI.
    static func catalogRepository(_ f: KernelFixture) throws {
        let keel = TestEnvironment.binPath + "/keel"
        let root = (f.state as NSString).deletingLastPathComponent
        let lib = try TestEnvironment.buildFixture("catalogdemo", ["PLUGIN_ID=\"catalogdemo\"", "MENU_ID=\"catalogdemo.main\""])
        try TestEnvironment.makeBundle(in: root + "/staging", folder: "catalogdemo", manifest: TestEnvironment.manifest(
            id: "catalogdemo", library: "libcatalogdemo.so", capabilities: ["routes", "menus"]), library: lib)
        let repo = root + "/repo"
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        let packed = try TestEnvironment.run(keel, ["pack", root + "/staging/catalogdemo", "--out", repo])
        #expect(packed.status == 0, "\(packed.stderr)")
        #expect(try TestEnvironment.run(keel, ["repo", "index", repo]).status == 0)
        #expect(try TestEnvironment.run(keel, ["repo", "add", "local", repo, "--plugins", f.plugins, "--state", f.state]).status == 0)
    }

    @Test("a proxied app inside the console: its page names the logged-in caller with a signature it verifies; forged identity headers never reach it; a hostile app reaches neither the console's credentials nor another plugin's app as the caller, and its cookies stay in its own mount",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func proxiedApp() async throws {
        let f = KernelFixture()
        let root = (f.state as NSString).deletingLastPathComponent
        let keyFile = root + "/wiki.key", log = root + "/wiki.log"
        // An existing app (Fixtures/upstream/app.py) that knows Keel only by its identity headers.
        let app = try Upstream(script: "app.py", arguments: ["--key-file", keyFile, "--log", log])
        defer { app.stop() }
        // Another plugin's app beside it (the same app, its own key and log).
        let otherLog = root + "/other.log"
        let other = try Upstream(script: "app.py", arguments: ["--key-file", root + "/other.key", "--log", otherLog])
        defer { other.stop() }
        try TestEnvironment.makeBundle(in: f.plugins, folder: "other", manifest: """
            id: other
            name: Other
            version: 1.0.0
            abi: "1.0"
            proxy:
              - {prefix: /app, upstream: "http://127.0.0.1:\(other.port)"}
            """, library: nil)
        // A manifest-only bundle: no library, just the app's prefix and the menu entry that opens it.
        try TestEnvironment.makeBundle(in: f.plugins, folder: "wiki", manifest: """
            id: wiki
            name: Wiki
            version: 1.0.0
            abi: "1.0"
            menus:
              - {id: wiki.app, title: Wiki, link: /ext/wiki/app/, icon: book}
            proxy:
              - {prefix: /app, upstream: "http://127.0.0.1:\(app.port)"}
            """, library: nil)
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "wiki"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "other"] + at).status == 0)
        let key = try TestEnvironment.run(keel, ["plugins", "proxy-key", "wiki"] + at).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(key.count == 64, "\(key)")
        try key.write(toFile: keyFile, atomically: true, encoding: .utf8)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let session = try await server.request("GET", "/api/v1/session", admin: true).json as? [String: Any] ?? [:]
        let user = session["id"] as? String ?? "", tenant = session["tenant"] as? String ?? ""
        #expect(!user.isEmpty && !tenant.isEmpty, "\(session)")

        let screenshot = ProcessInfo.processInfo.environment["KEEL_PROXY_SCREENSHOT"]
        let script = TestEnvironment.repository.path + "/Tests/Browser/proxy_app_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--menu", "wiki.app", "--app", "/ext/wiki/app", "--user", user,
                                                         "--tenant", tenant, "--other", "/ext/other/app", "--app-log", log,
                                                         "--other-log", otherLog] + (screenshot.map { ["--screenshot", $0] } ?? []))
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("7 passed, 0 failed"), "\(r.stdout)")
        // What the app saw, request by request: the host's identity only, never the client's claim or the token.
        let seen = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(seen.contains("\"user\": \"\(user)\""), "\(seen)")
        #expect(!seen.contains("mallory") && !seen.contains(ServerProcess.token) && !seen.contains("keel_page"), "\(seen)")
        let otherSeen = (try? String(contentsOfFile: otherLog, encoding: .utf8)) ?? ""
        #expect(!otherSeen.isEmpty && !otherSeen.contains(ServerProcess.token) && !otherSeen.contains("keel_page"), "\(otherSeen)")
    }

    /// The "calc" commands plugin, enabled with the real CLI, and a server serving it.
    static func servedCalc() throws -> (CommandsFixture, ServerProcess) {
        let c = CommandsFixture()
        try c.calc()
        let r = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "enable", "calc", "--plugins", c.f.plugins, "--state", c.f.state])
        #expect(r.status == 0, "\(r.stderr)")
        return (c, try ServerProcess(plugins: c.f.plugins, state: c.f.state, extraArguments: ["--no-watch"]))
    }

    @Test("live updates: a plugin disabled and enabled from the CLI shows in the console within a second, without a click",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func liveUpdates() throws {
        let (c, server) = try Self.servedCalc()
        defer { server.stop() }
        let keel = TestEnvironment.binPath + "/keel"
        let script = TestEnvironment.repository.path + "/Tests/Browser/live_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--keel", keel, "--plugins", c.f.plugins, "--state", c.f.state,
                                                         "--plugin", "calc"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("4 passed, 0 failed"), "\(r.stdout)")
    }

    @Test("a plugin page shows the plugin's log live: a line it logs while the page is open appears without a reload",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func pluginLogLive() throws {
        let f = KernelFixture()
        try f.fixtureBundle("chatty", defines: ["HANDLER_LOGS"], capabilities: ["routes"])
        let keel = TestEnvironment.binPath + "/keel"
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "chatty", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let script = TestEnvironment.repository.path + "/Tests/Browser/logs_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--plugin", "chatty", "--path", "/ext/chatty/ping", "--expect", "handling /ping"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("4 passed, 0 failed"), "\(r.stdout)")
    }

    @Test("the Commands section: a labelled form per signature runs the command; results unrounded, the server's errors shown",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func commandsSection() throws {
        let (_, server) = try Self.servedCalc()
        defer { server.stop() }

        let screenshot = ProcessInfo.processInfo.environment["KEEL_COMMANDS_SCREENSHOT"]
        let script = TestEnvironment.repository.path + "/Tests/Browser/commands_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--plugin", "calc"] + (screenshot.map { ["--screenshot", $0] } ?? []))
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("9 passed, 0 failed"), "\(r.stdout)")
        #expect(!r.stdout.contains("FAILED"))
    }
    @Test("the operator's views: overview live within a second of a CLI change, keyboard only, a plugin's grants and load history, the configuration form, the page bridge, removing a trusted key, 400 px",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func operatorViews() async throws {
        let c = CommandsFixture()
        try c.calc()
        let f = c.f
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        try """
            type: object
            properties:
              retries: {type: integer, minimum: 0, maximum: 5}
              greeting: {type: string, enum: [hello, hi, salut]}
              verbose: {type: boolean}
              weight: {type: number}
            """.write(toFile: f.plugins + "/calc/config.schema.yaml", atomically: true, encoding: .utf8)
        // "tuned" needs a configuration it was never given: enabling it fails, with the reason.
        try f.fixtureBundle("tuned", capabilities: ["routes"])
        try "type: object\nrequired: [level]\nproperties:\n  level: {type: integer}\n"
            .write(toFile: f.plugins + "/tuned/config.schema.yaml", atomically: true, encoding: .utf8)
        try TestEnvironment.stageExamples(into: f.plugins)
        for id in ["hello", "greeter"] { try TestEnvironment.grantSensitive(id, plugins: f.plugins, state: f.state) }
        for id in ["calc", "hello", "greeter"] {
            let r = try TestEnvironment.run(keel, ["plugins", "enable", id] + at)
            #expect(r.status == 0, "\(r.stderr)")
        }
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "tuned"] + at).status != 0)
        // Keys the schema does not list (it allows others): saving the form must keep them as stored, an integer
        // past 2^53 included (a JS number would round it to ...992).
        try "extra: kept\nbig: 9007199254740993\n".write(toFile: f.plugins + "/../calc-config.yaml", atomically: true, encoding: .utf8)
        let configured = try TestEnvironment.run(keel, ["plugins", "config", "calc", f.plugins + "/../calc-config.yaml"] + at)
        #expect(configured.status == 0, "\(configured.stderr)")
        #expect(try TestEnvironment.run(keel, ["tenants", "create", "acme"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["roles", "create", "viewer"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["roles", "grant", "viewer", "calc.math:run"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["tenants", "add-member", "acme", "ada", "viewer"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["trust", "add", "acme-release", Data(repeating: 7, count: 32).base64EncodedString()] + at).status == 0)
        try Self.catalogRepository(f)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }

        let screenshots = ProcessInfo.processInfo.environment["KEEL_CONSOLE_SCREENSHOTS"]
        let script = TestEnvironment.repository.path + "/Tests/Browser/operator_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--keel", keel, "--plugin", "calc", "--granted", "hello",
                                                         "--capability", "authenticate", "--failing", "tuned"] + at
                                                        + (screenshots.map { ["--screenshots", $0] } ?? []))
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("11 passed, 0 failed"), "\(r.stdout)")
        #expect(!r.stdout.contains("FAILED"))
        // What the form stored is what the server holds.
        let stored = try await server.request("GET", "/api/v1/plugins/calc/config", admin: true)
        #expect(((stored.json as? [String: Any])?["json"] as? String) == #"{"big":9007199254740993,"extra":"kept","greeting":"hi","retries":3,"weight":9007199254740993}"#, "\(stored.text)")
    }
}
