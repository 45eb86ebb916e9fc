// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import KeelIsolation
import Testing

@Suite("worker restart back-off", .scheduled)
struct WorkerBackoffTests {
    @Test("a crash and a failed restart back off by one rule: none after the first, then doubling from the base to the ceiling")
    func oneRule() {
        let policy = IsolationPolicy(backoff: 0.05, maximumBackoff: 5)
        let delays = (1...10).map { WorkerSupervisor.backoff(afterCrashesInARow: $0, policy) }
        #expect(delays == [0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5])
        #expect(WorkerSupervisor.backoff(afterCrashesInARow: 10_000, policy) == 5)
    }
}

extension WorkerBackoffTests {
    @Test("the thread limit: a status file read whole gives the count, one never opened gives none (the worker is then ended); at least 96, 0 for none")
    func threadCountAndLimit() throws {
        #expect(WorkerConnection.threadCount(status: -1) == nil)
        let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        let first = try #require(WorkerConnection.threadCount(status: fd))
        #expect(first >= 1)
        // Read again from its start, as each sweep does (the suite's other tests start and end threads meanwhile:
        // only that it is read, and sensibly, can be said).
        let again = try #require(WorkerConnection.threadCount(status: fd))
        #expect(again >= 1 && again < 10_000)
        var policy = IsolationPolicy()
        // 256, or 8 per core on a machine of more than 32 cores (online cores, not a container's CPU quota).
        #expect(policy.threadLimit == IsolationPolicy.defaultThreadLimit)
        #expect(IsolationPolicy.defaultThreadLimit(cores: 2) == 256 && IsolationPolicy.defaultThreadLimit(cores: 32) == 256)
        #expect(IsolationPolicy.defaultThreadLimit(cores: 64) == 512 && IsolationPolicy.defaultThreadLimit(cores: 128) == 1024)
        #expect(IsolationPolicy.defaultThreadLimit == IsolationPolicy.defaultThreadLimit(cores: sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        policy.threadLimit = 10
        #expect(policy.threadLimit == IsolationPolicy.minimumThreadLimit)
        policy.threadLimit = -1
        #expect(policy.threadLimit == IsolationPolicy.minimumThreadLimit)
        policy.threadLimit = 0
        #expect(policy.threadLimit == 0)
        #expect(IsolationPolicy(threadLimit: 1).threadLimit == IsolationPolicy.minimumThreadLimit)
    }
}
