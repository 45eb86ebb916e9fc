// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// Races in the C embedding API found by an attacker's review: concurrent `keel_serve` calls on one handle start one
/// server (the slot is taken under the lock before binding), and `keel_close` stops it.
@Suite("the C embedding API under concurrent calls", .scheduled)
struct EmbeddingRaceTests {
    @Test("two threads calling keel_serve at once: one server, and none listening after keel_close")
    func serveRace() throws {
        let app = try EmbeddingCTests.build(TestEnvironment.fixtures + "/embed/embed_serve_race.c", "embed_serve_race", flags: "-pthread")
        let r = try TestEnvironment.run(app, [])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr.suffix(2000))")
    }
}
