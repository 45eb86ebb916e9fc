// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Why an exchange with a plain-http upstream failed.
enum UpstreamFailure: Error, Sendable, CustomStringConvertible {
    /// No response head within the timeout.
    case timeout
    /// Refused, dropped, or not HTTP (e.g. a response head over the decoder's limits). `reused`: it happened on a
    /// kept-alive connection before any of the answer arrived, so a request without a body may be sent once more on a
    /// new connection (the upstream may have closed the idle connection just as it was taken). `cause`: what happened,
    /// for the log.
    case unavailable(reused: Bool, cause: String)

    var description: String {
        switch self {
        case .timeout: "no answer within the timeout"
        case let .unavailable(_, cause): cause
        }
    }
}

/// The body of an upstream's answer, as it arrives; reading it slowly slows the upstream connection down.
typealias UpstreamBody = NIOThrowingAsyncSequenceProducer<
    ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, UpstreamConnection.Demand>

/// An upstream's answer body: whole, when all of it came in the same read as the head (the usual case for small
/// answers: no stream to set up, and the server writes head, body and end at once), else streamed as it arrives.
enum UpstreamAnswer: Sendable {
    case complete(ByteBuffer)
    case streamed(UpstreamBody)
}

/// Kept-alive HTTP/1.1 connections to plain-http upstreams (the proxy's hot path; AsyncHTTPClient's per-request
/// work was most of the proxy's cost): one request per connection at a time, idle connections reused last-in
/// first-out, at most `maxIdle` idle per upstream and event loop and `maxIdleTotal` in all (each holds a descriptor,
/// which the connection limit does not count), each closed after `idleTimeout` unused.
/// Connections run on NIO's shared event loop group (the server's), each on the loop of the client connection that
/// asked for it (`loop`), so that the upstream's answer is read on the thread that writes it to the client. Thread-safe; `shutdown` closes the idle
/// connections.
final class UpstreamPool: Sendable {
    let maxIdle: Int
    let maxIdleTotal: Int
    let idleTimeout: TimeAmount
    /// Idle connections by upstream and event loop, and how many in all.
    private let idle = Mutex(Idle())

    private struct Idle {
        var byKey: [Key: [any Channel]] = [:]
        var total = 0
    }
    private let closed = Atomic<Bool>(false)

    struct Key: Hashable {
        let host: String
        let port: Int
        let loop: ObjectIdentifier
    }

    init(maxIdle: Int = 256, maxIdleTotal: Int = 256, idleTimeout: TimeAmount = .seconds(60)) {
        self.maxIdle = maxIdle
        self.maxIdleTotal = maxIdleTotal
        self.idleTimeout = idleTimeout
    }

    /// Sends `head` (then `body`, streamed, if any) and returns the answer's head and its body, whole or as it
    /// arrives. `loop`: the event loop to talk to the upstream on (the client connection's), any when nil.
    /// - Throws: `UpstreamFailure` (no answer head within `timeout`, or the upstream unreachable or not answering
    ///   HTTP). A failure of `body` (e.g. past the size limit) closes the connection: the upstream sees a cut request.
    func execute(host: String, port: Int, head: HTTPRequestHead, body: LimitedBody?, timeout: TimeAmount,
                 on loop: (any EventLoop)? = nil) async throws -> (HTTPResponseHead, UpstreamAnswer) {
        let loop = loop ?? MultiThreadedEventLoopGroup.singleton.next()
        var attempt = 0
        while true {
            attempt += 1
            let (channel, reused) = try await checkout(Key(host: host, port: port, loop: ObjectIdentifier(loop)), on: loop)
            let exchange = Exchange(head: head, bodyless: body == nil, timeout: timeout, reused: reused,
                                    promise: channel.eventLoop.makePromise())
            channel.writeAndFlush(UpstreamConnection.Outbound.start(exchange)).whenFailure { error in
                exchange.fail(.unavailable(reused: reused, cause: "the request could not be sent: \(error)"))
            }
            if let body {
                Task {
                    do {
                        for try await chunk in body {
                            try await channel.writeAndFlush(UpstreamConnection.Outbound.part(.body(.byteBuffer(chunk)))).get()
                        }
                        try await channel.writeAndFlush(UpstreamConnection.Outbound.part(.end(nil))).get()
                    } catch { channel.close(promise: nil) }
                }
            }
            do { return try await exchange.promise.futureResult.get() } catch UpstreamFailure.unavailable(reused: true, _) where attempt == 1 && body == nil {
                continue
            }
        }
    }

    /// Idle connections kept now, in all.
    var idleConnections: Int { idle.withLock { $0.total } }

    /// Closes the idle connections; connections in use close when their exchange ends.
    func shutdown() {
        closed.store(true, ordering: .sequentiallyConsistent)
        for channel in idle.withLock({ all in defer { all = Idle() }; return all.byKey.values.flatMap { $0 } }) { channel.close(promise: nil) }
    }

    private func checkout(_ key: Key, on loop: any EventLoop) async throws -> (any Channel, Bool) {
        while let channel = idle.withLock({ idle -> (any Channel)? in
            guard let channel = idle.byKey[key]?.popLast() else { return nil }
            idle.total -= 1
            return channel
        }) {
            if channel.isActive { return (channel, true) }
        }
        let handler = UpstreamConnection(idleTimeout: idleTimeout, onIdle: { [self] in checkin($0, key: key) },
                                         onClose: { [self] in forget($0, key: key) })
        do {
            let channel = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(5))
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: key.host, port: key.port).get()
            return (channel, false)
        } catch { throw UpstreamFailure.unavailable(reused: false, cause: "cannot connect: \(error)") }
    }

    private func checkin(_ channel: any Channel, key: Key) {
        let kept = !closed.load(ordering: .sequentiallyConsistent) && idle.withLock { idle -> Bool in
            guard idle.byKey[key, default: []].count < maxIdle, idle.total < maxIdleTotal else { return false }
            idle.byKey[key, default: []].append(channel)
            idle.total += 1
            return true
        }
        if !kept { channel.close(promise: nil) }
    }

    private func forget(_ channel: any Channel, key: Key) {
        idle.withLock { idle in
            let before = idle.byKey[key]?.count ?? 0
            idle.byKey[key]?.removeAll { $0 === channel }
            idle.total -= before - (idle.byKey[key]?.count ?? 0)
        }
    }
}

/// One request and its answer on an upstream connection. Created on any thread, then used on the connection's event
/// loop only, except `promise`, which is thread-safe.
final class Exchange: @unchecked Sendable {
    // @unchecked: the mutable state is touched on the connection's event loop only (the handler's callbacks and
    // futures of that loop).
    let head: HTTPRequestHead
    let bodyless: Bool
    let timeout: TimeAmount
    let reused: Bool
    let promise: EventLoopPromise<(HTTPResponseHead, UpstreamAnswer)>
    /// When the answer's head is due (set when the request starts on the connection).
    var deadline = NIODeadline.distantFuture
    /// The answer's head has arrived (it may not be handed on yet: see `pending`).
    var headArrived = false
    /// The head and the body so far, held until the read that brought them is over or the answer is complete.
    var pending: (head: HTTPResponseHead, body: ByteBuffer?)?
    /// The promise is completed.
    var answered = false
    var source: UpstreamBody.Source?
    var requestDone = false
    var responseDone = false

    init(head: HTTPRequestHead, bodyless: Bool, timeout: TimeAmount, reused: Bool,
         promise: EventLoopPromise<(HTTPResponseHead, UpstreamAnswer)>) {
        self.head = head
        self.bodyless = bodyless
        self.timeout = timeout
        self.reused = reused
        self.promise = promise
    }

    /// On the connection's loop: fails the answer if it has not come yet, else ends its body with an error.
    func fail(_ failure: UpstreamFailure) {
        if !answered {
            answered = true
            pending = nil
            promise.fail(failure)
        } else if !responseDone {
            responseDone = true
            source?.finish(failure)
        }
    }
}

/// The handler at the end of an upstream connection's pipeline: runs one `Exchange` at a time, holds reads back
/// while the answer's reader is behind, and hands the connection back (`onIdle`) once request and answer are both
/// complete and both sides keep it alive. Used on the connection's event loop only.
final class UpstreamConnection: ChannelDuplexHandler, @unchecked Sendable {
    // @unchecked: every method runs on the channel's event loop (handler callbacks, or hops with `execute`).
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Outbound
    typealias OutboundOut = HTTPClientRequestPart

    enum Outbound: Sendable {
        case start(Exchange)
        case part(HTTPClientRequestPart)
    }

    /// The answer's reader asking for more, or gone.
    struct Demand: NIOAsyncSequenceProducerDelegate {
        let connection: UpstreamConnection
        let exchange: Exchange
        let loop: any EventLoop

        func produceMore() { loop.execute { connection.resume(exchange) } }
        func didTerminate() { loop.execute { connection.readerGone(exchange) } }
    }

    let idleTimeout: TimeAmount
    let onIdle: @Sendable (any Channel) -> Void
    let onClose: @Sendable (any Channel) -> Void
    private var context: ChannelHandlerContext?
    private var exchange: Exchange?
    private var keepAlive = true
    private var paused = false
    private var pendingRead = false
    /// The connection's two timers, each armed at most once at a time and re-armed when it fires early, so that a
    /// kept-alive connection schedules no timer per request (scheduling and cancelling two per request cost more
    /// than the rest of the exchange's bookkeeping): `headTimer` for the answer's head (`Exchange.deadline`),
    /// `idleTimer` for the idle time-out (from `idleSince`).
    private var headTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    private var idleSince: NIODeadline?

    init(idleTimeout: TimeAmount, onIdle: @escaping @Sendable (any Channel) -> Void,
         onClose: @escaping @Sendable (any Channel) -> Void) {
        self.idleTimeout = idleTimeout
        self.onIdle = onIdle
        self.onClose = onClose
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case let .start(exchange):
            guard self.exchange == nil else {
                exchange.fail(.unavailable(reused: exchange.reused, cause: "the connection was still busy"))
                promise?.fail(ChannelError.inappropriateOperationForState)
                return
            }
            idleSince = nil
            self.exchange = exchange
            keepAlive = exchange.head.isKeepAlive
            exchange.deadline = .now() + exchange.timeout
            armHeadTimer(context.eventLoop, at: exchange.deadline)
            context.write(wrapOutboundOut(.head(exchange.head)), promise: exchange.bodyless ? nil : promise)
            if exchange.bodyless {
                exchange.requestDone = true
                context.write(wrapOutboundOut(.end(nil)), promise: promise)
            }
        case let .part(part):
            guard let exchange else {
                promise?.fail(ChannelError.ioOnClosedChannel)
                return
            }
            if case .end = part { exchange.requestDone = true }
            context.write(wrapOutboundOut(part), promise: promise)
            if exchange.requestDone && exchange.responseDone { finish(context) }
        }
    }

    /// An answer whose body passes this many bytes within the read that brought its head is streamed from there.
    static let wholeLimit = 64 * 1024

    /// The head is held until the end of the read that brought it: an answer complete by then is handed on whole,
    /// any other as a stream.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let exchange else { return }
        switch unwrapInboundIn(data) {
        case let .head(head):
            // A 101 was never asked for (`Upgrade` is hop-by-hop, not forwarded; WebSockets go through
            // `WebSocketProxy`): what follows it is not HTTP, and the decoder reads no more of the connection. The
            // exchange fails (502) and the connection is closed, never pooled.
            if head.status == .switchingProtocols {
                return close(context, cause: "the upstream switched protocols (101) though no upgrade was asked for")
            }
            // Informational answers (100 Continue, 103 Early Hints) precede the real one.
            guard head.status.code >= 200, !exchange.headArrived else { return }
            exchange.headArrived = true
            keepAlive = keepAlive && head.isKeepAlive
            exchange.pending = (head, nil)
        case var .body(chunk):
            if var pending = exchange.pending {
                exchange.pending = nil  // one reference to the held bytes, so that appending does not copy them
                if pending.body == nil { pending.body = chunk } else { pending.body?.writeBuffer(&chunk) }
                exchange.pending = pending
                if (pending.body?.readableBytes ?? 0) > Self.wholeLimit { stream(exchange, context) }
            } else if exchange.source?.yield(chunk) == .stopProducing {
                paused = true
            }
        case .end:
            let pending = exchange.pending
            exchange.pending = nil
            exchange.responseDone = true
            // Back in the pool before the answer's end reaches its reader, who may ask again at once (on another
            // thread): handed on first, the next request found no idle connection and opened one.
            let reusable = exchange.requestDone
            if reusable { finish(context) }
            if let pending {
                exchange.answered = true
                exchange.promise.succeed((pending.head, .complete(pending.body ?? ByteBuffer())))
            }
            exchange.source?.finish()
            if !reusable { close(context, cause: "answered before the request was sent whole") }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let exchange, exchange.pending != nil { stream(exchange, context) }
        context.fireChannelReadComplete()
    }

    /// Hands the answer on as a stream that starts with the body held so far.
    private func stream(_ exchange: Exchange, _ context: ChannelHandlerContext) {
        guard let pending = exchange.pending else { return }
        exchange.pending = nil
        let made = UpstreamBody.makeSequence(
            backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8), finishOnDeinit: false,
            delegate: Demand(connection: self, exchange: exchange, loop: context.eventLoop))
        exchange.source = made.source
        if let body = pending.body, made.source.yield(body) == .stopProducing { paused = true }
        exchange.answered = true
        exchange.promise.succeed((pending.head, .streamed(made.sequence)))
    }

    func read(context: ChannelHandlerContext) {
        if paused { pendingRead = true } else { context.read() }
    }

    /// A reset on a kept-alive connection before the answer may be retried; an answer that is not HTTP may not.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context, retry: !(error is HTTPParserError), cause: error is HTTPParserError ? "not an HTTP answer (\(error))" : "\(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let exchange {
            fail(exchange, .unavailable(reused: exchange.reused && !exchange.headArrived, cause: "the upstream closed the connection"))
        }
        headTimer?.cancel()
        headTimer = nil
        idleTimer?.cancel()
        idleTimer = nil
        onClose(context.channel)
        context.fireChannelInactive()
    }

    /// Both halves of the exchange are complete: the connection goes back to the pool, or closes.
    private func finish(_ context: ChannelHandlerContext) {
        exchange = nil
        unpause(context)
        guard keepAlive else { return close(context, cause: "not kept alive") }
        let now = NIODeadline.now()
        idleSince = now
        if idleTimer == nil { armIdleTimer(context.eventLoop, at: now + idleTimeout) }
        onIdle(context.channel)
    }

    /// Arms the head timer for `deadline` unless it is already armed for then or earlier (it re-arms itself then).
    private func armHeadTimer(_ loop: any EventLoop, at deadline: NIODeadline) {
        if let armed = headTimer {
            guard deadline < armedHeadDeadline else { return }
            armed.cancel()
        }
        armedHeadDeadline = deadline
        headTimer = loop.scheduleTask(deadline: deadline) { [self] in
            headTimer = nil
            // No exchange waiting for its head: nothing to time; the next exchange arms the timer again.
            guard let exchange, !exchange.headArrived, !exchange.answered else { return }
            if NIODeadline.now() >= exchange.deadline { fail(exchange, .timeout) } else { armHeadTimer(loop, at: exchange.deadline) }
        }
    }
    private var armedHeadDeadline = NIODeadline.distantFuture

    /// Arms the idle timer for `deadline`; when it fires, a connection idle for `idleTimeout` by then is closed, one
    /// used since is timed again from its last use.
    private func armIdleTimer(_ loop: any EventLoop, at deadline: NIODeadline) {
        idleTimer = loop.scheduleTask(deadline: deadline) { [self] in
            idleTimer = nil
            guard exchange == nil, let idleSince, let context else { return }
            if NIODeadline.now() >= idleSince + idleTimeout { context.close(promise: nil) } else { armIdleTimer(loop, at: idleSince + idleTimeout) }
        }
    }

    private func fail(_ exchange: Exchange, _ failure: UpstreamFailure) {
        exchange.fail(failure)
        guard self.exchange === exchange, let context else { return }
        close(context, cause: failure.description)
    }

    /// Closes the connection; the exchange in progress, if any, fails with `cause`.
    private func close(_ context: ChannelHandlerContext, retry: Bool = false, cause: String) {
        let current = exchange
        exchange = nil
        current?.fail(.unavailable(reused: retry && current?.reused == true && current?.headArrived == false, cause: cause))
        context.close(promise: nil)
    }

    private func unpause(_ context: ChannelHandlerContext) {
        paused = false
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }

    fileprivate func resume(_ exchange: Exchange) {
        guard self.exchange === exchange, let context else { return }
        unpause(context)
    }

    /// The answer's reader stopped before its end (the client went away): the rest of the answer is not wanted.
    fileprivate func readerGone(_ exchange: Exchange) {
        guard self.exchange === exchange, !exchange.responseDone, let context else { return }
        close(context, cause: "the client stopped reading the answer")
    }
}
