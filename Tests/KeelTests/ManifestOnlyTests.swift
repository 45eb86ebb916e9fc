// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelManifest
import KeelExtensions
import Testing

/// A bundle with a plugin.yaml and no library: it runs no code and contributes what its manifest declares.
@Suite("manifest-only bundles: no library, no code", .serialized, .scheduled)
struct ManifestOnlyTests {
    static func manifest(id: String, extra: String = "") -> String {
        """
        id: \(id)
        name: Test \(id)
        version: 1.0.0
        abi: "1.0"
        menus:
          - {id: \(id).main, title: Main, link: /ext/\(id)/app/}
        proxy:
          - {prefix: /app, upstream: "http://127.0.0.1:9/"}

        """ + extra
    }

    @Test("plugin.yaml without library parses as manifest-only; routes, hooks, services and commands are refused naming plugin.yaml")
    func parse() throws {
        let (m, warnings) = try ManifestLoader().parse(Data(Self.manifest(id: "mo").utf8), file: "mo/plugin.yaml")
        #expect(m.library == nil && m.isManifestOnly && warnings.isEmpty)
        #expect(m.proxies.map(\.prefix) == ["/app"] && m.menus.map(\.id) == ["mo.main"])
        let refused = [
            ("capabilities: [routes]\n", "capability routes needs code"),
            ("capabilities: [authorize]\n", "capability authorize needs code"),
            ("capabilities: [\"route-prefix:/legacy\"]\n", "capability route-prefix:/legacy needs code"),
            ("provides:\n  - {interface: a.b/1, version: 1.0.0}\n", "provides needs code"),
            ("commands:\n  - {name: add, symbol: add, signature: \"(i64) -> i64\"}\n", "commands needs code"),
            ("calls: [other.add]\n", "calls needs code"),
        ]
        for (extra, reason) in refused {
            do {
                _ = try ManifestLoader().parse(Data(Self.manifest(id: "mo", extra: extra).utf8), file: "mo/plugin.yaml")
                Issue.record("accepted: \(extra)")
            } catch {
                #expect(error.description.hasPrefix("mo/plugin.yaml:"), "\(error)")
                #expect(error.description.contains(reason) && error.description.contains("has no library"), "\(error)")
                #expect(!error.description.contains("\n"))
            }
        }
        // permissions and the menus capability need no code.
        let (ok, _) = try ManifestLoader().parse(Data(Self.manifest(id: "mo", extra: """
            capabilities: [menus]
            permissions:
              - {key: mo, actions: [view]}

            """).utf8), file: "mo/plugin.yaml")
        #expect(ok.isManifestOnly && ok.permissions.count == 1)
    }

    @Test("enable, list, reload, disable and uninstall a manifest-only bundle: its proxy, menus and assets come and go with it")
    func lifecycle() async throws {
        let f = KernelFixture()
        let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "mo", manifest: Self.manifest(id: "mo"), library: nil)
        try FileManager.default.createDirectory(atPath: bundle + "/assets", withIntermediateDirectories: true)
        try "hello\n".write(toFile: bundle + "/assets/hello.txt", atomically: true, encoding: .utf8)
        let kernel = try f.kernel()
        await kernel.start()

        try await kernel.enable("mo")
        var snapshot = kernel.registry.snapshot
        #expect(snapshot.proxy(for: "/ext/mo/app/x")?.rest == "/x")
        #expect(snapshot.plugins["mo"]?.menus.map(\.entry.id) == ["mo.main"])
        #expect(snapshot.route(method: "GET", path: "/ext/mo/assets/hello.txt") != nil, "assets are served by the host")
        var info = try await kernel.plugin("mo")
        #expect(info.status == .enabled && info.manifestOnly && info.library == "")
        #expect(info.proxies == ["/ext/mo/app/ → http://127.0.0.1:9/"])
        let history = try await kernel.history("mo")
        #expect(history.last?.outcome == "activated")
        #expect(history.last?.checksum == FileDigestProbe.sha256(bundle + "/plugin.yaml"), "a manifest-only build is identified by its plugin.yaml")

        // A changed manifest reloads as a new generation.
        try Self.manifest(id: "mo").replacingOccurrences(of: "title: Main", with: "title: Renamed")
            .write(toFile: bundle + "/plugin.yaml", atomically: true, encoding: .utf8)
        try await kernel.reload("mo")
        snapshot = kernel.registry.snapshot
        #expect(snapshot.plugins["mo"]?.menus.first?.entry.title == "Renamed")
        #expect(try await kernel.history("mo").filter { $0.outcome == "activated" }.count == 2)

        try await kernel.disable("mo")
        snapshot = kernel.registry.snapshot
        #expect(snapshot.proxy(for: "/ext/mo/app/x") == nil && snapshot.plugins["mo"] == nil)
        info = try await kernel.plugin("mo")
        #expect(info.status == .disabled && info.proxies.isEmpty)

        try await kernel.enable("mo")
        #expect(kernel.registry.snapshot.proxy(for: "/ext/mo/app") != nil)
        try await kernel.uninstall("mo")
        #expect(kernel.registry.snapshot.proxy(for: "/ext/mo/app") == nil)
        #expect(!FileManager.default.fileExists(atPath: bundle))
        await kernel.shutdown()
    }

    @Test("keel plugins inspect and list show a manifest-only bundle without loading anything")
    func cli() throws {
        let f = KernelFixture()
        let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "mo", manifest: Self.manifest(id: "mo"), library: nil)
        let keel = TestEnvironment.binPath + "/keel"
        let at = ["--plugins", f.plugins, "--state", f.state]
        let inspect = try TestEnvironment.run(keel, ["plugins", "inspect", bundle])
        #expect(inspect.status == 0 && inspect.stdout.contains("library:      none (manifest only)"), "\(inspect.stdout)\(inspect.stderr)")
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "mo"] + at).status == 0)
        let list = try TestEnvironment.run(keel, ["plugins", "list"] + at)
        #expect(list.stdout.contains("library: none (manifest only)") && list.stdout.contains("proxy:  /ext/mo/app/ → http://127.0.0.1:9/"), "\(list.stdout)")

        // Packed without a library, and validated as a bundle that runs no code.
        let out = TestEnvironment.makeTemporaryDirectory("mo-pack")
        let packed = try TestEnvironment.run(keel, ["pack", bundle, "--out", out])
        #expect(packed.status == 0, "\(packed.stdout)\(packed.stderr)")
        let archives = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
        let archive = try Data(contentsOf: URL(fileURLWithPath: out + "/" + (archives.first ?? "none")))
        #expect(try PackageArchive.entries(archive).map(\.path) == ["plugin.yaml"])
        let validated = try TestEnvironment.run(keel, ["plugins", "validate", bundle])
        #expect(validated.status == 0 && validated.stdout.contains("a manifest-only bundle runs no code"), "\(validated.stdout)\(validated.stderr)")
    }
}

/// SHA-256 of a file, as the kernel records it.
enum FileDigestProbe {
    static func sha256(_ path: String) -> String? {
        let r = try? TestEnvironment.run("/usr/bin/env", ["sha256sum", path])
        return r?.stdout.split(separator: " ").first.map(String.init)
    }
}
