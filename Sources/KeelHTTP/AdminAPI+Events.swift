// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Hummingbird
import Keel
import ServiceLifecycle

/// `GET /api/v1/events` (admin token only): the kernel's change events as server-sent events, so that the console
/// updates within a moment when the CLI, another admin or the kernel itself (a watched reload, an automatic disable)
/// changes something.
///
/// Each event is `event: change` with one line of JSON: `{"kind":"executed","op":"disable","subject":"hello",
/// "actor":"cli","ok":true}` or `{"kind":"plugins-changed"}`. A comment line every 15 s keeps the connection (and
/// its idle timer) alive. The stream ends when the client goes away, the server shuts down gracefully (so it never
/// holds a shutdown up), or the admin token it was opened with is no longer the token (`keel token reset`, a new
/// `$KEEL_ADMIN_TOKEN`): within about a second, so that a leaked token's live feed of every admin action ends with it.
/// Events are only a signal to re-read: a slow client loses old ones (at most 64 are kept), never the latest.
extension AdminAPI {
    func registerEvents(admin: RouterGroup<KeelRequestContext>) {
        let kernel = self.kernel, adminToken = gatekeeper.token
        admin.head("events") { _, _ -> Response in Response(status: .ok, headers: Self.eventHeaders) }
        admin.get("events") { _, _ -> Response in
            let openedUnder = adminToken.digest
            let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingNewest(64))
            let token = kernel.events.subscribeNow { event in continuation.yield(ByteBuffer(string: Self.eventText(event))) }
            continuation.onTermination = { _ in kernel.events.unsubscribe(token) }
            continuation.yield(ByteBuffer(string: ": connected\n\n"))
            return Response(status: .ok, headers: Self.eventHeaders, body: ResponseBody { writer in
                // The heartbeat every 15 s, the token looked at every second, and the end of the stream on a graceful
                // shutdown.
                let beat = Task {
                    var seconds = 0
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(1))
                        if adminToken.digest != openedUnder {
                            continuation.finish()
                            return
                        }
                        seconds += 1
                        if seconds % 15 == 0 { continuation.yield(ByteBuffer(string: ": ping\n\n")) }
                    }
                }
                defer { beat.cancel() }
                try await withGracefulShutdownHandler {
                    for await chunk in stream { try await writer.write(chunk) }
                } onGracefulShutdown: {
                    continuation.finish()
                }
                continuation.finish()
                try await writer.finish(nil)
            })
        }
    }

    /// The stream's headers; a HEAD gets them without opening a stream (answered as its GET, it would subscribe to
    /// the events and never let go, the body being dropped unread).
    static var eventHeaders: HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return headers
    }

    /// One event as SSE text.
    static func eventText(_ event: KernelEvent) -> String {
        struct Body: Encodable { var kind: String; var op: String?; var subject: String?; var actor: String?; var ok: Bool? }
        let body: Body
        switch event {
        case let .executed(command, actor, failure):
            body = Body(kind: "executed", op: command.name, subject: command.subject, actor: actor, ok: failure == nil)
        case .pluginsChanged:
            body = Body(kind: "plugins-changed")
        }
        let json = (try? JSONEncoder().encode(body)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return "event: change\ndata: \(json)\n\n"
    }
}
