// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelExtensions
@testable import KeelManifest
import KeelSystem
import Testing

@Suite("library checksums kept between starts", .scheduled)
struct LibrarySumsTests {
    /// Two plugins: `copied` in the plugins/ folder (loaded from a private copy), `lying` left as an install leaves
    /// its files (read-only: loaded where it lies). Both enabled once, the kernel shut down.
    func twoPlugins(_ f: KernelFixture) async throws -> (copied: String, lying: String) {
        try f.fixtureBundle("copied")
        try f.fixtureBundle("lying")
        let lying = f.plugins + "/lying/liblying.so"
        for file in [lying, f.plugins + "/lying/plugin.yaml"] { chmod(file, 0o444) }
        let kernel = try f.kernel(libraryStampMargin: 0)
        await kernel.start()
        try await kernel.enable("copied")
        try await kernel.enable("lying")
        await kernel.shutdown()
        return (f.plugins + "/copied/libcopied.so", lying)
    }

    func lastChecksum(_ kernel: Kernel, _ id: String) async throws -> String? {
        try await kernel.history(id).last { $0.outcome == "activated" }?.checksum
    }

    @Test("a start takes a library's checksum from the cache while the file keeps the identity it had when hashed, and hashes a changed file again")
    func keptWhileUnchanged() async throws {
        let f = KernelFixture()
        let (copied, lying) = try await twoPlugins(f)
        let sums = LibrarySums(path: f.state + ".libraries")
        var entries = sums.load().entries
        // What the loads hashed, kept by path.
        #expect(entries[copied]?.sum == FileDigest.sha256(atPath: copied))
        #expect(entries[lying]?.sum == FileDigest.sha256(atPath: lying))
        // Another checksum under each file's current identity: a start that records it read it from the cache, and
        // did not hash the file (both ways of loading: the private copy and in place).
        let forged = (String(repeating: "a", count: 64), String(repeating: "b", count: 64))
        entries[copied]?.sum = forged.0
        entries[lying]?.sum = forged.1
        #expect(sums.save(entries) == nil)
        let second = try f.kernel(libraryStampMargin: 0)
        await second.start()
        #expect(second.activePlugins.sorted() == ["copied", "lying"])
        #expect(try await lastChecksum(second, "copied") == forged.0)
        #expect(try await lastChecksum(second, "lying") == forged.1)
        await second.shutdown()

        // A new build over the plugins/ folder library (a new file, another identity): hashed again, the cache follows.
        let rebuilt = try TestEnvironment.buildFixture("copied-2", ["PLUGIN_ID=\"copied\"", "TAG=\"two\""])
        try FileManager.default.removeItem(atPath: copied)
        try FileManager.default.copyItem(atPath: rebuilt, toPath: copied)
        // The same file rewritten in place (same inode, new times): hashed again too.
        chmod(lying, 0o644)
        let handle = try #require(FileHandle(forUpdatingAtPath: lying))
        let bytes = try handle.readToEnd() ?? Data()
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: bytes)
        try handle.close()
        chmod(lying, 0o444)
        let third = try f.kernel(libraryStampMargin: 0)
        await third.start()
        let real = try #require(FileDigest.sha256(atPath: copied))
        #expect(try await lastChecksum(third, "copied") == real)
        #expect(try await lastChecksum(third, "lying") == FileDigest.sha256(atPath: lying))
        #expect(get(third, "/ext/copied/ping")?.1.contains("tag=two") == true)
        await third.shutdown()
        #expect(sums.load().entries[copied]?.sum == real)
    }

    @Test("a file that changed within the margin is not cached; a damaged or foreign cache is ignored with its reason")
    func unsettledAndDamaged() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("fresh")
        // The default margin (2 s): a library built a moment ago has not settled, so nothing is kept for it.
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("fresh")
        await kernel.shutdown()
        let sums = LibrarySums(path: f.state + ".libraries")
        #expect(sums.load().entries[f.plugins + "/fresh/libfresh.so"] == nil)

        // A cache cut short, or holding something other than a SHA-256 where a checksum goes, is not taken.
        let path = f.plugins + "/fresh/libfresh.so"
        let stamp = try #require(FileStamp(path: path))
        #expect(sums.save([path: .init(stamp: stamp, sum: String(repeating: "c", count: 64))]) == nil)
        var bytes = try #require(FileManager.default.contents(atPath: sums.path))
        bytes.removeLast(3)
        try bytes.write(to: URL(fileURLWithPath: sums.path))
        let damaged = sums.load()
        #expect(damaged.entries.isEmpty)
        #expect(damaged.problem?.hasPrefix(sums.path + ": not a checksum cache") == true)
        #expect(LibrarySums.decode(LibrarySums.encode([path: .init(stamp: stamp, sum: "../not-a-sum")])) == nil)
        #expect(LibrarySums.decode(LibrarySums.encode([path: .init(stamp: stamp, sum: String(repeating: "d", count: 64))]))?[path]?.sum
                == String(repeating: "d", count: 64))
        // Another user's file beside the state is not read (it would name the checksums of builds).
        if geteuid() == 0 {
            #expect(sums.save([path: .init(stamp: stamp, sum: String(repeating: "e", count: 64))]) == nil)
            chown(sums.path, 65534, 65534)
            let foreign = sums.load()
            #expect(foreign.entries.isEmpty)
            #expect(foreign.problem?.contains("ignored") == true)
        }
    }
}
