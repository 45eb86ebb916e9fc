// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Keeps the number of open connections at or below a limit without letting idle connections lock others out.
///
/// Every connection registers itself when it opens and leaves when it closes. A connection is idle while no request
/// is being read or answered on it. When a new connection would go over the limit, the connection idle for longest
/// is closed to make room; when none is idle, the slowest of those receiving a request body too slowly, once
/// `slowReceiveGrace` has passed since its head: below `minimumBodyRate`, or at a rate that cannot bring the length
/// its head declared within the body time-out, or, without a declared length (chunked), below `chunkedBodyRate` (a
/// byte every few seconds kept such a request busy for the whole body time-out, and so did 300 bytes a second of a
/// 60 kB body: reconnecting clients kept the host full, `/healthz` and the admin API locked out); then the oldest
/// upgraded connection (a proxied WebSocket: busy for as long as it lasts, closed for room only when nothing else can
/// be, so that a flood of bare connections never closes one, while a flood of WebSockets cannot lock `/healthz`
/// out); when there is none of those either, the new connection is closed at once. A flood of requests being
/// answered is bounded.
/// Thread-safe: connections live on several event loops; their bookkeeping is behind one lock.
final class ConnectionLimiter: Sendable {
    let limit: Int
    /// How long a connection may stay unable to take more of its answers (its client reads nothing) before it is
    /// closed: such a connection is busy for ever, and enough of them would leave nothing idle to close for a new one.
    let stallTimeout: TimeAmount
    /// How long after its head a request body must arrive at `minimumBodyRate` on average, or its connection may be
    /// closed to make room for a new one (only when the limit is reached and nothing is idle).
    let slowReceiveGrace: TimeAmount
    /// Bytes a second (Kestrel's default: 240).
    let minimumBodyRate: Int
    /// How long after its head a body twice too slow may be closed for room (see `slowestReceiver`): long enough for
    /// a client that waits a second for `100 Continue` before it sends (curl).
    static let quickGrace = TimeAmount.seconds(2)
    /// How long a request body may take to arrive whole (`--body-timeout`); nil: no bound known here.
    let bodyTimeout: TimeAmount?
    /// Bytes a second below which a body without a declared length may be closed for room: `--max-body` per
    /// `--body-timeout`, at most 64 KiB a second.
    let chunkedBodyRate: Double

    private struct Entry {
        let channel: any Channel
        var busy: Int
        var idleSince: UInt64
        /// When the body being received started (its request's head was read), in uptime nanoseconds, and how many of
        /// its bytes arrived since; nil when no body is arriving.
        var receivingSince: UInt64?
        var received = 0
        /// The body's length as its head declared it; nil when it declared none (chunked).
        var expected: Int?
        /// Upgraded (a WebSocket), at this tick.
        var upgraded: UInt64?
    }

    private struct Table {
        var entries: [ObjectIdentifier: Entry] = [:]
        var tick: UInt64 = 0
    }

    private let table = Mutex(Table())

    init(limit: Int, stallTimeout: TimeAmount = .seconds(30), slowReceiveGrace: TimeAmount = .seconds(5), minimumBodyRate: Int = 240,
         bodyTimeout: TimeAmount? = nil, maxBody: Int? = nil) {
        self.limit = max(1, limit)
        self.stallTimeout = stallTimeout
        self.slowReceiveGrace = slowReceiveGrace
        self.minimumBodyRate = minimumBodyRate
        self.bodyTimeout = bodyTimeout
        let seconds = bodyTimeout.map { Double($0.nanoseconds) / 1e9 } ?? 0
        chunkedBodyRate = min(65_536, max(Double(minimumBodyRate), seconds > 0 ? Double(maxBody ?? 0) / seconds : 0))
    }

    /// The number of open connections (for tests and metrics).
    var count: Int { table.withLock { $0.entries.count } }

    /// Admits `channel`; returns false when it must be closed (the limit is reached and nothing is idle). A channel
    /// already admitted stays as it is.
    func open(_ channel: any Channel) -> Bool {
        let victim = table.withLock { t -> (any Channel)?? in
            if t.entries[ObjectIdentifier(channel)] != nil { return .some(nil) }
            var victim: (any Channel)?
            if t.entries.count >= limit {
                guard let room = t.entries.filter({ $0.value.busy == 0 }).min(by: { $0.value.idleSince < $1.value.idleSince })?.key
                        ?? slowestReceiver(t.entries)
                        ?? t.entries.filter({ $0.value.upgraded != nil }).min(by: { ($0.value.upgraded ?? 0) < ($1.value.upgraded ?? 0) })?.key,
                      let entry = t.entries.removeValue(forKey: room) else { return .none }
                victim = entry.channel
            }
            t.tick += 1
            t.entries[ObjectIdentifier(channel)] = Entry(channel: channel, busy: 0, idleSince: t.tick)
            return .some(victim)
        }
        guard let victim else { return false }
        victim?.close(promise: nil)
        return true
    }

    /// The connection receiving a body too slowly (averaged since its head, once `slowReceiveGrace` has passed: below
    /// `minimumBodyRate`; too slowly to bring its declared length within `bodyTimeout`; without one, below
    /// `chunkedBodyRate`; or twice as slowly once `quickGrace` has passed) at the lowest rate, if any.
    private func slowestReceiver(_ entries: [ObjectIdentifier: Entry]) -> ObjectIdentifier? {
        let now = NIODeadline.now().uptimeNanoseconds, grace = UInt64(max(0, slowReceiveGrace.nanoseconds))
        let limit = bodyTimeout.map { Double($0.nanoseconds) / 1e9 }
        let quick = UInt64(max(0, min(slowReceiveGrace, Self.quickGrace).nanoseconds))
        var slowest: (key: ObjectIdentifier, rate: Double)?
        for (key, e) in entries {
            guard let since = e.receivingSince, now > since, now - since >= quick else { continue }
            let elapsed = Double(now - since) / 1e9, rate = Double(e.received) / elapsed
            // Past the grace, too slow; within it (after `quickGrace`), twice as slow: a client that reconnects
            // at once after each close would otherwise keep every place inside its grace.
            let margin = now - since >= grace ? 1.0 : 2.0
            let tooSlow: Bool
            if rate * margin < Double(minimumBodyRate) {
                tooSlow = true
            } else if let expected = e.expected {
                // At this rate, the rest arrives after the body time-out: the request fails anyway (408).
                tooSlow = limit.map { elapsed + Double(max(0, expected - e.received)) / rate > $0 * margin } ?? false
            } else {
                tooSlow = rate * margin < chunkedBodyRate
            }
            if tooSlow, rate < slowest?.rate ?? .infinity { slowest = (key, rate) }
        }
        return slowest?.key
    }

    func close(_ channel: any Channel) {
        table.withLock { _ = $0.entries.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// A request's head was read; `receiving`: it has a body, still to come, of `expected` bytes (nil: not declared).
    func requestStarted(_ channel: any Channel, receiving: Bool = false, expected: Int? = nil) {
        let now = receiving ? NIODeadline.now().uptimeNanoseconds : nil
        table.withLock { t in
            guard var e = t.entries[ObjectIdentifier(channel)] else { return }
            e.busy += 1
            (e.receivingSince, e.received, e.expected) = (now, 0, receiving ? expected : nil)
            t.entries[ObjectIdentifier(channel)] = e
        }
    }

    /// `count` more bytes of the body being received arrived.
    func bodyReceived(_ channel: any Channel, _ count: Int) {
        table.withLock { $0.entries[ObjectIdentifier(channel)]?.received += count }
    }

    /// The body being received arrived whole.
    func requestReceived(_ channel: any Channel) {
        table.withLock { $0.entries[ObjectIdentifier(channel)]?.receivingSince = nil }
    }

    /// The connection was upgraded (a WebSocket): busy for as long as it lasts.
    func upgraded(_ channel: any Channel) {
        table.withLock { t in
            guard var e = t.entries[ObjectIdentifier(channel)] else { return }
            t.tick += 1
            (e.busy, e.upgraded) = (e.busy + 1, t.tick)
            t.entries[ObjectIdentifier(channel)] = e
        }
    }

    func responseEnded(_ channel: any Channel) {
        table.withLock { t in
            t.tick += 1
            let tick = t.tick
            guard var e = t.entries[ObjectIdentifier(channel)] else { return }
            e.busy = max(0, e.busy - 1)
            e.idleSince = tick
            t.entries[ObjectIdentifier(channel)] = e
        }
    }

    /// The handler that admits a connection from its first byte, before it is known to be HTTP or a WebSocket; it
    /// sits first in the pipeline. `handler()` then counts its requests.
    func admission() -> Admission { Admission(limiter: self) }

    final class Admission: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let limiter: ConnectionLimiter
        private var registered = false
        /// While the connection cannot take more of what is written to it: the check that closes it if that lasts.
        private var stallCheck: Scheduled<Void>?

        init(limiter: ConnectionLimiter) { self.limiter = limiter }

        func handlerAdded(context: ChannelHandlerContext) {
            if context.channel.isActive { admit(context) }
        }

        func channelActive(context: ChannelHandlerContext) {
            admit(context)
            context.fireChannelActive()
        }

        private func admit(_ context: ChannelHandlerContext) {
            guard !registered else { return }
            registered = true
            if !limiter.open(context.channel) { context.close(promise: nil) }
        }

        /// A client that stops reading its answers (the socket's buffers full, NIO's pending writes over their high
        /// mark) is closed once that has lasted `stallTimeout`; one that reads again in time is left alone.
        func channelWritabilityChanged(context: ChannelHandlerContext) {
            if context.channel.isWritable {
                stallCheck?.cancel()
                stallCheck = nil
            } else if stallCheck == nil {
                let channel = context.channel
                stallCheck = context.eventLoop.scheduleTask(in: limiter.stallTimeout) {
                    if !channel.isWritable { channel.close(promise: nil) }
                }
            }
            context.fireChannelWritabilityChanged()
        }

        func channelInactive(context: ChannelHandlerContext) {
            stallCheck?.cancel()
            stallCheck = nil
            limiter.close(context.channel)
            context.fireChannelInactive()
        }
    }
}
