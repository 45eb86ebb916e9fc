// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// The app's side of a proxied WebSocket: one connection to the upstream, held by Keel from its first byte, so that
/// no outcome of the handshake leaves it open: an app that refuses the upgrade, answers it wrongly (no 101, a wrong or
/// missing `Sec-WebSocket-Accept`, no `Upgrade: websocket`) or not within the timeout has its connection closed at
/// once, and a session that ends before its relay starts closes it too (`WebSocketProxy.Session`).
///
/// After the handshake the connection carries `WebSocketFrame`s through `frames` (at most `maxFrameSize` bytes each;
/// a frame past it or a protocol error from the app closes the connection after NIO's close frame). Frames Keel sends
/// the app must be masked, as a client's are: make them with `frame`. Immutable, thread-safe.
final class UpstreamWebSocket: Sendable {
    /// Why the handshake failed: `timedOut` when no answer came within the timeout, else `refused` with what the log
    /// says.
    enum Failure: Error, Sendable {
        case timedOut
        case refused(String)
    }

    enum Upgrade: Sendable {
        case webSocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>)
        case notUpgraded
    }

    let channel: any Channel
    let frames: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>

    private init(channel: any Channel, frames: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>) {
        self.channel = channel
        self.frames = frames
    }

    /// For `wss://` upstreams: the system's trust roots, the host name checked. Made once (loading the roots is slow).
    static let tls: Result<NIOSSLContext, any Error> = Result { try NIOSSLContext(configuration: .makeClientConfiguration()) }

    /// Connects to `host`:`port` (over TLS when `tls`, the name checked unless `host` is an address), sends the
    /// handshake `GET target` with `headers` (the key, version, `Connection` and `Upgrade` are added), and returns once
    /// the app upgraded. The whole handshake, connection included, has `timeout`; a connection that cannot be made
    /// within 5 s (or the timeout, if shorter) is refused.
    /// - Throws: `Failure`; the connection, if one was made, is closed by then.
    static func open(host: String, port: Int, tls: Bool, target: String, headers: HTTPHeaders, maxFrameSize: Int,
                     timeout: Duration) async throws(Failure) -> UpstreamWebSocket {
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let deadline = NIODeadline.now() + .nanoseconds(nanoseconds)
        let context: NIOSSLContext?
        do { context = tls ? try Self.tls.get() : nil } catch { throw .refused("no TLS context: \(error)") }
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: headers)
        head.headers.replaceOrAdd(name: "host", value: host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
        let connection: (any Channel, EventLoopFuture<Upgrade>)
        do {
            connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.nanoseconds(min(nanoseconds, 5_000_000_000)))
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .connect(host: host, port: port) { [head] channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let context {
                            let name = host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: name))
                        }
                        let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: maxFrameSize) { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                .webSocket(try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: channel))
                            }
                        }
                        var configuration = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: .init(
                            upgradeRequestHead: head, upgraders: [upgrader],
                            notUpgradingCompletionHandler: { $0.eventLoop.makeSucceededFuture(.notUpgraded) }))
                        // Frames the app sends right behind its 101 go on to the frame decoder.
                        configuration.leftOverBytesStrategy = .forwardBytes
                        let upgraded = try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: configuration)
                        return (channel, upgraded)
                    }
                }
        } catch {
            throw NIODeadline.now() >= deadline ? .timedOut : .refused("cannot connect: \(error)")
        }
        let (channel, upgraded) = connection
        // Closing the connection fails the upgrade (its handler is removed), so the wait below ends by the deadline.
        let timer = channel.eventLoop.scheduleTask(deadline: deadline) { channel.close(promise: nil) }
        let upgrade: Upgrade
        do { upgrade = try await upgraded.get() } catch {
            timer.cancel()
            channel.close(promise: nil)
            throw NIODeadline.now() >= deadline ? .timedOut : .refused("the WebSocket handshake failed: \(error)")
        }
        timer.cancel()
        guard case let .webSocket(frames) = upgrade else {
            channel.close(promise: nil)
            throw .refused("the app answered the handshake without upgrading")
        }
        return UpstreamWebSocket(channel: channel, frames: frames)
    }

    /// A frame for the app, masked with a fresh key (RFC 6455 5.3: every frame a client sends is).
    static func frame(fin: Bool = true, opcode: WebSocketOpcode, data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: fin, opcode: opcode, maskKey: .random(), data: data)
    }

    /// A close frame's payload: `code`, then `reason` (cut to the 123 bytes a control frame leaves for it).
    static func closeData(_ code: WebSocketErrorCode, reason: String? = nil) -> ByteBuffer {
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        if let reason { data.writeBytes(reason.utf8.prefix(123)) }
        return data
    }
}
