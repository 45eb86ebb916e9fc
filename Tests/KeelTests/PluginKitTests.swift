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
        let bundle = project + "/bundle/" + id
        #expect(try FileManager.default.contentsOfDirectory(atPath: bundle).sorted() == ["lib\(ident).so", "plugin.yaml"])

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
        #expect(validated.status == 0 && validated.stdout.contains("\(bundle): all 11 checks passed"), "\(validated.stdout)\(validated.stderr)")

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
        ("CTOR_MODE=1", "FAIL the plugin crashed the validating process with signal 11 after \"plugin.yaml is valid\""),
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
        #expect(r.status == 0 && r.stdout.hasSuffix("\(bundle): all 11 checks passed\n"), "\(r.stdout)")
    }
}
