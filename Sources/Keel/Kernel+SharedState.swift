// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Several hosts on one shared state (PostgreSQL): each applies the desired state the others, or the CLI, wrote.
extension Kernel {
    /// What `applyDesiredState` changed on this host.
    public struct Convergence: Sendable, Equatable {
        public var activated: [String] = []
        public var deactivated: [String] = []
        public var isEmpty: Bool { activated.isEmpty && deactivated.isEmpty }
    }

    /// Brings this host in line with the stored desired state: activates the plugins recorded enabled that are not
    /// active here (dependencies first), deactivates the active ones recorded disabled (dependents first). A plugin
    /// recorded `failed` is not retried until some host records another status for it (so hosts do not retry a
    /// broken build in a loop); one whose bundle this host lacks is left alone. Idempotent: called after each change
    /// notification and periodically, it changes nothing once the host has converged.
    ///
    /// Runs on the kernel's executor like every lifecycle change. A state read that fails changes nothing (the host
    /// keeps serving what it has and catches up on a later call).
    public func applyDesiredState() -> Convergence {
        guard let records = try? state.plugins() else { return Convergence() }
        var changed = Convergence()
        let byID = Dictionary(records.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        if records.contains(where: { $0.enabled && bundles[$0.id] == nil }) { rescan() }
        for id in activationOrder.reversed() where byID[id].map({ !$0.enabled }) == true {
            deactivate(id)
            changed.deactivated.append(id)
        }
        let wanted = Set(records.filter { $0.enabled && $0.status != .failed && bundles[$0.id] != nil && active[$0.id] == nil }.map(\.id))
        if !wanted.isEmpty {
            let plan = activationPlan(for: wanted).filter { active[$0] == nil }
            activateAll(plan)
            changed.activated = plan.filter { active[$0] != nil }
        }
        if !changed.isEmpty {
            log(.info, nil, "applied the shared state: activated [\(changed.activated.joined(separator: ", "))], deactivated [\(changed.deactivated.joined(separator: ", "))]")
            Task { await events.emit(.pluginsChanged) }
        }
        return changed
    }

    /// Which plugins this host runs, at which generation (for the hosts table).
    public func runningGenerations() -> [String: Int] {
        active.mapValues(\.generation)
    }
}
