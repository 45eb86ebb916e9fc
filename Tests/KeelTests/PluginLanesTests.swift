// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import KeelHTTP
import Testing

/// The lanes plugin code runs in (KeelHTTP/PluginLanes.swift).
@Suite("plugin lanes", .scheduled)
struct PluginLanesTests {
    @Test("a slow call marks its lane; the marks of lanes never asked again run out at the next slow call")
    func slowMarksRunOut() async throws {
        // Marks last 3 s: the 50 calls below (at least 2 ms each) take far less, however loaded the machine.
        let lanes = PluginLanes(threads: 2, perLane: 1, slowCall: .milliseconds(1), slowFor: .seconds(3), cores: 2)
        // Lanes named by the caller (a command call's plugin id is a lane before it is known to exist).
        let started = ContinuousClock.now
        for i in 0..<50 { try await lanes.run("nosuch\(i)") { usleep(2_000) } }
        if ContinuousClock.now - started < .seconds(3) { #expect(lanes.markedLanes == 50) }
        try await Task.sleep(until: started + .seconds(3.2))
        try await lanes.run("last") { usleep(2_000) }
        #expect(lanes.markedLanes == 1)
        await lanes.shutdown()
    }
}
