// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization

/// A serial executor on a dedicated thread, for the kernel actor.
///
/// Lifecycle work blocks: it copies and checksums libraries, waits for a child probe, runs plugin activate and
/// deactivate code, waits for files to settle. Done on Swift's cooperative pool (a thread per core), that would starve
/// request handling; on this thread it only ever delays other lifecycle work.
final class LifecycleExecutor: SerialExecutor, Sendable {
    private struct Queue {
        var jobs: [UnownedJob] = []
        var stopped = false
    }
    private let queue = Mutex(Queue())
    /// Signalled once per queued job and once by `stop()`: the thread waits on it while the queue is empty.
    private let wakeups = DispatchSemaphore(value: 0)
    /// The thread's `pthread_self()`, once it runs (0 before).
    private let threadID = Atomic<UInt>(0)

    /// The stack of a thread that runs plugin code (activate, deactivate, a command call): a full-size one, not a
    /// concurrency worker's small one.
    static let pluginStackSize = 16 << 20

    /// The thread keeps the executor alive until `stop()`.
    init(name: String = "keel.lifecycle") {
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.stackSize = Self.pluginStackSize
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        queue.withLock { $0.jobs.append(unowned) }
        wakeups.signal()
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }

    /// Lets the thread end once the queued jobs have run. Called when the kernel goes away.
    func stop() {
        queue.withLock { $0.stopped = true }
        wakeups.signal()
    }

    /// True on the executor's own thread: work there must never wait for the kernel (it would wait for itself).
    var isCurrentThread: Bool { threadID.load(ordering: .relaxed) == UInt(pthread_self()) }

    private func run() {
        threadID.store(UInt(pthread_self()), ordering: .relaxed)
        while true {
            wakeups.wait()
            // Every job signalled once, so the queue is empty here only after `stop()`: run what is left, then end.
            let next: UnownedJob? = queue.withLock { $0.jobs.isEmpty ? nil : $0.jobs.removeFirst() }
            guard let job = next else {
                if queue.withLock({ $0.stopped }) { return }
                continue
            }
            job.runSynchronously(on: asUnownedSerialExecutor())
        }
    }
}
