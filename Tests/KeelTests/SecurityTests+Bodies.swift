// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// Answers that go before their request's body arrived whole (`LingeringClose`).
extension SecurityTests {
    /// Sends `head`, then `size` bytes of body in blocking writes (each may wait 10 s for the server to read on), as a
    /// client that writes its whole body before it reads anything does; then reads to the end. Returns whether every
    /// byte went, and the answer.
    static func writeThenRead(port: Int, head: String, size: Int) throws -> (sent: Bool, answer: String) {
        let fd = try RawHTTP.connect(port: port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        RawHTTP.send(fd, head)
        let chunk = [UInt8](repeating: 0x20, count: 64 << 10)
        var left = size
        while left > 0 {
            let n = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, min(left, $0.count), Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return (false, RawHTTP.readAll(fd)) }
            left -= n
        }
        return (true, RawHTTP.readAll(fd))
    }

    @Test("a client that writes its whole body before it reads (as Python's urllib does) gets the 413 of a body over --max-body, whether it asked to keep the connection or not; the answer says Connection: close", arguments: [
        "Connection: close\r\n", "",
    ])
    func wholeBodyThenAnswer(connection: String) async throws {
        let server = try serve(try spyHost())
        defer { server.stop() }
        // 8 MiB to the 1 MiB limit. Before 2026-12-07, a `Connection: close` request's rest was never read: the client
        // blocked writing until the idle time-out, then failed with a broken pipe, without its answer.
        let head = "PUT /api/v1/plugins/spy/config HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(ServerProcess.token)\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(8 << 20)\r\n\(connection)\r\n"
        let (sent, answer) = try Self.writeThenRead(port: server.port, head: head, size: 8 << 20)
        #expect(sent, "the server stopped reading the body: \(answer)")
        #expect(answer.hasPrefix("HTTP/1.1 413") && answer.contains("body-too-large"), "\(answer)")
        #expect(answer.lowercased().contains("\r\nconnection: close\r\n"), "\(answer)")
        #expect(try await server.request("GET", "/healthz").status == 200)
    }

    @Test("pipelined requests: an answer to a complete request while the next one's body arrives is no early answer (kept alive), and the next one is answered")
    func pipelinedBodies() async throws {
        let server = try serve(try spyHost())
        defer { server.stop() }
        let fd = try RawHTTP.connect(port: server.port)
        defer { close(fd) }
        // NIO reads the second head with the first request: until 2026-12-07 the first answer said Connection: close
        // (the body arriving was taken for its own) and the second request was never answered.
        let body = #"{"greeting": "hello"}"#
        RawHTTP.send(fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nPUT /api/v1/plugins/spy/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + "Authorization: Bearer \(ServerProcess.token)\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: \(body.utf8.count)\r\n\r\n"
            + body.prefix(5))
        try await Task.sleep(for: .milliseconds(500))
        RawHTTP.send(fd, String(body.dropFirst(5)))
        let both = RawHTTP.readAll(fd)
        let answers = both.components(separatedBy: "HTTP/1.1 ")
        #expect(answers.count == 3 && answers[1].hasPrefix("200") && !answers[1].lowercased().contains("connection: close"), "\(both)")
    }

    @Test("after an answer that went before its body, the rest is read for at most --body-timeout while it trickles, and 5 s once it stops; then the connection is closed")
    func earlyAnswerRestIsBounded() async throws {
        /// Sends a head declaring 100 MB to `server`, then, from `after` seconds after the answer, `piece` every
        /// `every` seconds; returns the seconds from the answer until a write fails (the connection closed), nil when
        /// it is still open after `limit` seconds.
        func secondsToClose(_ server: ServerProcess, piece: Int, every: Double, after: Double = 0, limit: Double) throws -> Double? {
            let fd = try RawHTTP.connect(port: server.port)
            defer { close(fd) }
            // An endpoint that takes no body: answered 405 at once.
            RawHTTP.send(fd, "POST /api/v1/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\n" + String(repeating: " ", count: 100))
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = RawHTTP.receive(fd, &buffer)
            let answer = String(decoding: buffer[0..<max(0, n)], as: UTF8.self)
            #expect(answer.hasPrefix("HTTP/1.1 405") && answer.lowercased().contains("\r\nconnection: close\r\n"), "\(answer)")
            let answered = Date()
            let bytes = [UInt8](repeating: 0x20, count: piece)
            usleep(UInt32(after * 1e6))
            while Date().timeIntervalSince(answered) < limit {
                let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if sent < 0 && errno != EINTR { return Date().timeIntervalSince(answered) }
                usleep(UInt32(every * 1e6))
            }
            return nil
        }
        let host = try spyHost()
        do {
            // Trickling 5 kB a second to a host with a 2 s body time-out: before 2026-12-07 read and dropped for as
            // long as the client sent it.
            let server = try serve(host, ["--body-timeout", "2"])
            defer { server.stop() }
            let trickled = try secondsToClose(server, piece: 1000, every: 0.2, limit: 12)
            #expect(trickled.map { $0 >= 1.5 && $0 < 6 } == true, "closed after \(String(describing: trickled)) s")
            #expect(try await server.request("GET", "/healthz").status == 200)
        }
        // Silent after the answer, with the default 30 s body time-out: closed by the 5 s quiet bound (the writes from
        // 6 s on are refused), not by the time-out.
        let server = try serve(host)
        defer { server.stop() }
        let silent = try secondsToClose(server, piece: 1, every: 0.3, after: 6, limit: 9)
        #expect(silent.map { $0 >= 6 } == true, "still open after \(String(describing: silent)) s")
    }
}
