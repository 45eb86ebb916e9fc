// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import Keel
import KeelLoader
import Testing

@Suite("bundle assets: the cache is bounded", .scheduled)
struct AssetCacheTests {
    @Test("files past the cache budget let the least recently served go; each is still served whole, and a changed file replaces its entry")
    func cacheIsBounded() throws {
        let bundle = TestEnvironment.makeTemporaryDirectory("asset-cache")
        try FileManager.default.createDirectory(atPath: bundle + "/assets", withIntermediateDirectories: true)
        // Images: not gzipped, so each costs its size. Three of 1,000 bytes against a budget of 2,500.
        for (i, name) in ["a", "b", "c"].enumerated() {
            try Data(repeating: UInt8(i), count: 1000).write(to: URL(fileURLWithPath: bundle + "/assets/\(name).png"))
        }
        let assets = try #require(BundleAssets(bundleFolder: bundle, cacheBudget: 2500))
        func fetch(_ name: String) -> PluginResponse {
            assets.serve(PluginRequest(method: "GET", path: "/ext/x/assets/\(name)", parameters: [("*", name)]))
        }
        #expect(fetch("a.png").body.count == 1000)
        #expect(fetch("b.png").body.count == 1000)
        #expect(assets.cached == (2, 2000))
        #expect(fetch("a.png").status == 200)  // a is now more recent than b
        #expect(fetch("c.png").body.count == 1000)
        #expect(assets.cached == (2, 2000), "within the budget: one file let go")
        // b was the least recently served, so it went: served again, it is read again (its bytes are b's) and a goes.
        #expect(fetch("b.png").body == [UInt8](repeating: 1, count: 1000))
        #expect(assets.cached == (2, 2000))
        #expect(assets.cached.bytes <= 2500)
        // A changed file (new size) replaces its entry instead of adding one.
        try Data(repeating: 1, count: 1200).write(to: URL(fileURLWithPath: bundle + "/assets/b.png"))
        #expect(fetch("b.png").body.count == 1200)
        #expect(assets.cached.bytes <= 2500)
        #expect(assets.cached.files <= 2)
        // Hundreds of distinct files never hold more than the budget.
        for i in 0..<200 {
            try Data(repeating: 2, count: 700).write(to: URL(fileURLWithPath: bundle + "/assets/f\(i).png"))
            #expect(fetch("f\(i).png").body.count == 700)
        }
        #expect(assets.cached.bytes <= 2500)
        #expect(assets.cached.files == 3)
    }
}
