// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Ends a connection whose answer went before its request's body arrived whole, as nginx's lingering close does.
///
/// Such an answer (a 413, a refusal, an endpoint that takes no body, a proxied app answering an upload early) says
/// `Connection: close`. Once it is written, the connection's output is closed (the client reads the answer, then the
/// end of it), and what the client still sends is read and dropped here, unseen by the server above, until the
/// body's end, the end of the client's input, `quietLimit` without a byte, or `timeLimit` in all; then the connection
/// is closed. The bounds matter both ways:
/// - closed at once, with the client's bytes unread, the connection is reset, and a client still writing its body
///   (Python's urllib writes all of it before it reads anything) loses the answer;
/// - never closed, the rest of a keep-alive request's body was read for as long as the client sent it, and a
///   `Connection: close` request's rest was not read at all (the server reads no further on such a connection): its
///   client blocked writing until the idle time-out, then failed with a broken pipe, without the answer.
///
/// Event-loop bound, like every channel handler; one per connection, after the conversion to HTTP types (a request's
/// head, body and end are separate parts here).
final class LingeringClose: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// How long, in all, the rest of a body is read after the answer (the server's `--body-timeout`).
    let timeLimit: TimeAmount
    /// How long the client may send nothing before the connection is closed (nginx's `lingering_timeout`).
    let quietLimit: TimeAmount

    /// A request body is arriving: its head declared one and its end has not been read.
    private var receiving = false
    /// The answer being written went out before its request's body arrived whole (it says `Connection: close`).
    private var early = false
    /// The connection's input ended (the client closed its side, or the server closed the input).
    private var inputEnded = false
    /// The early answer is written: what arrives is dropped, and the connection closes at the first bound.
    private var lingering = false
    private var lingerStart = NIODeadline.now(), lastRead = NIODeadline.now()
    private var check: Scheduled<Void>?

    init(timeLimit: TimeAmount, quietLimit: TimeAmount = .seconds(5)) {
        self.timeLimit = timeLimit
        self.quietLimit = quietLimit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if lingering {
            lastRead = .now()
            // All of the body read: nothing is left to reset the connection with.
            if case .end = part { context.close(promise: nil) }
            return
        }
        switch part {
        case let .head(head):
            receiving = head.headerFields[.contentLength].map { $0 != "0" } ?? (head.headerFields[.transferEncoding] != nil)
        case .body: break
        case .end: receiving = false
        }
        context.fireChannelRead(data)
    }

    /// While lingering, the connection is read on although the server above reads no more (its buffer full holds
    /// back the reads it would ask for).
    func channelReadComplete(context: ChannelHandlerContext) {
        if lingering { return context.read() }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputEnded = true
            if lingering { return context.close(promise: nil) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A parse error in the dropped rest (or its input cut short) would be answered above, after the answer.
        if lingering { return context.close(promise: nil) }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case var .head(head) where receiving && !early && head.status.kind != .informational:
            early = true
            head.headerFields[.connection] = "close"
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end where early:
            early = false
            let written = promise ?? context.eventLoop.makePromise()
            context.write(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { [self] result in
                guard case .success = result, receiving, !inputEnded, context.channel.isActive else { return context.close(promise: nil) }
                linger(context)
            }
        default:
            context.write(data, promise: promise)
        }
    }

    private func linger(_ context: ChannelHandlerContext) {
        lingering = true
        (lingerStart, lastRead) = (.now(), .now())
        context.close(mode: .output, promise: nil)
        schedule(context)
        context.read()
    }

    /// Closes the connection at the first of the two bounds.
    private func schedule(_ context: ChannelHandlerContext) {
        let end = lingerStart + timeLimit
        check = context.eventLoop.assumeIsolated().scheduleTask(deadline: min(end, lastRead + quietLimit)) { [self] in
            check = nil
            let now = NIODeadline.now()
            if now >= end || now >= lastRead + quietLimit { context.close(promise: nil) } else { schedule(context) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
    }
}
