// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI

extension keel_str {
    /// The bytes as a String, with invalid UTF-8 repaired (for messages and free text).
    var string: String {
        guard let ptr, len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: len), as: UTF8.self)
    }

    /// At most the first `limit` bytes, decoded (invalid UTF-8 repaired, a sequence cut at the end dropped), with
    /// "…" when there were more: bytes past the limit are never read. Repairs can make the text longer than
    /// `limit` (each invalid byte becomes U+FFFD, three bytes): cut it again where a size matters
    /// (`TextLimits.logLine`).
    func string(upTo limit: Int) -> String {
        guard let ptr, len > 0 else { return "" }
        guard len > limit else { return string }
        var head = String(decoding: UnsafeRawBufferPointer(start: ptr, count: limit), as: UTF8.self).unicodeScalars
        // A multi-byte sequence cut by the limit decodes as U+FFFD at the end: not part of what the plugin wrote.
        if head.last == "\u{FFFD}" { head.removeLast() }
        return String(head) + "…"
    }

    /// The bytes as a String, or nil when they are not UTF-8, longer than `limit`, or a non-empty NULL pointer.
    func validated(limit: Int = 4096) -> String? {
        guard len <= limit else { return nil }
        guard len > 0 else { return "" }
        guard let ptr else { return nil }
        let bytes = UnsafeRawBufferPointer(start: ptr, count: len)
        // ASCII (ids, versions, paths, most header values) needs no validation: decoded, then checked on the host's
        // own copy (a plugin thread may change its buffer meanwhile), it skips the generic validator's run-time
        // metadata look-ups (a few hundred instructions). A repair would have left a non-ASCII U+FFFD behind.
        let decoded = String(decoding: bytes, as: UTF8.self)
        if decoded.utf8.count == len, decoded.utf8.allSatisfy({ $0 < 0x80 }) { return decoded }
        // Validated on a copy too: the validator reads its input twice (to check, then to copy).
        return String(validating: Array(bytes), as: UTF8.self)
    }
}

/// One contiguous buffer holding every string of a call, so that a request crosses the boundary with a single
/// allocation. Offsets are recorded while building and turned into `keel_str`s once the buffer stops moving.
struct StringArena {
    private(set) var bytes: [UInt8] = []
    typealias Slot = (offset: Int, length: Int)

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    mutating func add(_ s: String) -> Slot {
        let start = bytes.count
        bytes.append(contentsOf: s.utf8)
        return (start, bytes.count - start)
    }

    /// Calls `body` with a function that turns slots into borrowed strings valid during `body`.
    func withStrings<R>(_ body: ((Slot) -> keel_str) -> R) -> R {
        bytes.withUnsafeBufferPointer { buffer in
            let base = buffer.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }
            return body { slot in
                guard slot.length > 0, let base else { return keel_str(ptr: nil, len: 0) }
                return keel_str(ptr: base + slot.offset, len: slot.length)
            }
        }
    }
}

/// Strings copied one after the other into a buffer sized for all of them (`CFrame.withRequest`), each handed out
/// as a `keel_str` borrowing its bytes; an empty string is `(NULL, 0)`.
struct FrameStrings {
    private let buffer: UnsafeMutableRawBufferPointer
    private var used = 0

    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

    /// Copies `s` after the strings before it. The buffer must have room for it (the caller sized it).
    mutating func add(_ s: String) -> keel_str {
        let start = used
        let buffer = self.buffer
        let copied = s.utf8.withContiguousStorageIfAvailable { utf8 -> Int in
            UnsafeMutableRawBufferPointer(rebasing: buffer[start..<start + utf8.count]).copyMemory(from: UnsafeRawBufferPointer(utf8))
            return utf8.count
        }
        if let copied {
            used += copied
        } else {
            for byte in s.utf8 {
                buffer[used] = byte
                used += 1
            }
        }
        guard used > start, let base = buffer.baseAddress else { return keel_str(ptr: nil, len: 0) }
        return keel_str(ptr: UnsafePointer((base + start).assumingMemoryBound(to: CChar.self)), len: used - start)
    }
}

/// Lays out a principal (and, optionally, a request) as the C structs the ABI defines, valid during `body`.
@usableFromInline
enum CFrame {
    struct PrincipalSlots {
        var id, displayName, tenant, authenticatedBy: StringArena.Slot
        var roles: [StringArena.Slot]
        var anonymous: Bool

        init(_ p: Principal, _ arena: inout StringArena) {
            id = arena.add(p.id)
            displayName = arena.add(p.displayName)
            tenant = arena.add(p.tenant)
            authenticatedBy = arena.add(p.authenticatedBy)
            roles = p.roles.map { arena.add($0) }
            anonymous = p.isAnonymous
        }

        func withPrincipal<R>(_ str: (StringArena.Slot) -> keel_str, _ body: (UnsafePointer<keel_principal>) -> R) -> R {
            let roleStrs = roles.map(str)
            return roleStrs.withUnsafeBufferPointer { rolesBuf in
                var p = keel_principal()
                p.struct_size = UInt32(MemoryLayout<keel_principal>.size)
                p.flags = anonymous ? UInt32(KEEL_PRINCIPAL_ANONYMOUS) : 0
                p.id = str(id)
                p.display_name = str(displayName)
                p.tenant = str(tenant)
                p.authenticated_by = str(authenticatedBy)
                p.roles = rolesBuf.baseAddress
                p.roles_len = rolesBuf.count
                return withUnsafePointer(to: &p) { body($0) }
            }
        }
    }

    static func withPrincipal<R>(_ principal: Principal, _ body: (UnsafePointer<keel_principal>) -> R) -> R {
        var arena = StringArena(capacity: 128)
        let slots = PrincipalSlots(principal, &arena)
        return arena.withStrings { str in slots.withPrincipal(str, body) }
    }

    /// Lays out `r` as a `keel_http_request` valid during `body`: every string copied once into one buffer, the
    /// header, parameter and role arrays beside it, all in temporary storage (on the stack when small), so that a
    /// request crosses the boundary without building Swift arrays of slots first.
    static func withRequest<R>(_ r: PluginRequest, _ body: (UnsafePointer<keel_http_request>) -> R) -> R {
        // Sized for every string it will hold, so that it never grows.
        let who = r.principal
        let size = r.method.utf8.count + r.path.utf8.count + r.routePath.utf8.count + r.query.utf8.count + r.requestID.utf8.count
            + r.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count }
            + r.parameters.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count }
            + who.id.utf8.count + who.displayName.utf8.count + who.tenant.utf8.count
            + who.authenticatedBy.utf8.count + who.roles.reduce(0) { $0 + $1.utf8.count }
        // The closures below see these (one retain each), not `r`, which they would copy.
        let headers = r.headers, parameters = r.parameters, roles = who.roles, requestBody = r.body
        return withUnsafeTemporaryAllocation(byteCount: size, alignment: 1) { bytes in
            var strings = FrameStrings(bytes)
            var req = keel_http_request()
            req.struct_size = UInt32(MemoryLayout<keel_http_request>.size)
            req.method = strings.add(r.method)
            req.path = strings.add(r.path)
            req.route_path = strings.add(r.routePath)
            req.query = strings.add(r.query)
            req.request_id = strings.add(r.requestID)
            var principal = keel_principal()
            principal.struct_size = UInt32(MemoryLayout<keel_principal>.size)
            principal.flags = who.isAnonymous ? UInt32(KEEL_PRINCIPAL_ANONYMOUS) : 0
            principal.id = strings.add(who.id)
            principal.display_name = strings.add(who.displayName)
            principal.tenant = strings.add(who.tenant)
            principal.authenticated_by = strings.add(who.authenticatedBy)
            return withUnsafeTemporaryAllocation(of: keel_http_header.self, capacity: headers.count) { h in
                for i in headers.indices {
                    h.initializeElement(at: i, to: keel_http_header(name: strings.add(headers[i].name), value: strings.add(headers[i].value)))
                }
                return withUnsafeTemporaryAllocation(of: keel_http_header.self, capacity: parameters.count) { p in
                    for i in parameters.indices {
                        p.initializeElement(at: i, to: keel_http_header(name: strings.add(parameters[i].name),
                                                                         value: strings.add(parameters[i].value)))
                    }
                    return withUnsafeTemporaryAllocation(of: keel_str.self, capacity: roles.count) { cRoles in
                        for i in roles.indices { cRoles.initializeElement(at: i, to: strings.add(roles[i])) }
                        principal.roles = UnsafePointer(cRoles.baseAddress)
                        principal.roles_len = cRoles.count
                        return withUnsafePointer(to: &principal) { cPrincipal in
                            requestBody.withUnsafeBufferPointer { b in
                                req.headers = UnsafePointer(h.baseAddress)
                                req.headers_len = h.count
                                req.params = UnsafePointer(p.baseAddress)
                                req.params_len = p.count
                                req.body = b.count > 0 ? b.baseAddress : nil
                                req.body_len = b.count
                                req.principal = cPrincipal
                                return withUnsafePointer(to: &req) { body($0) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `withRequest` without a result: not generic, so that code inlined into other modules (`PreparedRequest.prepare`)
    /// calls it without looking up generic type metadata on every request.
    @usableFromInline
    static func layOut(_ r: PluginRequest, _ body: (UnsafePointer<keel_http_request>) -> Void) {
        withRequest(r, body)
    }

    /// A Swift principal from a borrowed C one.
    static func principal(_ p: UnsafePointer<keel_principal>) -> Principal {
        let c = p.pointee
        var roles: [String] = []
        // A count the plugin got wrong (a size_t that wrapped, read as negative here) is no roles, never a trap.
        if let base = c.roles, c.roles_len > 0 { roles = (0..<min(c.roles_len, 64)).map { base[$0].string } }
        return Principal(id: c.flags & UInt32(KEEL_PRINCIPAL_ANONYMOUS) != 0 ? "" : c.id.string,
                         displayName: c.display_name.string, tenant: c.tenant.string, roles: roles,
                         authenticatedBy: c.authenticated_by.string)
    }
}

/// A request laid out once in its C form, for several calls in a row: the authorize hooks, then the handler.
/// Valid only inside the `prepare` call that made it; never keep it.
public struct PreparedRequest {
    /// The request it was laid out from.
    public let request: PluginRequest
    @usableFromInline let pointer: UnsafePointer<keel_http_request>

    @usableFromInline init(request: PluginRequest, pointer: UnsafePointer<keel_http_request>) {
        self.request = request
        self.pointer = pointer
    }

    /// Lays out `request` and runs `body` with it. Inlinable, so that a caller in another module (the HTTP dispatcher,
    /// on every request) gets it specialized for its result type.
    @inlinable
    public static func prepare<R>(_ request: PluginRequest, _ body: (PreparedRequest) -> R) -> R {
        var result: R?
        CFrame.layOut(request) { result = body(PreparedRequest(request: request, pointer: $0)) }
        guard let result else { preconditionFailure("CFrame.layOut returned without calling its body") }
        return result
    }
}
