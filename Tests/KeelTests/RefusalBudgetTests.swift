// Keel — a microkernel plugin host. Licensed under Apache-2.0.

@testable import Keel
import KeelState
import Testing

/// Refused admin calls in the audit trail (`RefusalBudget`): any client may cause them, so they cannot push the
/// executed commands out of the trail.
@Suite("refusals in the audit trail", .scheduled)
struct RefusalBudgetTests {
    @Test("at most 60 refusals a minute get a row each; the next minute's first refusal says how many were left out")
    func budget() {
        let budget = RefusalBudget(perMinute: 60)
        let first = (0..<75).map { _ in budget.admit(at: 600) }
        #expect(first.filter(\.record).count == 60)
        #expect(first.allSatisfy { $0.leftOutBefore == 0 })
        #expect(budget.admit(at: 659) == (false, 0), "the same minute")
        let next = budget.admit(at: 660)
        #expect(next.record && next.leftOutBefore == 16)
        #expect(budget.admit(at: 661).leftOutBefore == 0, "reported once")
    }

    @Test("a flood of refused calls leaves the executed commands in the trail")
    func floodKeepsCommands() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("flood", capabilities: ["routes"])
        let kernel = try f.kernel()
        await kernel.start()
        _ = try? await kernel.execute(.enable(id: "flood", tenant: nil), actor: "cli")
        for i in 0..<500 {
            kernel.auditRefusal(actor: "admin-api", principal: nil, origin: "10.0.0.\(i % 200)", call: "POST /api/v1/x", reason: "denied")
        }
        let rows = try kernel.auditTrail()
        #expect(rows.filter { $0.outcome == "forbidden" }.count <= 60, "\(rows.count) rows")
        #expect(rows.contains { $0.command == "enable" && $0.target == "flood" })
        await kernel.shutdown()
    }
}
