// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import NIOCore
import NIOHTTP1

/// Makes every request that ends its connection say so in the one form the HTTP server reads: `Connection: close`.
///
/// Hummingbird closes a connection after an answer only when the request's `Connection` header is exactly `close`.
/// HTTP/1.1 reads it as a case-insensitive list of tokens (RFC 9110 7.6.1), and an HTTP/1.0 request without
/// `keep-alive` ends its connection too (RFC 9112 9.3): `Connection: Close`, `Connection: close, Upgrade` or a bare
/// HTTP/1.0 request left the connection open after the answer, and a client reading to the end of the answer's
/// connection waited for the idle time-out. NIO's `isKeepAlive` reads both rules; a request it finds not kept alive
/// gets `Connection: close` in place of what it had (the other connection tokens name hop-by-hop headers, which the
/// conversion to HTTP types drops either way). Event-loop bound, like every channel handler; one per connection,
/// before the conversion to HTTP types.
final class ConnectionClose: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The common request first, with no parsing of tokens: HTTP/1.1 without a Connection header is kept alive.
        guard case var .head(head) = unwrapInboundIn(data),
              head.version != .http1_1 || head.headers.contains(name: "connection"), !head.isKeepAlive,
              head.headers[canonicalForm: "connection"] != ["close"] else { return context.fireChannelRead(data) }
        head.headers.replaceOrAdd(name: "connection", value: "close")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
