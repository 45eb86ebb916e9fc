// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import AsyncHTTPClient
import Foundation
import KeelManifest
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// One HTTP(S) GET of a repository file through AsyncHTTPClient, its body handed to `sink` chunk by chunk as it
/// arrives. The body is read with back-pressure: the next chunk is asked for only once `sink` returned, so a fast
/// server can never make the host hold more than a few chunks beyond what `sink` keeps, and the transfer stops as
/// soon as the announced length or the bytes received pass `maxBytes`. Errors are one line naming the location,
/// never AsyncHTTPClient's or NIO's text.
///
/// Time-outs (`RepositoryFetcher`): `connectTimeout` bounds connecting and any silence of the server while it
/// answers (AsyncHTTPClient's connect and read time-outs); `totalTimeout` bounds the whole transfer, head and body.
/// The transfer runs on NIO's threads and `sink` on NIO's blocking-work pool (it may write a file), never on Swift's
/// cooperative pool: `wait` may block any thread but an event loop's.
enum HTTPTransfer {
    /// Redirects followed at most.
    static let maxRedirects = 5

    /// The transfer under way: the request of its current hop (a redirect starts another), to cancel.
    final class Transfer: Sendable {
        private let current = Mutex<(task: HTTPClient.Task<Void>?, cancelled: Bool)>((nil, false))

        /// Takes `task` as the current hop's; false (and `task` failed) when the transfer was cancelled already.
        func hop(_ task: HTTPClient.Task<Void>) -> Bool {
            let cancelled = current.withLock { c in
                c.task = task
                return c.cancelled
            }
            if cancelled { task.fail(reason: Failure("cancelled")) }
            return !cancelled
        }

        func cancel() { cancel(Failure("cancelled")) }

        /// Ends it for the repository time-out (`totalTimeout` seconds).
        func cancelTimedOut(_ total: Double) {
            cancel(Failure("no complete answer within \(HTTPTransfer.seconds(total)) (the repository time-out)"))
        }

        private func cancel(_ reason: Failure) {
            let task = current.withLock { c in
                c.cancelled = true
                return c.task
            }
            task?.fail(reason: reason)
        }
    }

    /// Starts the transfer; the future ends with it, failed with `ExtensionStore.StoreError` and the reason.
    /// `cancel` on the returned transfer stops it. Redirects are followed here, at most `maxRedirects`, each checked
    /// first (`RedirectPolicy`): a repository on another machine may not send the host to this machine's own or
    /// private addresses.
    static func start(_ location: String, fetcher: RepositoryFetcher, maxBytes: Int,
                      sink: @escaping @Sendable (Data) throws -> Void) -> (transfer: Transfer, result: EventLoopFuture<Void>) {
        let transfer = Transfer()
        // The whole transfer, every hop and the body included (AsyncHTTPClient's own deadline ends with the head).
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let total = fetcher.totalTimeout
        let timer = loop.scheduleTask(in: .milliseconds(Int64((total * 1000).rounded(.up)))) { transfer.cancelTimedOut(total) }
        let result = hop(location, origin: location, left: maxRedirects, transfer: transfer, fetcher: fetcher, maxBytes: maxBytes, sink: sink)
        result.whenComplete { _ in timer.cancel() }
        return (transfer, result)
    }

    /// One request of the transfer, and the next after a redirect.
    private static func hop(_ location: String, origin: String, left: Int, transfer: Transfer, fetcher: RepositoryFetcher,
                            maxBytes: Int, sink: @escaping @Sendable (Data) throws -> Void) -> EventLoopFuture<Void> {
        var request: HTTPClient.Request
        let proxy: ProxyEnvironment.Server?
        do {
            request = try HTTPClient.Request(url: location)
            proxy = try ProxyEnvironment(ProcessInfo.processInfo.environment).server(scheme: request.scheme, host: request.host)
        } catch {
            let text = (error as? ProxyEnvironment.Invalid)?.reason ?? "not a URL"
            return MultiThreadedEventLoopGroup.singleton.any().makeFailedFuture(ExtensionStore.StoreError("\(origin): \(location == origin ? "" : "redirected to \(location): ")\(text)"))
        }
        let client = client(fetcher, proxy: proxy)
        request.headers.add(name: "User-Agent", value: "keel/\(KeelVersion.current)")
        let task = client.execute(request: request, delegate: BodyDelegate(maxBytes: maxBytes, sink: sink))
        guard transfer.hop(task) else {
            return task.futureResult.flatMapErrorThrowing { _ in throw ExtensionStore.StoreError("\(origin): cancelled") }
        }
        return task.futureResult.flatMapError { error in
            guard let redirect = error as? Redirect else {
                return task.eventLoop.makeFailedFuture(ExtensionStore.StoreError(reason(error, location: origin, fetcher, proxy: proxy)))
            }
            guard left > 0 else { return task.eventLoop.makeFailedFuture(ExtensionStore.StoreError("\(origin): too many redirects")) }
            guard let next = URL(string: redirect.location, relativeTo: URL(string: location))?.absoluteURL.absoluteString else {
                return task.eventLoop.makeFailedFuture(ExtensionStore.StoreError("\(origin): redirected to \"\(redirect.location)\", which is not a URL"))
            }
            // Judged off the event loop: a name is looked up (blocking), unless a proxy reaches it for the host.
            let proxied = URL(string: next).flatMap { url in
                url.host(percentEncoded: false).map { (try? ProxyEnvironment(ProcessInfo.processInfo.environment).server(scheme: url.scheme ?? "", host: $0)) != nil }
            } ?? false
            return NIOThreadPool.singleton.runIfActive(eventLoop: task.eventLoop) {
                RedirectPolicy.refusal(from: origin, to: next, resolve: proxied ? { _ in [] } : RedirectPolicy.addresses)
            }.flatMap { refusal in
                if let refusal { return task.eventLoop.makeFailedFuture(ExtensionStore.StoreError("\(origin): \(refusal)")) }
                return hop(next, origin: origin, left: left - 1, transfer: transfer, fetcher: fetcher, maxBytes: maxBytes, sink: sink)
            }
        }
    }

    /// The transfer, waited for on the calling thread (any thread but an event loop's). Throws `StoreError`.
    static func wait(_ location: String, fetcher: RepositoryFetcher, maxBytes: Int,
                     sink: @escaping @Sendable (Data) throws -> Void) throws {
        try start(location, fetcher: fetcher, maxBytes: maxBytes, sink: sink).result.wait()
    }

    /// The transfer, awaited; cancelling the calling task stops it. Throws `StoreError`.
    static func run(_ location: String, fetcher: RepositoryFetcher, maxBytes: Int,
                    sink: @escaping @Sendable (Data) throws -> Void) async throws {
        let (transfer, result) = start(location, fetcher: fetcher, maxBytes: maxBytes, sink: sink)
        try await withTaskCancellationHandler {
            try await result.get()
        } onCancel: {
            transfer.cancel()
        }
    }

    /// A redirect the server answered with: followed by `hop`, not by AsyncHTTPClient.
    struct Redirect: Error {
        let location: String
    }

    /// A reason of this transfer's own (the limit, the status, the time-out, the sink's), as opposed to the client's
    /// errors.
    struct Failure: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    /// `error` as the one line the transfer fails with, naming `location` once.
    static func reason(_ error: any Error, location: String, _ fetcher: RepositoryFetcher, proxy: ProxyEnvironment.Server? = nil) -> String {
        // The client's errors say the repository could not be reached, as a local one's missing file does, and name
        // the proxy it was reached through.
        let through = proxy.map { " through the proxy \($0.host):\($0.port) (\($0.variable))" } ?? ""
        let scheme = location.prefix { $0 != ":" }.lowercased()
        let text = (error as? Failure)?.reason ?? "unreachable\(through): \(describe(error, fetcher, scheme: scheme, proxied: proxy))"
        return text.hasPrefix(location) ? text : "\(location): \(text)"
    }

    /// Checks the head, counts the body and hands each chunk to the sink on NIO's blocking-work pool; the next chunk
    /// is read only once that returned. `received` is touched only by the calls AsyncHTTPClient makes one after
    /// another (each waits for the previous one's future), so it needs no lock.
    private final class BodyDelegate: HTTPClientResponseDelegate, @unchecked Sendable {
        typealias Response = Void
        let maxBytes: Int
        let sink: @Sendable (Data) throws -> Void
        private var received = 0

        init(maxBytes: Int, sink: @escaping @Sendable (Data) throws -> Void) {
            self.maxBytes = maxBytes
            self.sink = sink
        }

        func didReceiveHead(task: HTTPClient.Task<Void>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
            if [301, 302, 303, 307, 308].contains(head.status.code), let location = head.headers.first(name: "location") {
                return task.eventLoop.makeFailedFuture(Redirect(location: location))
            }
            guard head.status == .ok else { return task.eventLoop.makeFailedFuture(Failure("HTTP \(head.status.code)")) }
            if let announced = head.headers.first(name: "content-length").flatMap(Int.init), announced > maxBytes {
                return task.eventLoop.makeFailedFuture(Failure("larger than the limit of \(maxBytes) bytes (\(announced) announced); refused"))
            }
            return task.eventLoop.makeSucceededVoidFuture()
        }

        func didReceiveBodyPart(task: HTTPClient.Task<Void>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
            received += buffer.readableBytes
            guard received <= maxBytes else {
                return task.eventLoop.makeFailedFuture(Failure("larger than the limit of \(maxBytes) bytes; download stopped and refused"))
            }
            let chunk = Data(buffer.readableBytesView), sink = self.sink
            return NIOThreadPool.singleton.runIfActive(eventLoop: task.eventLoop) {
                do { try sink(chunk) } catch { throw Failure("\(error)") }
            }
        }

        func didFinishRequest(task: HTTPClient.Task<Void>) throws {}
    }

    /// One client per connect time-out and proxy, for the life of the process (as `HTTPClient.shared` is): redirects
    /// not followed by it (`hop` follows them, each checked), no cookies, the system's trust roots for https, a
    /// failed connection not retried. An https location goes through an http proxy by `CONNECT`: the proxy sees the
    /// host name, not the bytes.
    private static func client(_ fetcher: RepositoryFetcher, proxy: ProxyEnvironment.Server?) -> HTTPClient {
        let seconds = fetcher.connectTimeout
        let key = ClientKey(connectTimeout: seconds, proxy: proxy)
        return clients.withLock { clients in
            if let client = clients[key] { return client }
            let timeout = TimeAmount.milliseconds(Int64((seconds * 1000).rounded(.up)))
            // Redirects are followed by `hop`, each checked first.
            var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow,
                                                         timeout: .init(connect: timeout, read: timeout))
            // A refused connection or an unknown host is said at once, not after the connect time-out of retries.
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.proxy = proxy.map { server in
                switch server.kind {
                case .socks5: return .socksServer(host: server.host, port: server.port)
                case .http:
                    let authorization = server.user.map { HTTPClient.Authorization.basic(username: $0, password: server.password ?? "") }
                    return .server(host: server.host, port: server.port, authorization: authorization)
                }
            }
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            clients[key] = client
            return client
        }
    }

    private struct ClientKey: Hashable {
        let connectTimeout: Double
        let proxy: ProxyEnvironment.Server?
    }

    private static let clients = Mutex<[ClientKey: HTTPClient]>([:])

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : "\(s) s" }

    /// The client's errors as one line, never their own text.
    static func describe(_ error: any Error, _ fetcher: RepositoryFetcher, scheme: String = "https",
                         proxied: ProxyEnvironment.Server? = nil) -> String {
        let connect = "no answer within \(seconds(fetcher.connectTimeout)) (the connect time-out)"
        if let e = error as? HTTPClientError {
            switch e {
            case .connectTimeout, .readTimeout, .getConnectionFromPoolTimeout: return connect
            case .tlsHandshakeTimeout: return "TLS failed (the handshake timed out)"
            case .deadlineExceeded: return "no complete answer within \(seconds(fetcher.totalTimeout)) (the repository time-out)"
            case .remoteConnectionClosed: return "the connection was closed early"
            case .redirectLimitReached, .redirectCycleDetected: return "too many redirects"
            case .invalidURL, .emptyHost, .emptyScheme: return "not a URL"
            case .proxyAuthenticationRequired:
                return proxied?.user == nil ? "the proxy asks for a user and password (407)" : "the proxy refused the user and password given (407)"
            case .invalidProxyResponse:
                // AsyncHTTPClient tunnels http as well as https; squid, by default, tunnels only to port 443.
                return "the proxy refused to open a tunnel" + (scheme == "http" ? " (http is tunnelled too: a proxy that tunnels only to port 443 needs an https repository)" : "")
            case .httpProxyHandshakeTimeout, .socksHandshakeTimeout: return "the proxy did not answer in time"
            default: return "network error (\(e.shortDescription.prefix(80).filter { !$0.isNewline }))"
            }
        }
        if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError { return "TLS failed (certificate or handshake)" }
        if let e = error as? HTTPParserError { return e == .invalidEOFState ? "the connection was closed early" : "not a valid HTTP answer" }
        if let e = error as? NIOConnectionError {
            if e.dnsAError != nil || e.dnsAAAAError != nil, e.connectionErrors.isEmpty { return "unknown host" }
            return e.connectionErrors.first.map { describe($0.error, fetcher, scheme: scheme, proxied: proxied) } ?? "connection refused"
        }
        if let e = error as? IOError {
            switch e.errnoCode {
            case ECONNREFUSED: return "connection refused"
            case ECONNRESET, EPIPE: return "the connection was closed early"
            case ENETUNREACH, EHOSTUNREACH: return "no route to the host"
            default: return "network error (errno \(e.errnoCode))"
            }
        }
        if error is ChannelError { return "the connection was closed early" }
        let text = String(describing: error)
        if text.contains("NXDOMAIN") || text.contains("getaddrinfo") || text.contains("Name or service not known") { return "unknown host" }
        return "network error (\(type(of: error)))"
    }
}

