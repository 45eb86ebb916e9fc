// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Orders plugins so that each comes after the plugins it depends on. Pure: it reads only what it is given and
/// writes nothing; the kernel records the cycles it returns. Deterministic: ties go in id order.
public enum DependencyPlanner {
    public struct Plan: Sendable, Equatable {
        /// The ids to start, dependencies first; members of a cycle are left out.
        public var order: [String]
        /// Each cycle found, as the path that closes it (`a → b → a` is `["a", "b", "a"]`).
        public var cycles: [[String]]
    }

    /// Plans `ids`. Only dependencies among `ids` count (others are checked when each plugin is built).
    public static func plan(_ ids: Set<String>, dependencies: (String) -> [String]) -> Plan {
        var order: [String] = [], cycles: [[String]] = []
        var mark: [String: Int] = [:] // 1 visiting, 2 done
        var inCycle: Set<String> = []
        func visit(_ id: String, _ path: [String]) {
            if mark[id] == 2 { return }
            if mark[id] == 1 {
                let cycle = Array(path[(path.firstIndex(of: id) ?? 0)...]) + [id]
                if !cycle.allSatisfy(inCycle.contains) { cycles.append(cycle) }
                inCycle.formUnion(cycle)
                return
            }
            mark[id] = 1
            for dep in dependencies(id) where ids.contains(dep) { visit(dep, path + [id]) }
            mark[id] = 2
            order.append(id)
        }
        for id in ids.sorted() { visit(id, []) }
        return Plan(order: order.filter { !inCycle.contains($0) }, cycles: cycles)
    }
}
