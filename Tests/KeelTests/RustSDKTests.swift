// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// The Rust SDK crate (sdk/rust/keel-plugin) with the real tools: its own `cargo test --offline` (the raw
/// declarations against the C headers, the safe wrappers against a host written in Rust), and the example
/// Plugins/notes-rust built with cargo and served by a real `keel serve`. Without cargo both are skipped with a notice.
@Suite("the Rust SDK", .serialized, .scheduled)
struct RustSDKTests {
    static var repository: String { TestEnvironment.repository.path }

    /// PATH with rustup's ~/.cargo/bin first, and a shared cargo target folder (cargo rebuilds only what changed).
    static var cargoEnvironment: [String: String] {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? ""
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return ["PATH": home + "/.cargo/bin:" + path, "CARGO_TARGET_DIR": NSTemporaryDirectory() + "keel-rust-target"]
    }

    static var hasCargo: Bool {
        (try? TestEnvironment.run("/usr/bin/env", ["cargo", "--version"], environment: cargoEnvironment))?.status == 0
    }

    @Test("cargo test of the SDK crate: every struct, offset and constant of the headers, and the safe wrappers")
    func crateTests() throws {
        guard Self.hasCargo else {
            print("notice: cargo not found, the Rust SDK's own tests are skipped (install Rust to run them)")
            return
        }
        let r = try TestEnvironment.run("/usr/bin/env", ["cargo", "test", "--offline"],
                                        environment: Self.cargoEnvironment,
                                        currentDirectory: Self.repository + "/sdk/rust/keel-plugin")
        #expect(r.status == 0, "cargo test: \(r.stdout)\(r.stderr)")
        // In the checkout the layout check always finds PluginABI/include, so it never skips here.
        for name in ["declarations_match_the_headers", "a_plugin_through_the_abi", "json::tests::parses_a_configuration"] {
            #expect(r.stdout.contains("test \(name) ... ok"), "\(name): \(r.stdout)")
        }
    }

    @Test("a plugin built with panic = \"abort\" is refused at build time: its first panic would end the host")
    func panicAbortRefused() throws {
        guard Self.hasCargo else {
            print("notice: cargo not found, the Rust SDK's panic = \"abort\" check is skipped (install Rust to run it)")
            return
        }
        let crate = TestEnvironment.makeTemporaryDirectory("panic-abort")
        try FileManager.default.createDirectory(atPath: crate + "/src", withIntermediateDirectories: true)
        let manifest = """
            [package]
            name = "aborting"
            version = "0.1.0"
            edition = "2021"
            [lib]
            crate-type = ["cdylib"]
            [dependencies]
            keel-plugin = { path = "\(Self.repository)/sdk/rust/keel-plugin"FEATURES }
            [profile.dev]
            panic = "abort"

            """
        try "pub fn nothing() {}\n".write(toFile: crate + "/src/lib.rs", atomically: true, encoding: .utf8)
        // A target folder of its own: the shared one holds the crate built to unwind.
        let environment = Self.cargoEnvironment.merging(["CARGO_TARGET_DIR": crate + "/target"]) { $1 }
        try manifest.replacingOccurrences(of: "FEATURES", with: "").write(toFile: crate + "/Cargo.toml", atomically: true, encoding: .utf8)
        let refused = try TestEnvironment.run("/usr/bin/env", ["cargo", "build", "--offline"], environment: environment, currentDirectory: crate)
        #expect(refused.status != 0 && refused.stderr.contains("this plugin is built with panic = \"abort\""), "\(refused.stderr)")
        // The feature lets a worker-only plugin through.
        try manifest.replacingOccurrences(of: "FEATURES", with: ", features = [\"panic-abort\"]").write(toFile: crate + "/Cargo.toml", atomically: true, encoding: .utf8)
        let allowed = try TestEnvironment.run("/usr/bin/env", ["cargo", "build", "--offline"], environment: environment, currentDirectory: crate)
        #expect(allowed.status == 0, "\(allowed.stderr)")
    }

    @Test("notes-rust, on the Rust SDK: passes validate; routes, a menu, its configuration, the caller, a lease, a command; a panic answers 500")
    func notesExampleServes() async throws {
        let f = KernelFixture()
        let out = TestEnvironment.makeTemporaryDirectory("notes-rust")
        let built = try TestEnvironment.run(Self.repository + "/Scripts/build-rust-sdk-example.sh", [out],
                                            environment: ["CARGO_TARGET_DIR": Self.cargoEnvironment["CARGO_TARGET_DIR"] ?? ""])
        #expect(built.status == 0, "\(built.stdout)\(built.stderr)")
        guard FileManager.default.fileExists(atPath: out + "/libnotes_rust.so") else {
            print("notice: \(built.stdout.trimmingCharacters(in: .newlines)); the notes-rust test is skipped")
            return
        }
        let example = Self.repository + "/Plugins/notes-rust"
        let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "notes-rust", manifest: String(
            contentsOfFile: example + "/plugin.yaml", encoding: .utf8), library: out + "/libnotes_rust.so")
        try FileManager.default.copyItem(atPath: example + "/config.schema.yaml", toPath: bundle + "/config.schema.yaml")
        let keel = TestEnvironment.binPath + "/keel"
        let validated = try TestEnvironment.run(keel, ["plugins", "validate", bundle])
        #expect(validated.status == 0 && validated.stdout.hasSuffix("\(bundle): all 13 checks passed\n"), "\(validated.stdout)")
        // A provider of gitops.sync/1 (C), for the SDK's typed lease.
        try TestEnvironment.makeBundle(in: f.plugins, folder: "argo-sync", manifest: String(
            contentsOfFile: Self.repository + "/Plugins/argo-sync/plugin.yaml", encoding: .utf8),
            library: TestEnvironment.builtLibrary("libargo-sync.so"))
        let at = ["--plugins", f.plugins, "--state", f.state]
        let config = out + "/notes.yaml"
        try "title: Team notes\npanic_route: true\n".write(toFile: config, atomically: true, encoding: .utf8)
        for arguments in [["plugins", "enable", "argo-sync"], ["plugins", "enable", "notes-rust"], ["plugins", "config", "notes-rust", config]] {
            let r = try TestEnvironment.run(keel, arguments + at)
            #expect(r.status == 0, "keel \(arguments.joined(separator: " ")): \(r.stderr)")
        }
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }

        #expect(try await server.request("GET", "/ext/notes-rust/notes").text == "Team notes: 0 notes\n")
        let added = try await server.request("POST", "/ext/notes-rust/notes", body: Data("buy milk".utf8))
        #expect(added.status == 201, "\(added.status) \(added.text)")
        #expect(try await server.request("POST", "/ext/notes-rust/notes", body: Data()).status == 400)
        #expect(try await server.request("GET", "/ext/notes-rust/notes").text == "Team notes: 1 notes\n- buy milk\n")
        #expect(try await server.request("GET", "/ext/notes-rust/notes/1").text == "buy milk\n")
        #expect(try await server.request("GET", "/ext/notes-rust/notes/2").status == 404)
        #expect(try await server.request("GET", "/ext/notes-rust/whoami").text == "anonymous\n")
        let admin = try await server.request("GET", "/ext/notes-rust/whoami", admin: true)
        #expect(admin.text.hasSuffix("(roles: admin)\n"), "the admin token's principal: \(admin.text)")

        // A panic in a handler never crosses into the host: 500, the message in the log, the plugin keeps serving.
        let panicked = try await server.request("GET", "/ext/notes-rust/panic")
        #expect(panicked.status == 500 && !panicked.text.contains("on purpose"), "\(panicked.status) \(panicked.text)")
        #expect(try await server.request("GET", "/ext/notes-rust/notes/1").text == "buy milk\n")
        let menus = try await server.request("GET", "/api/v1/menus").text
        #expect(menus.contains("notes-rust.main") && menus.contains("/ext/notes-rust/notes"), "\(menus)")
        // A typed lease on the provider's table, released when dropped (the host counts no lease held afterwards).
        let engine = try await server.request("GET", "/ext/notes-rust/engine")
        #expect(engine.text == "argocd (provider argo-sync 1.0.0)\n", "\(engine.status) \(engine.text)")
        let services = try await server.request("GET", "/api/v1/services", admin: true).json as? [[String: Any]]
        let providers = services?.first { $0["interface"] as? String == "gitops.sync/1" }?["providers"] as? [[String: Any]]
        let argo = providers?.first { $0["plugin"] as? String == "argo-sync" }
        #expect(argo?["active"] as? Bool == true && argo?["leases"] as? Int == 0, "\(String(describing: services))")

        // A command written with the SDK (command!, no unsafe), called through the admin API.
        let shout = try await server.request("POST", "/api/v1/plugins/notes-rust/commands/shout", admin: true,
                                             body: Data(#"{"args": ["quiet"]}"#.utf8))
        #expect(shout.status == 200 && shout.text == #"{"result":{"text":"QUIET"}}"#, "\(shout.status) \(shout.text)")
        // keel serve prints warnings and errors (the SDK's info lines are checked by its own tests).
        let logged = server.output.value + server.errors.value
        #expect(logged.contains("panic: notes-rust panics on purpose"), "\(logged)")
    }
}
