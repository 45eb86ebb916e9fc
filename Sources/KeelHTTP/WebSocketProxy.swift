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

/// WebSocket upgrades under a proxy prefix (`/ext/<id>/<prefix>/...`): the handshake passes the auth chain like a
/// plain proxied request, then the upstream's own WebSocket is opened (with the same forwarded and identity
/// headers) before the client gets its `101`; frames are relayed both ways as they come.
///
/// - Refusals are answered (by `KeelHTTPChannel`, then the connection closes) with the stable code: the auth chain's
///   401/403/404, a path that is not canonical (400 `bad-path`), the upstream down, refusing the upgrade or answering
///   it wrongly (no 101, a wrong or missing `Sec-WebSocket-Accept`, no `Upgrade: websocket`: 502
///   `upstream-unavailable`), or not answering within the declared `timeout` (504 `upstream-timeout`); the upstream
///   connection is closed at once in each case (`UpstreamWebSocket`). A handshake that carries a body is never
///   upgraded (400 `bad-websocket-handshake`, or the connection is closed).
/// - Data frames are relayed one by one (a fragmented message stays fragmented; nothing is collected whole), each at
///   most `maxFrameSize` bytes. Pings are answered on each side. A close from the client is passed to the app with
///   its code; a close from the app ends the client's WebSocket (1000); an upstream that drops the connection ends
///   it with 1014 (bad gateway).
/// - A WebSocket with no frame either way for `idleTimeout` is closed on both sides (1001). Closing waits for the
///   app's answer to Keel's close frame at most 5 s, and no write of the closing is waited for longer, so a peer
///   that stops reading holds neither connection open.
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

    /// The names `Host` may give (DNS rebinding), checked as for every request.
    let hosts: HostCheck

    init(proxy: PluginProxy, idleTimeout: Duration, hosts: HostCheck) {
        self.proxy = proxy
        self.idleTimeout = idleTimeout
        self.hosts = hosts
    }

    /// True when `headers` ask for a WebSocket (`Upgrade: websocket`, any case).
    static func isHandshake(_ headers: HTTPFields) -> Bool {
        headers[values: .upgrade].contains { $0.lowercased().split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == "websocket" } }
    }

    /// Decides a WebSocket handshake (the first request of `channel`): the response headers to upgrade with, or nil
    /// after recording the refusal `KeelHTTPChannel` answers with.
    func prepare(_ head: HTTPRequestHead, channel: any Channel) async -> HTTPHeaders? {
        let id = ObjectIdentifier(channel)
        // A session whose client went away before its upgrade closes its upstream connection.
        channel.closeFuture.whenComplete { [weak self] _ in
            if case let .upgrade(session) = self?.decisions.withLock({ $0.removeValue(forKey: id) }) { session.finish() }
        }
        func refuse(_ error: APIError) -> HTTPHeaders? {
            decisions.withLock { $0[id] = .refuse(error) }
            // A client gone meanwhile (an upstream slow to answer): its close handler ran before this was recorded,
            // and no upgrade will take it, so it is dropped here (as a session is below).
            if !channel.isActive { decisions.withLock { _ = $0.removeValue(forKey: id) } }
            return nil
        }
        guard let fields = try? HTTPRequest(head, secure: false, splitCookie: false) else {
            return refuse(APIError(.badRequest, "bad-websocket-handshake", "the handshake is not a valid HTTP request"))
        }
        if let refusal = hosts.refusal(fields.authority) { return refuse(refusal) }
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
        if let refusal = proxy.loopRefusal(fields.headerFields, proxy: proxied.proxy, pluginID: proxied.pluginID) { return refuse(refusal) }
        let caller: Gatekeeper.Caller
        do { caller = try await proxy.admit(request, pluginID: proxied.pluginID) } catch let error as APIError {
            return refuse(error)
        } catch {
            return refuse(APIError.forbidden)
        }
        let target = proxy.target(proxied.proxy, rest: proxied.rest, query: request.uri.query)
        var headers = HTTPHeaders()
        let identity: [(String, String)]
        do { identity = try proxy.upstreamHeaders(caller, pluginID: proxied.pluginID, proxy: proxied.proxy, method: "GET", target: target,
                                                         peer: channel.remoteAddress?.ipAddress) } catch {
            return refuse(error)
        }
        for (name, value) in identity
        where !name.hasPrefix("sec-websocket-") && name != "host" {
            headers.add(name: name, value: value)
        }
        let p = proxied.proxy
        // Whether the plugin still proxies this prefix to this upstream for the caller's tenant: loaded, or idle (a
        // lazy plugin unloaded for idleness) with the same declaration in its manifest.
        let kernel = proxy.gatekeeper.kernel, pluginID = proxied.pluginID, declared = p, tenant = caller.principal.tenant
        // A caller the host itself vouched for (the admin token, or a page ticket issued to its holder) is vouched for
        // only while that token is in force: `keel token reset` ends the socket as it ends the ticket.
        let token = proxy.gatekeeper.token, vouchedUnder = caller.principal.authenticatedBy == "keel" ? token.digest : nil
        let stillServed: @Sendable () -> Bool = {
            if let vouchedUnder, token.digest != vouchedUnder { return false }
            guard kernel.access.isVisible(pluginID, tenant: tenant) else { return false }
            if let idle = kernel.idleManifest(pluginID) {
                return idle.proxies.contains { $0.prefix == declared.prefix && $0.upstream == declared.upstream }
            }
            guard let now = kernel.registry.snapshot.proxy(for: path) else { return false }
            return now.pluginID == pluginID && now.proxy.prefix == declared.prefix && now.proxy.upstream == declared.upstream
        }
        let session = Session(pluginID: proxied.pluginID, idleTimeout: idleTimeout, log: proxy.gatekeeper.log, stillServed: stillServed)
        let outcome = await session.connect(host: p.host, port: p.port, tls: p.scheme == "https", target: target, headers: headers,
                                            timeout: p.timeout)
        switch outcome {
        case .connected:
            decisions.withLock { $0[id] = .upgrade(session) }
            // A client gone during the handshake: its close handler may have run before the session was recorded.
            if !channel.isActive, case let .upgrade(gone)? = decisions.withLock({ $0.removeValue(forKey: id) }) {
                gone.finish()
                return nil
            }
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
}
