// Keel — a microkernel plugin host. Licensed under Apache-2.0.

internal import CKeelABI
import Synchronization

/// Builds the one `keel_plugin` descriptor a Swift plugin exports.
public enum PluginExport {
    /// `@unchecked` because of the descriptor pointer: it is written once, under `exported`'s lock, before any
    /// reader can see it, and never changed after.
    struct Exported: @unchecked Sendable {
        let type: any KeelPlugin.Type
        let descriptor: UnsafeMutablePointer<keel_plugin>
    }

    static let exported = Mutex<Exported?>(nil)

    /// The host's table, kept from the first activation (the host hands the same static table to every one): for
    /// `set_error` from code that has no activation at hand, such as a command. Nil before the first activation.
    static var hostTable: UnsafePointer<keel_host>? {
        UnsafePointer(bitPattern: host.load(ordering: .acquiring))
    }
    static let host = Atomic<UInt>(0)
    static let activations = Mutex<[UInt: Activation]>([:])

    /// The descriptor for `type`, built on first use and kept for the life of the library. Call it from the
    /// `@_cdecl("keel_plugin_entry")` function. [load]
    /// - Parameters:
    ///   - unloadSafe: declare that the library may be dlclosed after deactivate (Swift code rarely is).
    ///   - reactivatable: declare that `activate` may run again on this loaded copy after `deactivate`
    ///     (`KEEL_PLUGIN_FLAG_REACTIVATABLE`): every activation makes a new instance of `type`, so this holds unless
    ///     the plugin keeps state in globals or statics that `deactivate` leaves changed.
    public static func descriptor(for type: any KeelPlugin.Type, unloadSafe: Bool = false,
                                  reactivatable: Bool = false) -> UnsafeRawPointer? {
        let address = exported.withLock { current -> UInt in
            if let current { return UInt(bitPattern: current.descriptor) }
            let d = UnsafeMutablePointer<keel_plugin>.allocate(capacity: 1)
            d.initialize(to: keel_plugin(
                struct_size: UInt32(MemoryLayout<keel_plugin>.size),
                abi_version: keel_version(major: UInt32(KEEL_ABI_VERSION_MAJOR), minor: UInt32(KEEL_ABI_VERSION_MINOR),
                                          patch: UInt32(KEEL_ABI_VERSION_PATCH)),
                id: StringPack.leaked(type.id), version: StringPack.leaked(type.version),
                flags: (unloadSafe ? UInt64(KEEL_PLUGIN_FLAG_UNLOAD_SAFE) : 0)
                    | (reactivatable ? UInt64(KEEL_PLUGIN_FLAG_REACTIVATABLE) : 0),
                activate: Trampolines.activate, deactivate: Trampolines.deactivate,
                get_extension: type is any HealthChecking.Type ? Trampolines.extensions : nil))
            current = Exported(type: type, descriptor: d)
            return UInt(bitPattern: d)
        }
        return UnsafeRawPointer(bitPattern: address)
    }

    static func key(_ ctx: OpaquePointer) -> UInt { UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(ctx))) }
}

/// One activation's plugin instance and the callbacks its C registrations point at (kept alive until deactivate).
/// `@unchecked` because `KeelPlugin` instances need not be `Sendable`: `plugin` is set before the activation is
/// published in `PluginExport.activations` and only used again by `deactivate`, which the ABI's [lifecycle] tag
/// never lets overlap `activate`, and by a `HealthChecking` plugin's checks, which the host runs only between the
/// two and one at a time (such a plugin's check must be as thread-safe against its handlers as they are against
/// each other: `HealthChecking` says so); `end()` drops it after `deactivate`, when nothing of the activation runs
/// again; `callbacks` is behind a lock; `host` never changes.
final class Activation: @unchecked Sendable {
    private let callbacks = Mutex<[any AnyObject & Sendable]>([])
    /// The plugin instance, until `end()`.
    private(set) var plugin: (any KeelPlugin)?
    /// The host's table, for `set_error` from a health check (valid for the activation's life).
    let host: UnsafePointer<keel_host>

    init(plugin: any KeelPlugin, host: UnsafePointer<keel_host>) {
        self.plugin = plugin
        self.host = host
    }

    func retain(_ callback: any AnyObject & Sendable) {
        callbacks.withLock { $0.append(callback) }
    }

    /// After `deactivate` returned: drops the instance, its registered closures and its provided tables. The host
    /// calls none of them again, and a plugin that keeps its `PluginHost` (whose closures capture it) would otherwise
    /// keep all of them alive for good (host → activation → closures and instance → host).
    func end() {
        plugin = nil
        callbacks.withLock { $0.removeAll() }
    }
}

typealias RouteHook = @Sendable (Request) throws -> Response
typealias AuthenticateHook = @Sendable (Request) throws -> Identity?
typealias AuthorizeHook = @Sendable (AuthorizationQuery) throws -> Decision

/// A registered closure and the activation it belongs to; a C registration's `user_data` points at it.
/// `@unchecked` because of the two host pointers: the host keeps them valid and unchanged for the activation's life
/// (the ABI's [lifecycle] tag), and the kit only hands them back to the host's thread-safe `set_error`. `hook` is
/// `@Sendable`.
final class Callback<Hook: Sendable>: @unchecked Sendable {
    let hook: Hook
    let host: UnsafePointer<keel_host>
    let ctx: OpaquePointer

    init(_ hook: Hook, host: UnsafePointer<keel_host>, ctx: OpaquePointer) {
        self.hook = hook
        self.host = host
        self.ctx = ctx
    }
}

/// The C entry points of every callback. Each catches Swift errors and turns them into a status and a message:
/// nothing thrown ever crosses into the host.
enum Trampolines {
    static func fail(_ host: UnsafePointer<keel_host>?, _ ctx: OpaquePointer?, _ error: any Error) -> keel_status {
        let (status, message): (keel_status, String)
        if let e = error as? PluginError { (status, message) = (e.status.rawValue, e.message) }
        else { (status, message) = (KEEL_ERR_INTERNAL, String(describing: error)) }
        StringPack.with([message]) { s in host?.pointee.set_error?(ctx, s[0]) }
        return status
    }

    /// Runs `body` with the callback `userData` points at (borrowed: the activation keeps it alive); an error it
    /// throws becomes a status and a message for the host.
    static func call<Hook>(_ userData: UnsafeMutableRawPointer, _ body: (Callback<Hook>) throws -> keel_status) -> keel_status {
        let callback = Unmanaged<Callback<Hook>>.fromOpaque(userData).takeUnretainedValue()
        do { return try body(callback) } catch { return fail(callback.host, callback.ctx, error) }
    }

    static let activate: @convention(c) (UnsafePointer<keel_host>?, OpaquePointer?) -> keel_status = { host, ctx in
        guard let host, let ctx, let type = PluginExport.exported.withLock({ $0?.type }) else {
            return KEEL_ERR_INVALID_ARGUMENT
        }
        PluginExport.host.store(UInt(bitPattern: host), ordering: .releasing)
        let plugin = type.init()
        let activation = Activation(plugin: plugin, host: host)
        PluginExport.activations.withLock { $0[PluginExport.key(ctx)] = activation }
        do {
            try plugin.activate(PluginHost(host: host, ctx: ctx, activation: activation))
            return KEEL_OK
        } catch {
            PluginExport.activations.withLock { _ = $0.removeValue(forKey: PluginExport.key(ctx)) }
            activation.end()
            return fail(host, ctx, error)
        }
    }

    static let deactivate: @convention(c) (UnsafePointer<keel_host>?, OpaquePointer?) -> keel_status = { _, ctx in
        guard let ctx else { return KEEL_ERR_INVALID_ARGUMENT }
        let activation = PluginExport.activations.withLock { $0.removeValue(forKey: PluginExport.key(ctx)) }
        activation?.plugin?.deactivate()
        activation?.end()
        return KEEL_OK
    }

    /// The "keel.health/1" table, built once and never freed (the ABI wants it valid while the library is loaded).
    nonisolated(unsafe) static let healthTable: UnsafeMutablePointer<keel_health_v1> = {
        // nonisolated(unsafe): written once here, before any reader can see it, and only read after.
        let table = UnsafeMutablePointer<keel_health_v1>.allocate(capacity: 1)
        table.initialize(to: keel_health_v1(struct_size: UInt32(MemoryLayout<keel_health_v1>.size), check: Trampolines.health))
        return table
    }()

    /// The descriptor's `get_extension` for a plugin type that conforms to `HealthChecking`.
    static let extensions: @convention(c) (keel_str) -> UnsafeRawPointer? = { id in
        StringPack.copy(id) == KEEL_EXTENSION_HEALTH ? UnsafeRawPointer(healthTable) : nil
    }

    /// Runs the check of the activation `ctx` belongs to: KEEL_OK, or its error's status with the message set.
    static let health: @convention(c) (OpaquePointer?) -> keel_status = { ctx in
        guard let ctx, let activation = PluginExport.activations.withLock({ $0[PluginExport.key(ctx)] }),
              let checking = activation.plugin.flatMap({ $0 as? any HealthChecking }) else { return KEEL_ERR_WRONG_STATE }
        do {
            try checking.checkHealth()
            return KEEL_OK
        } catch {
            return fail(activation.host, ctx, error)
        }
    }

    static func caller(_ p: UnsafePointer<keel_principal>?) -> Caller {
        guard let c = p?.pointee else {
            return Caller(id: "", displayName: "", tenant: "", roles: [], authenticatedBy: "", isAnonymous: true)
        }
        let roles = c.roles.map { base in (0..<c.roles_len).map { StringPack.copy(base[$0]) } } ?? []
        return Caller(id: StringPack.copy(c.id), displayName: StringPack.copy(c.display_name),
                      tenant: StringPack.copy(c.tenant), roles: roles, authenticatedBy: StringPack.copy(c.authenticated_by),
                      isAnonymous: c.flags & UInt32(KEEL_PRINCIPAL_ANONYMOUS) != 0)
    }

    static func request(_ r: keel_http_request) -> Request {
        func pairs(_ base: UnsafePointer<keel_http_header>?, _ n: Int) -> [(name: String, value: String)] {
            guard let base else { return [] }
            return (0..<n).map { (name: StringPack.copy(base[$0].name), value: StringPack.copy(base[$0].value)) }
        }
        let body = r.body.map { Array(UnsafeBufferPointer(start: $0, count: r.body_len)) } ?? []
        return Request(method: StringPack.copy(r.method), path: StringPack.copy(r.path),
                       routePath: StringPack.copy(r.route_path), query: StringPack.copy(r.query),
                       headers: pairs(r.headers, r.headers_len), parameters: pairs(r.params, r.params_len), body: body,
                       caller: caller(r.principal), requestID: StringPack.copy(r.request_id),
                       principalAddress: UInt(bitPattern: r.principal))
    }

    static let route: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<keel_http_request>?,
                                      UnsafeMutablePointer<keel_http_response>?) -> keel_status = { ud, req, res in
        guard let ud, let req, let res else { return KEEL_ERR_INVALID_ARGUMENT }
        return call(ud) { (callback: Callback<RouteHook>) in
            let response = try callback.hook(request(req.pointee))
            var status = res.pointee.set_status(res, UInt32(clamping: response.status))
            for h in response.headers where status == KEEL_OK {
                status = StringPack.with([h.name, h.value]) { s in res.pointee.add_header(res, s[0], s[1]) }
            }
            if status == KEEL_OK {
                status = response.body.withUnsafeBytes { b in res.pointee.write(res, b.baseAddress, b.count) }
            }
            return status
        }
    }

    static let authenticate: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<keel_http_request>?,
                                             UnsafeMutablePointer<keel_principal_builder>?) -> keel_status = { ud, req, out in
        guard let ud, let req, let out else { return KEEL_ERR_INVALID_ARGUMENT }
        return call(ud) { (callback: Callback<AuthenticateHook>) in
            guard let identity = try callback.hook(request(req.pointee)) else { return KEEL_OK }
            var status = StringPack.with([identity.id, identity.displayName, identity.tenant]) { s in
                out.pointee.set_identity(out, s[0], s[1], s[2])
            }
            for role in identity.roles where status == KEEL_OK {
                status = StringPack.with([role]) { s in out.pointee.add_role(out, s[0]) }
            }
            return status
        }
    }

    static let authorize: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<keel_authz_request>?,
                                          UnsafeMutablePointer<keel_auth_decision>?) -> keel_status = { ud, q, out in
        guard let ud, let q, let out else { return KEEL_ERR_INVALID_ARGUMENT }
        return call(ud) { (callback: Callback<AuthorizeHook>) in
            let query = AuthorizationQuery(caller: caller(q.pointee.principal), action: StringPack.copy(q.pointee.action),
                                           resource: StringPack.copy(q.pointee.resource))
            switch try callback.hook(query) {
            case .abstain: out.pointee = KEEL_AUTH_ABSTAIN
            case .allow: out.pointee = KEEL_AUTH_ALLOW
            case .deny: out.pointee = KEEL_AUTH_DENY
            }
            return KEEL_OK
        }
    }
}
