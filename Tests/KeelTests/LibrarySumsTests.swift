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

    @Test("a start takes an installed library's checksum from the cache while the file keeps the identity it had when hashed; a copied library, a changed file or an entry from a clock set back is hashed")
    func keptWhileUnchanged() async throws {
        let f = KernelFixture()
        let (copied, lying) = try await twoPlugins(f)
        let sums = LibrarySums(path: f.state + ".libraries")
        var entries = sums.load().entries
        // What the in-place load hashed, kept by path; a plugins/ folder library is not kept (its file may be someone
        // else's to write, through a mapping that leaves its identity as it was).
        #expect(entries[lying]?.sum == FileDigest.sha256(atPath: lying))
        #expect(entries[copied] == nil)
        // Another checksum under each file's current identity: a start that records it read it from the cache and
        // did not hash the file. The copied library is hashed all the same.
        let forged = (String(repeating: "a", count: 64), String(repeating: "b", count: 64))
        let copiedStamp = try #require(FileStamp(path: copied))
        entries[copied] = .init(stamp: copiedStamp, sum: forged.0)
        entries[lying]?.sum = forged.1
        #expect(sums.save(entries) == nil)
        let written = FileStamp(path: sums.path)
        let second = try f.kernel(libraryStampMargin: 0)
        await second.start()
        #expect(second.activePlugins.sorted() == ["copied", "lying"])
        #expect(try await lastChecksum(second, "copied") == FileDigest.sha256(atPath: copied))
        #expect(try await lastChecksum(second, "lying") == forged.1)
        await second.shutdown()
        // Nothing new was learnt: the file is not written again (a start of 1,000 would rewrite 170 KB each time).
        #expect(FileStamp(path: sums.path) == written)

        // An entry recorded later than the clock now reads (the clock was set back since): not taken.
        entries = sums.load().entries
        entries[lying]?.recorded = Int64(FileStamp.now()) + 3600
        #expect(sums.save(entries) == nil)
        let third = try f.kernel(libraryStampMargin: 0)
        await third.start()
        #expect(try await lastChecksum(third, "lying") == FileDigest.sha256(atPath: lying))
        await third.shutdown()

        // The same file rewritten in place (same inode and bytes, new times): hashed again, the cache follows. With
        // an entry for every library of the batch, the loads start on the kernel's thread and go to every core from
        // the first that must be hashed (the copied one, whose entry is never taken): both come out right.
        entries = sums.load().entries
        entries[lying]?.sum = forged.1
        entries[copied] = .init(stamp: try #require(FileStamp(path: copied)), sum: forged.0)
        #expect(sums.save(entries) == nil)
        chmod(lying, 0o644)
        let handle = try #require(FileHandle(forUpdatingAtPath: lying))
        let bytes = try handle.readToEnd() ?? Data()
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: bytes)
        try handle.close()
        chmod(lying, 0o444)
        let fourth = try f.kernel(libraryStampMargin: 0)
        await fourth.start()
        let real = try #require(FileDigest.sha256(atPath: lying))
        #expect(try await lastChecksum(fourth, "lying") == real)
        #expect(try await lastChecksum(fourth, "copied") == FileDigest.sha256(atPath: copied))
        #expect(get(fourth, "/ext/lying/ping")?.0 == 200)
        await fourth.shutdown()
        #expect(sums.load().entries[lying]?.sum == real)
    }

    @Test("a file that changed within the margin is not cached; a damaged or foreign cache is ignored with its reason")
    func unsettledAndDamaged() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("fresh")
        for file in ["/fresh/libfresh.so", "/fresh/plugin.yaml"] { chmod(f.plugins + file, 0o444) }
        // The default margin (2 s): a library installed a moment ago has not settled, so nothing is kept for it.
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

    @Test("a checksum learnt after the start (a lazy plugin's first use) is written within seconds, without a shutdown: a host that is killed keeps it")
    func learntAfterStart() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("sleepy", capabilities: ["routes"], extra: "activation: lazy\n")
        let library = f.plugins + "/sleepy/libsleepy.so"
        for file in [library, f.plugins + "/sleepy/plugin.yaml"] { chmod(file, 0o444) }
        let kernel = try f.kernel(libraryStampMargin: 0)
        await kernel.start()
        try await kernel.enable("sleepy")
        await kernel.shutdown()
        let sums = LibrarySums(path: f.state + ".libraries")
        try? FileManager.default.removeItem(atPath: sums.path)
        let second = try f.kernel(libraryStampMargin: 0)
        await second.start()
        #expect(second.isIdle("sleepy"))
        try await second.wake("sleepy")
        #expect(sums.load().entries[library] == nil, "written at once, on the path of the request that woke it")
        let deadline = Date().addingTimeInterval(10)
        while sums.load().entries[library] == nil, Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(sums.load().entries[library]?.sum == FileDigest.sha256(atPath: library))
        await second.shutdown()
    }
}
