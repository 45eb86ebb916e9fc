// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Keel
import Testing

@Suite("the dependency planner, alone", .scheduled)
struct DependencyPlannerTests {
    @Test("dependencies come first; ties go in id order; dependencies outside the set do not count")
    func order() {
        let deps = ["app": ["db", "auth"], "auth": ["db"], "db": [], "tool": ["elsewhere"]]
        let plan = DependencyPlanner.plan(Set(deps.keys)) { deps[$0] ?? [] }
        #expect(plan.order == ["db", "auth", "app", "tool"])
        #expect(plan.cycles.isEmpty)
    }

    @Test("a cycle is returned, not written anywhere, and its members are left out; the rest still starts")
    func cycles() {
        let deps = ["a": ["b"], "b": ["c"], "c": ["a"], "d": [], "e": ["e"]]
        let plan = DependencyPlanner.plan(Set(deps.keys)) { deps[$0] ?? [] }
        #expect(plan.order == ["d"])
        #expect(plan.cycles == [["a", "b", "c", "a"], ["e", "e"]])
    }
}
