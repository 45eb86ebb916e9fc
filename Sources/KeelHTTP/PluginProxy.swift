// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Keel
import NIOCore
import NIOHTTP1
import Synchronization

/// Existing web apps a plugin brings in (`proxy:` in its plugin.yaml): a request under `/ext/<id>/<prefix>/...` that
/// no route of the plugin matches passes the auth chain like the plugin's routes (the caller identified, the plugin visible in the caller's tenant,
/// the authorize hooks asked), then goes to the upstream with the caller's identity (`ProxyIdentity`), and the answer
/// streams back, with the same sandboxing headers as plugin content, its cookies kept to the app's mount
/// (`scopedCookie`) and no `Clear-Site-Data` or `Service-Worker-Allowed`.
///
/// - What the upstream sees: the method, the path below the prefix (canonical, re-encoded segment by segment, under
///   the upstream's own base path), the query,
///   the body (streamed), and the client's headers as plugins see them (the admin token and the console's page cookie
///   removed), without hop-by-hop headers, without any `X-Keel-*` header the client sent and without the forwarding
///   headers a client could forge (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`); then `X-Forwarded-For` with the
///   client's address and the host's identity headers, signed.
/// - Connections to upstreams are pooled and kept alive (`UpstreamPool` for http, AsyncHTTPClient for https);
///   redirects are passed back, not followed.
/// - An upstream that refuses or drops the connection, or answers what is not an HTTP answer to the request (a
///   `101 Switching Protocols` no request asked for, a head over the decoder's limits, a body whose framing cannot be
///   read: both `Content-Length` and `Transfer-Encoding`, a bad length): 502 `upstream-unavailable`, and that upstream
///   connection is closed; one that sends no response head within the declared `timeout` (30 s by default): 504
///   `upstream-timeout`. Informational answers (100, 103) before the real one are skipped.
/// - WebSocket handshakes under a prefix go to `WebSocketProxy` (through `KeelHTTPChannel`), with the same auth
///   chain and headers.
/// Thread-safe.
final class PluginProxy: Sendable {
    let gatekeeper: Gatekeeper
    /// For https upstreams.
    let client: HTTPClient
    /// For plain-http upstreams, the usual case (loopback apps): the hot path.
    let pool = UpstreamPool()
    let maxBodySize: Int
    /// How long a client may take to send a proxied request's whole body (`--body-timeout`), whatever the upstream's
    /// own `timeout`: a client sending it a byte now and then is answered 408 and closed, as on a route.
    let bodyTimeout: Duration
    /// Proxy keys by plugin id, ready to sign with.
    private let signers = Mutex<[String: ProxyIdentity.Signer]>([:])
    /// This server's mark on every request it proxies (`x-keel-hop`, random per process): a request that comes back
    /// carrying it has looped (`loopRefusal`). Clients cannot send it: every `X-Keel-*` header of theirs is dropped
    /// before the host adds its own.
    let hop: String = (0..<16).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()

    init(gatekeeper: Gatekeeper, maxBodySize: Int, bodyTimeout: Duration = .seconds(30)) {
        self.gatekeeper = gatekeeper
        self.maxBodySize = maxBodySize
        self.bodyTimeout = bodyTimeout
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5)),
                                                     decompression: .disabled)
        // As many kept-alive connections per upstream as clients the host serves at once (AsyncHTTPClient's default,
        // 8, queues the rest behind them).
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    func shutdown() async {
        pool.shutdown()
        try? await client.shutdown()
    }

    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                                        "trailer", "transfer-encoding", "upgrade", "host", "content-length"]

    /// Runs the auth chain for a request under one of `pluginID`'s proxy prefixes, in the plugin's lane like its
    /// routes: the caller identified, the plugin visible in the caller's tenant, the authorize hooks asked. With no
    /// authenticate or authorize hook registered no plugin code runs, and the chain runs inline, without the lane.
    /// - Throws: `APIError` (401/403/404).
    func admit(_ request: Request, pluginID: String) async throws -> Gatekeeper.Caller {
        let gatekeeper = self.gatekeeper
        let snapshot = gatekeeper.kernel.registry.snapshot
        let chain = { @Sendable () throws -> Gatekeeper.Caller in
            let caller = try gatekeeper.identify(request, snapshot: snapshot, pluginID: pluginID)
            guard gatekeeper.kernel.access.isVisible(pluginID, tenant: caller.principal.tenant) else { throw APIError.notFound }
            try gatekeeper.authorize(caller, request, snapshot: snapshot)
            return caller
        }
        // No hook, no plugin code: inline (a missing guard's denial included), not in the plugin's lane.
        if snapshot.authenticators.isEmpty && snapshot.authorizers.isEmpty { return try chain() }
        return try await gatekeeper.lanes.run(pluginID, chain)
    }

    /// The path and query sent upstream: the upstream's base path, then `rest` (the canonical path below the
    /// prefix, decoded) percent-encoded again segment by segment, so a decoded `?`, `#`, space or control character
    /// stays inside its segment; then the client's query as it came.
    func target(_ proxy: ProxyDeclaration, rest: String, query: String?) -> String {
        let path = Self.encodeSegments(rest)
        return proxy.basePath + (path.isEmpty ? "/" : path) + (query.map { "?" + $0 } ?? "")
    }

    /// `path` with every byte outside RFC 3986 `pchar` less `%` (unreserved, sub-delims, `:` and `@`) and `/`
    /// percent-encoded (UTF-8, uppercase hex); a path with none such comes back as it is.
    static func encodeSegments(_ path: String) -> String {
        let utf8 = path.utf8
        guard utf8.contains(where: { !isSegmentByte($0) && $0 != UInt8(ascii: "/") }) else { return path }
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count * 3)
        for byte in utf8 {
            if isSegmentByte(byte) || byte == UInt8(ascii: "/") {
                out.append(byte)
            } else {
                out += [UInt8(ascii: "%"), digits[Int(byte >> 4)], digits[Int(byte & 0x0f)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// RFC 3986 `pchar` less `%` (re-encoded): unreserved, sub-delims, `:` and `@`.
    static func isSegmentByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: "-._~!$&'()*+,;=:@".utf8.contains(byte)
        }
    }

    /// The headers for the upstream: the client's headers as plugins see them (host credentials removed), less
    /// hop-by-hop headers, every `X-Keel-*` header the client sent and the forwarding headers an app behind a proxy
    /// trusts (`Forwarded`, `X-Forwarded-*`, `X-Real-IP` and the others of `claimedByClients`: a client could claim any
    /// address, host, scheme or path with them), each also spelt with underscores (`isHosts`);
    /// then `Host`, `X-Forwarded-For` with `peer` (the client's address, when known) and the signed identity.
    /// - Throws: `APIError` 503 `proxy-key-unavailable` when the host's secret cannot be read (see `signer`).
    func upstreamHeaders(_ caller: Gatekeeper.Caller, pluginID: String, proxy: ProxyDeclaration, method: String,
                         target: String, peer: String?) throws(APIError) -> [(String, String)] {
        var headers: [(String, String)] = []
        for (name, value) in caller.seen.headers where !Self.isHosts(name) {
            headers.append((name, value))
        }
        headers.append(("host", proxy.port == 80 || proxy.port == 443 ? proxy.hostPart : "\(proxy.hostPart):\(proxy.port)"))
        if let peer { headers.append(("x-forwarded-for", peer)) }
        headers += ProxyIdentity.headers(caller.principal, method: method, target: target, signer: try signer(pluginID))
        headers.append(("x-keel-hop", hop))
        return headers
    }

    /// True for a client header the upstream must not get (`upstreamHeaders`). Compared with `_` read as `-`: servers
    /// that hand headers to the app as variables (CGI, WSGI, PHP, Rack) give `X_Real_IP` and `X-Real-IP` one name,
    /// `HTTP_X_REAL_IP`, so a client's `X_Forwarded_Host` or `X_Keel_User` would otherwise pass for the proxy's own.
    static func isHosts(_ name: String) -> Bool {
        let name = name.utf8.contains(UInt8(ascii: "_")) ? String(name.lowercased().map { $0 == "_" ? "-" : $0 }) : name
        return hopByHop.contains(name) || name.hasPrefix("x-keel-") || name.hasPrefix("x-forwarded-") || claimedByClients.contains(name)
    }

    /// The plugin's proxy key, derived and made ready to sign with once per plugin (the host's secret never changes
    /// once made).
    /// - Throws: `APIError` 503 `proxy-key-unavailable` when the host's secret cannot be read (the state store
    ///   down): the request is refused, never signed with a key anyone could compute.
    func signer(_ pluginID: String) throws(APIError) -> ProxyIdentity.Signer {
        if let signer = signers.withLock({ $0[pluginID] }) { return signer }
        let secret: String
        do { secret = try gatekeeper.kernel.state.proxySecret() } catch {
            gatekeeper.log(LogRecord(level: .error, pluginID: pluginID, message: "proxy: the host's proxy secret cannot be read (\(error)); requests refused"))
            throw APIError(.serviceUnavailable, "proxy-key-unavailable", "the host cannot sign the caller's identity for /ext/\(pluginID) now; retry")
        }
        let signer = ProxyIdentity.Signer(key: ProxyIdentity.key(for: pluginID, secret: secret))
        signers.withLock { $0[pluginID] = signer }
        return signer
    }

    /// Takes the client connection for the upstream's answer, unless the request body's deadline already wrote its
    /// 408 there (then the connection is closing: nothing more is written).
    /// - Throws: `CancellationError` when the deadline came first.
    static func claimClient(_ body: LimitedBody?) throws {
        if let body, !body.gate.answer() { throw CancellationError() }
    }

    /// Proxies `request` arriving on `channel`: its client's address goes in `X-Forwarded-For`, and the upstream
    /// exchange runs on its event loop.
    /// The refusal of a proxied request that carries this server's own mark (`hop`): its upstream, directly or through
    /// other proxies, is this very server, and each request would come back as another until the connection limit is
    /// full (one anonymous GET of a looping proxy took every connection of the host). Nil otherwise.
    func loopRefusal(_ headers: HTTPFields, proxy: ProxyDeclaration, pluginID: String) -> APIError? {
        guard headers[values: Self.hopField].contains(hop) else { return nil }
        return APIError(HTTPResponse.Status(code: 508, reasonPhrase: "Loop Detected"), "proxy-loop", "the upstream of /ext/\(pluginID)\(proxy.prefix) (\(proxy.upstream)) leads back to this host: refused, it would loop")
    }
    static let hopField = HTTPField.Name("x-keel-hop")!

    func respond(to request: Request, pluginID: String, proxy: ProxyDeclaration, rest: String, channel: (any Channel)?) async throws -> Response {
        let peer = channel?.remoteAddress?.ipAddress, loop = channel?.eventLoop
        if let refusal = loopRefusal(request.headers, proxy: proxy, pluginID: pluginID) { throw refusal }
        let caller = try await admit(request, pluginID: pluginID)
        if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodySize { throw APIError.tooLarge(maxBodySize) }

        let target = target(proxy, rest: rest, query: request.uri.query)
        let identity = try upstreamHeaders(caller, pluginID: pluginID, proxy: proxy, method: request.method.rawValue, target: target,
                                       peer: peer)
        let bodyless = request.headers[.contentLength] == nil && request.headers[.transferEncoding] == nil
        let length = request.headers[.contentLength].flatMap(Int64.init)
        let body = bodyless ? nil : LimitedBody(base: request.body, limit: maxBodySize, length: length, timeout: bodyTimeout, channel: channel)
        do {
            if proxy.scheme == "http" {
                var head = HTTPRequestHead(version: .http1_1, method: NIOHTTP1.HTTPMethod(rawValue: request.method.rawValue),
                                           uri: target, headers: HTTPHeaders(identity))
                if let length { head.headers.add(name: "content-length", value: String(length)) }
                else if !bodyless { head.headers.add(name: "transfer-encoding", value: "chunked") }
                else if request.method != .get && request.method != .head { head.headers.add(name: "content-length", value: "0") }
                let (answer, answerBody) = try await pool.execute(host: proxy.host, port: proxy.port, head: head, body: body,
                                                                  timeout: .nanoseconds(Int64(proxy.timeout * 1e9)), on: loop)
                try Self.claimClient(body)
                switch answerBody {
                case let .streamed(stream):
                    // An answer the upstream cut after its head reaches the client as a closed connection; the log
                    // says why (a client that went away is not logged).
                    let gatekeeper = self.gatekeeper, prefix = proxy.prefix, upstream = proxy.upstream
                    let streamed = ResponseBody { writer in
                        var sent = 0
                        let chunks = stream.makeAsyncIterator()
                        while true {
                            let chunk: ByteBuffer?
                            do { chunk = try await chunks.next() } catch {
                                gatekeeper.log(LogRecord(level: .warn, pluginID: pluginID,
                                                         message: "proxy \(prefix) → \(upstream): the answer was cut after \(sent) bytes of its body: \(error)"))
                                throw error
                            }
                            guard let chunk else { break }
                            sent += chunk.readableBytes
                            try await writer.write(chunk)
                        }
                        try await writer.finish(nil)
                    }
                    return answerResponse(status: answer.status.code, headers: answer.headers, body: streamed, pluginID: pluginID, proxy: proxy,
                                          rest: rest, upload: body, channel: channel)
                case let .complete(bytes) where bytes.readableBytes > 0 || answer.headers.contains(name: "content-length"):
                    // Head, body and end go to the client in one write.
                    return answerResponse(status: answer.status.code, headers: answer.headers, body: ResponseBody(byteBuffer: bytes),
                                          pluginID: pluginID, proxy: proxy, rest: rest, upload: body, channel: channel)
                case .complete:
                    // No body and no length (204, 304, a HEAD answered without one): none is added.
                    return answerResponse(status: answer.status.code, headers: answer.headers,
                                          body: ResponseBody(asyncSequence: EmptyBody()), pluginID: pluginID, proxy: proxy, rest: rest,
                                          upload: body, channel: channel)
                }
            }
            var upstream = HTTPClientRequest(url: "\(proxy.scheme)://\(proxy.hostPart):\(proxy.port)\(target)")
            upstream.method = NIOHTTP1.HTTPMethod(rawValue: request.method.rawValue)
            upstream.headers = HTTPHeaders(identity)
            if let body { upstream.body = .stream(body, length: length.map { .known($0) } ?? .unknown) }
            let response = try await client.execute(upstream, timeout: .nanoseconds(Int64(proxy.timeout * 1e9)))
            try Self.claimClient(body)
            // A 101 that no request asked for (AsyncHTTPClient hands it on as the answer and closes the connection):
            // passed on, it would leave the client waiting for a protocol that never comes.
            guard response.status.code >= 200 else {
                throw UpstreamFailure.unavailable(reused: false, cause: "the upstream answered \(response.status.code) though no upgrade was asked for")
            }
            return answerResponse(status: response.status.code, headers: response.headers, body: ResponseBody(asyncSequence: response.body),
                                  pluginID: pluginID, proxy: proxy, rest: rest, upload: body, channel: channel)
        } catch let error as CancellationError {
            await body?.gate.release(channel)
            throw error // the body's deadline answered the client (408): nothing to log as the upstream's
        } catch {
            // The failure's answer takes the client connection, unless the body's deadline already wrote its 408.
            if let body, !body.gate.answer() {
                await body.gate.release(channel)
                throw CancellationError()
            }
            await body?.gate.release(channel)
            let timedOut: Bool
            switch error {
            case UpstreamFailure.timeout: timedOut = true
            case let error as HTTPClientError: timedOut = error == .deadlineExceeded || error == .readTimeout
            default: timedOut = false
            }
            gatekeeper.log(LogRecord(level: .warn, pluginID: pluginID, message: "proxy \(proxy.prefix) → \(proxy.upstream): \(error)"))
            if timedOut {
                throw APIError(.gatewayTimeout, "upstream-timeout", "the upstream of /ext/\(pluginID)\(proxy.prefix) did not answer within \(proxy.timeout) s")
            }
            throw APIError(.badGateway, "upstream-unavailable", "the upstream of /ext/\(pluginID)\(proxy.prefix) cannot be reached")
        }
    }

    /// Dropped from every answer: the app shares the host's origin, and this would clear the storage and cookies
    /// of all of it (the console's token, every plugin's page sessions and every other app's cookies).
    static let clearSiteData = HTTPField.Name("clear-site-data")!
    /// Dropped from every answer: it would let a service worker script under the plugin's paths claim a scope above
    /// them (the console, the admin API, every other plugin), and intercept their requests.
    static let serviceWorkerAllowed = HTTPField.Name("service-worker-allowed")!
    /// Dropped from every answer: reporting set-ups (`NEL`, `Report-To`, `Reporting-Endpoints`) apply to the whole
    /// origin, and would send the address of every console and admin API request to a collector the app chose. So do
    /// `Strict-Transport-Security` (with `includeSubDomains`, it pins the host and every subdomain to HTTPS for as
    /// long as it says), `Alt-Svc` (the origin's traffic sent to another port or host), the client-hint opt-ins
    /// (`Accept-CH`, `Critical-CH`), `Set-Login` and `Origin-Agent-Cluster`: none is the app's to set.
    static let originWide: Set<HTTPField.Name> = [clearSiteData, serviceWorkerAllowed, HTTPField.Name("nel")!,
                                                  HTTPField.Name("report-to")!, HTTPField.Name("reporting-endpoints")!,
                                                  HTTPField.Name("strict-transport-security")!, HTTPField.Name("alt-svc")!,
                                                  HTTPField.Name("accept-ch")!, HTTPField.Name("critical-ch")!,
                                                  HTTPField.Name("set-login")!, HTTPField.Name("origin-agent-cluster")!]
    /// Dropped from a plugin handler's answer: the framing and the connection are the host's.
    static let framing: Set<HTTPField.Name> = [.connection, HTTPField.Name("keep-alive")!, .transferEncoding, .te, .trailer,
                                               .upgrade, .proxyAuthenticate]
    /// Client headers an app behind a proxy reads as the client's address or the path it really asked for
    /// (`X-Original-URL` routes Symfony, Laravel and IIS around the path the auth hooks were asked about): a client
    /// could claim any of them, so none reaches the upstream.
    /// `Proxy` too: CGI-style servers hand it to the app as `HTTP_PROXY`, which HTTP libraries read as the proxy for
    /// their own requests (httpoxy).
    static let claimedByClients: Set<String> = ["forwarded", "x-real-ip", "client-ip", "true-client-ip", "x-client-ip",
                                                "x-cluster-client-ip", "x-original-url", "x-rewrite-url", "x-original-uri", "proxy"]

    /// The upstream's answer as the client gets it: hop-by-hop headers (but the length), `X-Content-Type-Options`,
    /// `Clear-Site-Data` and `Service-Worker-Allowed` dropped, no `Set-Cookie` for the console's page cookie and every other cookie kept to the
    /// app's mount (`scopedCookie`), then the sandboxing headers of plugin content. `pluginID`, `proxy`, `rest`: the
    /// request's (where its cookies may go).
    func answerResponse(status: UInt, headers upstreamHeaders: HTTPHeaders, body answer: ResponseBody, pluginID: String,
                        proxy: ProxyDeclaration, rest: String, upload: LimitedBody?, channel: (any Channel)?) -> Response {
        // The client connection goes back to the server only once the upload has stopped reading from it.
        let body = upload.map { upload in
            ResponseBody(contentLength: answer.contentLength) { writer in
                do { try await answer.write(writer) } catch {
                    await upload.gate.release(channel)
                    throw error
                }
                await upload.gate.release(channel)
            }
        } ?? answer
        var headers = HTTPFields()
        for (name, value) in upstreamHeaders {
            let lower = name.lowercased()
            guard !Self.hopByHop.contains(lower) || lower == "content-length", let field = HTTPField.Name(lower),
                  field != .xContentTypeOptions, !Self.originWide.contains(field) else { continue }
            if field == .setCookie {
                // The console's page cookie is the host's: an upstream may not plant or overwrite it.
                if PageSessions.setsPageCookie(value) { continue }
                let mount = Self.mount(of: proxy, pluginID: pluginID)
                headers.append(HTTPField(name: field, value: Self.scopedCookie(value, mount: mount, basePath: proxy.basePath,
                                                                               requestPath: mount + Self.encodeSegments(rest))))
                continue
            }
            headers.append(HTTPField(name: field, value: value))
        }
        headers.append(PluginDispatcher.sandboxField)
        headers.append(PluginDispatcher.nosniffField)
        return Response(status: .init(code: Int(status)), headers: headers, body: body)
    }
}

/// No bytes.
struct EmptyBody: AsyncSequence, AsyncIteratorProtocol, Sendable {
    typealias Element = ByteBuffer
    mutating func next() async -> ByteBuffer? { nil }
    func makeAsyncIterator() -> EmptyBody { self }
}

extension ProxyDeclaration {
    /// The host as it goes in a URL (an IPv6 address in brackets).
    var hostPart: String { host.contains(":") ? "[\(host)]" : host }
}
