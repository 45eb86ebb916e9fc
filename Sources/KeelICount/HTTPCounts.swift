// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The HTTP phases of the instruction-count gate: the same number of requests on one kept-alive connection to a
// built-in route and to the bench plugin's route of a real KeelServer on 127.0.0.1, so that what the plugin path
// adds to a request (dispatch middleware, auth chain, marshalling, metrics) is counted, not timed. Every thread of the
// process is counted (NIO's event loops, the concurrency pool, the client thread), as the whole request costs that.

import CKeelBenchNative
import Foundation
import Hummingbird
import Keel
import KeelHTTP

/// Starts a server on `k`, then runs `n` requests to each route, each phase opened by a mark: `http-builtin`,
/// `http-plugin`, then (with `authz` plugins to enable) `http-plugin-authz`. Returns the names of the marks it made,
/// in order, each measured one as `NAME@n` (its iteration count, which differs from the other phases') (`-` for set-up between phases and the teardown). The caller's phase before it ends with the set-up here.
func runHTTPCounts(_ k: Kernel, n: Int, authz: [String]) async throws -> [String] {
    var configuration = ServerConfiguration(port: 0)
    configuration.healthInterval = nil
    configuration.stopsOnSignals = false
    // Under valgrind every call is tens of times slower: a short handler must still count as short.
    configuration.slowPluginCall = .seconds(10)
    let server = KeelServer(kernel: k, token: AdminToken(state: k.state, environment: ["KEEL_ADMIN_TOKEN": "icount"]),
                            configuration: configuration) { router in
        router.get("/builtin/ping") { _, _ in Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "pong A\n"))) }
    }
    let bound = AsyncStream<Int>.makeStream()
    let task = Task { try await server.run { port in bound.continuation.yield(port) } }
    var ports = bound.stream.makeAsyncIterator()
    guard let port = await ports.next() else { throw ICountFailure("the server did not start") }
    let client = try BlockingClient(port: port)
    defer { client.close() }
    // A warm-up of each route first, so that first-use work is not counted, and time for the server's start-up work
    // (its first live view) to end.
    try await client.run("/builtin/ping", times: 50)
    try await client.run("/ext/bench/ping", times: 50)
    try await Task.sleep(for: .seconds(1))
    var phases: [String] = []
    keel_bench_icount_mark("http-builtin")
    try await client.run("/builtin/ping", times: n)
    keel_bench_icount_mark("http-plugin")
    try await client.run("/ext/bench/ping", times: n)
    phases += ["http-builtin@\(n)", "http-plugin@\(n)"]
    if !authz.isEmpty {
        keel_bench_icount_mark("-")
        for id in authz { try await k.enable(id) }
        try await client.run("/ext/bench/ping", times: 50)
        keel_bench_icount_mark("http-plugin-authz")
        try await client.run("/ext/bench/ping", times: n)
        phases += ["-", "http-plugin-authz@\(n)"]
    }
    keel_bench_icount_mark("-")
    phases.append("-")
    task.cancel()
    _ = try? await task.value
    return phases
}

struct ICountFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A keep-alive HTTP/1.1 client on a blocking socket, run on a thread of its own (never on the concurrency pool, whose
/// threads serve the requests). Expects answers with a `content-length`.
final class BlockingClient: Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ICountFailure("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let fd = self.fd
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw ICountFailure("connect: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    func close() { Glibc.close(fd) }

    /// Sends `times` requests for `path`, one after the other, each read to its end; fails on anything but a 200.
    func run(_ path: String, times: Int) async throws {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            let thread = Thread { [self] in
                do {
                    for _ in 0..<times { try exchange(path) }
                    done.resume()
                } catch { done.resume(throwing: error) }
            }
            thread.start()
        }
    }

    private func exchange(_ path: String) throws {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: icount\r\nAccept: */*\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            throw ICountFailure("send: \(String(cString: strerror(errno)))")
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ICountFailure("\(path): the connection ended after \(answer.count) bytes") }
            answer += buffer[..<n]
            if let expected = Self.complete(answer) {
                guard expected else { throw ICountFailure("\(path): \(String(decoding: answer.prefix(80), as: UTF8.self))") }
                return
            }
        }
    }

    /// nil while the answer is incomplete; else whether it is a 200. Works on the bytes with `memchr`, without
    /// Foundation: the client's own instructions are counted with the server's, so they must stay few, and must not
    /// grow much with the answer's headers (a byte-by-byte scan cost more than a tenth of what the plugin path adds to
    /// a request).
    private static func complete(_ answer: [UInt8]) -> Bool? {
        answer.withUnsafeBufferPointer { bytes -> Bool? in
            guard let base = bytes.baseAddress else { return nil }
            let count = bytes.count
            /// The offset just past the next "\n" at or after `from`, or nil.
            func lineAfter(_ from: Int) -> Int? {
                guard from < count, let found = memchr(base + from, 10, count - from) else { return nil }
                return UnsafeRawPointer(found) - UnsafeRawPointer(base) + 1
            }
            // Line by line to the blank line that ends the head, noting "content-length:" (any case) on the way.
            var length = -1, line = 0, end = -1
            while let next = lineAfter(line) {
                if next - line == 2, bytes[line] == 13 { end = next; break }
                if length < 0, next - line > 17, bytes[line] | 0x20 == 0x63, bytes[line + 14] == 58,
                   Self.contentLength.indices.allSatisfy({ bytes[line + $0] | 0x20 == Self.contentLength[$0] }) {
                    var j = line + 15, value = 0
                    while bytes[j] == 32 { j += 1 }
                    while bytes[j] >= 48 && bytes[j] <= 57 { value = value * 10 + Int(bytes[j] - 48); j += 1 }
                    length = value
                }
                line = next
            }
            guard end > 0 else { return nil }
            guard length >= 0 else { return false }
            guard count - end >= length else { return nil }
            // "HTTP/1.1 200"
            return count > 12 && bytes[9] == 50 && bytes[10] == 48 && bytes[11] == 48
        }
    }

    private static let contentLength = Array("content-length".utf8)
}
