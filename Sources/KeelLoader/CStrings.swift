// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI

extension keel_str {
    /// The bytes as a String, with invalid UTF-8 repaired (for messages and free text).
    var string: String {
        guard let ptr, len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: len), as: UTF8.self)
    }

    /// The bytes as a String, or nil when they are not UTF-8, longer than `limit`, or a non-empty NULL pointer.
    func validated(limit: Int = 4096) -> String? {
        guard len <= limit else { return nil }
        guard len > 0 else { return "" }
        guard let ptr else { return nil }
        return String(validating: UnsafeRawBufferPointer(start: ptr, count: len), as: UTF8.self)
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

/// Lays out a principal (and, optionally, a request) as the C structs the ABI defines, valid during `body`.
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

    static func withRequest<R>(_ r: PluginRequest, _ body: (UnsafePointer<keel_http_request>) -> R) -> R {
        // Sized for every string it will hold, so that it is allocated once and never grows.
        let who = r.principal
        let size = r.method.utf8.count + r.path.utf8.count + r.routePath.utf8.count + r.query.utf8.count + r.requestID.utf8.count
            + r.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count }
            + r.parameters.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count }
            + who.id.utf8.count + who.displayName.utf8.count + who.tenant.utf8.count
            + who.authenticatedBy.utf8.count + who.roles.reduce(0) { $0 + $1.utf8.count }
        var arena = StringArena(capacity: size)
        let method = arena.add(r.method), path = arena.add(r.path), routePath = arena.add(r.routePath)
        let query = arena.add(r.query), requestID = arena.add(r.requestID)
        let headers = r.headers.map { (arena.add($0.name), arena.add($0.value)) }
        let params = r.parameters.map { (arena.add($0.name), arena.add($0.value)) }
        let principal = PrincipalSlots(r.principal, &arena)
        return arena.withStrings { str in
            let cHeaders = headers.map { keel_http_header(name: str($0.0), value: str($0.1)) }
            let cParams = params.map { keel_http_header(name: str($0.0), value: str($0.1)) }
            return principal.withPrincipal(str) { cPrincipal in
                cHeaders.withUnsafeBufferPointer { h in
                    cParams.withUnsafeBufferPointer { p in
                        r.body.withUnsafeBufferPointer { b in
                            var req = keel_http_request()
                            req.struct_size = UInt32(MemoryLayout<keel_http_request>.size)
                            req.method = str(method)
                            req.path = str(path)
                            req.route_path = str(routePath)
                            req.query = str(query)
                            req.headers = h.baseAddress
                            req.headers_len = h.count
                            req.params = p.baseAddress
                            req.params_len = p.count
                            req.body = b.count > 0 ? b.baseAddress : nil
                            req.body_len = b.count
                            req.principal = cPrincipal
                            req.request_id = str(requestID)
                            return withUnsafePointer(to: &req) { body($0) }
                        }
                    }
                }
            }
        }
    }

    /// A Swift principal from a borrowed C one.
    static func principal(_ p: UnsafePointer<keel_principal>) -> Principal {
        let c = p.pointee
        var roles: [String] = []
        if let base = c.roles { roles = (0..<min(c.roles_len, 64)).map { base[$0].string } }
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
    let pointer: UnsafePointer<keel_http_request>

    /// Lays out `request` and runs `body` with it.
    public static func prepare<R>(_ request: PluginRequest, _ body: (PreparedRequest) -> R) -> R {
        CFrame.withRequest(request) { body(PreparedRequest(request: request, pointer: $0)) }
    }
}
