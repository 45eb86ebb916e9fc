// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Testing

/// The plugin authors' kit, as a new author meets it, with the real tools: `keel sdk install` into a temporary
/// prefix, `keel new` into a temporary folder outside the checkout, the project's own build (`make`: cc with
/// pkg-config, swift build, cargo build) and tests, then the bundle served by a real `keel serve`.
@Suite("the plugin authors' kit", .scheduled)
struct PluginKitTests {
    static var keel: String { TestEnvironment.binPath + "/keel" }

    /// One SDK installed for the whole run (the projects only read it).
    static let sdk: Result<String, TestFailure> = {
        let prefix = TestEnvironment.makeTemporaryDirectory("sdk")
        guard let r = try? TestEnvironment.run(keel, ["sdk", "install", "--prefix", prefix]), r.status == 0 else {
            return .failure(TestFailure("keel sdk install failed"))
        }
        return .success(prefix)
    }()

    /// The environment a project builds in: pkg-config finds the SDK under `prefix`; Rust from ~/.cargo/bin.
    static func buildEnvironment(prefix: String) -> [String: String] {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? ""
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return ["PKG_CONFIG_PATH": prefix + "/lib/pkgconfig", "PATH": home + "/.cargo/bin:" + path]
    }

    @Test("keel sdk install puts the headers and keel-plugin.pc where pkg-config finds them; keel sdk path prints them")
    func sdkInstallAndPath() throws {
        let prefix = TestEnvironment.makeTemporaryDirectory("sdk-own")
        let installed = try TestEnvironment.run(Self.keel, ["sdk", "install", "--prefix", prefix])
        #expect(installed.status == 0, "\(installed.stderr)")
        #expect(installed.stdout.contains("installed the Keel plugin SDK (ABI 1.1.0) in \(prefix)"))
        #expect(installed.stdout.contains("export PKG_CONFIG_PATH=\"\(prefix)/lib/pkgconfig"), "a prefix off pkg-config's path gets the hint")

        // Every public header, byte for byte as in the checkout (the binary carries them); not the module map.
        let source = TestEnvironment.abiInclude
        let headers = try FileManager.default.subpathsOfDirectory(atPath: source + "/keel").filter { $0.hasSuffix(".h") }
        #expect(headers.count >= 14)
        for header in headers {
            #expect(FileManager.default.contents(atPath: prefix + "/include/keel/" + header)
                    == FileManager.default.contents(atPath: source + "/keel/" + header), "\(header)")
        }
        #expect(!FileManager.default.fileExists(atPath: prefix + "/include/module.modulemap"))
        // The Rust SDK crate, byte for byte, without build output.
        let crate = TestEnvironment.repository.path + "/sdk/rust/keel-plugin"
        for file in ["Cargo.toml", "README.md", "src/lib.rs", "src/sys.rs", "tests/layout.rs"] {
            #expect(FileManager.default.contents(atPath: prefix + "/share/keel/rust/keel-plugin/" + file)
                    == FileManager.default.contents(atPath: crate + "/" + file), "\(file)")
        }
        #expect(installed.stdout.contains("  Rust crate: \(prefix)/share/keel/rust/keel-plugin ("), "\(installed.stdout)")
        // The Swift package: its manifest and pkg-config module, and KeelPluginKit's sources byte for byte.
        let kit = prefix + "/share/keel/swift/KeelPluginKit"
        let repository = TestEnvironment.repository.path
        #expect(FileManager.default.contents(atPath: kit + "/Package.swift")
                == FileManager.default.contents(atPath: repository + "/sdk/swift/KeelPluginKit/Package.swift"))
        // The module names the installed keel.h itself, so that a C target including it shares its declarations.
        let moduleMap = try String(contentsOfFile: kit + "/Sources/CKeelABI/module.modulemap", encoding: .utf8)
        #expect(moduleMap == "module CKeelABI [system] {\n    header \"\(prefix)/include/keel/keel.h\"\n    export *\n}\n", "\(moduleMap)")
        let sources = try FileManager.default.contentsOfDirectory(atPath: repository + "/Sources/KeelPluginKit").filter { $0.hasSuffix(".swift") }
        #expect(sources.contains("Services.swift") && sources.count >= 6)
        #expect(try FileManager.default.contentsOfDirectory(atPath: kit + "/Sources/KeelPluginKit").sorted() == sources.sorted())
        for file in sources {
            #expect(FileManager.default.contents(atPath: kit + "/Sources/KeelPluginKit/" + file)
                    == FileManager.default.contents(atPath: repository + "/Sources/KeelPluginKit/" + file), "\(file)")
        }
        #expect(installed.stdout.contains("  Swift:      \(kit) (the KeelPluginKit package, \(sources.count + 2) files)"), "\(installed.stdout)")
        // A file an older SDK's kit had is gone after the next install (it would still compile into every project).
        try "struct Stale {}\n".write(toFile: kit + "/Sources/KeelPluginKit/Stale.swift", atomically: true, encoding: .utf8)
        #expect(try TestEnvironment.run(Self.keel, ["sdk", "install", "--prefix", prefix]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: kit + "/Sources/KeelPluginKit/Stale.swift"))
        // An older SDK's kit is reported by `sdk path`, as its headers are.
        try "// an older kit\n".write(toFile: kit + "/Sources/KeelPluginKit/Services.swift", atomically: true, encoding: .utf8)
        let oldKit = try TestEnvironment.run(Self.keel, ["sdk", "path", "--prefix", prefix])
        #expect(oldKit.status == 0 && oldKit.stderr.contains("differs from this keel's") && oldKit.stderr.contains("Services.swift"), "\(oldKit)")
        #expect(try TestEnvironment.run(Self.keel, ["sdk", "install", "--prefix", prefix]).status == 0)

        let env = Self.buildEnvironment(prefix: prefix)
        let cflags = try TestEnvironment.run("/usr/bin/env", ["pkg-config", "--cflags", "keel-plugin"], environment: env)
        #expect(cflags.status == 0 && cflags.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "-I\(prefix)/include", "\(cflags)")
        let atLeast = try TestEnvironment.run("/usr/bin/env", ["pkg-config", "--atleast-version=1.1", "keel-plugin"], environment: env)
        #expect(atLeast.status == 0, "the .pc file's Version is the ABI version")

        // `sdk path`: with --prefix, and found through pkg-config without it.
        #expect(try TestEnvironment.run(Self.keel, ["sdk", "path", "--prefix", prefix]).stdout == prefix + "/include\n")
        #expect(try TestEnvironment.run(Self.keel, ["sdk", "path"], environment: env).stdout == prefix + "/include\n")
        // A header from another version is reported; an empty prefix is an error naming the fix.
        try "/* changed */\n".write(toFile: prefix + "/include/keel/status.h", atomically: true, encoding: .utf8)
        let stale = try TestEnvironment.run(Self.keel, ["sdk", "path", "--prefix", prefix])
        #expect(stale.status == 0 && stale.stderr.contains("differs from this keel's") && stale.stderr.contains("status.h"), "\(stale)")
        let empty = TestEnvironment.makeTemporaryDirectory("sdk-none")
        let missing = try TestEnvironment.run(Self.keel, ["sdk", "path", "--prefix", empty])
        #expect(missing.status == 1)
        #expect(missing.stderr == "keel: error: no plugin SDK in \(empty); run `keel sdk install --prefix \(empty)`\n")
    }

    @Test("keel new refuses a bad id and a folder that is not empty, with one line each")
    func newRefusesBadInput() throws {
        let bad = try TestEnvironment.run(Self.keel, ["new", "Bad Id", "--lang", "c"])
        #expect(bad.status == 64 && bad.stderr.hasPrefix("keel: error: \"Bad Id\" is not a plugin id"), "\(bad.stderr)")
        let host = try TestEnvironment.run(Self.keel, ["new", "keel", "--lang", "c", "--dir", TestEnvironment.makeTemporaryDirectory("new-keel") + "/p"])
        #expect(host.status == 64 && host.stderr.hasPrefix("keel: error: \"keel\" is the host's own name: no plugin may take it"), "\(host.stderr)")
        let dir = TestEnvironment.makeTemporaryDirectory("new-full")
        try "x".write(toFile: dir + "/keep.txt", atomically: true, encoding: .utf8)
        let full = try TestEnvironment.run(Self.keel, ["new", "full", "--lang", "c", "--dir", dir])
        #expect(full.status == 1 && full.stderr == "keel: error: \(dir): already exists and is not empty; pass --dir with a new folder\n")
        let lang = try TestEnvironment.run(Self.keel, ["new", "x", "--lang", "cobol"])
        #expect(lang.status == 64)
        // A Rust project needs the SDK crate where `keel sdk path` looks (here: headers without the crate).
        let prefix = TestEnvironment.makeTemporaryDirectory("sdk-no-crate")
        #expect(try TestEnvironment.run(Self.keel, ["sdk", "install", "--prefix", prefix]).status == 0)
        try FileManager.default.removeItem(atPath: prefix + "/share")
        let rust = try TestEnvironment.run(Self.keel, ["new", "r", "--lang", "rust", "--dir", dir + "/r"], environment: Self.buildEnvironment(prefix: prefix))
        #expect(rust.status == 1 && rust.stderr == "keel: error: no Rust SDK crate in \(prefix)/share/keel/rust/keel-plugin; run `keel sdk install --prefix \(prefix)` (and set PKG_CONFIG_PATH as it says)\n", "\(rust.stderr)")
        let swift = try TestEnvironment.run(Self.keel, ["new", "s", "--lang", "swift", "--dir", dir + "/s"], environment: Self.buildEnvironment(prefix: prefix))
        #expect(swift.status == 1 && swift.stderr == "keel: error: no Swift SDK package in \(prefix)/share/keel/swift/KeelPluginKit; run `keel sdk install --prefix \(prefix)` (and set PKG_CONFIG_PATH as it says)\n", "\(swift.stderr)")
    }

    @Test("keel new makes a project that builds with its own tool and pkg-config, passes its own tests, and serves its route",
          arguments: ["c", "rust", "swift"])
    func newProjectBuildsAndServes(lang: String) async throws {
        let prefix = try Self.sdk.get()
        let id = "kit-\(lang).demo"
        let ident = "kit_\(lang)_demo"
        let project = TestEnvironment.makeTemporaryDirectory("new-\(lang)") + "/project"
        let created = try TestEnvironment.run(Self.keel, ["new", id, "--lang", lang, "--dir", project], environment: Self.buildEnvironment(prefix: prefix))
        #expect(created.status == 0, "\(created.stderr)")
        for file in [".gitignore", "README.md", "plugin.yaml", "Makefile"] {
            #expect(FileManager.default.fileExists(atPath: project + "/" + file), "\(file)")
        }
        let manifest = try String(contentsOfFile: project + "/plugin.yaml", encoding: .utf8)
        #expect(manifest.contains("id: \(id)\n") && manifest.contains("library: lib\(ident).so\n") && manifest.contains("abi: \"1.1\""))

        // A configuration schema and assets/ of the project reach the bundle with the library (not the sources).
        try "type: object\nadditionalProperties: false\nproperties:\n  greeting:\n    type: string\n"
            .write(toFile: project + "/config.schema.yaml", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: project + "/assets", withIntermediateDirectories: true)
        try "body {}\n".write(toFile: project + "/assets/app.css", atomically: true, encoding: .utf8)

        // The project's own build and tests (Swift in debug: quicker, and `swift test` reuses it).
        var env = Self.buildEnvironment(prefix: prefix)
        if lang == "swift" { env["CONFIG"] = "debug" }
        let build = try TestEnvironment.run("/usr/bin/env", ["make"], environment: env, currentDirectory: project)
        try #require(build.status == 0, "make: \(build.stdout)\(build.stderr)")
        let test = try TestEnvironment.run("/usr/bin/env", ["make", "test"], environment: env, currentDirectory: project)
        #expect(test.status == 0, "make test: \(test.stdout)\(test.stderr)")
        if lang == "rust" {
            // On the installed SDK crate, by the path `keel sdk path` resolved to; built offline (`make` says so).
            let cargo = try String(contentsOfFile: project + "/Cargo.toml", encoding: .utf8)
            #expect(cargo.contains("keel-plugin = { path = \"\(prefix)/share/keel/rust/keel-plugin\" }"), "\(cargo)")
            #expect(!FileManager.default.fileExists(atPath: project + "/src/abi.rs"))
            #expect(build.stdout.contains("cargo build --release --offline"), "\(build.stdout)")
            #expect(test.stdout.contains("greets_by_name ... ok"), "\(test.stdout)")
        }
        if lang == "swift" {
            // On the installed KeelPluginKit package, by the path `keel sdk path` resolved to.
            let manifest = try String(contentsOfFile: project + "/Package.swift", encoding: .utf8)
            #expect(manifest.contains(".package(path: \"\(prefix)/share/keel/swift/KeelPluginKit\")"), "\(manifest)")
            #expect(try String(contentsOfFile: project + "/Sources/Plugin/Plugin.swift", encoding: .utf8).contains("import KeelPluginKit\n"))
            #expect(test.stdout.contains("leaves the id and the version to plugin.yaml"), "\(test.stdout)")
        }
        let bundle = project + "/bundle/" + id
        #expect(try FileManager.default.contentsOfDirectory(atPath: bundle).sorted() == ["assets", "config.schema.yaml", "lib\(ident).so", "plugin.yaml"])
        #expect(FileManager.default.contents(atPath: bundle + "/assets/app.css") == Data("body {}\n".utf8))

        // Out of the checkout's reach: the headers came from the SDK prefix, never from PluginABI/.
        if lang == "c" { #expect(build.stdout.contains("-I\(prefix)/include") && !build.stdout.contains("PluginABI")) }

        // The project named where its bundle is meant (an author in the project folder typing `keel pack .`): told
        // where the bundle is, not to build what is built.
        for command in [["pack", "."], ["plugins", "validate", "."], ["plugins", "inspect", "."]] {
            let wrong = try TestEnvironment.run(Self.keel, command, currentDirectory: project)
            #expect(wrong.status == 1 && wrong.stderr == "keel: error: .: a plugin project, not its bundle: `make` built the bundle in bundle/\(id); "
                    + "run `keel \(command.dropLast().joined(separator: " ")) bundle/\(id)`\n", "\(command): \(wrong.stderr)")
        }
        // The conformance run passes.
        let validated = try TestEnvironment.run(Self.keel, ["plugins", "validate", bundle])
        #expect(validated.status == 0 && validated.stdout.contains("\(bundle): all 13 checks passed"), "\(validated.stdout)\(validated.stderr)")

        // Served by a real host; the version is plugin.yaml's (the descriptor leaves it empty).
        let served = TestEnvironment.makeTemporaryDirectory("served-\(lang)")
        try FileManager.default.createDirectory(atPath: served + "/plugins", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: bundle, toPath: served + "/plugins/" + id)
        let enabled = try TestEnvironment.run(Self.keel, ["plugins", "enable", id, "--plugins", served + "/plugins", "--state", served + "/state.db"])
        #expect(enabled.status == 0, "\(enabled.stderr)")
        let server = try ServerProcess(plugins: served + "/plugins", state: served + "/state.db", extraArguments: ["--no-watch"])
        defer { server.stop() }
        let reply = try await server.request("GET", "/ext/\(id)/hello/ci")
        #expect(reply.status == 200 && reply.text == "hello, ci, from \(id)\n", "\(reply.status) \(reply.text)")
        let info = try await server.request("GET", "/api/v1/plugins/\(id)", admin: true)
        #expect((info.json as? [String: Any])?["version"] as? String == "0.1.0", "\(info.text)")
        // The schema came with the bundle: a configuration it refuses is refused, naming the key.
        let config = TestEnvironment.makeTemporaryDirectory("config-\(lang)")
        try "greeting: 5\n".write(toFile: config + "/bad.yaml", atomically: true, encoding: .utf8)
        let refused = try TestEnvironment.run(Self.keel, ["plugins", "config", id, config + "/bad.yaml", "--plugins", served + "/plugins",
                                                          "--state", served + "/state.db"])
        #expect(refused.status != 0 && refused.stderr.contains("greeting"), "\(refused.stdout)\(refused.stderr)")
    }

    @Test("Swift plugins outside the checkout, on the SDK's KeelPluginKit: swift-sync provides gitops.sync/1 to the C deployer and to swift-deploy, which hears the operator's switch, calls swift-sync's command for its caller, reads its configuration and reports its health")
    func swiftServicesOnTheSDK() async throws {
        let prefix = try Self.sdk.get()
        // The fixture project (Tests/KeelTests/Fixtures/swift-services) in a folder of its own, naming the installed
        // kit; the interface's header is the consumer's (Plugins/deployer), as an author would copy it.
        let project = TestEnvironment.makeTemporaryDirectory("swift-services") + "/project"
        try FileManager.default.copyItem(atPath: TestEnvironment.fixtures + "/swift-services", toPath: project)
        let manifest = try String(contentsOfFile: project + "/Package.swift.in", encoding: .utf8)
            .replacingOccurrences(of: "{{keel_plugin_kit}}", with: prefix + "/share/keel/swift/KeelPluginKit")
        try manifest.write(toFile: project + "/Package.swift", atomically: true, encoding: .utf8)
        // Git keeps no empty folder: the header's include/ is made here, as an author would make it.
        try FileManager.default.createDirectory(atPath: project + "/Sources/GitopsSync/include", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: TestEnvironment.repository.path + "/Plugins/deployer/gitops_sync.h",
                                         toPath: project + "/Sources/GitopsSync/include/gitops_sync.h")
        let env = Self.buildEnvironment(prefix: prefix)
        let build = try TestEnvironment.run("/usr/bin/env", ["swift", "build"], environment: env, currentDirectory: project)
        try #require(build.status == 0, "swift build: \(build.stdout)\(build.stderr)")
        let bin = try TestEnvironment.run("/usr/bin/env", ["swift", "build", "--show-bin-path"], environment: env, currentDirectory: project)
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        let f = KernelFixture()
        for (id, library) in [("swift-sync", "libswift_sync.so"), ("swift-deploy", "libswift_deploy.so")] {
            let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: id, manifest: String(
                contentsOfFile: project + "/\(id)/plugin.yaml", encoding: .utf8), library: bin + "/" + library)
            if id == "swift-deploy" {
                try FileManager.default.copyItem(atPath: project + "/swift-deploy/config.schema.yaml", toPath: bundle + "/config.schema.yaml")
            }
            let validated = try TestEnvironment.run(Self.keel, ["plugins", "validate", bundle])
            #expect(validated.status == 0 && validated.stdout.hasSuffix("\(bundle): all 13 checks passed\n"), "\(id): \(validated.stdout)\(validated.stderr)")
            if id == "swift-sync" {
                // Its table, made with keel_str("swiftsync") and StatusBuffer.write, holds what plugin.yaml declares.
                #expect(validated.stdout.contains("ok   provides tables that hold the functions plugin.yaml declares: gitops.sync/1: 2 declared function(s) in the table\n"),
                        "\(validated.stdout)")
            }
        }
        for id in ["argo-sync", "deployer"] {
            try TestEnvironment.makeBundle(in: f.plugins, folder: id, manifest: String(
                contentsOfFile: TestEnvironment.repository.path + "/Plugins/\(id)/plugin.yaml", encoding: .utf8),
                library: try TestEnvironment.builtLibrary("lib\(id).so"))
        }
        let at = ["--plugins", f.plugins, "--state", f.state]
        func run(_ arguments: [String]) throws -> String {
            let r = try TestEnvironment.run(Self.keel, arguments + at)
            #expect(r.status == 0, "keel \(arguments.joined(separator: " ")): \(r.stderr)")
            return r.stdout
        }
        #expect(try run(["plugins", "enable", "swift-sync"]).contains("provides gitops.sync/1 1.0.0 ranking 1"))
        for id in ["argo-sync", "deployer", "swift-deploy"] { _ = try run(["plugins", "enable", id]) }
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch", "--health-interval", "0.5"])
        defer { server.stop() }
        func check() async throws -> [String: Any]? {
            try await server.request("GET", "/api/v1/plugins/swift-deploy/health", admin: true).json
                .flatMap { $0 as? [String: Any] }?["check"] as? [String: Any]
        }
        // Its health check (HealthChecking): unhealthy, with its reason, until a region is configured.
        let unconfigured = try #require(try await ObservabilityTests.eventually { try await check().flatMap { $0["healthy"] as? Bool == false ? $0 : nil } })
        #expect(unconfigured["message"] as? String == "no region configured", "\(unconfigured)")

        // swift-sync's activation tried a pointer as its table first: refused, naming the sizes.
        #expect(await waitFor(10) { server.errors.value.contains(
            "[swift-sync] refused as it should be: providing gitops.sync/1: its struct_size is 64, but a UnsafeRawPointer is 8 bytes") },
            "\(server.errors.value)")

        // The highest ranking serves first (argo-sync, C), to the Swift consumer through a typed lease.
        var reply = try await server.request("GET", "/ext/swift-deploy/sync/shop")
        #expect(reply.status == 200 && reply.text.hasPrefix("argocd synced shop to main (provider argo-sync 1.0.0 generation "), "\(reply.text)")
        #expect(reply.text.hasSuffix(", gitops.sync/1 1.1.0)\n"), "\(reply.text)")
        // The operator picks the Swift provider: both consumers, Swift and C, are served by it at once.
        #expect(try run(["services", "use", "gitops.sync/1", "swift-sync"]) == "gitops.sync/1: served by swift-sync\n")
        reply = try await server.request("GET", "/ext/swift-deploy/sync/shop?rev=v2")
        #expect(reply.text.hasPrefix("swiftsync synced shop to v2 (provider swift-sync 1.0.0 generation "), "\(reply.text)")
        reply = try await server.request("GET", "/ext/deployer/sync/shop")
        #expect(reply.text.hasPrefix("swiftsync synced shop to main (provider swift-sync 1.0.0 generation "), "\(reply.text)")
        // A command exported from Swift (@_cdecl), called by the CLI and, for the caller it serves, by the Swift
        // consumer (`host.call`): the admin holds its permission, an anonymous caller does not.
        #expect(try run(["call", "swift-sync", "engine"]) == "swiftsync\n")
        // On the kit's Command: a JSON result (quoted as JSON), and a thrown PluginError as the status and message.
        #expect(try run(["call", "swift-sync", "shout", "é\"\t\u{01}", "2"]) == #"{"text": "É\"\t\u0001É\"\t\u0001"}"# + "\n")
        let shoutRefused = try TestEnvironment.run(Self.keel, ["call", "swift-sync", "shout", "hi", "0"] + at)
        #expect(shoutRefused.status != 0 && shoutRefused.stderr.contains("swift-sync.shout returned KEEL_ERR_INVALID_ARGUMENT: times must be 1 to 100, not 0"),
                "\(shoutRefused.status) \(shoutRefused.stderr)")
        reply = try await server.request("GET", "/ext/swift-deploy/engine", admin: true)
        #expect(reply.status == 200 && reply.text == #""swiftsync""#, "\(reply.status) \(reply.text)")
        reply = try await server.request("GET", "/ext/swift-deploy/engine")
        #expect(reply.status == 403 && reply.text == "not allowed: calling swift-sync.engine: denied (not declared under calls: in plugin.yaml, or the caller lacks the command's permission)\n", "\(reply.status) \(reply.text)")
        // The Swift consumer's listener heard the switch.
        #expect(try await server.request("GET", "/ext/swift-deploy/changes").text == "* -> swift-sync\n")
        // Its configuration, as the host checked it against the schema; one the schema refuses is refused.
        #expect(try await server.request("GET", "/ext/swift-deploy/config").text == "{}")
        let config = TestEnvironment.makeTemporaryDirectory("swift-deploy-config")
        try "region: eu\n".write(toFile: config + "/ok.yaml", atomically: true, encoding: .utf8)
        _ = try run(["plugins", "config", "swift-deploy", config + "/ok.yaml"])
        #expect(try await server.request("GET", "/ext/swift-deploy/config").text == #"{"region":"eu"}"#)
        let configured = try #require(try await ObservabilityTests.eventually { try await check().flatMap { $0["healthy"] as? Bool == true ? $0 : nil } })
        #expect(configured["message"] is NSNull, "\(configured)")
        try "zone: eu\n".write(toFile: config + "/bad.yaml", atomically: true, encoding: .utf8)
        let refused = try TestEnvironment.run(Self.keel, ["plugins", "config", "swift-deploy", config + "/bad.yaml"] + at)
        #expect(refused.status != 0 && refused.stderr.contains("zone"), "\(refused.stderr)")
        // The choice cleared: the ranking rule picks argo-sync again, and the listener (of the activation the new
        // configuration started) says so.
        _ = try run(["services", "clear", "gitops.sync/1"])
        reply = try await server.request("GET", "/ext/swift-deploy/sync/shop")
        #expect(reply.text.hasPrefix("argocd synced shop to main (provider argo-sync"), "\(reply.text)")
        #expect(try await server.request("GET", "/ext/swift-deploy/changes").text == "* -> argo-sync\n")
        // A bundle without a schema takes any configuration, and the CLI says nothing in it was checked.
        #expect(try run(["plugins", "config", "swift-deploy", config + "/ok.yaml"]) == "configured swift-deploy\n")
        #expect(try run(["plugins", "config", "swift-sync", config + "/bad.yaml"])
                == "configured swift-sync (its bundle has no config.schema.yaml, so nothing in it was checked)\n")
        // The operator's choice disabled: argo-sync serves, and the list says why the choice does not.
        _ = try run(["services", "use", "gitops.sync/1", "swift-sync"])
        _ = try run(["plugins", "disable", "swift-sync"])
        let list = try run(["services", "list"])
        #expect(list.contains("  serving: argo-sync (") && list.contains("; chosen swift-sync is not running (disabled)\n")
                && list.contains("provider swift-sync") && list.contains("not running (disabled)\n"), "\(list)")
        reply = try await server.request("GET", "/ext/deployer/sync/shop")
        #expect(reply.text.hasPrefix("argocd synced shop to main"), "\(reply.text)")
    }

    @Test("keel pack packs the manifest, the schema, the library and assets/, never sources")
    func packLeavesSourcesOut() throws {
        let bundle = TestEnvironment.makeTemporaryDirectory("pack") + "/hello"
        try FileManager.default.createDirectory(atPath: bundle + "/assets/css", withIntermediateDirectories: true)
        let example = TestEnvironment.repository.path + "/Plugins/hello-c"
        for file in ["plugin.yaml", "config.schema.yaml", "hello.c"] {
            try FileManager.default.copyItem(atPath: example + "/" + file, toPath: bundle + "/" + file)
        }
        try FileManager.default.copyItem(atPath: try TestEnvironment.builtLibrary("libhello-c.so"), toPath: bundle + "/libhello-c.so")
        try "body {}".write(toFile: bundle + "/assets/css/app.css", atomically: true, encoding: .utf8)
        try "all:\n".write(toFile: bundle + "/Makefile", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: bundle + "/build", withIntermediateDirectories: true)
        try "x".write(toFile: bundle + "/build/hello.o", atomically: true, encoding: .utf8)

        let out = TestEnvironment.makeTemporaryDirectory("pack-out")
        let packed = try TestEnvironment.run(Self.keel, ["pack", bundle, "--out", out])
        #expect(packed.status == 0, "\(packed.stderr)")
        #expect(packed.stdout.contains("left out 3 file(s) the bundle does not need: Makefile, build/hello.o, hello.c"), "\(packed.stdout)")
        let archive = try Data(contentsOf: URL(fileURLWithPath: out + "/hello-1.0.0.keelpkg"))
        #expect(try PackageArchive.entries(archive).map(\.path).sorted()
                == ["assets/css/app.css", "config.schema.yaml", "libhello-c.so", "plugin.yaml"])

        // A bundle whose library is not built yet is refused, naming it.
        try FileManager.default.removeItem(atPath: bundle + "/libhello-c.so")
        let unbuilt = try TestEnvironment.run(Self.keel, ["pack", bundle, "--out", out])
        #expect(unbuilt.status == 1 && unbuilt.stderr.contains("\(bundle)/libhello-c.so: no such file"), "\(unbuilt.stderr)")
    }

    @Test("keel plugins validate fails a hostile plugin with the check and the reason", arguments: [
        ("HANDLER_FAILS", "FAIL answers 4 threads × 25 concurrent requests on every route: 100 of 100 calls failed"),
        ("CTOR_MODE=1", "FAIL the plugin crashed the validating process with signal 11 during \"the library loads and agrees with plugin.yaml\""),
        ("EXTRA_EXPORT", "FAIL exports no C symbol beyond keel_plugin_entry and its commands: also exports leaked_helper"),
        ("THREAD_LEAK", "FAIL leaves no thread running after deactivate: 10 thread(s) still running after 10 deactivations"),
    ])
    func validateFailsHostilePlugins(defect: String, expected: String) throws {
        var source = TestEnvironment.fixtures + "/plugins/fixture.c"
        var defines = ["PLUGIN_ID=\"bad\""]
        if defect == "EXTRA_EXPORT" {
            // The fixture with one more exported function.
            let dir = TestEnvironment.makeTemporaryDirectory("extra-export")
            let text = try String(contentsOfFile: source, encoding: .utf8) + "\nKEEL_EXPORT int leaked_helper(void);\nKEEL_EXPORT int leaked_helper(void) { return 1; }\n"
            source = dir + "/fixture.c"
            try text.write(toFile: source, atomically: true, encoding: .utf8)
        } else if defect == "THREAD_LEAK" {
            // A plugin whose activate starts a thread that deactivate never stops.
            let dir = TestEnvironment.makeTemporaryDirectory("thread-leak")
            source = dir + "/leak.c"
            try """
                #define _POSIX_C_SOURCE 200809L
                #include <keel/keel.h>
                #include <pthread.h>
                #include <unistd.h>
                static void *spin(void *arg) { (void)arg; for (;;) sleep(1); return NULL; }
                static keel_status activate(const keel_host *host, keel_ctx *ctx) {
                    (void)host; (void)ctx;
                    pthread_t t;
                    return pthread_create(&t, NULL, spin, NULL) == 0 ? KEEL_OK : KEEL_ERR_INTERNAL;
                }
                static const keel_plugin d = { sizeof d, KEEL_ABI_VERSION_INIT, KEEL_STR("bad"), KEEL_STR_EMPTY, 0, activate, NULL, NULL };
                KEEL_PLUGIN_ENTRY(d)
                """.write(toFile: source, atomically: true, encoding: .utf8)
            defines.append("THREAD_LEAK")
        } else {
            defines.append(defect)
        }
        let lib = try TestEnvironment.buildPlugin(source: source, name: "bad", defines: defines)
        let plugins = TestEnvironment.makeTemporaryDirectory("validate")
        let bundle = try TestEnvironment.makeBundle(in: plugins, folder: "bad", manifest: TestEnvironment.manifest(id: "bad", library: "libbad.so"), library: lib)
        let r = try TestEnvironment.run(Self.keel, ["plugins", "validate", bundle])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stdout.contains(expected), "\(r.stdout)")
        #expect(r.stdout.hasSuffix(" check(s) failed\n"), "\(r.stdout)")
    }

    @Test("keel plugins validate checks a provider's table against its functions: a missing, NULL or lying function fails, naming it", arguments: [
        ("size", "FAIL provides tables that hold the functions plugin.yaml declares: gitops.sync/1: a table of 16 bytes holds 1 of the 2 functions plugin.yaml declares (no sync): declare only the table's functions, in its order, or set struct_size = sizeof the table\n"),
        ("null", "FAIL provides tables that hold the functions plugin.yaml declares: gitops.sync/1: function sync (number 2 after struct_size) is NULL: a consumer calling it crashes\n"),
        ("text", "FAIL provides tables that hold the functions plugin.yaml declares: gitops.sync/1: engine() returned 3 bytes that are not UTF-8\n"),
        ("crash", "FAIL the plugin crashed the validating process with signal 11 during \"provides tables that hold the functions plugin.yaml declares\"\n"),
        ("data", "FAIL provides tables that hold the functions plugin.yaml declares: gitops.sync/1: function engine points at 0x"),
        ("good", "ok   provides tables that hold the functions plugin.yaml declares: gitops.sync/1: 2 declared function(s) in the table\n"),
    ])
    func validateChecksProvidedTables(defect: String, expected: String) throws {
        // A provider of gitops.sync/1 (the deployer's header) whose table has one defect.
        let dir = TestEnvironment.makeTemporaryDirectory("table-\(defect)")
        try """
            #include <keel/keel.h>
            #include "gitops_sync.h"
            static keel_str engine(void) {
                \(defect == "crash" ? "*(volatile int *)0 = 0;" : "")
                return \(defect == "text" ? "(keel_str){\"\\xff\\xfe!\", 3}" : "keel_cstr(\"good\")");
            }
            static keel_status sync(keel_str app, keel_str rev, char *out, size_t cap, size_t *len) {
                (void)app; (void)rev; (void)out; (void)cap; *len = 0; return KEEL_OK;
            }
            static gitops_sync_v1 table = { sizeof table, engine, sync };
            static keel_status activate(const keel_host *host, keel_ctx *ctx) {
                \(defect == "size" ? "table.struct_size = 16;" : defect == "null" ? "table.sync = NULL;"
                  : defect == "data" ? "table.engine = (keel_str (*)(void))(void *)&table;" : "")
                const keel_host_services *services = host->get_service(ctx, keel_cstr(KEEL_SERVICE_SERVICES));
                keel_service_provision provision = { sizeof provision, KEEL_STR(GITOPS_SYNC_INTERFACE), &table };
                return services ? services->provide(ctx, &provision) : KEEL_ERR_UNSUPPORTED;
            }
            static const keel_plugin d = { sizeof d, KEEL_ABI_VERSION_INIT, KEEL_STR("table"), KEEL_STR_EMPTY, 0, activate, NULL, NULL };
            KEEL_PLUGIN_ENTRY(d)
            """.write(toFile: dir + "/table.c", atomically: true, encoding: .utf8)
        let lib = try TestEnvironment.buildPlugin(source: dir + "/table.c", name: "table",
                                                  extraFlags: ["-I", TestEnvironment.repository.path + "/Plugins/deployer"])
        let manifest = TestEnvironment.manifest(id: "table", library: "libtable.so", abi: "1.1") + """
            provides:
              - interface: gitops.sync/1
                version: "1.0.0"
                functions:
                  - {name: engine, signature: "() -> str"}
                  - {name: sync, signature: "(str, str) -> status(buf)"}

            """
        let bundle = try TestEnvironment.makeBundle(in: TestEnvironment.makeTemporaryDirectory("validate"), folder: "table",
                                                    manifest: manifest, library: lib)
        let r = try TestEnvironment.run(Self.keel, ["plugins", "validate", bundle])
        #expect(r.status == (defect == "good" ? 0 : 1), "\(r.stdout)")
        #expect(r.stdout.contains(expected), "\(r.stdout)")
        if defect == "data" { #expect(r.stdout.contains("libtable.so, not its code: a consumer calling it crashes\n"), "\(r.stdout)") }
    }

    @Test("keel plugins validate fails a command enable would refuse: a symbol not exported, a probe call that fails", arguments: [
        ("{name: ghost, symbol: calc_ghost, signature: \"() -> void\"}",
         "FAIL exports the commands plugin.yaml declares, which answer their probe calls: "),
        ("{name: div, symbol: calc_div, signature: \"(i64, i64) -> status(json)\", probe: [1, 0]}",
         "FAIL exports the commands plugin.yaml declares, which answer their probe calls: command \"div\" failed its probe call: cmds.div returned KEEL_ERR_INVALID_ARGUMENT: division by zero\n"),
        ("{name: div, symbol: calc_div, signature: \"(i64, i64) -> status(json)\", probe: [6, 3]}",
         "ok   exports the commands plugin.yaml declares, which answer their probe calls: 1 command(s), 1 probe call(s) answered\n"),
    ])
    func validateChecksCommands(command: String, expected: String) throws {
        let lib = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/commands.c", name: "cmds",
                                                  defines: ["PLUGIN_ID=\"cmds\"", "TAG=\"-\""])
        let manifest = TestEnvironment.manifest(id: "cmds", library: "libcmds.so", abi: "1.1", capabilities: ["routes"],
                                                extra: "commands:\n  - \(command)\n")
        let bundle = try TestEnvironment.makeBundle(in: TestEnvironment.makeTemporaryDirectory("validate-commands"), folder: "cmds",
                                                    manifest: manifest, library: lib)
        let r = try TestEnvironment.run(Self.keel, ["plugins", "validate", bundle])
        // The fixture exports every calc_* function, declared or not, so the export check fails in each case: only
        // this check's line is the subject here.
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stdout.contains(expected), "\(r.stdout)")
        if command.contains("ghost") {
            #expect(r.stdout.contains("command \"ghost\": the library exports no function calc_ghost (export it: KEEL_EXPORT in C, @_cdecl in Swift"), "\(r.stdout)")
        }
    }

    @Test("the example plugins pass keel plugins validate", arguments: ["hello-c", "greeter-swift", "argo-sync", "deployer"])
    func examplesPassValidate(example: String) throws {
        let source = TestEnvironment.repository.path + "/Plugins/" + example
        let manifest = try String(contentsOfFile: source + "/plugin.yaml", encoding: .utf8)
        let library = try #require(manifest.split(separator: "\n").first { $0.hasPrefix("library: ") }).dropFirst("library: ".count)
        let bundle = try TestEnvironment.makeBundle(in: TestEnvironment.makeTemporaryDirectory("examples"), folder: example, manifest: manifest,
                                                    library: TestEnvironment.builtLibrary(String(library)))
        if FileManager.default.fileExists(atPath: source + "/config.schema.yaml") {
            try FileManager.default.copyItem(atPath: source + "/config.schema.yaml", toPath: bundle + "/config.schema.yaml")
        }
        let r = try TestEnvironment.run(Self.keel, ["plugins", "validate", bundle])
        #expect(r.status == 0 && r.stdout.hasSuffix("\(bundle): all 13 checks passed\n"), "\(r.stdout)")
    }
}
