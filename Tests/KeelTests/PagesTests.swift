// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelManifest
import Testing

@Suite("console: pages in plugin.yaml", .scheduled)
struct ConsoleManifestTests {
    func parse(_ console: String) throws(ManifestError) -> Manifest {
        try ManifestLoader().parse(Data((TestEnvironment.manifest(id: "inv", library: "libinv.so") + console).utf8),
                                   file: "inv/plugin.yaml").0
    }

    func problem(_ console: String) -> String {
        do { _ = try parse(console); return "" } catch { return error.description }
    }

    @Test("pages, styles, a menu entry and the host endpoints a page may call")
    func parses() throws {
        let m = try parse("""
            console:
              pages:
                - path: items
                  title: Items
                  entry: assets/items.js
                  styles: [assets/items.css]
                  menu: {parent: inv.main, order: 10, icon: box}
                - {path: reports/daily, title: Daily, entry: assets/js/daily.mjs}
              fetch: ["GET /api/v1/session", "POST /api/v1/plugins/inv/commands/count"]
            """)
        let console = try #require(m.console)
        #expect(console.pages.map(\.path) == ["items", "reports/daily"])
        #expect(console.pages[0].styles == ["assets/items.css"] && console.pages[1].menu == nil)
        let menu = try #require(console.pages[0].menu)
        #expect(menu == MenuDeclaration(id: "inv.page.items", title: "Items", parent: "inv.main", link: "/ext/inv/pages/items",
                                        order: 10, icon: "box"))
        #expect(console.fetch.map(\.description) == ["GET /api/v1/session", "POST /api/v1/plugins/inv/commands/count"])
    }

    @Test("bad values: one line naming plugin.yaml, the key and the reason", arguments: [
        ("console: [x]", #"key "console": expected a mapping"#),
        ("console:\n  pages:\n    - {path: /items, title: I, entry: assets/i.js}", #"key "console.pages[0].path": "/items" must be a plain path"#),
        ("console:\n  pages:\n    - {path: a/../b, title: I, entry: assets/i.js}", #"key "console.pages[0].path""#),
        ("console:\n  pages:\n    - {path: i, title: I, entry: main.js}", #"key "console.pages[0].entry": "main.js" must be an ES module inside the bundle's assets/ folder"#),
        ("console:\n  pages:\n    - {path: i, title: I, entry: assets/../lib.js}", #"key "console.pages[0].entry""#),
        ("console:\n  pages:\n    - {path: i, title: I, entry: assets/i.css}", #"key "console.pages[0].entry""#),
        ("console:\n  pages:\n    - {path: i, title: I, entry: assets/i.js, styles: [x.css]}", #"key "console.pages[0].styles[0]""#),
        ("console:\n  pages:\n    - {path: i, entry: assets/i.js}", #"key "console.pages[0].title": required key is missing"#),
        ("console:\n  pages:\n    - {path: i, title: I, entry: assets/i.js}\n    - {path: i, title: J, entry: assets/j.js}", "declared twice"),
        ("console:\n  fetch: [\"GET /ext/other/items\"]", #"key "console.fetch[0]": expected "METHOD /api/v1/PATH""#),
        ("console:\n  fetch: [\"FETCH /api/v1/session\"]", #"key "console.fetch[0]""#),
        ("console:\n  fetch: [\"GET /api/v1/../../x\"]", #"key "console.fetch[0]""#),
        ("console:\n  fetch: [\"GET /api/v1/session?x=1\"]", #"key "console.fetch[0]""#),
    ])
    func refused(_ yaml: String, _ expected: String) {
        let text = problem("\n" + yaml)
        #expect(text.hasPrefix("inv/plugin.yaml:") && text.contains(expected) && !text.contains("\n"), "\(text)")
    }

    @Test("a console.fetch entry that changes something (not GET or HEAD) needs the operator's grant of console-write; revoking it stops the plugin")
    func writeNeedsGrant() async throws {
        let f = KernelFixture()
        func stage(capabilities: String) throws {
            let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "pg", manifest: """
                id: pg
                name: Pages
                version: 1.0.0
                abi: "1.0"
                \(capabilities)
                console:
                  pages:
                    - {path: items, title: Items, entry: assets/items.js}
                  fetch: ["GET /api/v1/session", "POST /api/v1/plugins/pg/reload"]

                """, library: nil)
            try FileManager.default.createDirectory(atPath: bundle + "/assets", withIntermediateDirectories: true)
            try "export {}\n".write(toFile: bundle + "/assets/items.js", atomically: true, encoding: .utf8)
        }
        try stage(capabilities: "")
        // The host's defaults: only routes and menus are trusted without a grant.
        let kernel = try Kernel(configuration: KernelConfiguration(pluginsDirectory: f.plugins, stateFile: f.state) { _ in })
        await kernel.start()
        let refusal = "console.fetch: POST /api/v1/plugins/pg/reload would change the host with the rights of whoever views " +
            "the page; ask for console-write under capabilities: and grant it with `keel plugins grant pg console-write`"
        await #expect(throws: KernelError.self) { try await kernel.enable("pg") }
        #expect(try await kernel.plugin("pg").reason == refusal)
        // Asked for but not granted: still refused; granted: the page and its list are served.
        try stage(capabilities: "capabilities: [console-write]")
        await kernel.rescan()
        await #expect(throws: KernelError.self) { try await kernel.enable("pg") }
        #expect(try await kernel.plugin("pg").reason == refusal)
        try await kernel.setGrants("pg", grant: ["console-write"])
        try await kernel.enable("pg")
        #expect(kernel.registry.snapshot.plugins["pg"]?.console?.fetch.map(\.description)
                == ["GET /api/v1/session", "POST /api/v1/plugins/pg/reload"])
        // Revoked while it runs: its new generation is refused, and the old one must not keep the right: the plugin
        // stops, recorded failed and still wanted (the revoke itself succeeded: said, not thrown); a new grant
        // brings it back.
        let stoppedNote = try await kernel.setGrants("pg", revoke: ["console-write"])
        #expect(stoppedNote == "pg cannot run without it and was stopped (\(refusal)); granting it again starts it", "\(String(describing: stoppedNote))")
        #expect(kernel.registry.snapshot.plugins["pg"] == nil)
        let stopped = try await kernel.plugin("pg")
        #expect(stopped.status == .failed && stopped.enabled)
        #expect(stopped.reason == "revoked console-write and it cannot run without: " + refusal + "; stopped until it is granted again")
        #expect(try await kernel.setGrants("pg", grant: ["console-write"]) == "pg started")
        #expect(kernel.registry.snapshot.plugins["pg"] != nil)
        #expect(try await kernel.plugin("pg").status == .enabled)
        // A revoke that takes nothing away (never granted) stops nothing and reloads nothing, even when a reload
        // would fail (here a broken plugin.yaml): the generation serving keeps serving, and the answer says so.
        try "id: pg\nname: [broken\n".write(toFile: f.plugins + "/pg/plugin.yaml", atomically: true, encoding: .utf8)
        #expect(try await kernel.setGrants("pg", revoke: ["proxy-remote"]) == "it held no such grant; nothing changed")
        #expect(kernel.registry.snapshot.plugins["pg"] != nil)
        #expect(try await kernel.plugin("pg").status == .enabled)
        await kernel.shutdown()
    }

    @Test("a console.fetch GET beyond the plugin's own (another plugin's configuration, the audit trail) needs the operator's grant of console-read; its own, the session, menus and pages do not; inspect and list show the list")
    func readNeedsGrant() async throws {
        let f = KernelFixture()
        func stage(capabilities: String, fetch: String) throws {
            let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "pr", manifest: """
                id: pr
                name: Pages
                version: 1.0.0
                abi: "1.0"
                \(capabilities)
                console:
                  pages:
                    - {path: items, title: Items, entry: assets/items.js}
                  fetch: [\(fetch)]

                """, library: nil)
            try FileManager.default.createDirectory(atPath: bundle + "/assets", withIntermediateDirectories: true)
            try "export {}\n".write(toFile: bundle + "/assets/items.js", atomically: true, encoding: .utf8)
        }
        // What every page may read: nothing in it is another plugin's.
        try stage(capabilities: "", fetch: #""GET /api/v1/session", "GET /api/v1/menus", "HEAD /api/v1/pages", "GET /api/v1/plugins/pr/config", "GET /api/v1/plugins/pr""#)
        let kernel = try Kernel(configuration: KernelConfiguration(pluginsDirectory: f.plugins, stateFile: f.state) { _ in })
        await kernel.start()
        try await kernel.enable("pr")
        #expect(try await kernel.plugin("pr").consoleFetch.first == "GET /api/v1/session")
        try await kernel.disable("pr")
        // Another plugin's configuration (its secrets), read with an admin's token when an admin opens the page.
        try stage(capabilities: "", fetch: #""GET /api/v1/session", "GET /api/v1/plugins/victim/config""#)
        await kernel.rescan()
        let refusal = "console.fetch: GET /api/v1/plugins/victim/config would read what is not the plugin's own with the rights of whoever "
            + "views the page (without a grant a page reads only the session, the menus, the pages and /api/v1/plugins/pr); ask for "
            + "console-read under capabilities: and grant it with `keel plugins grant pr console-read`"
        await #expect(throws: KernelError.self) { try await kernel.enable("pr") }
        let refused = try await kernel.plugin("pr").reason
        #expect(refused == refusal, "\(String(describing: refused))")
        // A prefix of its own id is not its own: /api/v1/plugins/pr-other is another plugin's.
        try stage(capabilities: "", fetch: #""GET /api/v1/plugins/prx/logs""#)
        await kernel.rescan()
        await #expect(throws: KernelError.self) { try await kernel.enable("pr") }
        // Granted (console-read, or console-write, which covers reads): it runs, and its list says what each does.
        try stage(capabilities: "capabilities: [console-read]", fetch: #""GET /api/v1/session", "GET /api/v1/audit""#)
        await kernel.rescan()
        try await kernel.setGrants("pr", grant: ["console-read"])
        try await kernel.enable("pr")
        let info = try await kernel.plugin("pr")
        #expect(info.consoleFetch == ["GET /api/v1/session", "GET /api/v1/audit (reads beyond its own: console-read)"], "\(info.consoleFetch)")
        #expect(info.pages == ["/ext/pr/pages/items"])
        try await kernel.setGrants("pr", revoke: ["console-read"])
        #expect(kernel.registry.snapshot.plugins["pr"] == nil, "revoked, it cannot run")
        try stage(capabilities: "capabilities: [console-write]", fetch: #""GET /api/v1/audit", "POST /api/v1/plugins/pr/reload""#)
        await kernel.rescan()
        try await kernel.setGrants("pr", grant: ["console-write"])
        try await kernel.enable("pr")
        #expect(kernel.registry.snapshot.plugins["pr"] != nil, "console-write covers reads")
        await kernel.shutdown()

        // The CLI shows the list before anything is enabled.
        let keel = TestEnvironment.binPath + "/keel"
        let inspect = try TestEnvironment.run(keel, ["plugins", "inspect", f.plugins + "/pr"])
        #expect(inspect.status == 0 && inspect.stdout.contains("pages:        /ext/pr/pages/items\n")
                && inspect.stdout.contains("console.fetch: GET /api/v1/audit (reads beyond its own: console-read), POST /api/v1/plugins/pr/reload (changes the host: console-write) — called with the rights of whoever views its pages"),
                "\(inspect.stdout)\(inspect.stderr)")
    }

    @Test("entry and styles must exist inside the bundle's assets/ folder")
    func files() throws {
        let folder = TestEnvironment.makeTemporaryDirectory("console-files")
        try FileManager.default.createDirectory(atPath: folder + "/assets", withIntermediateDirectories: true)
        try "export {}\n".write(toFile: folder + "/assets/i.js", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: folder + "/assets/out.css", withDestinationPath: "/etc/hostname")
        let ok = ConsoleDeclaration(pages: [ConsolePage(path: "i", title: "I", entry: "assets/i.js")])
        #expect(ok.missingFile(bundleFolder: folder, manifestPath: folder + "/plugin.yaml") == nil)
        let missing = ConsoleDeclaration(pages: [ConsolePage(path: "i", title: "I", entry: "assets/i.js", styles: ["assets/nope.css"])])
        #expect(missing.missingFile(bundleFolder: folder, manifestPath: "b/plugin.yaml")?.description
                == #"b/plugin.yaml: key "console.pages[0].styles[0]": assets/nope.css is not a file in the bundle"#)
        let escaping = ConsoleDeclaration(pages: [ConsolePage(path: "i", title: "I", entry: "assets/i.js", styles: ["assets/out.css"])])
        #expect(escaping.missingFile(bundleFolder: folder, manifestPath: "b/plugin.yaml") != nil, "a link leaving assets/ counts as missing")
    }
}

/// The inventory example (Plugins/inventory: plugin.yaml, assets/, and the libinventory.so `swift build` made),
/// staged into `plugins`.
func stageInventory(into plugins: String) throws {
    let source = TestEnvironment.repository.path + "/Plugins/inventory"
    let bundle = try TestEnvironment.makeBundle(in: plugins, folder: "inventory",
                                                manifest: String(contentsOfFile: source + "/plugin.yaml", encoding: .utf8),
                                                library: TestEnvironment.builtLibrary("libinventory.so"))
    try? FileManager.default.removeItem(atPath: bundle + "/assets")
    try FileManager.default.copyItem(atPath: source + "/assets", toPath: bundle + "/assets")
}

@Suite("console pages served by the host", .serialized, .scheduled)
struct PagesHTTPTests {
    let keel = TestEnvironment.binPath + "/keel"

    @Test("the shell's headers and HTML, CORS on assets, the bridge scripts, GET /api/v1/pages, the menu entry; all gone when disabled")
    func shell() async throws {
        let f = KernelFixture()
        try stageInventory(into: f.plugins)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "inventory", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }

        var r = try curl(server.base + "/ext/inventory/pages/items")
        #expect(r.head.hasPrefix("http/1.1 200") && r.head.contains("content-type: text/html; charset=utf-8"), "\(r.head)")
        #expect(r.head.contains("content-security-policy: \(PageShells.policy.lowercased())"), "\(r.head)")
        let html = String(decoding: r.body, as: UTF8.self)
        #expect(html.contains(#"<script src="/keel-page.js"></script>"#))
        #expect(html.contains(#"<script type="module" src="/ext/inventory/assets/items.js"></script>"#))
        #expect(html.contains(#"<link rel="stylesheet" href="/ext/inventory/assets/items.css">"#))
        #expect(html.contains("<title>Inventory</title>"))
        #expect(try curl(server.base + "/ext/inventory/pages/nope").head.hasPrefix("http/1.1 404"))

        r = try curl(server.base + "/ext/inventory/assets/items.js", ["-H", "Origin: null"])
        #expect(r.head.contains("access-control-allow-origin: *"), "module scripts from an opaque origin are CORS requests: \(r.head)")
        r = try curl(server.base + "/ext/inventory/items")
        #expect(String(decoding: r.body, as: UTF8.self).contains(#""sku":"BLT-100""#))
        #expect(!r.head.contains("access-control-allow-origin"), "only assets are open to other origins: \(r.head)")

        #expect(try await server.request("GET", "/keel-page.js").text.contains("window.keel"))
        #expect(try await server.request("GET", "/console-pages.js").text.contains("window.KeelPages"))
        #expect(try await server.request("GET", "/").text.contains(#" src="/console-pages.js" defer></script>"#))

        let pages = try await server.request("GET", "/api/v1/pages")
        let listed = (pages.json as? [[String: Any]])?.first { $0["plugin"] as? String == "inventory" }
        #expect(listed?["fetch"] as? [String] == ["GET /api/v1/session"], "\(pages.text)")
        #expect(((listed?["pages"] as? [[String: Any]])?.first?["url"] as? String) == "/ext/inventory/pages/items", "\(pages.text)")
        let menus = try await server.request("GET", "/api/v1/menus").text
        #expect(menus.contains(#""id":"inventory.page.items""#) && menus.contains(#""link":"/ext/inventory/pages/items""#), "\(menus)")

        #expect(try await server.request("POST", "/api/v1/plugins/inventory/disable", admin: true).status == 200)
        #expect(try curl(server.base + "/ext/inventory/pages/items").head.hasPrefix("http/1.1 404"), "a disabled plugin has no pages")
        #expect(try await server.request("GET", "/api/v1/pages").text == "[]")
        #expect(!(try await server.request("GET", "/api/v1/menus").text.contains("inventory.page.items")))
    }

    @Test("a plugin enabled for another tenant has no page, page list entry or menu entry for this caller")
    func tenants() async throws {
        let f = KernelFixture()
        try stageInventory(into: f.plugins)
        let at = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["tenants", "create", "acme"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "inventory", "--tenant", "acme"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/inventory/pages/items").status == 404)
        // Its public static files are served to everyone: its pages load them from an opaque origin, without cookies.
        #expect(try await server.request("GET", "/ext/inventory/assets/items.js").status == 200)
        #expect(try await server.request("GET", "/ext/inventory/items").status == 404)
        #expect(try await server.request("GET", "/api/v1/pages").text == "[]")
        #expect(!(try await server.request("GET", "/api/v1/menus").text.contains("inventory.page.items")))
        #expect(try await server.request("POST", "/api/v1/session/page", headers: ["Content-Type": "application/json"],
                                         body: Data(#"{"plugin":"inventory"}"#.utf8)).status == 404)
    }

    @Test("an entry file missing from the bundle fails the load with one line naming plugin.yaml and the key")
    func missingEntry() throws {
        let f = KernelFixture()
        try stageInventory(into: f.plugins)
        try FileManager.default.removeItem(atPath: f.plugins + "/inventory/assets/items.js")
        let r = try TestEnvironment.run(keel, ["plugins", "enable", "inventory", "--plugins", f.plugins, "--state", f.state])
        #expect(r.status == 1)
        #expect(r.stderr.contains(#"inventory/plugin.yaml: key "console.pages[0].entry": assets/items.js is not a file in the bundle"#), "\(r.stderr)")
    }
}
