// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// The helpers the other suites rely on: if these are wrong, the other tests prove nothing or hang.
@Suite("test support", .scheduled)
struct TestSupportTests {
    @Test("run drains stdout and stderr at once: a child writing 1 MiB to each, stderr first, completes")
    func largeOutputOnBothStreams() throws {
        // Reading stdout to the end before stderr deadlocks here: the child blocks once 64 KiB of stderr fill the pipe.
        // `timeout` ends such a deadlock (status 124) instead of leaving the run hanging. (Not a test time limit: that
        // clock also runs while the test waits for its turn in a loaded suite.)
        let script = "head -c 1048576 /dev/zero | tr '\\0' e >&2; head -c 1048576 /dev/zero | tr '\\0' o; exit 3"
        let r = try TestEnvironment.run("/usr/bin/timeout", ["120", "/bin/sh", "-c", script])
        #expect(r.status == 3, "124: the child was still blocked on a full pipe after 120 s")
        #expect(r.stderr.utf8.count == 1 << 20 && r.stderr.utf8.allSatisfy { $0 == UInt8(ascii: "e") })
        #expect(r.stdout.utf8.count == 1 << 20 && r.stdout.utf8.allSatisfy { $0 == UInt8(ascii: "o") })
    }

    @Test("every top-level suite runs on the test threads in a slot (.scheduled), and no nested suite names it again")
    func everySuiteScheduled() throws {
        let folder = TestEnvironment.repository.appendingPathComponent("Tests/KeelTests").path
        var suites = 0
        for file in FileManager.default.subpaths(atPath: folder) ?? [] where file.hasSuffix(".swift") {
            let text = try String(contentsOfFile: folder + "/" + file, encoding: .utf8)
            for line in text.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix("@Suite") {
                suites += 1
                if line.hasPrefix("@Suite") {
                    #expect(line.contains(".scheduled"), "\(file): \(line)")
                } else {
                    #expect(!line.contains(".scheduled"), "\(file): a nested suite takes .scheduled from its parent: \(line)")
                }
            }
        }
        #expect(suites > 90)
    }

    @Test("the fixture cache key follows the source, the flags and every header of the include folder")
    func fixtureKey() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("key")
        try FileManager.default.createDirectory(atPath: dir + "/include/sub", withIntermediateDirectories: true)
        try "int f(void);\n".write(toFile: dir + "/include/sub/a.h", atomically: true, encoding: .utf8)
        try "int f(void) { return 1; }\n".write(toFile: dir + "/x.c", atomically: true, encoding: .utf8)
        func key(_ flags: [String] = ["-DA"]) throws -> String {
            try TestEnvironment.fixtureKey(flags: flags, source: dir + "/x.c", headerFolders: [dir + "/include"])
        }
        let first = try key()
        #expect(try key() == first)
        #expect(try key(["-DB"]) != first)
        try "int f(void); int g(void);\n".write(toFile: dir + "/include/sub/a.h", atomically: true, encoding: .utf8)
        let afterHeader = try key()
        #expect(afterHeader != first)
        try "int f(void) { return 2; }\n".write(toFile: dir + "/x.c", atomically: true, encoding: .utf8)
        #expect(try key() != afterHeader)
    }

    @Test("buildPlugin hands each caller its own copy of the cached library")
    func privateCopies() throws {
        let a = try TestEnvironment.buildFixture("copytwice", ["PLUGIN_ID=\"copytwice\""])
        let b = try TestEnvironment.buildFixture("copytwice", ["PLUGIN_ID=\"copytwice\""])
        #expect(a != b)
        #expect(!a.hasPrefix(TestEnvironment.fixtureCache) && !b.hasPrefix(TestEnvironment.fixtureCache))
        #expect(FileManager.default.contentsEqual(atPath: a, andPath: b))
    }

    @Test("grantSensitive fails the test when keel refuses the grant")
    func refusedGrant() throws {
        let f = KernelFixture()
        // No plugin "ghost" exists: keel refuses to grant it anything.
        #expect(throws: TestFailure.self) {
            try TestEnvironment.grantSensitive("ghost", plugins: f.plugins, state: f.state, capabilities: ["authorize"])
        }
    }
}
