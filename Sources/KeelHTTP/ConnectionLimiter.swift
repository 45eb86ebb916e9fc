// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Keeps the number of open connections at or below a limit without letting idle connections lock others out.
///
/// Every connection registers itself when it opens and leaves when it closes. A connection is idle while no request
/// is being read or answered on it. When a new connection would go over the limit, the connection idle for longest
/// is closed to make room; when none is idle, the one that has been receiving a request (its head read, not yet its
/// whole body) for longest is, once that has lasted `slowReceiveGrace`; when there is none of those either, the new
/// connection is closed at once. So a flood of idle connections (up to the descriptor limit) cannot stop `/healthz`
/// or the admin API from answering, nor can a flood of requests whose bodies trickle in (a byte every few seconds
/// kept them busy for the whole body time-out, and reconnecting kept the host full); a flood of requests being
/// answered is bounded. An upgraded connection (a proxied WebSocket) counts as busy: it is never closed for room.
/// Thread-safe: connections live on several event loops; their bookkeeping is behind one lock.
final class ConnectionLimiter: Sendable {
    let limit: Int
    /// How long a connection may stay unable to take more of its answers (its client reads nothing) before it is
    /// closed: such a connection is busy for ever, and enough of them would leave nothing idle to close for a new one.
    let stallTimeout: TimeAmount
    /// How long a request may take to arrive whole before its connection may be closed to make room for a new one
    /// (only when the limit is reached and nothing is idle).
    let slowReceiveGrace: TimeAmount

    private struct Entry {
        let channel: any Channel
        var busy: Int
        var idleSince: UInt64
        /// When the request being received started (its head was read), in uptime nanoseconds; nil when none is.
        var receivingSince: UInt64?
    }

    private struct Table {
        var entries: [ObjectIdentifier: Entry] = [:]
        var tick: UInt64 = 0
    }

    private let table = Mutex(Table())

    init(limit: Int, stallTimeout: TimeAmount = .seconds(30), slowReceiveGrace: TimeAmount = .seconds(5)) {
        self.limit = max(1, limit)
        self.stallTimeout = stallTimeout
        self.slowReceiveGrace = slowReceiveGrace
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
                let slow = NIODeadline.now().uptimeNanoseconds - UInt64(max(0, slowReceiveGrace.nanoseconds))
                let room = t.entries.filter({ $0.value.busy == 0 }).min(by: { $0.value.idleSince < $1.value.idleSince })
                    ?? t.entries.filter({ ($0.value.receivingSince ?? .max) <= slow })
                        .min(by: { ($0.value.receivingSince ?? .max) < ($1.value.receivingSince ?? .max) })
                guard let room else { return .none }
                victim = room.value.channel
                t.entries[room.key] = nil
            }
            t.tick += 1
            t.entries[ObjectIdentifier(channel)] = Entry(channel: channel, busy: 0, idleSince: t.tick)
            return .some(victim)
        }
        guard let victim else { return false }
        victim?.close(promise: nil)
        return true
    }

    func close(_ channel: any Channel) {
        table.withLock { _ = $0.entries.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// A request's head was read (`receiving`: its body is still to come), or a connection was upgraded (not).
    func requestStarted(_ channel: any Channel, receiving: Bool = false) {
        let now = receiving ? NIODeadline.now().uptimeNanoseconds : nil
        table.withLock { t in
            guard var e = t.entries[ObjectIdentifier(channel)] else { return }
            e.busy += 1
            e.receivingSince = now
            t.entries[ObjectIdentifier(channel)] = e
        }
    }

    /// The request being received arrived whole.
    func requestReceived(_ channel: any Channel) {
        table.withLock { $0.entries[ObjectIdentifier(channel)]?.receivingSince = nil }
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

    /// The per-connection handler that reports to this limiter. It sits after the HTTP codec, so it sees request
    /// heads and response ends.
    func handler() -> Handler { Handler(limiter: self) }

    final class Handler: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPRequestPart
        typealias InboundOut = HTTPRequestPart
        typealias OutboundIn = HTTPResponsePart
        typealias OutboundOut = HTTPResponsePart

        let limiter: ConnectionLimiter
        private var registered = false

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
            if !limiter.open(context.channel) {
                registered = false
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            if registered { limiter.close(context.channel) }
            registered = false
            context.fireChannelInactive()
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            if registered { limiter.close(context.channel) }
            registered = false
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head: limiter.requestStarted(context.channel, receiving: true)
            case .end: limiter.requestReceived(context.channel)
            case .body: break
            }
            context.fireChannelRead(data)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .end = unwrapOutboundIn(data) { limiter.responseEnded(context.channel) }
            context.write(data, promise: promise)
        }
    }
}
