// Keel — a microkernel plugin host. Licensed under Apache-2.0.

@testable import KeelIsolation
import Testing

@Suite("worker restart back-off")
struct WorkerBackoffTests {
    @Test("a crash and a failed restart back off by one rule: none after the first, then doubling from the base to the ceiling")
    func oneRule() {
        let policy = IsolationPolicy(backoff: 0.05, maximumBackoff: 5)
        let delays = (1...10).map { WorkerSupervisor.backoff(afterCrashesInARow: $0, policy) }
        #expect(delays == [0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5])
        #expect(WorkerSupervisor.backoff(afterCrashesInARow: 10_000, policy) == 5)
    }
}
