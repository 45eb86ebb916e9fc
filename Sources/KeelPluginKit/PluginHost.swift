// Keel — a microkernel plugin host. Licensed under Apache-2.0.

internal import CKeelABI

/// What a Swift plugin sees of the host during `activate`: registration of routes, menu entries and auth hooks,
/// and the log. Registration methods throw `PluginError` with the host's status when the host refuses (conflict,
/// capability not granted, quota); they may only be called inside `activate`.
/// Handlers run on the host's worker threads, concurrently: they must be thread-safe and must not block for long.
/// `@unchecked` because of the host's two pointers: the host keeps them valid and unchanged for the activation's
/// life, and its functions called through them are thread-safe where the ABI says so ([thread-safe], [request]).
public final class PluginHost: @unchecked Sendable {
    let host: UnsafePointer<keel_host>
    let ctx: OpaquePointer
    let activation: Activation

    init(host: UnsafePointer<keel_host>, ctx: OpaquePointer, activation: Activation) {
        self.host = host
        self.ctx = ctx
        self.activation = activation
    }

    public enum LogLevel: Int32 { case debug = 0, info, warn, error }

    /// Writes to the host's log, attributed to this plugin. [thread-safe]
    public func log(_ level: LogLevel, _ message: String) {
        StringPack.with([message]) { s in host.pointee.log?(ctx, level.rawValue, s[0]) }
    }

    func service<T>(_ id: String, as: T.Type) throws -> UnsafePointer<T> {
        let raw = StringPack.with([id]) { s in host.pointee.get_service?(ctx, s[0]) }
        guard let raw else { throw PluginError(.unsupported, "this host does not offer \(id)") }
        return raw.assumingMemoryBound(to: T.self)
    }

    /// Throws a `PluginError` for a status other than KEEL_OK: "<what>: <the status in words>", then `why` the host
    /// says so for that status, where the ABI says (the host's own log line, when it writes one, has more).
    static func check(_ status: keel_status, _ what: String, why: (PluginError.Status) -> String? = { _ in nil }) throws {
        guard status != KEEL_OK else { return }
        let named = PluginError.Status(rawValue: status) ?? .internalError
        throw PluginError(named, "\(what): \(named.words)" + (why(named).map { " (\($0))" } ?? ""))
    }

    /// Registers `hook` through `call`, which gets the `user_data` to hand the host; the callback is kept alive with
    /// the activation once the host accepts it.
    func register<Hook: Sendable>(_ hook: Hook, _ what: String, why: (PluginError.Status) -> String? = { _ in nil },
                                  _ call: (UnsafeMutableRawPointer) -> keel_status) throws {
        let callback = Callback(hook, host: host, ctx: ctx)
        try Self.check(call(Unmanaged.passUnretained(callback).toOpaque()), what, why: why)
        activation.retain(callback)
    }

    /// Registers `handler` for `method` (or "*") and `path` below `/ext/<id>`, e.g. "/items/:id".
    public func route(_ method: String, _ path: String, _ handler: @escaping @Sendable (Request) throws -> Response) throws {
        let http = try service(KEEL_SERVICE_HTTP, as: keel_host_http.self)
        try register(handler as RouteHook, "route \(method) \(path)") { userData in
            StringPack.with([method, path]) { s -> keel_status in
                var route = keel_route(struct_size: UInt32(MemoryLayout<keel_route>.size), method: s[0], path: s[1],
                                       handler: Trampolines.route, user_data: userData)
                return http.pointee.register_route(ctx, &route)
            }
        }
    }

    /// Adds a console menu entry.
    public func menu(id: String, title: String, parent: String = "", link: String = "", order: Int32 = 0,
                     icon: String = "", permission: String = "") throws {
        let menu = try service(KEEL_SERVICE_MENU, as: keel_host_menu.self)
        let status = StringPack.with([id, title, parent, link, icon, permission]) { s -> keel_status in
            var entry = keel_menu_entry(struct_size: UInt32(MemoryLayout<keel_menu_entry>.size), id: s[0], title: s[1],
                                        parent: s[2], link: s[3], order: order, icon: s[4], permission: s[5])
            return menu.pointee.add_entry(ctx, &entry)
        }
        try Self.check(status, "menu entry \(id)")
    }

    /// Adds an authenticate hook: return an identity to establish the caller, nil to abstain; throwing denies.
    public func authenticator(_ name: String, _ hook: @escaping @Sendable (Request) throws -> Identity?) throws {
        let auth = try service(KEEL_SERVICE_AUTH, as: keel_host_auth.self)
        try register(hook as AuthenticateHook, "authenticate hook \(name)") { userData in
            StringPack.with([name]) { s -> keel_status in
                var h = keel_authenticator(struct_size: UInt32(MemoryLayout<keel_authenticator>.size), name: s[0],
                                           authenticate: Trampolines.authenticate, user_data: userData)
                return auth.pointee.register_authenticator(ctx, &h)
            }
        }
    }

    /// Adds an authorize hook; throwing denies.
    public func authorizer(_ name: String, _ hook: @escaping @Sendable (AuthorizationQuery) throws -> Decision) throws {
        let auth = try service(KEEL_SERVICE_AUTH, as: keel_host_auth.self)
        try register(hook as AuthorizeHook, "authorize hook \(name)") { userData in
            StringPack.with([name]) { s -> keel_status in
                var h = keel_authorizer(struct_size: UInt32(MemoryLayout<keel_authorizer>.size), name: s[0],
                                        authorize: Trampolines.authorize, user_data: userData)
                return auth.pointee.register_authorizer(ctx, &h)
            }
        }
    }

    /// Calls command `command` of plugin `plugin` (declared under `calls:` in plugin.yaml as "plugin.command") for the
    /// caller of `request`, with `arguments`, a JSON array ("[2, 40]"), and returns the result as JSON text (a
    /// number, true/false, a string, a JSON value or null). `request` must be the one this handler is serving, on
    /// its thread: the host refuses any other (a plugin acts only for the caller it serves). [request]
    /// - Throws: `PluginError` with the host's status: `.denied` (not declared under `calls:`, or the caller lacks
    ///   the command's permission), `.notFound` (no such plugin or command, or not active), `.invalidArgument`
    ///   (arguments of the wrong count or type), `.limit` (the result needs more than `capacity` bytes), or the
    ///   command's own error status.
    public func call(_ plugin: String, _ command: String, arguments: String = "[]", for request: Request,
                     capacity: Int = 64 * 1024) throws -> String {
        let commands = try service(KEEL_SERVICE_COMMANDS, as: keel_host_commands.self)
        guard let principal = UnsafePointer<keel_principal>(bitPattern: request.principalAddress) else {
            throw PluginError(.denied, "calling \(plugin).\(command): denied (the request was not made by the host, so there is no caller to act for)")
        }
        let capacity = max(capacity, 0)
        var out = [CChar](repeating: 0, count: max(capacity, 1))
        var length = 0
        let status = StringPack.with([plugin, command, arguments]) { s in
            out.withUnsafeMutableBufferPointer { buffer in
                commands.pointee.call(ctx, s[0], s[1], s[2], principal, buffer.baseAddress, capacity, &length)
            }
        }
        if status == KEEL_ERR_LIMIT, length > capacity {
            throw PluginError(.limit, "\(plugin).\(command): the result needs \(length) bytes, over \(capacity)")
        }
        try Self.check(status, "calling \(plugin).\(command)") { status in
            switch status {
            case .denied: "not declared under calls: in plugin.yaml, or the caller lacks the command's permission"
            case .notFound: "no such plugin or command, or the plugin is not active"
            case .invalidArgument: "the arguments are not a JSON array of the command's parameters"
            default: nil
            }
        }
        return String(decoding: out.prefix(min(length, capacity)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Asks the host's authorize chain whether `caller` may do `action` on `resource`. [request]
    public func isAllowed(_ caller: Caller, action: String, resource: String) -> Bool {
        guard let auth = try? service(KEEL_SERVICE_AUTH, as: keel_host_auth.self) else { return false }
        var decision: keel_auth_decision = KEEL_AUTH_DENY
        let status = StringPack.with([caller.id, caller.displayName, caller.tenant, caller.authenticatedBy, action, resource]
                                        + caller.roles) { s -> keel_status in
            let roles = Array(s[6...])
            return roles.withUnsafeBufferPointer { r in
                var p = keel_principal(struct_size: UInt32(MemoryLayout<keel_principal>.size),
                                       flags: caller.isAnonymous ? UInt32(KEEL_PRINCIPAL_ANONYMOUS) : 0,
                                       id: s[0], display_name: s[1], tenant: s[2], authenticated_by: s[3],
                                       roles: r.baseAddress, roles_len: r.count)
                return auth.pointee.check_permission(ctx, &p, s[4], s[5], &decision)
            }
        }
        return status == KEEL_OK && decision == KEEL_AUTH_ALLOW
    }
}
