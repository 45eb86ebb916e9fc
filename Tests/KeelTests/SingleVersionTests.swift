// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelLoader
import KeelManifest
import Testing

/// The plugin's id and version are written once: a descriptor may leave them empty and the host takes plugin.yaml's;
/// a descriptor that gives them must still agree with plugin.yaml. Built from the frozen 1.0 headers, so 1.0 plugins
/// are covered both ways.
@Suite("the version in one place", .scheduled)
struct SingleVersionTests {
    static let frozen = TestEnvironment.fixtures + "/abi-1.0"

    /// The frozen 1.0 plugin with its descriptor's id and version (`KEEL_STR("abi10")`, `KEEL_STR("1.0.0")`)
    /// replaced by `id` and `version` (C source).
    static func frozenPlugin(id: String = #"KEEL_STR("abi10")"#, version: String, name: String) throws -> String {
        let source = try String(contentsOfFile: frozen + "/plugin_v1_0.c", encoding: .utf8)
        let dir = TestEnvironment.makeTemporaryDirectory("version")
        let changed = source.replacingOccurrences(of: #"KEEL_STR("abi10"), KEEL_STR("1.0.0")"#, with: id + ", " + version)
        #expect(changed != source, "the frozen plugin's descriptor line was not found")
        try changed.write(toFile: dir + "/\(name).c", atomically: true, encoding: .utf8)
        return try TestEnvironment.buildPlugin(source: dir + "/\(name).c", name: name, include: frozen + "/include", extraFlags: ["-pedantic"])
    }

    static func manifest(version: String, library: String) throws -> String {
        try String(contentsOfFile: frozen + "/plugin.yaml", encoding: .utf8)
            .replacingOccurrences(of: "version: 1.0.0", with: "version: \(version)")
            .replacingOccurrences(of: "library: libabi10.so", with: "library: \(library)")
    }

    /// Serves `lib` as the bundle abi10 with plugin.yaml saying `version`; returns the bundle folder, the version the
    /// kernel reports and the answer to GET /ext/abi10/v1/a.
    static func serve(_ lib: String, version: String) async throws -> (bundle: String, version: String, answer: String?) {
        let f = KernelFixture()
        let name = (lib as NSString).lastPathComponent
        let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "abi10", manifest: manifest(version: version, library: name), library: lib)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("abi10")
        let reported = try await kernel.plugin("abi10").version
        let answer = get(kernel, "/ext/abi10/v1/a")?.1
        await kernel.shutdown()
        return (bundle, reported, answer)
    }

    @Test("a 1.0 plugin whose descriptor leaves the version empty takes plugin.yaml's", arguments: [
        ("KEEL_STR_EMPTY", "empty"), (#"KEEL_STR("")"#, "emptytext"),
    ])
    func emptyVersionTakesTheManifests(version: String, name: String) async throws {
        let lib = try Self.frozenPlugin(version: version, name: name)
        #expect(try PluginLibrary.open(path: lib).descriptor.version == nil)
        let (bundle, version, answer) = try await Self.serve(lib, version: "2.3.4")
        #expect(version == "2.3.4" && answer == "abi10 /v1/a")

        // `keel plugins inspect` (the probe) reports the manifest's version too.
        let parsed = try ManifestLoader().load(path: bundle + "/plugin.yaml").0
        let report = try Inspector.inspect(library: bundle + "/lib\(name).so", manifest: parsed, manifestPath: bundle + "/plugin.yaml")
        #expect(report.version == "2.3.4")
    }

    @Test("the frozen 1.0 plugin, which states its version, still loads, and a plugin.yaml disagreeing with it is refused")
    func statedVersionMustAgree() async throws {
        let lib = try TestEnvironment.buildPlugin(source: Self.frozen + "/plugin_v1_0.c", name: "abi10",
                                                  include: Self.frozen + "/include", extraFlags: ["-pedantic"])
        let library = try PluginLibrary.open(path: lib)
        #expect(library.descriptor.version == "1.0.0")
        let agreeing = Manifest(id: "abi10", name: "x", version: Semver(1, 0, 0), abi: ABIVersion(1, 0), library: "libabi10.so")
        try library.verify(against: agreeing, manifestPath: "b/plugin.yaml")
        var disagreeing = agreeing
        disagreeing.version = Semver(2, 0, 0)
        do { try library.verify(against: disagreeing, manifestPath: "b/plugin.yaml"); Issue.record("a mismatch was accepted") } catch {
            #expect(error.code == .manifestMismatch)
            #expect(error.description.hasSuffix("library says version 1.0.0 but b/plugin.yaml says 2.0.0"))
        }
    }

    @Test("a 1.0 plugin whose descriptor leaves the id empty too takes plugin.yaml's; a bare library cannot be checked")
    func emptyIDTakesTheManifests() async throws {
        let lib = try Self.frozenPlugin(id: "KEEL_STR_EMPTY", version: "KEEL_STR_EMPTY", name: "noid")
        do { _ = try PluginLibrary.open(path: lib); Issue.record("a bare library without an id was accepted") } catch {
            #expect(error.code == .invalidDescriptor)
            #expect(error.description.hasSuffix("the descriptor leaves its id to plugin.yaml: check the bundle folder, not the bare library"))
        }
        #expect(try PluginLibrary.open(path: lib, expectedID: "abi10").descriptor.id == "abi10")
        let (_, version, answer) = try await Self.serve(lib, version: "3.0.0")
        #expect(version == "3.0.0" && answer == "abi10 /v1/a")
    }

    @Test("a descriptor version that is neither empty nor semver is still refused")
    func badVersionRefused() throws {
        let lib = try Self.frozenPlugin(version: #"KEEL_STR("1.0")"#, name: "badversion")
        do { _ = try PluginLibrary.open(path: lib); Issue.record("\"1.0\" was accepted") } catch {
            #expect(error.code == .invalidDescriptor)
            #expect(error.description.contains(#"descriptor version "1.0" is not a semantic version"#))
        }
    }
}
