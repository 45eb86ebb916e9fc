// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

/// Keel's HTTP/1.1 connection: Hummingbird's HTTP/1 channel, plus WebSocket upgrades for the apps plugins proxy.
///
/// The first request of a connection that asks for a WebSocket is offered to `WebSocketProxy.prepare`: it upgrades
/// only a request the proxy accepts (a proxied prefix, the auth chain passed, the upstream's own WebSocket open).
/// A refused handshake is answered with the refusal's status and stable error code (401/403/404, 400 `bad-path`,
/// 502 `upstream-unavailable`, 504 `upstream-timeout`) and the connection is closed; every other request is served
/// as plain HTTP by the router.
/// The connection limiter counts a connection from its first byte, upgraded or not.
struct KeelHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    enum Negotiated: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// A WebSocket handshake that was not upgraded (its request head was consumed by the upgrade attempt).
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case webSocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, WebSocketProxy.Session)
    }

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let http1: HTTP1Channel.Configuration
    let limiter: ConnectionLimiter
    let webSockets: WebSocketProxy

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let webSockets = self.webSockets, http1 = self.http1
            try channel.pipeline.syncOperations.addHandler(limiter.admission())
            // Until the first request head is read, the idle timeout is kept here (Hummingbird's handler comes after).
            let deadline = http1.idleTimeout.map { NIOLoopBound(FirstRequestDeadline($0), eventLoop: channel.eventLoop) }
            if let deadline { try channel.pipeline.syncOperations.addHandler(deadline.value) }
            let attempted = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<Negotiated>(
                maxFrameSize: WebSocketProxy.maxFrameSize,
                shouldUpgrade: { channel, head in
                    attempted.value = true
                    let promise = channel.eventLoop.makePromise(of: HTTPHeaders?.self)
                    promise.completeWithTask { await webSockets.prepare(head, channel: channel) }
                    return promise.futureResult
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        if let deadline { channel.pipeline.syncOperations.removeHandler(deadline.value, promise: nil) }
                        guard let session = webSockets.takeSession(for: channel) else { throw ChannelError.inappropriateOperationForState }
                        // Busy for as long as it lasts: an open WebSocket is in use, closed for room only when nothing
                        // else can be (its frames never pass the per-request handler that would say it is).
                        limiter.upgraded(channel)
                        do {
                            let frames = try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(
                                wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                            return .webSocket(frames, session)
                        } catch {
                            session.finish()  // the app's connection is not left open
                            throw error
                        }
                    }
                })
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration<Negotiated>(upgraders: [upgrader], notUpgradingCompletionHandler: { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let deadline { channel.pipeline.syncOperations.removeHandler(deadline.value, promise: nil) }
                    try channel.pipeline.syncOperations.addHandler(ConnectionClose())
                    try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                    try channel.pipeline.syncOperations.addHandlers(http1.additionalChannelHandlers())
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .nanoseconds($0.nanoseconds) }, logger: logger))
                    let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                    return attempted.value ? .refused(http) : .http(http)
                }
            })
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Negotiated>(upgradeConfiguration: upgrades)
            configuration.enablePipelining = false  // NIOAsyncChannel reads one request at a time
            configuration.enableErrorHandling = false  // Hummingbird answers parse errors
            configuration.enableResponseHeaderValidation = false  // HTTPTypes validates
            configuration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            configuration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            configuration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            let upgradeHandler = try channel.pipeline.syncOperations.handler(type: NIOTypedHTTPServerUpgradeHandler<Negotiated>.self)
            try channel.pipeline.syncOperations.addHandler(IgnoredUpgrade(), position: .before(upgradeHandler))
            try channel.pipeline.syncOperations.addHandler(FirstRequestParseError(), position: .before(upgradeHandler))
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    /// Answers `error` as JSON (like `APIError.response`) and closes the connection.
    static func answer(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, _ error: APIError) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(["error": ["code": error.code, "message": error.message]])) ?? Data()
        try await http.executeThenClose { _, outbound in
            let head = HTTPResponse(status: error.status, headerFields: [
                .contentType: "application/json; charset=utf-8", .cacheControl: "no-store", .contentLength: "\(body.count)",
                .connection: "close",
            ])
            try await outbound.write(.head(head))
            try await outbound.write(.body(ByteBuffer(bytes: body)))
            try await outbound.write(.end(nil))
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case let .http(http): await handleHTTP(asyncChannel: http, logger: logger)
            case let .refused(http):
                let refusal = webSockets.takeRefusal(for: value.channel)
                    ?? APIError(.badRequest, "bad-websocket-handshake", "this path does not take WebSocket handshakes")
                try await Self.answer(http, refusal)
            case let .webSocket(frames, session): await session.relay(frames)
            }
        } catch {
            // NIO failed the negotiation (a handshake with a body: `invalidHTTPOrdering`), or the client left: the
            // connection is closed, not left open with nothing to answer on it until the client gives up.
            logger.debug("connection ended before its first request was handled: \(error)")
            value.channel.close(promise: nil)
        }
    }
}

/// Takes an `Upgrade` header that names no WebSocket (h2c, TLS, anything Keel does not speak), or a WebSocket
/// handshake NIO's upgrader would refuse (no `Sec-WebSocket-Key`, a `Sec-WebSocket-Version` other than 13), off a
/// connection's first request before NIO's upgrade handler sees it: that handler consumes the head of a request whose
/// upgrade no upgrader takes, so the request went unanswered (`curl --http2 http://...` got an empty reply; so did a
/// handshake without its key). Without it the request is served as the plain HTTP request it also is (a server may
/// ignore `Upgrade`, RFC 9110 7.8). Removes itself after the first request head. Event-loop bound, like every
/// channel handler.
final class IgnoredUpgrade: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    /// True when `headers` ask for a WebSocket the way NIO's upgrader takes: a key, and version 13.
    static func completeWebSocketHandshake(_ headers: HTTPHeaders) -> Bool {
        headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            && headers[canonicalForm: "sec-websocket-key"].count == 1 && headers.first(name: "sec-websocket-key")?.isEmpty == false
            && headers[canonicalForm: "sec-websocket-version"] == ["13"]
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case var .head(head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        if head.headers.contains(name: "upgrade"), !Self.completeWebSocketHandshake(head.headers) {
            head.headers.remove(name: "upgrade")
            context.fireChannelRead(wrapInboundOut(.head(head)))
        } else {
            context.fireChannelRead(data)
        }
        // Only the first request meets the upgrade handler; after a WebSocket upgrade no HTTP part passes here.
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Answers a connection's first request that NIO's parser refuses (an unknown method such as `curl -X FOO`, a header
/// line without a colon) with 400 `bad-request` and closes the connection. Until the first head is read, NIO's
/// upgrade handler is the last handler and ignores parse errors, so such a request went unanswered until the idle
/// time-out; later requests of a connection are answered by Hummingbird's own handling. Removes itself after the
/// first request head. Event-loop bound, like every channel handler.
final class FirstRequestParseError: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private var answered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
        if case .head = unwrapInboundIn(data) { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parse = error as? HTTPParserError else { return context.fireErrorCaught(error) }
        guard !answered else { return }
        answered = true
        let what = parse == .invalidMethod ? "its method is not an HTTP method Keel knows" : "it is not valid HTTP/1.1 (\(parse))"
        let body = ByteBuffer(string: #"{"error":{"code":"bad-request","message":"the request could not be read: "# + what + #""}}"#)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json; charset=utf-8")
        headers.add(name: "content-length", value: "\(body.readableBytes)")
        headers.add(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Closes a connection whose first request head has not arrived within `timeout` (an idle or slow-header client);
/// removed once the head is read. Event-loop bound, like every channel handler.
final class FirstRequestDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let timeout: TimeAmount
    private var task: Scheduled<Void>?

    init(_ timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard task == nil else { return }
        let channel = context.channel
        task = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { task?.cancel() }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        context.fireChannelInactive()
    }
}
