// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// A lean HTTP/1.1 client for sections that time one request after another (the operations section): one keep-alive
// connection, blocking sockets, on a thread of its own kept off the server's core (see `loadCores`), so that what is
// timed is the server. Foundation's URLSession on Linux (libcurl underneath) costs about a millisecond a request by
// itself, more than the server spends on most admin calls.

import CKeelBenchNative
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a lean request failed: one line.
struct LeanHTTPError: Error, CustomStringConvertible {
    var description: String
}

/// One keep-alive connection to 127.0.0.1:`port`. Not thread-safe: one request at a time, on one thread.
final class LeanHTTPConnection {
    private let fd: Int32
    private var buffer: [UInt8] = []

    /// Connects to `base` ("http://127.0.0.1:PORT").
    init(base: String) throws {
        guard let port = base.split(separator: ":").last.flatMap({ UInt16($0) }) else {
            throw LeanHTTPError(description: "\(base): no port")
        }
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LeanHTTPError(description: "socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw LeanHTTPError(description: "connect to \(base): errno \(errno)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Sends one request without a body and reads the whole answer (Content-Length or chunked); its status.
    func request(_ method: String, _ path: String, headers: [String: String] = [:]) throws -> Int {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw LeanHTTPError(description: "send: errno \(errno)") }
            sent += n
        }
        let head = try readHead()
        let lines = head.split(separator: "\r\n")
        guard let statusLine = lines.first, statusLine.split(separator: " ").count >= 2,
              let status = Int(statusLine.split(separator: " ")[1]) else {
            throw LeanHTTPError(description: "bad status line: \(lines.first ?? "")")
        }
        var length = 0, chunked = false
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let name = parts[0].lowercased(), value = parts[1].trimmingCharacters(in: .whitespaces)
            if name == "content-length" { length = Int(value) ?? 0 }
            if name == "transfer-encoding", value.lowercased().contains("chunked") { chunked = true }
        }
        if chunked {
            while true {
                let size = Int(try readLine().split(separator: ";").first ?? "", radix: 16) ?? 0
                try take(size)
                _ = try readLine()
                if size == 0 { break }
            }
        } else {
            try take(length)
        }
        return status
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw LeanHTTPError(description: n == 0 ? "connection closed" : "recv: errno \(errno)") }
        buffer.append(contentsOf: chunk[0..<n])
    }

    /// Up to the blank line that ends the head (not included), consumed.
    private func readHead() throws -> String {
        while true {
            if let end = find([13, 10, 13, 10]) {
                let head = String(decoding: buffer[0..<end], as: UTF8.self)
                buffer.removeFirst(end + 4)
                return head
            }
            try fill()
        }
    }

    private func readLine() throws -> String {
        while true {
            if let end = find([13, 10]) {
                let line = String(decoding: buffer[0..<end], as: UTF8.self)
                buffer.removeFirst(end + 2)
                return line
            }
            try fill()
        }
    }

    private func take(_ count: Int) throws {
        while buffer.count < count { try fill() }
        buffer.removeFirst(count)
    }

    private func find(_ needle: [UInt8]) -> Int? {
        guard buffer.count >= needle.count else { return nil }
        for i in 0...(buffer.count - needle.count) where buffer[i] == needle[0] && Array(buffer[i..<i + needle.count]) == needle {
            return i
        }
        return nil
    }
}

/// Runs `body` on a thread of its own, kept to the cores the server does not use (`loadCores`), and returns its
/// result: a blocking client must not hold a thread of Swift's cooperative pool, nor share the server's core.
func onClientThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            if !loadCores.isEmpty { _ = keel_bench_pin_thread(0, Int32(ProcessInfo.processInfo.activeProcessorCount - 1)) }
            continuation.resume(with: Result { try body() })
        }
        thread.start()
    }
}
