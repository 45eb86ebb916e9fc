// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import NIOCore
import Synchronization

/// A proxied request's body as it goes to the upstream: it ends with an error past `limit` bytes, so a proxied upload
/// is bounded like a route's; one that has not ended `timeout` after its first read is abandoned as
/// `RequestBodyReader` abandons a route's (408 written to the client, the connection closed, which ends the read and
/// the upstream exchange with it).
///
/// The upload runs beside the answer (an upstream may answer before it has read the body, as an app refusing an
/// upload does), and the client connection's request parts are one stream, which the HTTP server reads again once the
/// answer is written (the rest of the body, then the next request): two readers at once end the process. So every
/// read goes through `gate`, and `PluginProxy` calls `Gate.release` once the answer is written or failed, before it
/// hands the connection back: a read under way is ended (the connection's input is closed when the body has not
/// ended) and waited for, what is left is read and dropped there, and no upload read starts after it.
struct LimitedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let limit: Int
    /// The declared `Content-Length`: the deadline ends once that much arrived, whether or not the end is read.
    let length: Int64?
    let timeout: Duration
    let channel: (any Channel)?
    /// Who may read the client's request parts, and who may write to the client: the answer or the deadline.
    let gate: Gate

    init(base: RequestBody, limit: Int, length: Int64?, timeout: Duration, channel: (any Channel)?) {
        self.limit = limit
        self.length = length
        self.timeout = timeout
        self.channel = channel
        gate = Gate(base)
    }

    /// The body's reads and the client connection, between the upload, the answer and the deadline. Thread-safe.
    final class Gate: Sendable {
        /// The request body's one iterator (Hummingbird allows one), made at the first read, by the upload or by
        /// `release`. `@unchecked Sendable`: only the holder of the gate's `reading` flag touches it.
        final class Source: @unchecked Sendable {
            var iterator: RequestBody.AsyncIterator
            init(_ iterator: RequestBody.AsyncIterator) { self.iterator = iterator }
        }

        private enum Writer { case none, answer, deadline }
        private struct State {
            var writer = Writer.none
            var source: Source?
            var reading = false
            var ended = false
            var released = false
            var waiting: [CheckedContinuation<Void, Never>] = []
        }
        private let base: RequestBody
        private let state = Mutex(State())

        init(_ base: RequestBody) { self.base = base }

        /// True when the answer may go to the client: the deadline has not written its 408 (nor will it now).
        func answer() -> Bool { claim(.answer) }
        /// True when the deadline may write its 408: no answer has begun.
        func deadline() -> Bool { claim(.deadline) }

        private func claim(_ side: Writer) -> Bool {
            state.withLock { s in
                if s.writer == .none { s.writer = side }
                return s.writer == side
            }
        }

        /// Starts a read: the iterator to read with, nil once released (the rest is `release`'s) or while the body's
        /// end was read.
        func beginRead(afterRelease: Bool = false) -> Source? {
            state.withLock { s in
                guard !s.reading, !s.ended, s.released == afterRelease else { return nil }
                s.reading = true
                if s.source == nil { s.source = Source(base.makeAsyncIterator()) }
                return s.source
            }
        }

        /// Ends a read; `ended`: the body's end was read (or all of its declared length). Wakes a `release` waiting.
        func endRead(ended: Bool) {
            let waiting = state.withLock { s in
                s.reading = false
                if ended { s.ended = true }
                defer { s.waiting = [] }
                return s.waiting
            }
            for w in waiting { w.resume() }
        }

        var isReleased: Bool { state.withLock { $0.released } }

        /// Hands the client connection back to the server once the answer is written (or failed): no upload read
        /// starts after this. When the body has not ended, the connection's input is closed (the server then reads no
        /// further request on it and closes it once the answer is out), the read under way is waited for, and what
        /// is left (parts already received, then the end of input, which the parser reports as an error) is read
        /// here, so that the server's own read finds the stream finished instead of answering that error with a
        /// second response. Idempotent.
        func release(_ channel: (any Channel)?) async {
            let ended = state.withLock { s in
                s.released = true
                return s.ended
            }
            if !ended, let channel {
                let closed = channel.eventLoop.makePromise(of: Void.self)
                channel.close(mode: .input, promise: closed)
                // A channel that cannot close its input alone is closed whole (the drain below must end).
                closed.futureResult.whenFailure { _ in channel.close(promise: nil) }
            }
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s in
                    if !s.reading { return true }
                    s.waiting.append(done)
                    return false
                }
                if now { done.resume() }
            }
            guard channel != nil, let source = beginRead(afterRelease: true) else { return }
            while true {
                do { if try await source.iterator.next() == nil { break } } catch { break }
            }
            endRead(ended: true)
        }
    }

    /// The deadline's task: cancelled once the body ended, failed, or its iterator is gone. Past an answer that has
    /// begun it closes the connection instead of writing a 408 into it.
    final class Deadline: Sendable {
        let task: Task<Void, Never>
        init(_ timeout: Duration, _ channel: (any Channel)?, _ gate: Gate) {
            task = Task {
                try? await Task.sleep(for: timeout)
                guard !Task.isCancelled else { return }
                guard gate.deadline() else {
                    channel?.close(promise: nil)
                    return
                }
                RequestBodyReader.abandon(channel, APIError(.requestTimeout, "body-timeout", "the request body did not arrive within \(timeout)"))
            }
        }
        deinit { task.cancel() }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var seen = 0
        let limit: Int
        let length: Int64?
        let timeout: Duration
        let channel: (any Channel)?
        let gate: Gate
        var deadline: Deadline?

        /// - Throws: `APIError.tooLarge` past the limit; `CancellationError` once the gate was released (the rest of
        ///   the body is not the upstream's: it already answered).
        mutating func next() async throws -> ByteBuffer? {
            guard let source = gate.beginRead() else {
                if gate.isReleased { throw CancellationError() }
                return nil // the end was read
            }
            if deadline == nil, channel != nil { deadline = Deadline(timeout, channel, gate) }
            let chunk: ByteBuffer?
            do { chunk = try await source.iterator.next() } catch {
                gate.endRead(ended: false)
                deadline?.task.cancel()
                throw error
            }
            // All of a declared length counts as the end: the server reads the end part itself, at once.
            let total = Int64(seen + (chunk?.readableBytes ?? 0))
            gate.endRead(ended: chunk == nil || length.map { total >= $0 } == true)
            if gate.isReleased {
                deadline?.task.cancel()
                throw CancellationError()
            }
            guard let chunk else {
                deadline?.task.cancel()
                return nil
            }
            seen += chunk.readableBytes
            if seen > limit {
                deadline?.task.cancel()
                throw APIError.tooLarge(limit)
            }
            if let length, seen >= length { deadline?.task.cancel() }
            return chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(limit: limit, length: length, timeout: timeout, channel: channel, gate: gate)
    }
}
