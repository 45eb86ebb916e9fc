// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization
import Testing

/// The trait every top-level suite carries (`@Suite("…", .scheduled)`): each test case runs
///
/// - on `TestThreads`, never on Swift's cooperative pool. Many tests block a thread for seconds (they wait for `cc`,
///   `cargo`, Chromium or a `keel` child to exit). On the cooperative pool, which has one thread per core (two on
///   a 2-core CI machine), two such tests stopped every other test's tasks: the kernels, servers and clocks of
///   in-process tests stalled for tens of seconds and their time-outs ran out.
/// - in one of `TestSchedule.width` slots, so that the suite does not start all its tests at once. Started together
///   (Swift Testing's default), hundreds of servers, compilers and workers share two cores, and a test waiting 20 s
///   for a reload can be left without a core for longer. `KEEL_TEST_WIDTH=N` sets the width (default 4).
///
/// Recursive: a nested suite takes it from its parent and must not name it again (a test case would then take two
/// slots, and a full house of such cases would wait forever).
struct TestSchedule: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    /// How many test cases run at once.
    static let width: Int = {
        if let text = ProcessInfo.processInfo.environment["KEEL_TEST_WIDTH"], let n = Int(text), n > 0 { return n }
        return 4
    }()

    static let slots = TestSlots(TestSchedule.width)
    static let threads = TestThreads()

    /// Only around each test case (not around a suite or the test as a whole), so that a case holds one slot.
    func scopeProvider(for test: Test, testCase: Test.Case?) -> TestSchedule? {
        testCase == nil ? nil : self
    }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        await Self.slots.acquire()
        defer { Self.slots.release() }
        try await withTaskExecutorPreference(Self.threads) { try await function() }
    }
}

extension Trait where Self == TestSchedule {
    /// See `TestSchedule`.
    static var scheduled: TestSchedule { TestSchedule() }
}

/// A counting semaphore for tasks: `acquire` suspends (it never blocks a thread) until a slot is free; waiters are
/// served first come, first served.
final class TestSlots: Sendable {
    private struct State {
        var free: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(free: count)) }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// A task executor with a thread for every job that is running: a job that blocks (a test waiting for a child
/// process) holds its own thread and no other job waits behind it. Threads are kept for later jobs; there are never
/// more than the most jobs that ran at once.
final class TestThreads: TaskExecutor, Sendable {
    private struct State {
        var jobs: [UnownedJob] = []
        var idle = 0
    }
    private let state = Mutex(State())
    private let wake = NSCondition()

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        wake.lock()
        let spawn = state.withLock { state -> Bool in
            state.jobs.append(job)
            return state.jobs.count > state.idle
        }
        if spawn {
            let thread = Thread { [self] in work() }
            thread.stackSize = 8 << 20
            thread.start()
        } else {
            wake.signal()
        }
        wake.unlock()
    }

    private func work() {
        while true {
            wake.lock()
            var job: UnownedJob?
            while job == nil {
                job = state.withLock { state -> UnownedJob? in
                    state.jobs.isEmpty ? nil : state.jobs.removeFirst()
                }
                if job == nil {
                    state.withLock { $0.idle += 1 }
                    wake.wait()
                    state.withLock { $0.idle -= 1 }
                }
            }
            wake.unlock()
            job?.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
