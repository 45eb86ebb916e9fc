// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What a running server's `/healthz` says its lifecycle is busy with, for a command the server did not take or
/// finish in time. `/healthz` needs no token: nothing secret is sent to the address the lock names (and the CLI
/// believes only its own user's lock, `ServerLock`).
enum ServerHealth {
    private struct Body: Decodable {
        struct Stall: Decodable { var message: String }
        var stalled: Stall?
        var lifecycle: String?
    }

    /// The stall's message, or the plugin call holding the lifecycle ("plugin "slow" (generation 3): activate has
    /// not returned for 4 s"); nil when the server names none, cannot be reached within 2 s, or its lock line names
    /// no address yet.
    static func lifecycle(lockLine: String) async -> String? {
        guard let base = lockLine.split(separator: " ").last.map(String.init), base.hasPrefix("http://"),
              let url = URL(string: base + "/healthz") else { return nil }
        var request = URLRequest(url: url)
        request.timeoutInterval = 2
        guard let (data, _) = try? await URLSession.shared.data(for: request),
              let body = try? JSONDecoder().decode(Body.self, from: data) else { return nil }
        return body.stalled?.message ?? body.lifecycle
    }
}
