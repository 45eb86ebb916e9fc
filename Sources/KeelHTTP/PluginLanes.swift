// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import NIOPosix
import Synchronization

/// Where plugin code (auth hooks and route handlers) runs while the server answers requests.
///
/// Never on Swift's cooperative pool: it has one thread per core, and a handler that blocks there (a slow database,
/// a `sleep`) would stall every request of the host, `/healthz` and the admin API included. Plugin calls run on a
/// pool of threads of their own (NIO's `NIOThreadPool`). Each lane (a plugin's routes, or the auth chain of the admin
/// API) may occupy at most `perLane` of those threads at once; further calls wait their turn without holding a
/// thread, at most `queueLimit` of them per lane, and beyond that get 503. So a plugin that blocks slows its own
/// callers only. Thread-safe.
final class PluginLanes: Sendable {
    let pool: NIOThreadPool
    let perLane: Int
    let queueLimit: Int

    private struct Lane {
        var running = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private let lanes = Mutex<[String: Lane]>([:])
    private let refusals = Mutex<[String: Int]>([:])

    /// Calls refused with 503 because their lane's queue was full, by lane, since the server started.
    var refused: [String: Int] { refusals.withLock { $0 } }

    /// The lane for the admin API's and the console's own calls into the auth chain.
    static let host = "keel"

    /// Starts `threads` threads.
    init(threads: Int, perLane: Int, queueLimit: Int = 1024) {
        pool = NIOThreadPool(numberOfThreads: max(1, threads))
        pool.start()
        self.perLane = max(1, min(perLane, threads))
        self.queueLimit = queueLimit
    }

    /// Runs `body` on a pool thread in `lane`, after waiting for a free place in the lane.
    /// - Throws: `APIError` 503 when the lane's queue is full, or when the pool has been shut down.
    func run<T: Sendable>(_ lane: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await admit(lane)
        defer { release(lane) }
        do { return try await pool.runIfActive(body) } catch is CancellationError {
            throw CancellationError()
        } catch let error as APIError {
            throw error
        } catch {
            if (error as? NIOThreadPoolError.ThreadPoolInactive) != nil { throw Self.unavailable }
            throw error
        }
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

    /// Stops the threads once their work is done.
    func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
