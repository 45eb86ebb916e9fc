// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import NIOPosix
import Synchronization

/// Where plugin code (auth hooks and route handlers) runs while the server answers requests.
///
/// Never where it could stall the host. Swift's cooperative pool has one thread per core, and a handler that blocks
/// there (a slow database, a `sleep`) would stall every request of the host, `/healthz` and the admin API included.
/// So plugin calls take one of two paths:
///
/// - **Inline, under admission control.** A call runs on the cooperative thread that serves the request when an
///   inline slot is free and its lane has not been slow lately. There are `cores - 1` slots in the process, shared by
///   every server in it (none on one core), so plugin code never holds more than all but one of the cooperative
///   threads: one is always left for the host.
///   This is the fast path: no thread hop, which on a small machine costs more than a short handler itself.
/// - **On a pool of threads of their own** (NIO's `NIOThreadPool`), when no slot is free or the lane is marked slow.
///   A lane (a plugin's routes, or the auth chain of the admin API) may occupy at most `perLane` of those threads at
///   once; further calls wait their turn without holding a thread, at most `queueLimit` of them per lane, and beyond
///   that get 503 (`busy`), counted per lane.
///
/// A call that takes longer than `slowCall` marks its lane slow for `slowFor`: its calls then go to the pool, so a
/// plugin that blocks slows its own callers only. Thread-safe.
final class PluginLanes: Sendable {
    let pool: NIOThreadPool
    let perLane: Int
    let queueLimit: Int
    /// Calls that may run inline at once (cooperative threads less one).
    let inlineSlots: Int
    /// A call this long marks its lane slow.
    let slowCall: Duration
    /// How long a slow lane stays on the pool.
    let slowFor: Duration

    private struct Lane {
        var running = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private let lanes = Mutex<[String: Lane]>([:])
    private let refusals = Mutex<[String: Int]>([:])
    private let slowUntil = Mutex<[String: ContinuousClock.Instant]>([:])
    /// How many lanes `slowUntil` holds: while none is slow, a call takes no lock to find out.
    private let slowLanes = Atomic<Int>(0)
    /// Inline calls running now, in the whole process: the cooperative pool is one per process, however many servers
    /// (an embedder may run several) share it.
    private static let inlineInUse = Atomic<Int>(0)

    /// How many lanes are marked slow now or were and have not been pruned since (their marks go on the next slow call).
    var markedLanes: Int { slowLanes.load(ordering: .relaxed) }

    /// Calls refused with 503 because their lane's queue was full, by lane, since the server started.
    var refused: [String: Int] { refusals.withLock { $0 } }

    /// The lane for the admin API's and the console's own calls into the auth chain.
    static let host = "keel"

    /// Starts `threads` threads. `cores` is the width of Swift's cooperative pool (one thread per core).
    init(threads: Int, perLane: Int, queueLimit: Int = 1024, slowCall: Duration = .milliseconds(5),
         slowFor: Duration = .seconds(10), cores: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.slowCall = slowCall
        self.slowFor = slowFor
        pool = NIOThreadPool(numberOfThreads: max(1, threads))
        pool.start()
        self.perLane = max(1, min(perLane, threads))
        self.queueLimit = queueLimit
        // One cooperative thread (of as many as cores) never runs plugin code: none on a single core.
        inlineSlots = max(0, cores - 1)
    }

    /// Runs `body` in `lane`: inline when a slot is free and the lane is not slow, else on a pool thread after
    /// waiting for a free place in the lane.
    /// - Throws: `APIError` 503 when the lane's queue is full, or when the pool has been shut down;
    ///   `CancellationError` when the calling task was cancelled before the call started, or while it ran (then the
    ///   call goes on, its result dropped).
    func run<T: Sendable>(_ lane: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        if let result = try runInline(lane, body) { return result }
        try await admit(lane)
        // A request cancelled while it waited for its place (a server stopping) runs nothing.
        if Task.isCancelled {
            release(lane)
            throw CancellationError()
        }
        // The lane's place is given back when the call ends on its thread, not when the caller stops waiting: a call
        // that never returns keeps it, so that a lane's calls never hold more than `perLane` threads.
        let first = FirstOf<Result<T, any Error>>()
        return try await withTaskCancellationHandler {
            try await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>, Never>) in
                first.set(continuation)
                pool.submit { state in
                    defer { self.release(lane) }
                    guard case .active = state else { return first.resume(.failure(Self.unavailable)) }
                    // Nobody waits for it any more (cancelled while queued for a thread): not run.
                    guard !first.isFinished else { return }
                    first.resume(Result { try self.timed(lane, body) })
                }
            }.get()
        } onCancel: {
            // A server that stops cancels its requests after its grace period: one waiting for a call that never
            // returns then stops waiting (the call goes on; its result is dropped).
            first.resume(.failure(CancellationError()))
        }
    }

    /// Runs `body` inline when a slot is free and the lane is not slow; nil, having run nothing, otherwise (then
    /// `run` it). For a caller that would otherwise build an escaping closure on every call for the rare other path.
    func runInline<T>(_ lane: String, _ body: () throws -> T) rethrows -> T? {
        guard takeInlineSlot(lane) else { return nil }
        defer { Self.inlineInUse.subtract(1, ordering: .releasing) }
        return try timed(lane, body)
    }

    /// True when the call may run inline: the lane is not marked slow and a slot was free (now taken).
    private func takeInlineSlot(_ lane: String) -> Bool {
        if slowLanes.load(ordering: .relaxed) > 0 {
            let slow = slowUntil.withLock { marks -> Bool in
                guard let until = marks[lane] else { return false }
                if until > .now { return true }
                marks[lane] = nil
                slowLanes.store(marks.count, ordering: .relaxed)
                return false
            }
            if slow { return false }
        }
        var current = Self.inlineInUse.load(ordering: .relaxed)
        while current < inlineSlots {
            let (exchanged, original) = Self.inlineInUse.compareExchange(expected: current, desired: current + 1, ordering: .acquiring)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Runs `body`, marking the lane slow when it took longer than `slowCall`.
    private func timed<T>(_ lane: String, _ body: () throws -> T) rethrows -> T {
        let started = ContinuousClock.now
        defer {
            let end = ContinuousClock.now
            if end - started > slowCall {
                slowUntil.withLock { marks in
                    // Marks that ran out go too, not only when their lane is asked again: a lane is named by the
                    // request (a command call's plugin id before it is known to exist), so the marks of lanes never
                    // asked again would stay for ever. Only slow calls pay for it.
                    marks = marks.filter { $0.value > end }
                    marks[lane] = end.advanced(by: slowFor)
                    slowLanes.store(marks.count, ordering: .relaxed)
                }
            }
        }
        return try body()
    }

    static let unavailable = APIError(.serviceUnavailable, "busy", "the plugin is busy; retry later")

    private func admit(_ lane: String) async throws {
        enum Admission { case go, wait, refuse }
        let admission = lanes.withLock { all -> Admission in
            var l = all[lane, default: Lane()]
            defer { all[lane] = l }
            if l.running < perLane { l.running += 1; return .go }
            return l.waiting.count < queueLimit ? .wait : .refuse
        }
        switch admission {
        case .go: return
        case .refuse:
            refusals.withLock { $0[lane, default: 0] += 1 }
            throw Self.unavailable
        case .wait:
            // Re-checked under the lock: a place may have come free since.
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = lanes.withLock { all -> Bool in
                    var l = all[lane, default: Lane()]
                    defer { all[lane] = l }
                    if l.running < perLane { l.running += 1; return true }
                    l.waiting.append(c)
                    return false
                }
                if now { c.resume() }
            }
        }
    }

    /// Hands the place to the next waiting call, or frees it.
    private func release(_ lane: String) {
        let next = lanes.withLock { all -> CheckedContinuation<Void, Never>? in
            guard var l = all[lane] else { return nil }
            defer { all[lane] = (l.running == 0 && l.waiting.isEmpty) ? nil : l }
            if !l.waiting.isEmpty { return l.waiting.removeFirst() }
            l.running -= 1
            return nil
        }
        next?.resume()
    }

    /// Stops the threads once their work is done, waiting at most `deadline`: a plugin call that never returns keeps
    /// its thread, not the server's shutdown. Returns false when calls were still running then (left behind).
    @discardableResult
    func shutdown(within deadline: Duration = .seconds(5)) async -> Bool {
        let first = FirstOf<Bool>()
        let timer = Task {
            try? await Task.sleep(for: deadline)
            first.resume(false)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            first.set(continuation)
            pool.shutdownGracefully { _ in first.resume(true) }
        }
    }
}
