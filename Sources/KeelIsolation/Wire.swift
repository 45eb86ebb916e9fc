// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc
import KeelLoader
import KeelManifest

/// The messages between the host and a worker process, on one Unix stream socket.
///
/// A frame is a 32-bit little-endian length (of what follows, at most `Wire.maximumFrame`), a kind byte, a 64-bit
/// call id and the payload. Numbers are little-endian; a string or byte string is a 32-bit length and its bytes.
/// Calls carry an id the answer repeats, so that many calls are in flight on one socket at once. The host treats
/// everything a worker sends as hostile: a malformed frame kills the worker (see `WorkerConnection`).
enum Wire {
    /// Largest frame either side accepts: a request or response body (16 MiB) plus its head.
    static let maximumFrame = 17 * 1024 * 1024
    /// Most roles a principal has (`keel_principal_builder` refuses a 65th).
    static let principalRoles = 64
    /// Most headers a response has (`keel_http_response` refuses a 101st).
    static let responseHeaders = 100

    enum Kind: UInt8 {
        // host → worker
        case activate = 1, handle, authenticate, authorize, deactivate, command
        /// A consumer in the host calls a function of a service table this worker provides.
        case serviceCall = 7
        /// Answers to the worker's own calls (`callCommand`, `checkPermission`), with the id the worker chose.
        case commandAnswer = 10, permissionAnswer
        /// Answers to the worker's `serviceAcquire` and `serviceInvoke`; `serviceChanged` tells its listeners (id 0).
        case serviceGrant = 12, serviceReturn, serviceChanged
        // worker → host
        case activated = 20, activationFailed, response, principal, decision, log, deactivated, commandResult
        /// The answer to `serviceCall`.
        case serviceResult = 28
        /// The plugin calls another plugin's command (keel.commands/1) or asks the permission check: the host answers
        /// with `commandAnswer` / `permissionAnswer` and the same id. See `HostServices`.
        case callCommand = 30, checkPermission
        /// The plugin leases a table through the host (keel.services/1), releases a lease, calls through one.
        case serviceAcquire = 32, serviceRelease, serviceInvoke

        /// True when a frame of this kind answers a call of kind `call`.
        func answers(_ call: Kind) -> Bool {
            switch (call, self) {
            case (.activate, .activated), (.activate, .activationFailed), (.handle, .response), (.authenticate, .principal),
                 (.authorize, .decision), (.deactivate, .deactivated), (.command, .commandResult), (.serviceCall, .serviceResult):
                return true
            default:
                return false
            }
        }
    }
}

/// Why bytes from the other side could not be read. Never shown to a client; the host kills the worker.
struct WireError: Error, CustomStringConvertible {
    let description: String
}

/// Frames read from a socket through a buffer: one `read` usually brings several small frames, or a whole one.
/// The buffer is kept from read to read (grown for a large frame, never zero-filled); each frame is copied out once.
/// Not thread-safe: one reader at a time (callers serialise).
final class FrameSource {
    let socket: Int32
    private var buffer: UnsafeMutableRawBufferPointer
    /// The unread bytes are `start..<end`.
    private var start = 0, end = 0

    init(socket: Int32) {
        self.socket = socket
        buffer = .allocate(byteCount: 65536, alignment: 8)
    }

    deinit { buffer.deallocate() }

    /// The next frame (without its length), or nil at the end of the stream, on a read error, or when the other
    /// side sent a length out of bounds (`malformed` is then set).
    func next() -> [UInt8]? {
        while true {
            let available = end - start
            if available >= 4 {
                let length = Int(buffer[start]) | Int(buffer[start + 1]) << 8 | Int(buffer[start + 2]) << 16
                    | Int(buffer[start + 3]) << 24
                guard length >= 9, length <= Wire.maximumFrame else {
                    malformed = true
                    return nil
                }
                if available >= 4 + length {
                    defer { start += 4 + length }
                    return Array(UnsafeRawBufferPointer(rebasing: buffer[(start + 4)..<(start + 4 + length)]))
                }
                // Room for the whole frame, and a read's worth more.
                if 4 + length > buffer.count - start { makeRoom(for: 4 + length) }
            }
            if start == end {
                start = 0
                end = 0
            } else if buffer.count - end < 4096 {
                makeRoom(for: max(available, 4))
            }
            guard let base = buffer.baseAddress else { return nil }
            let n = Glibc.read(socket, base + end, buffer.count - end)
            if n > 0 {
                end += n
                continue
            }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }

    /// Moves the unread bytes to the front, into a larger buffer when `needed` bytes (from `start`) do not fit.
    private func makeRoom(for needed: Int) {
        let available = end - start
        if needed + 4096 > buffer.count {
            let larger = UnsafeMutableRawBufferPointer.allocate(byteCount: max(needed + 65536, buffer.count * 2), alignment: 8)
            if available > 0, let to = larger.baseAddress, let from = buffer.baseAddress {
                to.copyMemory(from: from + start, byteCount: available)
            }
            buffer.deallocate()
            buffer = larger
        } else if start > 0, let base = buffer.baseAddress {
            memmove(base, base + start, available)
        }
        start = 0
        end = available
    }

    /// The other side sent a frame length out of bounds.
    private(set) var malformed = false
}

/// Builds one frame. Not thread-safe (one per message).
struct WireWriter {
    private var buffer: [UInt8]

    /// Starts a frame of `kind` for call `id`; the length is filled in by `frame`.
    init(_ kind: Wire.Kind, id: UInt64, capacity: Int = 256) {
        buffer = []
        buffer.reserveCapacity(capacity)
        u32(0)
        u8(kind.rawValue)
        u64(id)
    }

    /// The finished frame, its length in place (written into the buffer, so that the bytes are not copied).
    var frame: [UInt8] {
        mutating get {
            let n = UInt32(buffer.count - 4)
            for i in 0..<4 { buffer[i] = UInt8(truncatingIfNeeded: n >> (8 * UInt32(i))) }
            return buffer
        }
    }

    mutating func u8(_ v: UInt8) { buffer.append(v) }
    mutating func bool(_ v: Bool) { buffer.append(v ? 1 : 0) }
    mutating func u32(_ v: UInt32) { for i in 0..<4 { buffer.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    mutating func u64(_ v: UInt64) { for i in 0..<8 { buffer.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func int(_ v: Int) { u64(UInt64(bitPattern: Int64(v))) }
    mutating func double(_ v: Double) { u64(v.bitPattern) }
    mutating func bytes(_ v: [UInt8]) { u32(UInt32(v.count)); buffer.append(contentsOf: v) }
    mutating func string(_ v: String) { u32(UInt32(v.utf8.count)); buffer.append(contentsOf: v.utf8) }
    mutating func strings(_ v: [String]) { u32(UInt32(v.count)); for s in v { string(s) } }
    mutating func pairs(_ v: [(name: String, value: String)]) {
        u32(UInt32(v.count))
        for p in v { string(p.name); string(p.value) }
    }
}

/// Reads one frame's payload. Every read checks the bounds. Not thread-safe.
struct WireReader {
    let kind: Wire.Kind
    let id: UInt64
    private let buffer: [UInt8]
    private var offset: Int

    /// `frame` is what follows the length: the kind, the id, the payload.
    init(frame: [UInt8]) throws(WireError) {
        guard frame.count >= 9, let kind = Wire.Kind(rawValue: frame[0]) else {
            throw WireError(description: "a frame of \(frame.count) bytes with an unknown kind")
        }
        self.kind = kind
        buffer = frame
        offset = 1
        var id: UInt64 = 0
        for i in 0..<8 { id |= UInt64(frame[1 + i]) << (8 * UInt64(i)) }
        self.id = id
        offset = 9
    }

    /// True when the payload has been read to its end: a field added at the end of a frame is read only when
    /// there (a worker of another build of `keel` than its host's, the executable replaced while the host runs).
    var atEnd: Bool { offset >= buffer.count }

    private mutating func take(_ n: Int) throws(WireError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= buffer.count - offset else { throw WireError(description: "a \(kind) frame cut short") }
        defer { offset += n }
        return buffer[offset..<offset + n]
    }

    mutating func u8() throws(WireError) -> UInt8 { try take(1).first ?? 0 }
    mutating func bool() throws(WireError) -> Bool { try u8() != 0 }
    mutating func u32() throws(WireError) -> UInt32 {
        var v: UInt32 = 0
        for (i, b) in try take(4).enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
        return v
    }
    mutating func u64() throws(WireError) -> UInt64 {
        var v: UInt64 = 0
        for (i, b) in try take(8).enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }
    mutating func i32() throws(WireError) -> Int32 { Int32(bitPattern: try u32()) }
    mutating func int() throws(WireError) -> Int { Int(Int64(bitPattern: try u64())) }
    mutating func double() throws(WireError) -> Double { Double(bitPattern: try u64()) }
    mutating func bytes() throws(WireError) -> [UInt8] { Array(try take(Int(try u32()))) }
    mutating func string() throws(WireError) -> String { String(decoding: try take(Int(try u32())), as: UTF8.self) }
    /// A count of items, each at least `minimumSize` bytes: refused when the frame cannot hold that many.
    mutating func count(minimumSize: Int) throws(WireError) -> Int {
        let n = Int(try u32())
        guard n <= (buffer.count - offset) / max(minimumSize, 1) else { throw WireError(description: "a \(kind) frame with a bad count") }
        return n
    }
    /// `atMost`: more items than that are refused before any is read (a frame of empty items from a worker would
    /// otherwise become millions of strings in the host).
    mutating func strings(atMost limit: Int = .max) throws(WireError) -> [String] {
        let n = try count(minimumSize: 4)
        guard n <= limit else { throw WireError(description: "a \(kind) frame with \(n) strings where at most \(limit) may be") }
        var out: [String] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try string()) }
        return out
    }
    mutating func pairs(atMost limit: Int = .max) throws(WireError) -> [(name: String, value: String)] {
        let n = try count(minimumSize: 8)
        guard n <= limit else { throw WireError(description: "a \(kind) frame with \(n) pairs where at most \(limit) may be") }
        var out: [(name: String, value: String)] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append((try string(), try string())) }
        return out
    }
}

// MARK: the values that cross

extension Principal {
    /// True when `p` keeps within the limits of `keel_principal_builder` (HostABI.withPrincipalBuilder): id and display
    /// name 256 bytes, tenant 128, at most 64 roles of 128 bytes each (no comma), `authenticated_by` 256, and none of them
    /// with a control character, a line separator or a bidirectional override (`Principal.isPrintable`).
    static func fitsBuilder(_ p: Principal) -> Bool {
        p.id.utf8.count <= 256 && p.displayName.utf8.count <= 256 && p.tenant.utf8.count <= 128 && p.authenticatedBy.utf8.count <= 256
            && p.roles.count <= Wire.principalRoles && p.roles.allSatisfy { $0.utf8.count <= 128 && Principal.isPrintable($0) && !$0.contains(",") }
            && [p.id, p.displayName, p.tenant].allSatisfy(Principal.isPrintable)
    }
}

extension WireWriter {
    mutating func principal(_ p: Principal) {
        string(p.id); string(p.displayName); string(p.tenant); strings(p.roles); string(p.authenticatedBy)
    }

    mutating func request(_ r: PluginRequest) {
        string(r.method); string(r.path); string(r.routePath); string(r.query)
        pairs(r.headers); pairs(r.parameters); bytes(r.body); principal(r.principal); string(r.requestID)
    }

    mutating func response(_ r: PluginResponse) {
        int(r.status)
        pairs(r.headers.map { ($0.name, $0.value) })
        bytes(r.body)
    }

    mutating func registrations(_ r: RemoteRegistrations) {
        u32(UInt32(r.routes.count))
        for route in r.routes { string(route.method); string(route.path) }
        u32(UInt32(r.menus.count))
        for m in r.menus {
            string(m.id); string(m.title); string(m.parent); string(m.link); int(m.order); string(m.icon); string(m.permission)
        }
        strings(r.authenticators)
        strings(r.authorizers)
        u32(UInt32(r.services.count))
        for service in r.services { string(service.interface); int(service.tableSize) }
        strings(r.listeners)
        strings(r.unsupported)
    }
}

extension WireReader {
    mutating func principal() throws(WireError) -> Principal {
        Principal(id: try string(), displayName: try string(), tenant: try string(), roles: try strings(),
                  authenticatedBy: try string())
    }

    /// A principal from a worker, which the host takes only within the limits of `keel_principal_builder`
    /// (HostABI.withPrincipalBuilder): id and display name 256 bytes, tenant 128, at most 64 roles of 128 bytes, its
    /// `authenticated_by` 256. Over them the frame is malformed (the worker is killed): it is no principal the host made.
    mutating func workerPrincipal() throws(WireError) -> Principal {
        let id = try string(), displayName = try string(), tenant = try string()
        let roles = try strings(atMost: Wire.principalRoles), by = try string()
        let principal = Principal(id: id, displayName: displayName, tenant: tenant, roles: roles, authenticatedBy: by)
        guard Principal.fitsBuilder(principal) else { throw WireError(description: "a principal over its limits") }
        return principal
    }

    mutating func request() throws(WireError) -> PluginRequest {
        PluginRequest(method: try string(), path: try string(), routePath: try string(), query: try string(),
                      headers: try pairs(), parameters: try pairs(), body: try bytes(), principal: try principal(),
                      requestID: try string())
    }

    /// `headersAtMost`: a worker's answer with more headers is refused before they are read.
    mutating func response(headersAtMost limit: Int = .max) throws(WireError) -> PluginResponse {
        PluginResponse(status: try int(), headers: try pairs(atMost: limit).map { HeaderField(name: $0.name, value: $0.value) },
                       body: try bytes())
    }

    mutating func registrations() throws(WireError) -> RemoteRegistrations {
        var r = RemoteRegistrations()
        for _ in 0..<(try count(minimumSize: 8)) { r.routes.append(.init(method: try string(), path: try string())) }
        for _ in 0..<(try count(minimumSize: 32)) {
            r.menus.append(MenuDeclaration(id: try string(), title: try string(), parent: try string(), link: try string(),
                                           order: try int(), icon: try string(), permission: try string()))
        }
        r.authenticators = try strings()
        r.authorizers = try strings()
        for _ in 0..<(try count(minimumSize: 12)) {
            let interface = try string(), tableSize = try int()
            // A table's size is a struct_size (a uint32_t) in C: anything else is a forged frame (a size near Int.min
            // made the host's `size - 8` overflow and trap).
            guard (0...Int(UInt32.max)).contains(tableSize) else {
                throw WireError(description: "a \(kind) frame with a service table size out of range (\(tableSize))")
            }
            r.services.append(.init(interface: interface, tableSize: tableSize))
        }
        r.listeners = try strings()
        r.unsupported = try strings()
        return r
    }
}

// MARK: command values

extension WireWriter {
    mutating func value(_ v: CommandValue) {
        switch v {
        case let .int(i): u8(1); u64(UInt64(bitPattern: i))
        case let .uint(u): u8(2); u64(u)
        case let .double(d): u8(3); double(d)
        case let .bool(b): u8(4); bool(b)
        case let .string(t): u8(5); string(t)
        case let .bytes(b): u8(6); bytes(b)
        case let .json(j): u8(7); string(j)
        case .none: u8(0)
        }
    }

    /// A command's outcome: 0 and the value, or 1, the error's code, message and status.
    mutating func commandOutcome(_ r: Result<CommandValue, CommandError>) {
        switch r {
        case let .success(v): u8(0); value(v)
        case let .failure(e): commandError(e)
        }
    }

    /// A failed command: 1, the error's code, message and status.
    mutating func commandError(_ e: CommandError) {
        u8(1); string(e.code.rawValue); string(e.message); i32(e.status)
    }
}

extension WireReader {
    mutating func value() throws(WireError) -> CommandValue {
        switch try u8() {
        case 0: return .none
        case 1: return .int(Int64(bitPattern: try u64()))
        case 2: return .uint(try u64())
        case 3: return .double(try double())
        case 4: return .bool(try bool())
        case 5: return .string(try string())
        case 6: return .bytes(try bytes())
        case 7: return .json(try string())
        default: throw WireError(description: "an unknown command value")
        }
    }

    mutating func values() throws(WireError) -> [CommandValue] {
        var out: [CommandValue] = []
        for _ in 0..<(try count(minimumSize: 1)) { out.append(try value()) }
        return out
    }

    mutating func commandOutcome(pluginID: String) throws(WireError) -> Result<CommandValue, CommandError> {
        guard try u8() == 1 else { return .success(try value()) }
        return .failure(try commandError())
    }

    /// A failed command's code, message (cut at 4 KiB) and status (a host-only negative one reads as internal),
    /// after its leading 1.
    mutating func commandError() throws(WireError) -> CommandError {
        let code = CommandError.Code(rawValue: try string()) ?? .failed
        let message = try string().prefix(utf8Bytes: 4096)
        var status = try i32()
        // A failure is never KEEL_OK (the caller would take it for a result) nor a negative status.
        if status <= 0 { status = StatusCode.internalError }
        return CommandError(code, message, status: status)
    }
}
