// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import NIOCore
import NIOHTTP1

/// Reads each request head before the conversion to HTTP types, for two rules of RFC 9112 that the conversion loses.
///
/// **One `Host`.** A request whose head has more than one `Host`, or an HTTP/1.1 one with none (RFC 9112 3.2: a
/// server must refuse it), is answered 400 `bad-host` and its connection closed. The conversion takes the first `Host`
/// as the request's authority, which the DNS-rebinding check (`HostCheck`) then reads, while a proxy in front may have
/// read another; an HTTP/1.1 request without one names no site at all. HTTP/1.0 requests may come without one.
///
/// **`Connection: close` in one form.** Hummingbird closes a connection after an answer only when the request's
/// `Connection` header is exactly `close`. HTTP/1.1 reads it as a case-insensitive list of tokens (RFC 9110 7.6.1),
/// and an HTTP/1.0 request without `keep-alive` ends its connection too (RFC 9112 9.3): `Connection: Close`,
/// `Connection: close, Upgrade` or a bare HTTP/1.0 request left the connection open after the answer, and a client
/// reading to the end of the answer's connection waited for the idle time-out. NIO's `isKeepAlive` reads both rules;
/// a request it finds not kept alive gets `Connection: close` in place of what it had (the other connection tokens
/// name hop-by-hop headers, which the conversion to HTTP types drops either way).
///
/// Event-loop bound, like every channel handler; one per connection, before the conversion to HTTP types.
final class ConnectionClose: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// The request was refused (`bad-host`): its body parts are dropped until the connection closes.
    private var refusing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refusing else { return }
        guard case var .head(head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        let hosts = Self.hostCount(head.headers)
        if hosts > 1 || (hosts == 0 && head.version == .http1_1) { return refuse(head, hosts: hosts, context: context) }
        // The common request first, with no parsing of tokens: HTTP/1.1 without a Connection header is kept alive.
        guard head.version != .http1_1 || head.headers.contains(name: "connection"), !head.isKeepAlive,
              head.headers[canonicalForm: "connection"] != ["close"] else { return context.fireChannelRead(data) }
        head.headers.replaceOrAdd(name: "connection", value: "close")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// How many `Host` fields `headers` has (compared without case, and without making a lowercased copy).
    private static func hostCount(_ headers: HTTPHeaders) -> Int {
        var count = 0
        for (name, _) in headers where name.utf8.count == 4
            && zip(name.utf8, "host".utf8).allSatisfy({ $0 | 0x20 == $1 }) { count += 1 }
        return count
    }

    private func refuse(_ head: HTTPRequestHead, hosts: Int, context: ChannelHandlerContext) {
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
