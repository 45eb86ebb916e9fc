// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// A serial executor on a dedicated thread, for the kernel actor.
///
/// Lifecycle work blocks: it copies and checksums libraries, waits for a child probe, runs plugin activate and
/// deactivate code, waits for files to settle. Done on Swift's cooperative pool (a thread per core), that would starve
/// request handling; on this thread it only ever delays other lifecycle work.
final class LifecycleExecutor: SerialExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var stopped = false

    /// The thread keeps the executor alive until `stop()`.
    init(name: String = "keel.lifecycle") {
        let thread = Thread { [self] in self.run() }
        thread.name = name
        // Plugin code runs here (activate, deactivate): a full-size stack, not a concurrency worker's small one.
        thread.stackSize = 16 << 20
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        condition.lock()
        jobs.append(unowned)
        condition.signal()
        condition.unlock()
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }

    /// Lets the thread end once the queued jobs have run. Called when the kernel goes away.
    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopped { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedSerialExecutor())
        }
    }
}
