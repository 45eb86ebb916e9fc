// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Synchronization

extension WebSocketProxy {
    /// One proxied WebSocket: the app's side (`UpstreamWebSocket`, opened by `connect` before the client's upgrade)
    /// and, once the client is upgraded, the relay between the two (`relay`). The app's connection is closed in every
    /// case: when the relay ends, or by `finish` when the relay never starts (the client went away first).
    /// Thread-safe.
    final class Session: Sendable {
        enum Outcome: Sendable { case connected, timedOut, failed(String) }
        typealias Writer = NIOAsyncChannelOutboundWriter<WebSocketFrame>
        typealias Reader = NIOAsyncChannelInboundStream<WebSocketFrame>

        let pluginID: String
        let idleTimeout: Duration
        let log: @Sendable (LogRecord) -> Void
        /// Whether the plugin still proxies this WebSocket for its caller; asked about once a second while it relays.
        let stillServed: @Sendable () -> Bool
        private struct State {
            /// The app's side, from the handshake until the relay takes it or `finish` closes it.
            var upstream: UpstreamWebSocket?
            /// Relaying or finished: the app's side is no longer kept here.
            var done = false
        }
        private let state = Mutex(State())
        /// When a frame last went either way (monotonic nanoseconds).
        private let activity = Atomic<Int64>(0)
        /// How long Keel waits for the app to answer its close frame before it closes the connection.
        static let closeTimeout: Duration = .seconds(5)

        init(pluginID: String, idleTimeout: Duration, log: @escaping @Sendable (LogRecord) -> Void,
             stillServed: @escaping @Sendable () -> Bool = { true }) {
            self.pluginID = pluginID
            self.idleTimeout = idleTimeout
            self.log = log
            self.stillServed = stillServed
        }

        /// Opens the app's side (`UpstreamWebSocket.open`); waits at most `timeout` seconds for its handshake. On any
        /// outcome but `connected` no connection is left open.
        func connect(host: String, port: Int, tls: Bool, target: String, headers: HTTPHeaders, timeout: Double) async -> Outcome {
            let upstream: UpstreamWebSocket
            do {
                upstream = try await UpstreamWebSocket.open(host: host, port: port, tls: tls, target: target, headers: headers,
                                                            maxFrameSize: WebSocketProxy.maxFrameSize,
                                                            timeout: .milliseconds(Int64(timeout * 1000)))
            } catch {
                switch error {
                case .timedOut: return .timedOut
                case let .refused(reason): return .failed(reason)
                }
            }
            let kept = state.withLock { s -> Bool in
                guard !s.done else { return false }
                s.upstream = upstream
                return true
            }
            guard kept else {
                upstream.channel.close(promise: nil)
                return .failed("the session ended during the handshake")
            }
            return .connected
        }

        /// Ends a session whose relay has not started: the app's connection is closed. Idempotent; a relay in progress
        /// closes the connection itself when it ends.
        func finish() {
            let upstream = state.withLock { s -> UpstreamWebSocket? in
                s.done = true
                defer { s.upstream = nil }
                return s.upstream
            }
            upstream?.channel.close(promise: nil)
        }

        enum End: Sendable {
            case client(WebSocketErrorCode, String?)
            /// The app's close frame, with its payload.
            case upstream(ByteBuffer)
            case upstreamFailed
            case clientFailed
            /// A frame for the client could not be written (its connection is gone).
            case clientLost
            case idle
            case revoked
            /// Keel's close frame went to the app.
            case closeWritten
            /// The app did not answer Keel's close frame (or did not take it) within `closeTimeout`.
            case closeTimedOut
        }

        /// Relays frames between the upgraded client connection and the app until one side closes or the session is
        /// idle or revoked, then closes the other side; both connections are closed when it returns.
        func relay(_ client: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>) async {
            let upstream = state.withLock { s -> UpstreamWebSocket? in
                guard !s.done else { return nil }
                s.done = true
                defer { s.upstream = nil }
                return s.upstream
            }
            guard let upstream else {
                client.channel.close(promise: nil)
                return
            }
            activity.store(Self.now(), ordering: .relaxed)
            try? await client.executeThenClose { inbound, outbound in
                try await upstream.frames.executeThenClose { upstreamInbound, upstreamOutbound in
                    await withTaskGroup(of: End.self) { group in
                        group.addTask { await self.clientToApp(inbound, outbound, upstreamOutbound) }
                        group.addTask { await self.appToClient(upstreamInbound, upstreamOutbound, outbound) }
                        group.addTask { await self.watch() }
                        let end = await group.next() ?? .idle
                        await close(after: end, &group, client: outbound, app: upstreamOutbound)
                        group.cancelAll()
                    }
                }
            }
        }

        /// The client's frames to the app (masked), the client's pings answered; ends with the client's close or its
        /// connection's end.
        private func clientToApp(_ inbound: Reader, _ outbound: Writer, _ app: Writer) async -> End {
            do {
                for try await frame in inbound {
                    activity.store(Self.now(), ordering: .relaxed)
                    switch frame.opcode {
                    case .text, .binary, .continuation:
                        guard frame.rsv1 == false, frame.rsv2 == false, frame.rsv3 == false else { return .client(.protocolError, nil) }
                        try await app.write(UpstreamWebSocket.frame(fin: frame.fin, opcode: frame.opcode, data: frame.unmaskedData))
                    case .ping:
                        try await outbound.write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
                    case .connectionClose:
                        var data = frame.unmaskedData
                        let code = data.readWebSocketErrorCode() ?? .normalClosure
                        return .client(code, data.readString(length: data.readableBytes))
                    default:
                        continue
                    }
                }
                return .clientFailed
            } catch {
                return .clientFailed
            }
        }

        /// The app's frames to the client, the app's pings answered; ends with the app's close, a frame no extension
        /// allows (reserved bits or opcodes), or its connection's end (failed: it never closed).
        private func appToClient(_ inbound: Reader, _ app: Writer, _ outbound: Writer) async -> End {
            do {
                for try await frame in inbound {
                    activity.store(Self.now(), ordering: .relaxed)
                    switch frame.opcode {
                    case .text, .binary, .continuation:
                        guard frame.rsv1 == false, frame.rsv2 == false, frame.rsv3 == false else { return .upstreamFailed }
                        do { try await outbound.write(WebSocketFrame(fin: frame.fin, opcode: frame.opcode, data: frame.unmaskedData)) } catch {
                            return .clientLost
                        }
                    case .ping:
                        try await app.write(UpstreamWebSocket.frame(opcode: .pong, data: frame.unmaskedData))
                    case .pong:
                        continue
                    case .connectionClose:
                        return .upstream(frame.unmaskedData)
                    default:
                        return .upstreamFailed
                    }
                }
                return .upstreamFailed
            } catch {
                return .upstreamFailed
            }
        }

        /// Ends the session when no frame went either way for the idle timeout, or when the plugin no longer serves it.
        private func watch() async -> End {
            let idle = idleTimeout
            let limit = Int64(idle.components.seconds) * 1_000_000_000 + idle.components.attoseconds / 1_000_000_000
            // Two checks in a row must fail: a lazy plugin going idle is briefly neither loaded nor idle.
            var refusals = 0
            while !Task.isCancelled {
                let quiet = Self.now() - activity.load(ordering: .relaxed)
                if quiet >= limit { return .idle }
                refusals = stillServed() ? 0 : refusals + 1
                if refusals >= 2 { return .revoked }
                try? await Task.sleep(for: .nanoseconds(min(limit - quiet, 1_000_000_000)))
            }
            return .idle
        }

        /// Closes the side(s) still open after `end`. Every write here is bounded by `closeTimeout`: a peer that does
        /// not read holds neither the other side nor its own connection.
        private func close(after end: End, _ group: inout TaskGroup<End>, client: Writer, app: Writer) async {
            switch end {
            case let .client(code, reason):
                // The app first: it has the close (and answered it) before the client learns the WebSocket is over.
                await closeApp(UpstreamWebSocket.closeData(code, reason: reason), answered: true, &group, app)
                await Self.bounded { try await Self.sendClose(client, code) }
            case let .upstream(payload):
                // The app's close is answered with its code (RFC 6455 5.5.1); the client's WebSocket ends normally.
                let code = payload.getSlice(at: payload.readerIndex, length: min(2, payload.readableBytes)) ?? ByteBuffer()
                await closeApp(code, answered: false, &group, app)
                await Self.bounded { try await Self.sendClose(client, .normalClosure) }
            case .upstreamFailed:
                await Self.bounded { try await Self.sendClose(client, .unknown(1014)) }
            case .clientFailed:
                await closeApp(UpstreamWebSocket.closeData(.goingAway), answered: true, &group, app)
            case .clientLost:
                await closeApp(UpstreamWebSocket.closeData(.goingAway), answered: false, &group, app)
            case .idle:
                log(LogRecord(level: .info, pluginID: pluginID, message: "proxied WebSocket idle for \(idleTimeout): closed"))
                await closeApp(UpstreamWebSocket.closeData(.goingAway, reason: "idle"), answered: true, &group, app)
                await Self.bounded { try await Self.sendClose(client, .goingAway) }
            case .revoked:
                // The client first: an app that does not read must not hold the client's close back.
                log(LogRecord(level: .info, pluginID: pluginID, message: "proxied WebSocket closed: the plugin no longer serves it to its caller, "
                              + "or the admin token it was opened with was reset"))
                await Self.bounded { try await Self.sendClose(client, .policyViolation) }
                await closeApp(UpstreamWebSocket.closeData(.goingAway), answered: true, &group, app)
            case .closeWritten, .closeTimedOut:
                break
            }
        }

        /// Sends the app a close frame with `payload`; with `answered`, then waits for its answer (its close, or the
        /// end of its connection), all within `closeTimeout`. Only while the app's reader still runs can an answer
        /// be seen.
        private func closeApp(_ payload: ByteBuffer, answered: Bool, _ group: inout TaskGroup<End>, _ app: Writer) async {
            group.addTask {
                try? await app.write(UpstreamWebSocket.frame(opcode: .connectionClose, data: payload))
                return .closeWritten
            }
            group.addTask {
                try? await Task.sleep(for: Self.closeTimeout)
                return .closeTimedOut
            }
            while let next = await group.next() {
                switch next {
                case .upstream, .upstreamFailed, .closeTimedOut: return
                case .closeWritten where !answered: return
                case .client, .clientFailed, .clientLost, .idle, .revoked, .closeWritten: continue
                }
            }
        }

        /// Runs `write`, given up (cancelled) after `closeTimeout`.
        static func bounded(_ write: @escaping @Sendable () async throws -> Void) async {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await write() }
                group.addTask { try? await Task.sleep(for: closeTimeout) }
                await group.next()
                group.cancelAll()
            }
        }

        static func sendClose(_ outbound: Writer, _ code: WebSocketErrorCode) async throws {
            try await outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, data: UpstreamWebSocket.closeData(code)))
        }

        static func now() -> Int64 {
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
        }
    }
}
