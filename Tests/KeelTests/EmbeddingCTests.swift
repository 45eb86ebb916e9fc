// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// The C embedding API as an appliance's developer meets it: `keel sdk install` into a temporary prefix, a C program
/// built with `cc app.c $(pkg-config --cflags --libs keel)` against the installed libkeel.so, run with real plugins
/// (Plugins/hello-c, the commands and services fixtures) in a plugin folder.
@Suite("the C embedding API (libkeel.so)", .scheduled)
struct EmbeddingCTests {
    /// One prefix with the SDK for the whole suite (the programs only read it).
    static let sdk: Result<String, TestFailure> = {
        let prefix = TestEnvironment.makeTemporaryDirectory("embed-sdk")
        guard let r = try? TestEnvironment.run(TestEnvironment.binPath + "/keel", ["sdk", "install", "--prefix", prefix]), r.status == 0 else {
            return .failure(TestFailure("keel sdk install failed"))
        }
        return .success(prefix)
    }()

    /// Builds `source` the documented way, in a shell: `cc SOURCE $(pkg-config --cflags --libs keel) -o OUT`.
    static func build(_ source: String, _ name: String, flags: String = "") throws -> String {
        let prefix = try sdk.get()
        let out = TestEnvironment.makeTemporaryDirectory("embed-app") + "/" + name
        let r = try TestEnvironment.run("/bin/sh", ["-c", "cc -Wall -Wextra -Werror \(flags) '\(source)' $(pkg-config --cflags --libs keel) -lpthread -o '\(out)'"],
                                        environment: ["PKG_CONFIG_PATH": prefix + "/lib/pkgconfig"])
        guard r.status == 0 else { throw TestFailure("cc \(source): \(r.stderr)") }
        return out
    }

    /// A plugin folder with hello (C example), calc (commands) and user (a consumer of test.echo/1).
    static func plugins() throws -> String {
        let dir = TestEnvironment.makeTemporaryDirectory("embed-plugins")
        try TestEnvironment.stageExamples(into: dir)
        try FileManager.default.removeItem(atPath: dir + "/greeter-swift")
        let calc = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/commands.c", name: "calc",
                                                   defines: ["PLUGIN_ID=\"calc\"", "TAG=\"-\""])
        try TestEnvironment.makeBundle(in: dir, folder: "calc", manifest: TestEnvironment.manifest(
            id: "calc", library: "libcalc.so", abi: "1.1", capabilities: ["routes"], extra: CommandsFixture.calcManifest), library: calc)
        let user = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/services.c", name: "user",
                                                   defines: ["PLUGIN_ID=\"user\"", "CONSUMER"])
        try TestEnvironment.makeBundle(in: dir, folder: "user", manifest: TestEnvironment.manifest(
            id: "user", library: "libuser.so", abi: "1.1", capabilities: ["routes", "menus"],
            extra: "consumes: [{interface: test.echo, version: \"^1\"}]\n"), library: user)
        return dir
    }

    @Test("keel sdk install puts libkeel.so, keel_embed.h, keel.pc and the example appliance in place; that appliance builds with pkg-config and runs")
    func exampleAppliance() throws {
        let prefix = try Self.sdk.get()
        #expect(FileManager.default.fileExists(atPath: prefix + "/lib/libkeel.so"))
        #expect(FileManager.default.fileExists(atPath: prefix + "/include/keel/keel_embed.h"))
        // keel.pc's version is keel_libversion's (the embedding API's), so `pkg-config --atleast-version=1.1 keel` holds.
        let pc = (try? String(contentsOfFile: prefix + "/lib/pkgconfig/keel.pc", encoding: .utf8)) ?? ""
        #expect(pc.contains("\nVersion: 1.1.0\n"), "\(pc)")
        // The example as `sdk install` ships it (an integrator has no checkout), the repository's own.
        let shipped = prefix + "/share/keel/examples/appliance/appliance.c"
        #expect(FileManager.default.contents(atPath: shipped) == FileManager.default.contents(atPath: TestEnvironment.repository.path + "/Examples/appliance/appliance.c"))
        let app = try Self.build(shipped, "appliance")
        let r = try TestEnvironment.run(app, [try Self.plugins()])
        #expect(r.status == 0, "\(r.stderr)")
        let out = r.stdout
        #expect(out.contains("enable hello: ok\n") && out.contains("enable calc: ok\n"), "\(out)")
        // The route answered without HTTP, after hello's authenticate hook recognised the API key.
        #expect(out.contains("GET /ext/hello/greet/ada -> 200 hello, ada (as demo)\n"), "\(out)")
        #expect(out.contains("calc.add 2 40 = 42\n"), "\(out)")
        #expect(out.contains("hello enabled event: yes; a call from the callback: KEEL_MISUSE\n"), "\(out)")
        #expect(out.contains("event command enable hello\n") && out.contains("event state hello enabled\n"), "\(out)")
        #expect(out.contains("event command disable hello\n") && out.contains("event state hello disabled\n"), "\(out)")
        #expect(out.contains(#"GET /ext/hello/greet/ada -> 404 {"error":{"code":"not-found","message":"no such resource"}}"#), "\(out)")
        // Events arrive on their own thread: their lines may come between these.
        for line in ["NULL handle: KEEL_MISUSE\n", "after close: KEEL_MISUSE\n", "close again: KEEL_MISUSE\n"] {
            #expect(out.contains(line), "\(out)")
        }
        // The log callback got the kernel's lines.
        #expect(r.stderr.contains("log 1 [hello] embedder: enable hello: ok"), "\(r.stderr)")
    }

    @Test("bad input from C: NULL, made-up and closed handles, re-entry from a callback, bad requests; serve, commands, a host service")
    func badInput() throws {
        let check = try Self.build(TestEnvironment.fixtures + "/embed/embed_check.c", "embed_check")
        let r = try TestEnvironment.run(check, [try Self.plugins()], environment: ["KEEL_HTTP_LOG": "info"])
        let failed = r.stdout.split(separator: "\n").filter { !$0.hasPrefix("ok ") }
        #expect(r.status == 0 && failed.isEmpty, "\(failed.joined(separator: "\n"))\n\(r.stderr)")
        #expect(r.stdout.split(separator: "\n").count >= 40, "\(r.stdout)")
        // keel_command is logged and audited as the embedder's other commands are (its arguments never are).
        #expect(r.stderr.contains("[calc] embedder: call calc.add: ok") && r.stderr.contains("[calc] embedder: call calc.add: failed (command)"),
                "\(r.stderr)")
        // keel_close stops the server gracefully: no error lines from the HTTP server on stderr.
        #expect(!r.stderr.contains("Already closed") && !r.stderr.contains("CancellationError"), "\(r.stderr)")
        // The HTTP server's own lines reach the log callback, not stderr (swift-log's default handler).
        #expect(r.stderr.contains("http-log 1 keel.http: Server started and listening on 127.0.0.1:"), "\(r.stderr)")
        #expect(!r.stderr.contains("info keel.http"), "\(r.stderr)")
    }

    @Test("a kernel on a state file owns it: a second kernel and keel serve are refused, the keel CLI's commands reach it, a refused grant is KEEL_ERR_INVALID_ARGUMENT")
    func ownsItsStateFile() throws {
        let owner = try Self.build(TestEnvironment.fixtures + "/embed/embed_owner.c", "embed_owner")
        let state = TestEnvironment.makeTemporaryDirectory("embed-state") + "/state.db"
        let r = try TestEnvironment.run(owner, [try Self.plugins(), state, TestEnvironment.binPath + "/keel"])
        let failed = r.stdout.split(separator: "\n").filter { !$0.hasPrefix("ok ") }
        #expect(r.status == 0 && failed.isEmpty, "\(failed.joined(separator: "\n"))\n\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.split(separator: "\n").count == 16, "\(r.stdout)")
    }

    @Test("keel_config.records_crashes: a crash in plugin code ends the appliance with one line naming the plugin, and the next start quarantines it; .probe: a build that crashes while loading never reaches it; a 1.0-sized keel_config still opens")
    func crashRecordsAndProbe() throws {
        let app = try Self.build(TestEnvironment.fixtures + "/embed/embed_crash.c", "embed_crash")
        let dir = TestEnvironment.makeTemporaryDirectory("embed-crash")
        let plugins = dir + "/plugins", state = dir + "/state.db"
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        let crasher = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/crasher.c", name: "crasher",
                                                      defines: ["CRASHER_NO_GATE"])
        try TestEnvironment.makeBundle(in: plugins, folder: "crasher", manifest: TestEnvironment.manifest(
            id: "crasher", library: "libcrasher.so", capabilities: ["routes"]), library: crasher)
        let environment = CrashAttributionTests.environment
        let crash = try TestEnvironment.run(app, [plugins, state, "crash"], environment: environment)
        #expect(!crash.stdout.contains("survived"), "\(crash.stdout)")
        #expect(crash.stderr.contains("keel: plugin \"crasher\" (generation ") && crash.stderr.contains(") crashed the host with SIGSEGV"),
                "\(crash.stderr)")
        #expect(FileManager.default.fileExists(atPath: state + ".crash"))
        let after = try TestEnvironment.run(app, [plugins, state, "after"], environment: environment)
        #expect(after.status == 0 && after.stdout.contains("crasher failed ") && after.stdout.contains("crashed the host"), "\(after.stdout)\(after.stderr)")
        // The reason names the program's own call that tries again, as a refused grant does, not the CLI.
        #expect(after.stdout.contains("or run keel_enable(k, \"crasher\") to try again"), "\(after.stdout)")
        // A program built against the 1.0 keel_config (without the fields above) is served as before.
        let old = try TestEnvironment.run(app, [plugins, state, "old"], environment: environment)
        #expect(old.status == 0 && old.stdout.hasSuffix("old: done\n"), "\(old.stdout)\(old.stderr)")

        // With config.probe, a new build that crashes in activate is tried in a child keel probe only.
        let fresh = dir + "/fresh.db", trigger = dir + "/segv"
        FileManager.default.createFile(atPath: trigger, contents: nil)
        let probed = try TestEnvironment.run(app, [plugins, fresh, "probe", TestEnvironment.binPath + "/keel"],
                                             environment: environment.merging(["CRASHER_SEGV_ACTIVATE_IF": trigger]) { $1 })
        #expect(probed.status == 0 && probed.stdout.contains("enable crasher: failed ") && probed.stdout.contains("SIGSEGV"),
                "\(probed.stdout)\(probed.stderr)")
        #expect(probed.stdout.hasSuffix("probe: done\n"), "\(probed.stdout)")
        let noProbe = try TestEnvironment.run(app, [plugins, fresh, "probe", dir + "/no-such-keel"], environment: environment)
        #expect(noProbe.status == 1 && noProbe.stdout.contains("config.probe") && noProbe.stdout.contains("not an executable file"), "\(noProbe.stdout)")
    }

    @Test("under LeakSanitizer: no leak reported, whether the appliance closes its kernel or never does")
    func leakSanitizer() throws {
        let app = try Self.build(TestEnvironment.repository.path + "/Examples/appliance/appliance.c", "appliance-lsan",
                                 flags: "-fsanitize=leak -g")
        let plugins = try Self.plugins()
        for arguments in [[plugins], [plugins, "--no-close"]] {
            let r = try TestEnvironment.run(app, arguments, environment: ["LSAN_OPTIONS": "exitcode=23"])
            #expect(r.status == 0 && !r.stderr.contains("LeakSanitizer"), "\(arguments): \(r.stderr)")
            #expect(r.stdout.contains("NULL handle: KEEL_MISUSE\n"), "\(r.stdout)")
            #expect(r.stdout.contains("after close") == (arguments.count == 1), "\(r.stdout)")
        }
    }

    @Test("the README's C embedding example is the example appliance's code")
    func readmeExample() throws {
        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        let example = try String(contentsOfFile: TestEnvironment.repository.path + "/Examples/appliance/appliance.c", encoding: .utf8)
        let start = try #require(readme.range(of: "```c\n/* appliance.c (excerpt) */\n"))
        let end = try #require(readme.range(of: "```", range: start.upperBound..<readme.endIndex))
        let lines = readme[start.upperBound..<end.lowerBound].split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty && $0 != "..." }
        #expect(lines.count > 10)
        for line in lines { #expect(example.contains(line), "README line not in Examples/appliance/appliance.c: \(line)") }
    }
}
