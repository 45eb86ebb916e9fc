// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import HTTPTypes
import Hummingbird
import Keel
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import NIOWebSocket
import Synchronization
import WSClient

/// WebSocket upgrades under a proxy prefix (`/ext/<id>/<prefix>/...`): the handshake passes the auth chain like a
/// plain proxied request, then the upstream's own WebSocket is opened (with the same forwarded and identity
/// headers) before the client gets its `101`; frames are relayed both ways as they come.
///
/// - Refusals are answered (by `KeelHTTPChannel`, then the connection closes) with the stable code: the auth chain's
///   401/403/404, a path that is not canonical (400 `bad-path`), the upstream down or refusing the upgrade (502
///   `upstream-unavailable`), or not answering within the declared `timeout` (504 `upstream-timeout`). A handshake
///   that carries a body is never upgraded (400 `bad-websocket-handshake`, or the connection is closed).
/// - Data frames are relayed one by one (a fragmented message stays fragmented; nothing is collected whole), each at
///   most `maxFrameSize` bytes. Pings are answered on each side. A close from the client is passed to the app with
///   its code; a close from the app ends the client's WebSocket (1000); an upstream that drops the connection ends
///   it with 1014 (bad gateway).
/// - A WebSocket with no frame either way for `idleTimeout` is closed on both sides (1001).
/// - A WebSocket whose plugin no longer proxies its prefix to the same upstream for the caller's tenant (disabled,
///   uninstalled, stopped by a revoke, reloaded or upgraded with another prefix or upstream, or no longer enabled for
///   that tenant) is closed on both sides within about two seconds (1008 to the client); one whose lazy plugin was
///   unloaded for idleness stays open. The caller's own rights (roles, hooks) are not checked again.
/// - Not relayed: subprotocols (`Sec-WebSocket-Protocol`) and extensions (no compression).
/// Thread-safe.
final class WebSocketProxy: Sendable {
    static let maxFrameSize = 1 << 20
    let proxy: PluginProxy
    let idleTimeout: Duration
    /// Per connection, what `prepare` decided: the session to run once upgraded, or the refusal the HTTP path answers.
    private let decisions = Mutex<[ObjectIdentifier: Decision]>([:])

    enum Decision: Sendable {
        case upgrade(Session)
        case refuse(APIError)
    }

    init(proxy: PluginProxy, idleTimeout: Duration) {
        self.proxy = proxy
        self.idleTimeout = idleTimeout
    }

    /// True when `headers` ask for a WebSocket (`Upgrade: websocket`, any case).
    static func isHandshake(_ headers: HTTPFields) -> Bool {
        headers[values: .upgrade].contains { $0.lowercased().split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == "websocket" } }
    }

    /// Decides a WebSocket handshake (the first request of `channel`): the response headers to upgrade with, or nil
    /// after recording the refusal `KeelHTTPChannel` answers with.
    func prepare(_ head: HTTPRequestHead, channel: any Channel) async -> HTTPHeaders? {
        let id = ObjectIdentifier(channel)
        channel.closeFuture.whenComplete { [weak self] _ in self?.decisions.withLock { _ = $0.removeValue(forKey: id) } }
        func refuse(_ error: APIError) -> HTTPHeaders? {
            decisions.withLock { $0[id] = .refuse(error) }
            return nil
        }
        guard let fields = try? HTTPRequest(head, secure: false, splitCookie: false) else {
            return refuse(APIError(.badRequest, "bad-websocket-handshake", "the handshake is not a valid HTTP request"))
        }
        // The path as routing sees it (the hooks see the same), refused as routing would refuse it.
        var canonicalHead = fields
        let raw = Request(head: fields, body: RequestBody(buffer: ByteBuffer()))
        let path: String
        switch CanonicalPath.canonical(raw.uri.path) {
        case let .success(canonical): path = canonical
        case let .failure(problem): return refuse(APIError(.badRequest, "bad-path", problem.description))
        }
        canonicalHead.path = path + (raw.uri.query.map { "?" + $0 } ?? "")
        let request = Request(head: canonicalHead, body: RequestBody(buffer: ByteBuffer()))
        // A handshake is a GET without a body: anything else could hide a second request behind the upgrade.
        guard request.method == .get, fields.headerFields[.contentLength].map({ $0 == "0" }) ?? true,
              fields.headerFields[.transferEncoding] == nil else {
            return refuse(APIError(.badRequest, "bad-websocket-handshake", "a WebSocket handshake is a GET without a body"))
        }
        var snapshot = proxy.gatekeeper.kernel.registry.snapshot
        if snapshot.route(method: request.method.rawValue, path: path) == nil, snapshot.proxy(for: path) == nil {
            // The first request of an idle lazy plugin wakes it, a handshake as any other.
            do {
                if try await proxy.gatekeeper.wakeIdlePlugin(path, for: request) { snapshot = proxy.gatekeeper.kernel.registry.snapshot }
            } catch let error as APIError {
                return refuse(error)
            } catch {
                return refuse(APIError.forbidden)
            }
        }
        guard snapshot.route(method: request.method.rawValue, path: path) == nil, let proxied = snapshot.proxy(for: path) else {
            return refuse(APIError.notFound)
        }
        let caller: Gatekeeper.Caller
        do { caller = try await proxy.admit(request, pluginID: proxied.pluginID) } catch let error as APIError {
            return refuse(error)
        } catch {
            return refuse(APIError.forbidden)
        }
        let target = proxy.target(proxied.proxy, rest: proxied.rest, query: request.uri.query)
        var headers = HTTPFields()
        let identity: [(String, String)]
        do { identity = try proxy.upstreamHeaders(caller, pluginID: proxied.pluginID, proxy: proxied.proxy, method: "GET", target: target,
                                                         peer: channel.remoteAddress?.ipAddress) } catch {
            return refuse(error)
        }
        for (name, value) in identity
        where !name.hasPrefix("sec-websocket-") && name != "host" {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        let p = proxied.proxy
        let scheme = p.scheme == "https" ? "wss" : "ws"
        // Whether the plugin still proxies this prefix to this upstream for the caller's tenant: loaded, or idle (a
        // lazy plugin unloaded for idleness) with the same declaration in its manifest.
        let kernel = proxy.gatekeeper.kernel, pluginID = proxied.pluginID, declared = p, tenant = caller.principal.tenant
        let stillServed: @Sendable () -> Bool = {
            guard kernel.access.isVisible(pluginID, tenant: tenant) else { return false }
            if let idle = kernel.idleManifest(pluginID) {
                return idle.proxies.contains { $0.prefix == declared.prefix && $0.upstream == declared.upstream }
            }
            guard let now = kernel.registry.snapshot.proxy(for: path) else { return false }
            return now.pluginID == pluginID && now.proxy.prefix == declared.prefix && now.proxy.upstream == declared.upstream
        }
        let session = Session(pluginID: proxied.pluginID, idleTimeout: idleTimeout, log: proxy.gatekeeper.log, stillServed: stillServed)
        let url = "\(scheme)://\(p.hostPart):\(p.port)\(target)"
        let outcome = await session.connect(url: url, headers: headers, timeout: p.timeout)
        switch outcome {
        case .connected:
            decisions.withLock { $0[id] = .upgrade(session) }
            return HTTPHeaders()
        case .timedOut:
            proxy.gatekeeper.log(LogRecord(level: .warn, pluginID: proxied.pluginID, message: "proxy \(p.prefix) → \(p.upstream): WebSocket handshake timed out"))
            return refuse(APIError(.gatewayTimeout, "upstream-timeout", "the upstream of /ext/\(proxied.pluginID)\(p.prefix) did not answer within \(p.timeout) s"))
        case let .failed(reason):
            proxy.gatekeeper.log(LogRecord(level: .warn, pluginID: proxied.pluginID, message: "proxy \(p.prefix) → \(p.upstream): WebSocket: \(reason)"))
            return refuse(APIError(.badGateway, "upstream-unavailable",
                                   "the upstream of /ext/\(proxied.pluginID)\(p.prefix) cannot be reached or refused the WebSocket upgrade"))
        }
    }

    /// The session `prepare` opened for `channel`, once: called when the client's connection is upgraded.
    func takeSession(for channel: any Channel) -> Session? {
        decisions.withLock { d in
            guard case let .upgrade(session) = d.removeValue(forKey: ObjectIdentifier(channel)) else { return nil }
            return session
        }
    }

    /// Why the WebSocket handshake on `channel` was refused, once; for the HTTP path to answer with.
    func takeRefusal(for channel: (any Channel)?) -> APIError? {
        guard let channel else { return nil }
        return decisions.withLock { d in
            guard case let .refuse(error) = d[ObjectIdentifier(channel)] else { return nil }
            d[ObjectIdentifier(channel)] = nil
            return error
        }
    }

    /// One proxied WebSocket: the upstream side (a WebSocket client) and, once upgraded, the relay to the client.
    final class Session: Sendable {
        enum Outcome: Sendable { case connected, timedOut, failed(String) }
        typealias Upstream = (inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter)

        let pluginID: String
        let idleTimeout: Duration
        let log: @Sendable (LogRecord) -> Void
        /// Whether the plugin still proxies this WebSocket for its caller; asked about once a second while it relays.
        let stillServed: @Sendable () -> Bool
        private struct State {
            var outcome: CheckedContinuation<Outcome, Never>?
            var upstream: Upstream?
            /// Resumed when the relay is over (or never started): the upstream handler then returns.
            var finished: CheckedContinuation<Void, Never>?
            var done = false
        }
        private let state = Mutex(State())
        /// When a frame last went either way (monotonic nanoseconds).
        private let activity = Atomic<Int64>(0)

        init(pluginID: String, idleTimeout: Duration, log: @escaping @Sendable (LogRecord) -> Void,
             stillServed: @escaping @Sendable () -> Bool = { true }) {
            self.pluginID = pluginID
            self.idleTimeout = idleTimeout
            self.log = log
            self.stillServed = stillServed
        }

        /// Opens the upstream WebSocket; waits at most `timeout` seconds for its handshake.
        func connect(url: String, headers: HTTPFields, timeout: Double) async -> Outcome {
            let configuration = {
                var c = WebSocketClientConfiguration(maxFrameSize: WebSocketProxy.maxFrameSize, additionalHeaders: headers,
                                                     autoPing: .disabled, validateUTF8: false)
                c.closeTimeout = .seconds(5)
                return c
            }()
            let logger = {
                var l = Logger(label: "keel.proxy.ws")
                l.logLevel = .critical
                return l
            }()
            let result: Outcome = await withCheckedContinuation { continuation in
                state.withLock { $0.outcome = continuation }
                Task { [self] in
                    do {
                        try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) { inbound, outbound, _ in
                            await self.upstreamOpened((inbound, outbound))
                        }
                        resolve(.failed("closed before the upgrade"))
                    } catch {
                        resolve(.failed("\(error)"))
                    }
                    finish()
                }
                Task { [self] in
                    try? await Task.sleep(for: .milliseconds(Int64(timeout * 1000)))
                    resolve(.timedOut)
                }
            }
            if case .connected = result { return result }
            finish()
            return result
        }

        private func resolve(_ outcome: Outcome) {
            let continuation = state.withLock { s in
                defer { s.outcome = nil }
                return s.outcome
            }
            continuation?.resume(returning: outcome)
        }

        /// The upstream handler: hands the upstream's streams to the relay and keeps them open until it is over. A
        /// client that never finishes its upgrade lets it go after the idle timeout.
        private func upstreamOpened(_ upstream: Upstream) async {
            await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
                let done = state.withLock { s in
                    s.upstream = upstream
                    s.finished = finished
                    return s.done
                }
                if done { finish() }
                resolve(.connected)
            }
        }

        /// Ends the session: the upstream handler returns (closing the upstream WebSocket).
        private func finish() {
            let finished = state.withLock { s in
                s.done = true
                defer { s.finished = nil }
                return s.finished
            }
            finished?.resume()
        }

        enum End: Sendable {
            case client(WebSocketErrorCode, String?)
            case upstream
            case upstreamFailed
            case clientFailed
            case idle
            case revoked
        }

        /// Relays frames between the upgraded client connection and the upstream until one side closes or the
        /// session is idle, then closes the other side.
        func relay(_ client: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>) async {
            guard let upstream = state.withLock({ $0.upstream }) else {
                finish()
                return
            }
            activity.store(Self.now(), ordering: .relaxed)
            let idle = idleTimeout
            try? await client.executeThenClose { inbound, outbound in
                let end = await withTaskGroup(of: End.self) { group -> End in
                    group.addTask {
                        do {
                            for try await frame in inbound {
                                self.activity.store(Self.now(), ordering: .relaxed)
                                switch frame.opcode {
                                case .text, .binary, .continuation:
                                    guard frame.rsv1 == false, frame.rsv2 == false, frame.rsv3 == false else { return .client(.protocolError, nil) }
                                    try await upstream.outbound.write(.custom(WebSocketFrame(fin: frame.fin, opcode: frame.opcode, data: frame.unmaskedData)))
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
                    group.addTask {
                        do {
                            for try await frame in upstream.inbound {
                                self.activity.store(Self.now(), ordering: .relaxed)
                                let opcode: WebSocketOpcode = switch frame.opcode {
                                case .text: .text
                                case .binary: .binary
                                case .continuation: .continuation
                                }
                                try await outbound.write(WebSocketFrame(fin: frame.fin, opcode: opcode, data: frame.data))
                            }
                            return .upstream
                        } catch {
                            return .upstreamFailed
                        }
                    }
                    group.addTask {
                        let limit = Int64(idle.components.seconds) * 1_000_000_000 + idle.components.attoseconds / 1_000_000_000
                        // Two checks in a row must fail: a lazy plugin going idle is briefly neither loaded nor idle.
                        var refusals = 0
                        while !Task.isCancelled {
                            let quiet = Self.now() - self.activity.load(ordering: .relaxed)
                            if quiet >= limit { return .idle }
                            refusals = self.stillServed() ? 0 : refusals + 1
                            if refusals >= 2 { return .revoked }
                            try? await Task.sleep(for: .nanoseconds(min(limit - quiet, 1_000_000_000)))
                        }
                        return .idle
                    }
                    let end = await group.next() ?? .idle
                    group.cancelAll()
                    return end
                }
                // Close the other side(s).
                switch end {
                case let .client(code, reason):
                    try? await upstream.outbound.close(code, reason: reason)
                    try? await Self.sendClose(outbound, code)
                case .upstream:
                    try? await Self.sendClose(outbound, .normalClosure)
                case .upstreamFailed:
                    try? await Self.sendClose(outbound, .unknown(1014))
                case .clientFailed:
                    try? await upstream.outbound.close(.goingAway, reason: nil)
                case .idle:
                    log(LogRecord(level: .info, pluginID: pluginID, message: "proxied WebSocket idle for \(idle): closed"))
                    try? await upstream.outbound.close(.goingAway, reason: "idle")
                    try? await Self.sendClose(outbound, .goingAway)
                case .revoked:
                    // The client first: an upstream that does not read must not hold the client's close back.
                    log(LogRecord(level: .info, pluginID: pluginID, message: "proxied WebSocket closed: the plugin no longer serves it to its caller"))
                    try? await Self.sendClose(outbound, .policyViolation)
                    try? await upstream.outbound.close(.goingAway, reason: nil)
                }
            }
            finish()
        }

        static func sendClose(_ outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>, _ code: WebSocketErrorCode) async throws {
            var data = ByteBuffer()
            data.write(webSocketErrorCode: code)
            try await outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
        }

        static func now() -> Int64 {
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
        }
    }
}
