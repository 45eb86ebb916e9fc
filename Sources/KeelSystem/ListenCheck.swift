// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc

/// Whether a server could listen on `host:port`, asked before it tries, so that the refusal is said in words rather
/// than as the server library's error (`SocketAddressError.UnknownHost ... (error -2)`). `host` is resolved as
/// SwiftNIO resolves it (getaddrinfo without hints, its first answer) and a stream socket bound there and closed; it
/// sets SO_REUSEADDR as the server does, so a port in TIME_WAIT counts as free. Port 0 checks the address alone.
/// Stateless; blocks the caller for the look-up.
public enum ListenCheck {
    public enum Problem: Sendable, Equatable {
        /// The name does not resolve (the resolver's reason).
        case unresolved(String)
        /// An address that is not this machine's.
        case notLocal
        case inUse
        /// A port below 1024 without the right to it.
        case privileged
        /// Anything else (the system's reason).
        case other(String)
    }

    /// What keeps a server from listening on `host:port`, or nil when nothing does (or no socket could be made to
    /// try with: the server then says what it finds).
    public static func problem(host: String, port: Int) -> Problem? {
        var found: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), nil, &found)
        guard resolved == 0, let first = found else {
            return .unresolved(resolved == EAI_SYSTEM ? SystemFile.describe(errno: errno) : String(cString: gai_strerror(resolved)))
        }
        defer { freeaddrinfo(found) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 else { return nil }
        switch errno {
        case EADDRINUSE: return .inUse
        case EADDRNOTAVAIL: return .notLocal
        case EACCES where port > 0 && port < 1024: return .privileged
        case let code: return .other(SystemFile.describe(errno: code))
        }
    }
}
