// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import NIOCore
import NIOHTTP1

/// Answers 400 `bad-host` to a request whose head has more than one `Host`, or an HTTP/1.1 one with none (RFC 9112
/// 3.2: a server must), and closes the connection. The conversion to HTTP types takes the first `Host` as the
/// request's authority, which the DNS-rebinding check (`HostCheck`) then reads, while a proxy in front may have read
/// another; an HTTP/1.1 request without one names no site at all. HTTP/1.0 requests may come without one.
/// Event-loop bound, like every channel handler; one per connection, before the conversion to HTTP types.
final class HostHeaderCheck: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// The request refused: its body parts are dropped until the connection closes.
    private var refusing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refusing else { return }
        guard case let .head(head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        var hosts = 0
        for (name, _) in head.headers where name.utf8.count == 4 && name.lowercased() == "host" { hosts += 1 }
        guard hosts > 1 || (hosts == 0 && head.version == .http1_1) else { return context.fireChannelRead(data) }
        refusing = true
        let text = hosts == 0 ? "an HTTP/1.1 request must name its host (Host)" : "a request names one host (Host), not \(hosts)"
        let body = #"{"error":{"code":"bad-host","message":"\#(text)"}}"#
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8"), ("Connection", "close")])
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .badRequest, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }
}
