// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import AsyncHTTPClient
import Foundation
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
/// `sink` runs on the task that reads (Swift's cooperative pool): it must be short (a copy, a hash, a file write).
enum HTTPTransfer {
    /// Runs the transfer; throws `ExtensionStore.StoreError` with the reason. Cancelling the calling task stops it.
    static func run(_ location: String, fetcher: RepositoryFetcher, maxBytes: Int,
                    sink: @escaping @Sendable (Data) throws -> Void) async throws(ExtensionStore.StoreError) {
        let total = fetcher.totalTimeout
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await read(location, fetcher: fetcher, maxBytes: maxBytes, sink: sink) }
                group.addTask {
                    try await Task.sleep(for: .seconds(total))
                    throw Failure("no complete answer within \(seconds(total)) (the repository time-out)")
                }
                // The first to end decides: the transfer (done or failed), or the time-out; the other is cancelled.
                defer { group.cancelAll() }
                try await group.next()
            }
        } catch let failure as Failure {
            throw ExtensionStore.StoreError(failure.reason.hasPrefix(location) ? failure.reason : "\(location): \(failure.reason)")
        } catch let error as ExtensionStore.StoreError {
            throw error
        } catch is CancellationError {
            throw ExtensionStore.StoreError("\(location): cancelled")
        } catch {
            throw ExtensionStore.StoreError("\(location): \(describe(error, fetcher))")
        }
    }

    /// A reason of this transfer's own (the limit, the status, the time-out), as opposed to the client's errors.
    struct Failure: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    private static func read(_ location: String, fetcher: RepositoryFetcher, maxBytes: Int,
                             sink: @escaping @Sendable (Data) throws -> Void) async throws {
        let request = HTTPClientRequest(url: location)
        let response = try await client(fetcher).execute(request, timeout: .seconds(Int64(fetcher.totalTimeout.rounded(.up))))
        guard response.status == .ok else { throw Failure("HTTP \(response.status.code)") }
        if let announced = response.headers.first(name: "content-length").flatMap(Int.init), announced > maxBytes {
            throw Failure("larger than the limit of \(maxBytes) bytes (\(announced) announced); refused")
        }
        var received = 0
        for try await chunk in response.body {
            received += chunk.readableBytes
            guard received <= maxBytes else { throw Failure("larger than the limit of \(maxBytes) bytes; download stopped and refused") }
            do { try sink(Data(chunk.readableBytesView)) } catch { throw Failure("\(error)") }
        }
    }

    /// One client per connect time-out, for the life of the process (as `HTTPClient.shared` is): redirects followed
    /// (at most 5, no cycles), no cookies, the system's trust roots for https, a failed connection not retried.
    private static func client(_ fetcher: RepositoryFetcher) -> HTTPClient {
        let seconds = fetcher.connectTimeout
        return clients.withLock { clients in
            if let client = clients[seconds] { return client }
            let timeout = TimeAmount.milliseconds(Int64((seconds * 1000).rounded(.up)))
            var configuration = HTTPClient.Configuration(redirectConfiguration: .follow(max: 5, allowCycles: false),
                                                         timeout: .init(connect: timeout, read: timeout))
            // A refused connection or an unknown host is said at once, not after the connect time-out of retries.
            configuration.connectionPool.retryConnectionEstablishment = false
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            clients[seconds] = client
            return client
        }
    }

    private static let clients = Mutex<[Double: HTTPClient]>([:])

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : "\(s) s" }

    /// The client's errors as one line, never their own text.
    static func describe(_ error: any Error, _ fetcher: RepositoryFetcher) -> String {
        let connect = "no answer within \(seconds(fetcher.connectTimeout)) (the connect time-out)"
        if let e = error as? HTTPClientError {
            switch e {
            case .connectTimeout, .readTimeout, .getConnectionFromPoolTimeout: return connect
            case .tlsHandshakeTimeout: return "TLS failed (the handshake timed out)"
            case .deadlineExceeded: return "no complete answer within \(seconds(fetcher.totalTimeout)) (the repository time-out)"
            case .remoteConnectionClosed: return "the connection was closed early"
            case .redirectLimitReached, .redirectCycleDetected: return "too many redirects"
            case .invalidURL, .emptyHost, .emptyScheme: return "not a URL"
            default: return "network error (\(e.shortDescription))"
            }
        }
        if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError { return "TLS failed (certificate or handshake)" }
        if let e = error as? HTTPParserError { return e == .invalidEOFState ? "the connection was closed early" : "not a valid HTTP answer" }
        if let e = error as? NIOConnectionError {
            if e.dnsAError != nil || e.dnsAAAAError != nil, e.connectionErrors.isEmpty { return "unknown host" }
            return e.connectionErrors.first.map { describe($0.error, fetcher) } ?? "connection refused"
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

private extension HTTPClientError {
    /// The case's name, for a message: AsyncHTTPClient's description is "HTTPClientError.<case>".
    var shortDescription: String { description.split(separator: ".").last.map(String.init) ?? description }
}
