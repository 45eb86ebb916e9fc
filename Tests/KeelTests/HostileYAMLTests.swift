// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// YAML from outside the host, crafted to cost what its size does not show: a bundle's `config.schema.yaml`, an
/// operator's configuration and a repository's index whose aliases stand for billions of values, and an index large
/// enough that reading it id by id from the start takes minutes. And the work files of a live install, which start-up
/// recovery in another process leaves alone.
@Suite("hostile YAML and live work files", .serialized, .scheduled)
struct HostileYAMLTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    /// `keel ARGS --plugins --state` of `f`, stopped after `seconds` (status 124 then).
    func keel(_ args: [String], _ f: KernelFixture, seconds: Int = 60) throws -> (status: Int32, stdout: String, stderr: String) {
        try TestEnvironment.run("/usr/bin/timeout", ["-s", "KILL", "\(seconds)", keel] + args + ["--plugins", f.plugins, "--state", f.state])
    }

    /// "Billion laughs": ten values, each level ten aliases of the one before: 10^9 values in under 500 bytes.
    static let laughs = (1...8).reduce("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n") { text, level in
        text + "l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", ") + "]\n"
    }

    /// A manifest-only bundle `id` in `f`, shipping `schema` as its config.schema.yaml when given.
    func bundle(_ id: String, schema: String?, _ f: KernelFixture) throws {
        let folder = f.plugins + "/" + id
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try "id: \(id)\nname: \(id)\nversion: 1.0.0\nabi: \"1.0\"\n".write(toFile: folder + "/plugin.yaml", atomically: true, encoding: .utf8)
        try schema?.write(toFile: folder + "/config.schema.yaml", atomically: true, encoding: .utf8)
    }

    @Test("a config.schema.yaml or a configuration whose aliases stand for a billion values is refused at once, in one line")
    func aliasBombConfiguration() throws {
        let f = KernelFixture()
        try bundle("bomb", schema: Self.laughs + "type: object\n", f)
        try bundle("plain", schema: nil, f)
        let dir = TestEnvironment.makeTemporaryDirectory("yaml")
        try "a: 1\n".write(toFile: dir + "/small.yaml", atomically: true, encoding: .utf8)
        try Self.laughs.write(toFile: dir + "/laughs.yaml", atomically: true, encoding: .utf8)
        try "a: &x [1, 2]\nb: *x\n".write(toFile: dir + "/anchors.yaml", atomically: true, encoding: .utf8)

        let schema = try keel(["plugins", "config", "bomb", dir + "/small.yaml"], f)
        #expect(schema.status == 1 && schema.stderr.contains("config.schema.yaml: more than 1048576 values once its aliases are expanded"), "\(schema)")
        let enable = try keel(["plugins", "enable", "bomb"], f)
        #expect(enable.status == 1 && enable.stderr.contains("its configuration schema is unusable: ") && enable.stderr.contains("config.schema.yaml: more than 1048576 values"), "\(enable)")
        let value = try keel(["plugins", "config", "plain", dir + "/laughs.yaml"], f)
        #expect(value.status == 1 && value.stderr.contains("more than 1048576 values once its aliases are expanded"), "\(value)")
        #expect(value.stderr.split(separator: "\n").count == 1, "\(value.stderr)")
        // Aliases that expand to a few values are still YAML like any other.
        #expect(try keel(["plugins", "config", "plain", dir + "/anchors.yaml"], f).status == 0)
    }

    /// A repository folder whose index lists `count` ids, written by `body` (one line per id).
    static func repository(_ count: Int, _ body: (Int) -> String) throws -> String {
        let dir = TestEnvironment.makeTemporaryDirectory("yaml-repo")
        let lines = (0..<count).map(body).joined(separator: "\n")
        try "apiVersion: 1\nplugins:\n\(lines)\n".write(toFile: dir + "/index.yaml", atomically: true, encoding: .utf8)
        return dir
    }

    static func entry(_ version: String) -> String {
        "{version: \(version), name: x, archive: x.keelpkg, sha256: \"\(String(repeating: "0", count: 64))\", abi: \"1.0\"}"
    }

    @Test("a repository index whose aliases stand for 100 million entries is refused at once; 30,000 ids are read in seconds")
    func hostileIndexes() throws {
        // 2,000 entries under one anchor, repeated for 50,000 ids: 300 KB of text.
        let anchored = try Self.repository(50_000) { i in
            i == 0 ? "  p0: &e\n" + (0..<2000).map { "  - " + Self.entry("1.0.\($0)") }.joined(separator: "\n") : "  p\(i): *e"
        }
        let f = KernelFixture()
        // Refused when added (the index is read then), at once.
        let bomb = try keel(["repo", "add", "anchored", anchored], f)
        #expect(bomb.status == 1 && bomb.stderr.contains("index too large: more than 524288 values once its aliases are expanded"), "\(bomb.status) \(bomb.stderr)")
        // 16 MiB of one-digit values took 1.2 GB to parse: refused before the tree is built.
        let flat = TestEnvironment.makeTemporaryDirectory("yaml-flat")
        var text = "apiVersion: 1\nplugins: {}\nx: ["
        text += String(repeating: "0,", count: ((16 << 20) - 64) / 2) + "0]\n"
        try text.write(toFile: flat + "/index.yaml", atomically: true, encoding: .utf8)
        let wide = try keel(["repo", "add", "flat", flat], f)
        #expect(wide.status == 1 && wide.stderr.contains("index too large: more than 524288 values"), "\(wide.status) \(wide.stderr)")

        // 30,000 plain ids, 4 MB: reading the mapping key by key from the start took minutes (a debug build).
        let large = try Self.repository(30_000) { "  p\($0): [\(Self.entry("1.0.0"))]" }
        let g = KernelFixture()
        // About 17 s of CPU each in a debug build on this machine's cores: time for a loaded CI run (the full suite
        // shares two cores), still far from the minutes it took.
        #expect(try keel(["repo", "add", "large", large], g, seconds: 150).status == 0)
        let search = try keel(["search", "p29999"], g, seconds: 150)
        #expect(search.status == 0 && search.stdout.hasPrefix("p29999 1.0.0  [large]"), "\(search.status) \(search.stdout.prefix(200))")
    }

    @Test("start-up recovery in another process leaves a live install's download alone and removes a dead one's")
    func liveDownloadSurvivesRecovery() throws {
        let f = KernelFixture()
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let live = f.plugins + "/.installing-demo-\(getpid()).download", gone = f.plugins + "/.installing-demo-\(dead.processIdentifier).download"
        for path in [live, gone] { try Data("partial".utf8).write(to: URL(fileURLWithPath: path)) }
        #expect(try keel(["plugins", "list"], f).status == 0)
        #expect(FileManager.default.fileExists(atPath: live))
        #expect(!FileManager.default.fileExists(atPath: gone))
    }
}
