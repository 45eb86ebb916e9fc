// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Dispatch
import Foundation
import Glibc
import KeelSystem
import Synchronization

/// The frames going to one worker, and the thread that writes them to its socket, whole and in order.
///
/// `send` only queues (never blocks), so a worker that stops reading cannot hold a caller: not a task on Swift's
/// cooperative pool, not the reader thread, not the kernel's thread. At most `limit` bytes wait; a frame the worker
/// has not taken whole within `writeTimeout` (it stopped reading, or reads a little at a time) or a failed write ends
/// the outbox and calls `failed`, which kills the worker. Thread-safe.
final class WorkerOutbox: Sendable {
    /// The bytes that may wait; a frame beyond them is refused (its call fails, and the worker is killed).
    static let limit = 64 << 20
    /// Seconds one frame may take to be written to a worker that does not read (and one `send` more: at most twice
    /// this in all).
    static let writeTimeout = 5

    private let socket: Int32
    private let queue = Mutex(Queue())
    /// Signalled once per frame queued, and once when the outbox closes.
    private let ready = DispatchSemaphore(value: 0)

    private struct Queue {
        var frames: [[UInt8]] = []
        var bytes = 0
        var closed = false
    }

    /// `socket` stays the caller's (it is not closed here); its send time-out is set to `writeTimeout`.
    init(socket: Int32) {
        self.socket = socket
        var timeout = timeval(tv_sec: Self.writeTimeout, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Starts the writer thread; `failed` is called (once, on it) when a write fails or times out.
    func start(name: String, failed: @escaping @Sendable () -> Void) {
        let writer = Thread { [self] in
            if !run() { failed() }
        }
        writer.name = name
        writer.start()
    }

    /// Queues `frame`; false, having queued nothing, when the outbox is closed or `limit` bytes wait already.
    func send(_ frame: [UInt8]) -> Bool {
        let queued = queue.withLock { q -> Bool in
            guard !q.closed, q.bytes + frame.count <= Self.limit else { return false }
            q.frames.append(frame)
            q.bytes += frame.count
            return true
        }
        if queued { ready.signal() }
        return queued
    }

    /// Ends the writer thread and drops what it had not written; later sends are refused.
    func close() {
        queue.withLock { q in
            q.closed = true
            q.frames = []
            q.bytes = 0
        }
        ready.signal()
    }

    /// Writes frames until the outbox closes (true) or a write fails (false, the outbox closed).
    private func run() -> Bool {
        while true {
            ready.wait()
            let next = queue.withLock { q -> [UInt8]? in
                guard !q.closed, !q.frames.isEmpty else { return nil }
                let frame = q.frames.removeFirst()
                q.bytes -= frame.count
                return frame
            }
            guard let frame = next else {
                if queue.withLock({ $0.closed }) { return true }
                continue
            }
            // Whole; false when the worker is gone or did not take it within `writeTimeout`.
            guard frame.withUnsafeBytes({ SystemFile.sendAll(socket, $0, within: .seconds(Self.writeTimeout)) }) else {
                close()
                return false
            }
        }
    }
}
