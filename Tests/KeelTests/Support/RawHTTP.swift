// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// HTTP as an attacker sends it: exact bytes over a plain socket on 127.0.0.1, with no client library tidying the path.
enum RawHTTP {
    /// Opens a TCP connection to 127.0.0.1:`port`; returns the descriptor.
    static func connect(port: Int) throws -> Int32 {
        // Close-on-exec: the suite starts children all the time, and none should hold a test's connection open.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw TestFailure("connect: \(String(cString: strerror(errno)))")
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// The local port of socket `fd`; -1 when it is not a bound IPv4 socket.
    static func localPort(_ fd: Int32) -> Int {
        var address = sockaddr_in(), length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return result == 0 && address.sin_family == sa_family_t(AF_INET) ? Int(UInt16(bigEndian: address.sin_port)) : -1
    }

    static func send(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// One `recv`, tried again when a signal interrupts it (a receive time-out makes the kernel return EINTR
    /// instead of restarting the call, and the test process gets signals from the children it runs).
    /// Returns the count, 0 at end of file, -1 on an error or the time-out (`errno` says which).
    static func receive(_ fd: Int32, _ buffer: inout [UInt8]) -> Int {
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 && errno == EINTR { continue }
            return n
        }
    }

    /// Reads until the peer closes (or the 10 s receive time-out); returns what arrived.
    static func readAll(_ fd: Int32) -> String {
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = receive(fd, &buffer)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// True when the server closed `fd` (a read returns end of file) within `seconds`.
    static func closedByPeer(_ fd: Int32, within seconds: Int) -> Bool {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        while true {
            let n = recv(fd, &byte, 1, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    /// One request with `Connection: close`; returns the status code and the whole response text.
    static func request(port: Int, _ method: String, _ target: String, headers: [String: String] = [:]) throws -> (status: Int, text: String) {
        let fd = try connect(port: port)
        defer { close(fd) }
        // `headers` may give its own Host (a test of the names the server answers to).
        let host = headers.keys.contains { $0.lowercased() == "host" } ? "" : "Host: 127.0.0.1\r\n"
        var head = "\(method) \(target) HTTP/1.1\r\n\(host)Connection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        send(fd, head + "\r\n")
        let text = readAll(fd)
        let status = text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        return (status, text)
    }
}
