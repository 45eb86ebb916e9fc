// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import NIOCore
import NIOHTTPTypes

extension ConnectionLimiter {
    /// The per-connection handler that reports to this limiter, and ends a connection whose answer went before its
    /// request's body arrived whole (`LingeringClose`). It sits after the HTTP codec, so it sees request heads, bodies
    /// and ends, and answer parts.
    /// - Parameter lingerTime: how long the rest of such a body is read at most (the server's `--body-timeout`).
    func handler(lingerTime: TimeAmount = .seconds(30)) -> Handler { Handler(limiter: self, lingerTime: lingerTime) }

    /// Event-loop bound, like every channel handler; one per connection.
    final class Handler: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPRequestPart
        typealias InboundOut = HTTPRequestPart
        typealias OutboundIn = HTTPResponsePart
        typealias OutboundOut = HTTPResponsePart

        let limiter: ConnectionLimiter
        private var registered = false
        /// A request body is arriving (its head said it has one, its end is not read yet). Event loop only.
        private var receiving = false
        private var linger: LingeringClose
        private var lingerCheck: Scheduled<Void>?

        init(limiter: ConnectionLimiter, lingerTime: TimeAmount) {
            self.limiter = limiter
            linger = LingeringClose(timeLimit: lingerTime)
        }

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
            lingerCheck?.cancel()
            lingerCheck = nil
            context.fireChannelInactive()
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            if registered { limiter.close(context.channel) }
            registered = false
            lingerCheck?.cancel()
            lingerCheck = nil
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let part = unwrapInboundIn(data)
            if linger.isDropping {
                if linger.dropped(part) { context.close(promise: nil) }
                return
            }
            // Only a request with a body is timed (a GET costs the one lock it did).
            switch part {
            case let .head(head):
                let length = head.headerFields[.contentLength]
                receiving = length.map { $0 != "0" } ?? (head.headerFields[.transferEncoding] != nil)
                limiter.requestStarted(context.channel, receiving: receiving, expected: length.flatMap { Int($0) })
                linger.headRead()
            case let .body(bytes): if receiving { limiter.bodyReceived(context.channel, bytes.readableBytes) }
            case .end:
                if receiving { limiter.requestReceived(context.channel) }
                receiving = false
                linger.endRead()
            }
            context.fireChannelRead(data)
        }

        /// The batch's end goes up always: the server above hands what it got (the answered request's end, read in
        /// the same batch as what is dropped after it) to its reader only then.
        func channelReadComplete(context: ChannelHandlerContext) {
            context.fireChannelReadComplete()
            if linger.isDropping { context.read() }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                switch linger.inputClosed() {
                case .close: return context.close(promise: nil)
                case .swallow: return
                case .forward: break
                }
            }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            switch linger.error() {
            case .close: context.close(promise: nil)
            case .swallow: break
            case .forward: context.fireErrorCaught(error)
            }
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            let part = unwrapOutboundIn(data)
            if case .end = part {
                limiter.responseEnded(context.channel)
                guard linger.answerEnd() else { return context.write(data, promise: promise) }
                // A promise of this event loop's: the callback below runs on it.
                let written = context.eventLoop.makePromise(of: Void.self)
                if let promise { written.futureResult.cascade(to: promise) }
                context.write(data, promise: written)
                written.futureResult.assumeIsolated().whenComplete { [self] result in
                    guard case .success = result, linger.restToRead, context.channel.isActive else { return context.close(promise: nil) }
                    startLingering(context)
                }
                return
            }
            if receiving, case var .head(head) = part, linger.answerHead(informational: head.status.kind == .informational, receiving: receiving) {
                head.headerFields[.connection] = "close"
                return context.write(wrapOutboundOut(.head(head)), promise: promise)
            }
            context.write(data, promise: promise)
        }

        /// The input closed from above while an early-answered body still arrives: taken here (`LingeringClose`).
        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            guard mode == .input, linger.takesInputClose() else { return context.close(mode: mode, promise: promise) }
            promise?.succeed(())
            guard linger.toldAbove() else { return }
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            context.read()
        }

        private func startLingering(_ context: ChannelHandlerContext) {
            linger.startLingering()
            context.close(mode: .output, promise: nil)
            scheduleLingerCheck(context)
            context.read()
        }

        /// Closes the connection at the first of the linger's bounds.
        private func scheduleLingerCheck(_ context: ChannelHandlerContext) {
            lingerCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: linger.deadline) { [self] in
                lingerCheck = nil
                if linger.expired(at: .now()) { context.close(promise: nil) } else { scheduleLingerCheck(context) }
            }
        }
    }
}
