// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Synchronization

extension Kernel {
    /// The generation of `id` now serving, or nil when it is not active.
    public func activeGeneration(_ id: String) -> Int? {
        active[id]?.generation
    }
}

/// The generation of each active plugin, readable from any thread: the log sink labels the host's lines about a
/// plugin with the generation serving then. Thread-safe.
final class ServingGenerations: Sendable {
    private let map = Mutex<[String: Int]>([:])
    func set(_ id: String, _ generation: Int?) { map.withLock { $0[id] = generation } }
    subscript(_ id: String) -> Int? { map.withLock { $0[id] } }
}

extension Kernel {
    /// The health checks of the active plugins with code, for a caller that keeps them across rounds: `active` is
    /// every such plugin with its generation; `fresh` has a check (nil: the plugin offers none) for each plugin
    /// whose generation is not the one `known` gives (id → generation the caller already holds a check for).
    /// Asks each new generation's get_extension once.
    public func healthChecks(known: [String: Int]) -> (active: [String: Int], fresh: [String: HealthCheck?]) {
        var all: [String: Int] = [:], fresh: [String: HealthCheck?] = [:]
        for (id, plugin) in active {
            guard let library = plugin.library else { continue }
            all[id] = plugin.generation
            if known[id] != plugin.generation {
                fresh[id] = .some(lifecycleWatch.during(id, generation: plugin.generation, checksum: plugin.checksum, "get_extension") {
                    HealthCheck(library: library, context: plugin.context)
                })
            }
        }
        return (all, fresh)
    }
}
