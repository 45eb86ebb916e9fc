// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Testing

/// The copies of stopped plugins' libraries that stay mapped are bounded (`StaleCopyLimits`): toggling an ordinary
/// plugin used to map one more copy per enable until the process ran out of mappings (about 13,000 enables).
@Suite("stale library copies", .scheduled)
struct StaleCopyTests {
    @Test("past the limit an ordinary plugin is refused another copy with a reason, recorded failed; a first load, an unload-safe and a reactivatable plugin are not; a refused reload leaves the old build serving")
    func copiesAreBounded() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("stplain")
        try f.fixtureBundle("stsafe", defines: ["UNLOAD_SAFE"])
        try f.fixtureBundle("stkept", defines: ["REACTIVATABLE"])
        try f.fixtureBundle("stlater")
        let kernel = try f.kernel(libraryStampMargin: 0, staleCopies: StaleCopyLimits(copies: 2, bytes: 1 << 40))
        await kernel.start()
        for id in ["stplain", "stsafe", "stkept"] { try await kernel.enable(id) }
        #expect(await kernel.staleLibraryCopies().copies == 0)
        // Two stops of the ordinary plugin leave two stopped copies mapped: the limit.
        try await kernel.disable("stplain")
        try await kernel.enable("stplain")
        try await kernel.disable("stplain")
        let stale = await kernel.staleLibraryCopies()
        #expect(stale.copies == 2)
        #expect(stale.bytes > 0)
        #expect(try mappedCopies("stplain") == 2)
        do {
            try await kernel.enable("stplain")
            Issue.record("a third stale copy was allowed")
        } catch {
            #expect(error.code == .staleCopyLimit)
            #expect(error.reason.hasPrefix("plugin \"stplain\" (") && error.reason.contains("stay mapped in this host (2, "))
            #expect(error.reason.contains("restart the host"))
        }
        #expect(try mappedCopies("stplain") == 2, "the refused enable mapped nothing")
        let info = try await kernel.plugin("stplain")
        #expect(info.status == .failed)
        #expect(info.reason?.contains("not loaded again") == true)
        #expect(try await kernel.history("stplain").last?.outcome == "failed")
        // The others go on: unload-safe copies are unmapped, a reactivatable one is enabled again on its copy.
        for _ in 0..<4 {
            for id in ["stsafe", "stkept"] {
                try await kernel.disable(id)
                try await kernel.enable(id)
            }
        }
        #expect(get(kernel, "/ext/stsafe/ping")?.0 == 200)
        #expect(get(kernel, "/ext/stkept/ping")?.0 == 200)
        #expect(try mappedCopies("stkept") == 1)
        // A plugin never loaded in this process loads; its reload (a second copy) is refused and it keeps serving.
        try await kernel.enable("stlater")
        #expect(get(kernel, "/ext/stlater/ping")?.0 == 200)
        await #expect(throws: KernelError.self) { try await kernel.reload("stlater") }
        #expect(get(kernel, "/ext/stlater/ping")?.0 == 200)
        #expect(await kernel.staleLibraryCopies().copies == 2)
        await kernel.shutdown()
    }

    @Test("a plugin that declares itself unload-safe but fails to activate keeps its copies mapped, and is refused like any other")
    func failedUnloadSafeIsCounted() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("stfails", defines: ["UNLOAD_SAFE", "ACTIVATE_FAILS"])
        let kernel = try f.kernel(staleCopies: StaleCopyLimits(copies: 2, bytes: 1 << 40))
        await kernel.start()
        var codes: [String] = []
        for _ in 0..<4 {
            do { try await kernel.enable("stfails") } catch { codes.append(error.code.description) }
        }
        #expect(codes == ["load-failed", "load-failed", "stale-copy-limit", "stale-copy-limit"], "\(codes)")
        #expect(try mappedCopies("stfails") == 2)
        await kernel.shutdown()
    }

    @Test("the limit on the copies' sizes refuses the same way")
    func bytesAreBounded() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("stbytes")
        let kernel = try f.kernel(staleCopies: StaleCopyLimits(copies: 1000, bytes: 1))
        await kernel.start()
        try await kernel.enable("stbytes")
        try await kernel.disable("stbytes")
        await #expect(throws: KernelError.self) { try await kernel.enable("stbytes") }
        #expect(try await kernel.plugin("stbytes").reason?.contains("stay mapped in this host (1, ") == true)
        await kernel.shutdown()
    }
}
