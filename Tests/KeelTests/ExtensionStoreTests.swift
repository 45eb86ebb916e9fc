// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Testing

@Suite("repositories and installs", .serialized, .scheduled)
struct ExtensionStoreTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    @discardableResult
    func run(_ args: [String], _ f: KernelFixture, ok: Bool = true) throws -> (status: Int32, stdout: String, stderr: String) {
        let r = try TestEnvironment.run(keel, args + ["--plugins", f.plugins, "--state", f.state])
        if ok { #expect(r.status == 0, "\(args): \(r.stderr)") }
        return r
    }

    /// A repository folder with hello packed (signed) and greeter packed (unsigned).
    func makeRepository(_ dir: String, key: String) throws {
        let staging = TestEnvironment.makeTemporaryDirectory("staging")
        try TestEnvironment.stageExamples(into: staging)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let signed = try TestEnvironment.run(keel, ["pack", staging + "/hello-c", "--out", dir, "--key", key, "--signer", "acme"])
        #expect(signed.stdout.contains("hello-1.0.0.keelpkg (signed)"), "\(signed.stderr)")
        #expect(try TestEnvironment.run(keel, ["pack", staging + "/greeter-swift", "--out", dir]).status == 0)
        let index = try TestEnvironment.run(keel, ["repo", "index", dir])
        #expect(index.stdout.contains("indexed 2 archive(s)"), "\(index.stderr)")
    }

    @Test("pack, index, add, search, install with dependencies and signatures, enable, uninstall")
    func happyPath() throws {
        let f = KernelFixture()
        let repo = TestEnvironment.makeTemporaryDirectory("repo")
        let keyFile = TestEnvironment.makeTemporaryDirectory("key") + "/acme.key"
        let publicKey = try TestEnvironment.run(keel, ["trust", "keygen", keyFile]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try makeRepository(repo, key: keyFile)
        try run(["repo", "add", "main", repo], f)
        let search = try run(["search"], f)
        #expect(search.stdout.contains("hello 1.0.0  [main]") && search.stdout.contains("greeter 1.0.0  [main] unsigned"))
        #expect(try run(["search", "swift"], f).stdout.split(separator: "\n").count == 1)

        // greeter is unsigned and needs hello: the plan shows both, and the unsigned one is refused.
        let refused = try run(["install", "greeter"], f, ok: false)
        #expect(refused.status == 1 && refused.stdout.contains("plan: hello 1.0.0 from main, greeter 1.0.0 from main"))
        // The plan installs hello first; its signer is not trusted yet, so nothing is installed.
        #expect(refused.stderr.contains("\"hello\" 1.0.0, which \"greeter\" needs, is signed by \"acme\", which is not a trusted key; nothing installed"),
                "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/hello"))
        // --allow-unsigned is said of greeter: it does not let its untrusted dependency in unseen.
        let unseen = try run(["install", "greeter", "--allow-unsigned"], f, ok: false)
        #expect(unseen.status == 1 && unseen.stderr.contains("(--allow-unsigned covers \"greeter\" alone: install hello first, with --allow-unsigned if you "
                                                             + "accept it, or trust its signer with keel trust add acme KEY)"), "\(unseen.stderr)")
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/hello") && !FileManager.default.fileExists(atPath: f.plugins + "/greeter"))
        try run(["trust", "add", "acme", publicKey], f)
        let retry = try run(["install", "greeter"], f, ok: false)
        #expect(retry.stdout.contains("installed hello 1.0.0"))
        #expect(retry.stderr.contains("\"greeter\" 1.0.0 is not signed; refused (pass --allow-unsigned"))
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/greeter"))
        #expect(try run(["plugins", "list", "--json"], f).stdout.contains("\"install-failed\""))
        // A failed install can be removed as well as retried.
        try run(["uninstall", "greeter"], f)
        #expect(!(try run(["plugins", "list", "--json"], f).stdout.contains("\"install-failed\"")))
        try run(["install", "greeter", "--allow-unsigned"], f)
        #expect(FileManager.default.fileExists(atPath: f.plugins + "/greeter/libgreeter-swift.so"))
        let listed = try run(["plugins", "list"], f).stdout
        #expect(listed.contains("signature: signed by acme") && listed.contains("signature: unsigned (allowed by the operator)"), "\(listed)")

        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        try TestEnvironment.grantSensitive("greeter", plugins: f.plugins, state: f.state)
        try run(["plugins", "enable", "hello"], f)
        try run(["plugins", "enable", "greeter"], f)
        let again = try run(["install", "hello"], f, ok: false)
        #expect(again.status == 1 && again.stderr.contains("\"hello\" is already installed (folder \"hello\"); use `keel upgrade hello`"),
                "\(again.status) \(again.stderr)")

        let blocked = try run(["uninstall", "hello"], f, ok: false)
        #expect(blocked.status == 1 && blocked.stderr.contains("needed by enabled plugin(s) \"greeter\""))
        let cascaded = try run(["uninstall", "hello", "--cascade"], f)
        #expect(cascaded.stdout == "uninstalled hello (also disabled, as they need it: greeter)\n", "\(cascaded.stdout)")
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/hello"))
        #expect(!(try run(["plugins", "list"], f).stdout.contains("hello 1.0.0")))
    }

    @Test("bad archives and repositories: wrong checksum, bad signature, escaping paths, ambiguous offers, unreachable")
    func badInput() async throws {
        let f = KernelFixture()
        let repo = TestEnvironment.makeTemporaryDirectory("repo")
        let keyFile = TestEnvironment.makeTemporaryDirectory("key") + "/k.key"
        let publicKey = try TestEnvironment.run(keel, ["trust", "keygen", keyFile]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try makeRepository(repo, key: keyFile)
        try run(["repo", "add", "main", repo], f)
        try run(["trust", "add", "acme", publicKey], f)

        // A tampered archive: the checksum no longer matches the index; nothing is left half-installed.
        let archive = repo + "/hello-1.0.0.keelpkg"
        let original = try Data(contentsOf: URL(fileURLWithPath: archive))
        var tampered = original
        tampered[600] ^= 0xFF
        try tampered.write(to: URL(fileURLWithPath: archive))
        let bad = try run(["install", "hello"], f, ok: false)
        #expect(bad.stderr.contains("does not match the index"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.plugins).filter { !$0.hasPrefix("greeter") }.isEmpty)
        try original.write(to: URL(fileURLWithPath: archive))

        // A signature that does not verify against the trusted key.
        let signature = try String(contentsOfFile: archive + ".sig", encoding: .utf8)
        var raw = try #require(Data(base64Encoded: signature.trimmingCharacters(in: .whitespacesAndNewlines)))
        raw[0] ^= 0x01
        try raw.base64EncodedString().write(toFile: archive + ".sig", atomically: true, encoding: .utf8)
        #expect(try TestEnvironment.run(keel, ["repo", "index", repo]).status == 0)
        let badSignature = try run(["install", "hello"], f, ok: false)
        #expect(badSignature.stderr.contains("hello\" 1.0.0: bad signature by \"acme\": not made by the key trusted under that name"), "\(badSignature.stderr)")
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/hello"))
        // The catalog does not show it as signed.
        let listed = try run(["search", "hello", "--json"], f)
        #expect(listed.stdout.contains("\"signed\" : false"), "\(listed.stdout)")
        #expect(try run(["search", "hello"], f).stdout.contains("[main] bad signature"))
        try signature.write(toFile: archive + ".sig", atomically: true, encoding: .utf8)
        #expect(try TestEnvironment.run(keel, ["repo", "index", repo]).status == 0)
        // Signed by the trusted key: shown so, with its signer; unmarked in the text list.
        let good = try run(["search", "hello", "--json"], f).stdout
        #expect(good.contains("\"signed\" : true") && good.contains("\"trusted\" : true") && good.contains("\"signer\" : \"acme\""), "\(good)")
        #expect(try run(["search", "hello"], f).stdout.split(separator: "\n").contains { $0.hasPrefix("hello 1.0.0  [main]  ") })
        // The failed install can be retried once the archive is right.
        try run(["install", "hello"], f)
        #expect(FileManager.default.fileExists(atPath: f.plugins + "/hello/plugin.yaml"))

        // An archive whose entry escapes its folder.
        var tar = PackageArchiveTestBytes.header(name: "../escape.txt", size: 3)
        tar.append(Data("bad".utf8)); tar.append(Data(count: 509)); tar.append(Data(count: 1024))
        do { _ = try PackageArchive.entries(tar); Issue.record("accepted ../") } catch {
            #expect("\(error)".contains("escapes the bundle folder"))
        }

        // Read only as tar reads it: a GNU-format header (no name prefix there), a wrong checksum, a size with
        // leading spaces (read as 0 before, as a number by tar) are each refused.
        func refused(_ change: (inout [UInt8]) -> Void, reseal: Bool = true) -> String {
            var h = [UInt8](PackageArchiveTestBytes.header(name: "plugin.yaml", size: 3))
            change(&h)
            var tar = reseal ? PackageArchiveTestBytes.sealed(Data(h)) : Data(h)
            tar.append(Data("id:".utf8)); tar.append(Data(count: 509)); tar.append(Data(count: 1024))
            do { _ = try PackageArchive.entries(tar); return "accepted" } catch { return "\(error)" }
        }
        #expect(refused { h in for (i, b) in "ustar  \0".utf8.enumerated() { h[257 + i] = b } } == "archive: not a ustar archive (an entry's header says another format)")
        #expect(refused({ h in h[0] = UInt8(ascii: "P") }, reseal: false) == "archive: an entry's header checksum is wrong")
        #expect(refused { h in for (i, b) in "         3\0".utf8.enumerated() { h[124 + i] = b } }.hasSuffix("bad size field"))

        // Two repositories offering the same plugin at the same priority: refused, naming both.
        let mirror = TestEnvironment.makeTemporaryDirectory("mirror")
        try makeRepository(mirror, key: keyFile)
        try run(["repo", "add", "mirror", mirror], f)
        let ambiguous = try run(["install", "greeter", "--allow-unsigned"], f, ok: false)
        #expect(ambiguous.stderr.contains("is offered by \"main\" and \"mirror\" at the same priority 0"), "\(ambiguous.stderr)")
        // search says the same, not that no version runs here.
        let found = try run(["search", "greet"], f)
        #expect(found.stdout.contains("greeter  (\"greeter\" is offered by \"main\" and \"mirror\" at the same priority 0; give one a higher priority"),
                "\(found.stdout)")

        // A link inside an archive, a malformed index, an http:// repository, a dependency cycle.
        var link = PackageArchiveTestBytes.header(name: "lib.so", size: 0, type: UInt8(ascii: "2"))
        link.append(Data(count: 1024))
        do { _ = try PackageArchive.entries(link); Issue.record("accepted a link") } catch { #expect("\(error)".contains("links are not allowed")) }
        let broken = TestEnvironment.makeTemporaryDirectory("broken-repo")
        // Refused when added; an index that breaks later is reported by search, by line.
        try "plugins: [oops".write(toFile: broken + "/index.yaml", atomically: true, encoding: .utf8)
        let refused = try run(["repo", "add", "broken", broken], f, ok: false)
        #expect(refused.status == 1 && refused.stderr.contains("\(broken)/index.yaml:1: not valid YAML"), "\(refused)")
        try "apiVersion: 1\nplugins: {}\n".write(toFile: broken + "/index.yaml", atomically: true, encoding: .utf8)
        try run(["repo", "add", "broken", broken], f)
        try "plugins: [oops".write(toFile: broken + "/index.yaml", atomically: true, encoding: .utf8)
        let search = try run(["search"], f).stderr
        #expect(search.contains("repository \"broken\": \(broken)/index.yaml:1: not valid YAML"), "\(search)")
        try run(["repo", "remove", "broken"], f)

        let http = Process()
        http.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let port = Int.random(in: 20000...40000)
        http.arguments = ["python3", "-m", "http.server", "\(port)", "--bind", "127.0.0.1", "--directory", mirror]
        http.standardOutput = Pipe()
        http.standardError = Pipe()
        try http.run()
        defer { if http.isRunning { kill(http.processIdentifier, SIGKILL) }; http.waitUntilExit() }  // SIGTERM is blocked in children of the test process
        try run(["repo", "remove", "mirror"], f)
        try run(["repo", "add", "web", "http://127.0.0.1:\(port)", "--priority", "5"], f)
        #expect(await waitFor(10) { (try? run(["search", "hello"], f, ok: false).stdout.contains("hello 1.0.0  [web]")) == true })

        // A folder that does not exist is refused when added (RepositorySafetyTests covers one that goes away).
        let gone = try run(["repo", "add", "gone", "file:///nonexistent/repo"], f, ok: false)
        #expect(gone.status == 1 && gone.stderr.contains("repository \"gone\": /nonexistent/repo: no such folder"), "\(gone.stderr)")

        // The higher-priority repository down: the install comes from the one that answers, and says so.
        kill(http.processIdentifier, SIGKILL)
        http.waitUntilExit()
        let fallback = try run(["install", "greeter", "--allow-unsigned"], f)
        #expect(fallback.stdout.contains("installed greeter"), "\(fallback.stdout)")
        #expect(fallback.stdout.contains("not read: repository \"web\""), "\(fallback.stdout)")
    }
}

@Suite("upgrades", .serialized, .scheduled)
struct UpgradeTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    @Test("an upgrade to a version an enabled plugin's dependency range leaves is refused, naming it; once that plugin is disabled it goes through")
    func upgradeKeepsDependents() throws {
        let f = KernelFixture()
        let repo = TestEnvironment.makeTemporaryDirectory("deprepo")
        for (id, version, extra) in [("base", "1.0.0", ""), ("base", "2.0.0", ""), ("app", "1.0.0", "dependencies:\n  base: \"^1\"")] {
            let lib = try TestEnvironment.buildFixture("dep-\(id)-\(version)", ["PLUGIN_ID=\"\(id)\"", "PLUGIN_VERSION=\"\(version)\""])
            let staging = TestEnvironment.makeTemporaryDirectory("depstage")
            try TestEnvironment.makeBundle(in: staging, folder: id, manifest: TestEnvironment.manifest(id: id, version: version, library: "lib\(id).so", extra: extra),
                                           library: lib, libraryName: "lib\(id).so")
            #expect(try TestEnvironment.run(keel, ["pack", staging + "/" + id, "--out", repo]).status == 0)
        }
        #expect(try TestEnvironment.run(keel, ["repo", "index", repo]).status == 0)
        let common = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["repo", "add", "main", repo] + common).status == 0)
        for target in ["base@1.0.0", "app"] {
            let r = try TestEnvironment.run(keel, ["install", target, "--allow-unsigned"] + common)
            #expect(r.status == 0, "\(target): \(r.stderr)")
        }
        for id in ["base", "app"] { #expect(try TestEnvironment.run(keel, ["plugins", "enable", id] + common).status == 0) }
        let refused = try TestEnvironment.run(keel, ["upgrade", "base", "--allow-unsigned"] + common)
        #expect(refused.status == 1 && refused.stderr.contains("\"base\" is not upgraded to 2.0.0: enabled plugin(s) need another version (\"app\" needs base ^1)"),
                "\(refused.stderr)")
        let list = try TestEnvironment.run(keel, ["plugins", "list"] + common)
        #expect(list.stdout.contains("base 1.0.0  enabled") && list.stdout.contains("app 1.0.0  enabled"), "\(list.stdout)")
        #expect(try TestEnvironment.run(keel, ["plugins", "disable", "app"] + common).status == 0)
        let upgraded = try TestEnvironment.run(keel, ["upgrade", "base", "--allow-unsigned"] + common)
        #expect(upgraded.status == 0 && upgraded.stdout == "upgraded base to 2.0.0\n", "\(upgraded.stdout)\(upgraded.stderr)")
    }

    @Test("upgrade under a running server: a broken new version rolls back, a good one takes over; state survives")
    func upgrade() async throws {
        let f = KernelFixture()
        let repo = TestEnvironment.makeTemporaryDirectory("uprepo")
        for (version, tag, extra) in [("1.0.0", "one", [String]()), ("1.1.0", "two", []), ("1.2.0", "three", ["ACTIVATE_FAILS"])] {
            let lib = try TestEnvironment.buildFixture("up-\(tag)", ["PLUGIN_ID=\"up\"", "PLUGIN_VERSION=\"\(version)\"", "TAG=\"\(tag)\""] + extra)
            let staging = TestEnvironment.makeTemporaryDirectory("upstage")
            try TestEnvironment.makeBundle(in: staging, folder: "up", manifest: TestEnvironment.manifest(id: "up", version: version, library: "libup.so"),
                                           library: lib, libraryName: "libup.so")
            #expect(try TestEnvironment.run(keel, ["pack", staging + "/up", "--out", repo]).status == 0)
        }
        #expect(try TestEnvironment.run(keel, ["repo", "index", repo]).status == 0)
        let common = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["repo", "add", "main", repo] + common).status == 0)
        let install = try TestEnvironment.run(keel, ["install", "up@1.0.0", "--allow-unsigned"] + common)
        #expect(install.status == 0, "\(install.stderr)")
        #expect(try TestEnvironment.run(keel, ["plugins", "grant", "up", "authorize"] + common).status == 0)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "up"] + common).status == 0)

        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/up/ping").text.contains("tag=one"))

        // The recommended version (1.2.0) fails to activate: rolled back, 1.0.0 keeps serving.
        let broken = try TestEnvironment.run(keel, ["upgrade", "up", "--allow-unsigned"] + common)
        #expect(broken.status == 1 && broken.stderr.contains("upgrade of \"up\" to 1.2.0 failed, 1.0.0 kept"), "\(broken.stderr)")
        #expect(try await server.request("GET", "/ext/up/ping").text.contains("tag=one"))
        var info = (try await server.request("GET", "/api/v1/plugins/up", admin: true).json as? [String: Any]) ?? [:]
        #expect(info["status"] as? String == "upgrade-failed" && info["version"] as? String == "1.0.0")
        #expect((info["reason"] as? String)?.contains("cannot reach the frobnicator") == true)
        #expect((info["reason"] as? String)?.contains(".upgrading-") == false, "the work folder is gone: \(info["reason"] ?? "")")
        // The library named is the package's that failed, not the installed one at the same place (1.0.0, serving).
        #expect((info["reason"] as? String)?.contains("(up-1.2.0.keelpkg/libup.so)") == true, "\(info["reason"] ?? "")")
        // Staying at the version it runs: up to date, and the failure no longer stands as its status.
        let stay = try TestEnvironment.run(keel, ["upgrade", "up", "--to", "1.0.0"] + common)
        #expect(stay.status == 0 && stay.stdout.hasPrefix("up 1.0.0 is up to date (the version asked for)"), "\(stay.stdout)\(stay.stderr)")
        info = (try await server.request("GET", "/api/v1/plugins/up", admin: true).json as? [String: Any]) ?? [:]
        #expect(info["status"] as? String == "enabled" && (info["reason"] as? String) == nil, "\(info)")

        // An explicit good version takes over; enabled state and grants survive.
        let good = try TestEnvironment.run(keel, ["upgrade", "up", "--to", "1.1.0", "--allow-unsigned"] + common)
        #expect(good.status == 0 && good.stdout == "upgraded up to 1.1.0\n", "\(good.stderr)")
        #expect(try await server.request("GET", "/ext/up/ping").text.contains("tag=two"))
        info = (try await server.request("GET", "/api/v1/plugins/up", admin: true).json as? [String: Any]) ?? [:]
        #expect(info["status"] as? String == "enabled" && info["version"] as? String == "1.1.0")
        #expect((info["grants"] as? [String])?.contains("authorize") == true)
        let current = try TestEnvironment.run(keel, ["upgrade", "up", "--allow-unsigned"] + common)
        #expect(current.status == 1)
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: f.plugins).contains { $0.hasPrefix(".") }))

        // The same through the admin API: catalogue, upgrade, uninstall, install.
        let catalog = try await server.request("GET", "/api/v1/catalog?q=up", admin: true).json as? [String: Any]
        #expect(((catalog?["plugins"] as? [[String: Any]])?.first?["version"] as? String) == "1.2.0")
        let refused = try await server.request("POST", "/api/v1/plugins/up/upgrade", admin: true, body: Data(#"{"version": "1.2.0"}"#.utf8))
        #expect(refused.status == 422 && refused.text.contains("not signed"))
        // A version no repository offers: 404 not-offered, naming the ones it does; nothing changed.
        let unknown = try await server.request("POST", "/api/v1/plugins/up/upgrade", admin: true, body: Data(#"{"version": "9.9.9"}"#.utf8))
        #expect(unknown.status == 404 && unknown.errorCode == "not-offered", "\(unknown.text)")
        #expect(unknown.text.contains("has no \\\"up\\\" version 9.9.9 (it offers 1.0.0, 1.1.0, 1.2.0)"), "\(unknown.text)")
        // A misspelt key is refused, not dropped (which would upgrade to the recommended version instead).
        let typo = try await server.request("POST", "/api/v1/plugins/up/upgrade", admin: true, body: Data(#"{"versoin": "9.9.9"}"#.utf8))
        #expect(typo.status == 400 && typo.errorCode == "unknown-key", "\(typo.text)")
        #expect(typo.text.contains(#"unknown key \"versoin\" in the JSON body (did you mean \"version\"?); this endpoint takes allowUnsigned, signer, version"#), "\(typo.text)")
        let cli = try TestEnvironment.run(keel, ["upgrade", "up", "--to", "9.9.9"] + common)
        #expect(cli.status == 1 && cli.stderr.contains("has no \"up\" version 9.9.9 (it offers 1.0.0, 1.1.0, 1.2.0)"), "\(cli.stderr)")
        #expect(try await server.request("GET", "/ext/up/ping").text.contains("tag=two"))
        // An older version asked for is a downgrade, said as one.
        let down = try TestEnvironment.run(keel, ["upgrade", "up", "--to", "1.0.0", "--allow-unsigned"] + common)
        #expect(down.status == 0 && down.stdout == "downgraded up from 1.1.0 to 1.0.0\n", "\(down.stdout)\(down.stderr)")
        let removed = try await server.request("DELETE", "/api/v1/plugins/up?keepData=true", admin: true)
        #expect(removed.status == 200, "\(removed.text)")
        #expect(try await server.request("GET", "/ext/up/ping").status == 404)
        let installed = try await server.request("POST", "/api/v1/plugins/up/install", admin: true,
                                                 body: Data(#"{"version": "1.1.0", "allowUnsigned": true}"#.utf8))
        #expect(installed.status == 201 && installed.text.contains("up 1.1.0"), "\(installed.text)")
        let repos = try await server.request("GET", "/api/v1/repositories", admin: true).json as? [[String: Any]]
        #expect(repos?.first?["name"] as? String == "main")
    }
}

@Suite("per-plugin configuration", .scheduled)
struct ConfigTests {
    @Test("configuration is checked against the bundle's schema (a misspelt key named with the one it likely meant), handed to the plugin, changed at run time, kept")
    func configuration() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("tuned", defines: ["CONFIG_ECHO"])
        try """
            type: object
            required: [greeting]
            additionalProperties: false
            properties:
              greeting: {type: string}
              limit: {type: integer, minimum: 1}
              mode: {enum: [fast, safe]}
            """.write(toFile: f.plugins + "/tuned/config.schema.yaml", atomically: true, encoding: .utf8)
        let kernel = try f.kernel()
        await kernel.start()
        do { try await kernel.enable("tuned"); Issue.record("enabled without its required configuration") } catch {
            #expect(error.description.contains("needs a valid configuration"))
            #expect(error.description.contains("key \"greeting\": required key is missing"))
            #expect(error.description.contains("keel plugins config tuned FILE"))
        }
        for (yaml, expected) in [("greeting: hi\nlimit: 0\n", "key \"limit\": 0 is below the minimum 1"),
                                 ("greeting: 5\n", "key \"greeting\": expected string, found an integer"),
                                 ("greeting: hi\ncolour: red\n", "key \"colour\": not allowed by the plugin's schema; it takes greeting, limit, mode"),
                                 ("greeting: hi\nlimt: 2\n", "key \"limt\": not allowed by the plugin's schema; did you mean \"limit\"?"),
                                 ("greting: hi\n", "key \"greeting\": required key is missing (is \"greting\" a misspelling of it?)"),
                                 ("greeting: hi\nmode: reckless\n", "\"reckless\" is not one of fast, safe"),
                                 ("- a list\n", "a configuration must be a mapping")] {
            do { try await kernel.setConfig("tuned", yaml: yaml, file: "bad.yaml"); Issue.record("accepted \(yaml)") } catch {
                #expect(error.description.contains(expected), "\(error.description)")
            }
        }
        try await kernel.setConfig("tuned", yaml: "greeting: hello\nlimit: 3\n", file: "good.yaml")
        try await kernel.enable("tuned")
        #expect(get(kernel, "/ext/tuned/ping")?.1.hasSuffix(#"config={"greeting":"hello","limit":3}"#) == true)
        // Changed at run time: the plugin is re-activated with the new configuration.
        try await kernel.setConfig("tuned", yaml: "greeting: bonjour\nmode: safe\n", file: "new.yaml")
        #expect(get(kernel, "/ext/tuned/ping")?.1.hasSuffix(#"config={"greeting":"bonjour","mode":"safe"}"#) == true)
        await kernel.shutdown()
        let again = try f.kernel()
        await again.start()
        #expect(get(again, "/ext/tuned/ping")?.1.hasSuffix(#"config={"greeting":"bonjour","mode":"safe"}"#) == true)
        await again.shutdown()
    }
}

@Suite("install plans", .scheduled)
struct InstallPlanTests {
    @Test("a dependency cycle in a repository is refused, naming the cycle")
    func cycle() throws {
        let f = KernelFixture()
        let repo = TestEnvironment.makeTemporaryDirectory("cycle-repo")
        let keel = TestEnvironment.binPath + "/keel"
        for (id, dep) in [("ping", "pong"), ("pong", "ping")] {
            let lib = try TestEnvironment.buildFixture("cyc-\(id)", ["PLUGIN_ID=\"\(id)\""])
            let staging = TestEnvironment.makeTemporaryDirectory("cycle-stage")
            try TestEnvironment.makeBundle(in: staging, folder: id, manifest: TestEnvironment.manifest(id: id, library: "lib.so",
                                           extra: "dependencies:\n  \(dep): \"^1\""), library: lib, libraryName: "lib.so")
            #expect(try TestEnvironment.run(keel, ["pack", staging + "/" + id, "--out", repo]).status == 0)
        }
        #expect(try TestEnvironment.run(keel, ["repo", "index", repo]).status == 0)
        let common = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["repo", "add", "main", repo] + common).status == 0)
        let r = try TestEnvironment.run(keel, ["install", "ping", "--allow-unsigned"] + common)
        #expect(r.status == 1 && r.stderr == "keel: error: dependency cycle: ping → pong → ping\n", "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/ping"))
    }
}

/// Builds tar headers for hostile archives.
enum PackageArchiveTestBytes {
    /// A ustar header (magic, version and checksum right, as every archive Keel reads must have), of entry `type`.
    static func header(name: String, size: Int, type: UInt8 = UInt8(ascii: "0")) -> Data {
        var h = [UInt8](repeating: 0, count: 512)
        for (i, b) in name.utf8.enumerated() { h[i] = b }
        for (i, b) in String(format: "%011o", size).utf8.enumerated() { h[124 + i] = b }
        h[156] = type
        for (i, b) in "ustar\000".utf8.enumerated() { h[257 + i] = b }
        return sealed(Data(h))
    }

    /// `header` with its checksum written for the bytes it holds now.
    static func sealed(_ header: Data) -> Data {
        var h = [UInt8](header)
        for i in 148..<156 { h[i] = 32 }
        let sum = h.reduce(0) { $0 + Int($1) }
        for (i, b) in String(format: "%06o\0 ", sum).utf8.enumerated() { h[148 + i] = b }
        return Data(h)
    }
}
