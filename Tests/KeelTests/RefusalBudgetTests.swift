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

    @Test("at most 500 refusal rows a day for anonymous callers and 500 for identified ones: 61 a minute for a day take a twentieth of the trail; an anonymous flood leaves the identified callers' rows; the next day's first says how many were left out")
    func dayBudget() {
        let budget = RefusalBudget()
        #expect(budget.perDay == StateStore.auditCapacity / 10)
        var rows = 0, recorded = 0, reported = 0
        let day: Int64 = 20_000 * 86_400, total = 1440 * 61
        for minute in 0..<1440 {
            for _ in 0..<61 {
                let (record, before) = budget.admit(at: day + Int64(minute) * 60, anonymous: true)
                if record { recorded += 1; rows += 1 }
                if before > 0 { reported += before; rows += 1 }
            }
        }
        // With the minute's budget alone this day would have written 86,400 rows: the trail, eight times over.
        #expect(rows <= 500 && rows >= 490, "\(rows) rows in one day")
        // An insider's refused call late that day still gets its row (the flood was anonymous).
        #expect(budget.admit(at: day + 86_399, anonymous: false) == (true, 0))
        let next = budget.admit(at: day + 86_400, anonymous: true)
        #expect(next.record && next.leftOutBefore == total - recorded - reported, "\(next), \(recorded) recorded, \(reported) reported")
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
