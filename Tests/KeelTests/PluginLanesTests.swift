// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import KeelHTTP
import Testing

/// The lanes plugin code runs in (KeelHTTP/PluginLanes.swift).
@Suite("plugin lanes")
struct PluginLanesTests {
    @Test("a slow call marks its lane; the marks of lanes never asked again run out at the next slow call")
    func slowMarksRunOut() async throws {
        let lanes = PluginLanes(threads: 2, perLane: 1, slowCall: .milliseconds(1), slowFor: .milliseconds(300), cores: 2)
        // Lanes named by the caller (a command call's plugin id is a lane before it is known to exist).
        for i in 0..<50 { try await lanes.run("nosuch\(i)") { usleep(5_000) } }
        #expect(lanes.markedLanes == 50)
        try await Task.sleep(for: .milliseconds(400))
        try await lanes.run("last") { usleep(5_000) }
        #expect(lanes.markedLanes == 1)
        await lanes.shutdown()
    }
}
