// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTPTypes

/// Reads a request's body for every endpoint that takes one (plugin routes, the admin API): at most a given size,
/// within the server's `--body-timeout`, so that a client sending a body slowly (a byte now and then) holds its
/// connection no longer than that, wherever it sends it.
struct RequestBodyReader: Sendable {
    let timeout: Duration

    /// The body, at most `limit` bytes, within `timeout`.
    /// - Throws: `APIError` 413 when it is larger. When it is slower, the client gets 408 written straight to the
    ///   connection, which is then closed (that also ends the read, which holds the request's body stream), and
    ///   `CancellationError` ends this request.
    func collect(_ request: Request, upTo limit: Int, context: KeelRequestContext) async throws -> ByteBuffer {
        let timeout = self.timeout
        do {
            return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
                group.addTask { try await request.body.collect(upTo: limit) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let buffer = first else {
                    Self.abandon(context.channel, APIError(.requestTimeout, "body-timeout",
                                                           "the request body did not arrive within \(timeout)"))
                    throw CancellationError()
                }
                return buffer
            }
        } catch is NIOTooManyBytesError {
            throw APIError.tooLarge(limit)
        }
    }

    /// Answers `error` on `channel` directly and closes it: for a request whose body stream is still being read.
    static func abandon(_ channel: (any Channel)?, _ error: APIError) {
        guard let channel else { return }
        let body = ByteBuffer(string: #"{"error":{"code":"\#(error.code)","message":"\#(error.message)"}}"#)
        let head = HTTPResponse(status: error.status, headerFields: [.connection: "close", .contentType: "application/json; charset=utf-8",
                                                                     .contentLength: "\(body.readableBytes)"])
        channel.write(HTTPResponsePart.head(head), promise: nil)
        channel.write(HTTPResponsePart.body(body), promise: nil)
        channel.writeAndFlush(HTTPResponsePart.end(nil)).whenComplete { _ in channel.close(promise: nil) }
    }
}
