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
/// Once such an answer's head is written, no later request on the connection reaches the server: after the answered
/// request's end, every part is dropped (RFC 9112 9.6: a server that sent `close` processes no further request), and
/// so is an error of the parser (it would be answered after the answer). An answer is early only when it belongs to
/// the request whose body is arriving: with requests pipelined, NIO has read the next head before the first is
/// answered. A proxied app that answers an upload early has its request's input closed by `LimitedBody.Gate.release`:
/// that close is taken here (the server above sees the input end) while the rest is still read and dropped below, so
/// that the client is not reset either.
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
    /// How long the client may send nothing (no part of a request: a chunk's size line alone counts as nothing) before
    /// the connection is closed (nginx's `lingering_timeout`).
    let quietLimit: TimeAmount

    /// Request heads read whose answers have not ended.
    private var outstanding = 0
    /// The last request read has a body still arriving: its head declared one and its end has not been read.
    private var receiving = false
    /// The answer being written went out before its request's body arrived whole (it says `Connection: close`).
    private var early = false
    /// The early-answered request's end was read.
    private var answeredEnded = false
    /// Nothing read goes up any more: a request after the answered one, or anything once the input was closed for the
    /// server above.
    private var dropping = false
    /// The server above was told its input ended (`close(mode: .input)` taken here).
    private var inputClosedAbove = false
    /// The connection's input ended below (the client closed its side), or the parser failed after an early answer.
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
        if lingering || dropping {
            lastRead = .now()
            guard case .end = part, early, !answeredEnded else { return }
            // All of the answered request read: nothing is left to reset the connection with.
            answeredEnded = true
            if lingering { context.close(promise: nil) }
            return
        }
        switch part {
        case let .head(head):
            outstanding += 1
            receiving = head.headerFields[.contentLength].map { $0 != "0" } ?? (head.headerFields[.transferEncoding] != nil)
        case .body: break
        case .end:
            receiving = false
            // The answered request's end goes up (its reader may wait for it); what follows it does not.
            if early { (answeredEnded, dropping) = (true, true) }
        }
        context.fireChannelRead(data)
    }

    /// Once nothing goes up, the connection is read on although the server above reads no more (its buffer full
    /// holds back the reads it would ask for). The batch's end still goes up: the server above hands what it got
    /// (the answered request's end, read in the same batch) to its reader only then.
    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        if lingering || dropping { context.read() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputEnded = true
            if lingering { return context.close(promise: nil) }
            if inputClosedAbove { return }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A parse error once the answer went early (in the dropped rest, or a request after it) would be answered
        // above, after the answer: the connection closes instead, once the answer is written.
        if lingering { return context.close(promise: nil) }
        if early {
            (inputEnded, dropping) = (true, true)
            return
        }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case var .head(head) where !early && receiving && outstanding == 1 && head.status.kind != .informational:
            // The answer to the request whose body is arriving (with one request outstanding, the last one read).
            early = true
            head.headerFields[.connection] = "close"
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            outstanding = max(0, outstanding - 1)
            guard early else { return context.write(data, promise: promise) }
            // A promise of this event loop's: the callback below runs on it.
            let written = context.eventLoop.makePromise(of: Void.self)
            if let promise { written.futureResult.cascade(to: promise) }
            context.write(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { [self] result in
                guard case .success = result, !answeredEnded, !inputEnded, context.channel.isActive else { return context.close(promise: nil) }
                linger(context)
            }
        default:
            context.write(data, promise: promise)
        }
    }

    /// The input closed from above (a proxied upload whose app answered early, `LimitedBody.Gate.release`) while
    /// its body still arrives: the server above is told its input ended, and the rest is read and dropped here, so
    /// that the client, maybe still writing, is not reset before it reads the answer.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .input, early, !answeredEnded, !inputEnded else { return context.close(mode: mode, promise: promise) }
        promise?.succeed(())
        guard !inputClosedAbove else { return }
        (inputClosedAbove, dropping) = (true, true)
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        context.read()
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
