// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import KeelManifest
import KeelSystem

/// The host's half of the C ABI: the `keel_host` table, the service tables, and the trampolines that turn a
/// plugin's `keel_ctx *` back into its `ActivationContext`. The tables are built once, never freed and never
/// written after that, so plugins may keep the pointers for as long as they are active.
enum HostABI {
    /// The host's own version, as plugins see it in `keel_host.host_version`.
    static let hostVersion = "1.0.0"

    static func context(_ ctx: OpaquePointer?) -> ActivationContext? {
        guard let ctx else { return nil }
        return Unmanaged<ActivationContext>.fromOpaque(UnsafeRawPointer(ctx)).takeUnretainedValue()
    }

    static func pointer(to context: ActivationContext) -> OpaquePointer {
        OpaquePointer(Unmanaged.passUnretained(context).toOpaque())
    }

    /// The common front of every registration call: a live context, a non-NULL struct, and a struct_size that
    /// covers the 1.0 layout (the struct starts with it). Then `body` runs with the context and a copy of the struct
    /// made from the bytes struct_size covers only (`GrowableStruct`): fields a newer declaration added after the
    /// plugin's read as zero.
    static func registration<T>(_ ctx: OpaquePointer?, _ pointer: UnsafePointer<T>?, _ what: String,
                                _ body: (ActivationContext, T) -> keel_status) -> keel_status {
        guard let context = context(ctx) else { return KEEL_ERR_INVALID_ARGUMENT }
        guard let pointer else { return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "\(what): NULL pointer") }
        let minimum = GrowableStruct.minimumSize(of: T.self)
        guard let (value, _) = GrowableStruct.read(UnsafeRawPointer(pointer), as: T.self, minimum: minimum) else {
            let size = UnsafeRawPointer(pointer).loadUnaligned(as: UInt32.self)
            return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "\(what): struct_size \(size) \(SizeRefusal.belowABI) (\(minimum))")
        }
        return body(context, value)
    }

    static func staticString(_ s: String) -> keel_str {
        let bytes = Array(s.utf8)
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
        for (i, b) in bytes.enumerated() { buffer[i] = CChar(bitPattern: b) }
        return keel_str(ptr: UnsafePointer(buffer), len: bytes.count)
    }

    // The service tables below are `nonisolated(unsafe)` because they are pointers: each is built once (a `static
    // let` is initialised exactly once, thread-safely) and never written again; plugins only read them.

    nonisolated(unsafe) static let host: UnsafeMutablePointer<keel_host> = {
        let table = UnsafeMutablePointer<keel_host>.allocate(capacity: 1)
        var h = keel_host()
        h.struct_size = UInt32(MemoryLayout<keel_host>.size)
        h.abi_version = keel_version(major: UInt32(KEEL_ABI_VERSION_MAJOR), minor: UInt32(KEEL_ABI_VERSION_MINOR),
                                     patch: UInt32(KEEL_ABI_VERSION_PATCH))
        h.host_name = staticString("keel")
        h.host_version = staticString(hostVersion)
        h.log = { ctx, level, message in
            guard let context = HostABI.context(ctx) else { return }
            context.logBudgeted(LogLevel(rawValue: Int(level)) ?? .error, TextLimits.logLine(message.string(upTo: TextLimits.logLineBytes)),
                                generation: context.identity.generation, byPlugin: true)
        }
        // A NULL ctx means the handler or hook running on this thread (plugin code that kept no ctx).
        // Cut as a log line is: the message goes into log lines and the load history.
        h.set_error = { ctx, message in
            (HostABI.context(ctx) ?? ActivationContext.currentCall)?.setError(message.string(upTo: TextLimits.logLineBytes))
        }
        h.get_service = { ctx, id in
            guard HostABI.context(ctx) != nil else { return nil }
            switch id.string {
            case KEEL_SERVICE_HTTP: return UnsafeRawPointer(HostABI.http)
            case KEEL_SERVICE_MENU: return UnsafeRawPointer(HostABI.menu)
            case KEEL_SERVICE_AUTH: return UnsafeRawPointer(HostABI.auth)
            case KEEL_SERVICE_CONFIG: return UnsafeRawPointer(HostABI.config)
            case KEEL_SERVICE_SERVICES: return UnsafeRawPointer(HostABI.services)
            case KEEL_SERVICE_COMMANDS: return UnsafeRawPointer(HostABI.commands)
            default: return nil
            }
        }
        table.initialize(to: h)
        return table
    }()

    nonisolated(unsafe) static let http: UnsafeMutablePointer<keel_host_http> = {
        let table = UnsafeMutablePointer<keel_host_http>.allocate(capacity: 1)
        table.initialize(to: keel_host_http(struct_size: UInt32(MemoryLayout<keel_host_http>.size)) { ctx, route in
            HostABI.registration(ctx, route, "route") { context, r in
                guard let handler = r.handler else { return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "route: NULL handler") }
                guard let method = r.method.validated(limit: 16), let path = r.path.validated(limit: ActivationContext.Limit.routePath) else {
                    return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "route: method or path is not UTF-8 or too long")
                }
                // As callers see it, for a crash record: the plugin's prefix, or the foreign path after "=".
                let shown = path.hasPrefix("=") ? String(path.dropFirst()) : "/ext/\(context.pluginID)" + (path.hasPrefix("/") ? "" : "/") + path
                return context.addRoute(method: method.uppercased(), path: path,
                                        handler: RouteHandler(function: handler, userData: r.user_data,
                                                              route: "\(method.uppercased()) \(shown)", context: context))
            }
        })
        return table
    }()

    nonisolated(unsafe) static let menu: UnsafeMutablePointer<keel_host_menu> = {
        let table = UnsafeMutablePointer<keel_host_menu>.allocate(capacity: 1)
        table.initialize(to: keel_host_menu(struct_size: UInt32(MemoryLayout<keel_host_menu>.size)) { ctx, entry in
            HostABI.registration(ctx, entry, "menu entry") { context, e in
                typealias L = ActivationContext.Limit
                guard let id = e.id.validated(limit: 128), let title = e.title.validated(limit: L.menuTitle),
                      let parent = e.parent.validated(limit: L.menuParent), let link = e.link.validated(limit: L.menuLink),
                      let icon = e.icon.validated(limit: L.menuIcon), let permission = e.permission.validated(limit: L.menuPermission) else {
                    return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "menu entry \"\(e.id.string)\": a string is not UTF-8 or too long")
                }
                return context.addMenu(MenuDeclaration(id: id, title: title, parent: parent, link: link,
                                                       order: Int(e.order), icon: icon, permission: permission))
            }
        })
        return table
    }()

    nonisolated(unsafe) static let auth: UnsafeMutablePointer<keel_host_auth> = {
        let table = UnsafeMutablePointer<keel_host_auth>.allocate(capacity: 1)
        var a = keel_host_auth()
        a.struct_size = UInt32(MemoryLayout<keel_host_auth>.size)
        a.register_authenticator = { ctx, hook in
            HostABI.registration(ctx, hook, "authenticate hook") { context, h in
                guard let fn = h.authenticate, let name = h.name.validated(limit: ActivationContext.Limit.hookName) else {
                    return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "authenticate hook: no function, or a name that is not UTF-8")
                }
                return context.addAuthenticator(AuthenticateHook(name: name, function: fn, userData: h.user_data, context: context))
            }
        }
        a.register_authorizer = { ctx, hook in
            HostABI.registration(ctx, hook, "authorize hook") { context, h in
                guard let fn = h.authorize, let name = h.name.validated(limit: ActivationContext.Limit.hookName) else {
                    return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "authorize hook: no function, or a name that is not UTF-8")
                }
                return context.addAuthorizer(AuthorizeHook(name: name, function: fn, userData: h.user_data, context: context))
            }
        }
        a.check_permission = { ctx, principal, action, resource, out in
            guard let context = HostABI.context(ctx), let principal, let out else { return KEEL_ERR_INVALID_ARGUMENT }
            let decision = context.environment.checkPermission(plugin: context.pluginID, CFrame.principal(principal), action: action.string,
                                                               resource: resource.string)
            out.pointee = decision == .allow ? KEEL_AUTH_ALLOW : KEEL_AUTH_DENY
            return KEEL_OK
        }
        table.initialize(to: a)
        return table
    }()

    nonisolated(unsafe) static let config: UnsafeMutablePointer<keel_host_config> = {
        let table = UnsafeMutablePointer<keel_host_config>.allocate(capacity: 1)
        table.initialize(to: keel_host_config(struct_size: UInt32(MemoryLayout<keel_host_config>.size)) { ctx in
            HostABI.context(ctx)?.configText ?? keel_str(ptr: nil, len: 0)
        })
        return table
    }()

    // MARK: writers handed to plugin calls

    static func withResponse(_ writer: ResponseWriter, _ body: (UnsafeMutablePointer<keel_http_response>) -> keel_status) -> keel_status {
        var res = keel_http_response()
        res.struct_size = UInt32(MemoryLayout<keel_http_response>.size)
        res.host_data = Unmanaged.passUnretained(writer).toOpaque()
        // Each refusal is noted (`HostRefusal`): a handler that returns it passed it on.
        // A refused call says why on the writer (`ResponseWriter.refusal`), for the log line of a handler that passes it on.
        res.set_status = { res, status in HostRefusal.notedOnResponse({
            guard let w = HostABI.responseWriter(res) else { return KEEL_ERR_INVALID_ARGUMENT }
            guard (100...599).contains(status) else {
                w.refusal = "set_status(\(status)): an HTTP status is 100 to 599"
                return KEEL_ERR_INVALID_ARGUMENT
            }
            w.status = Int(status)
            return KEEL_OK
        }()) }
        res.add_header = { res, name, value in HostRefusal.notedOnResponse({
            guard let w = HostABI.responseWriter(res) else { return KEEL_ERR_INVALID_ARGUMENT }
            guard let n = name.validated(limit: 256), !n.isEmpty, HeaderField.isSafe(n) else {
                w.refusal = "add_header: a header name is 1 to 256 bytes of UTF-8 without CR, LF or NUL"
                return KEEL_ERR_INVALID_ARGUMENT
            }
            guard let v = value.validated(limit: 8192), HeaderField.isSafe(v) else {
                w.refusal = "add_header: the value of \(Printable.escapingControls(n)) is not at most 8,192 bytes of UTF-8 without CR, LF or NUL"
                return KEEL_ERR_INVALID_ARGUMENT
            }
            guard w.headers.count < 100 else {
                w.refusal = "add_header: at most 100 headers per answer"
                return KEEL_ERR_LIMIT
            }
            w.headers.append(HeaderField(name: n, value: v))
            return KEEL_OK
        }()) }
        res.write = { res, data, len in HostRefusal.notedOnResponse({
            guard let w = HostABI.responseWriter(res) else { return KEEL_ERR_INVALID_ARGUMENT }
            guard len != 0 else { return KEEL_OK }
            guard let data else {
                w.refusal = "write: NULL data with a length of \(len)"
                return KEEL_ERR_INVALID_ARGUMENT
            }
            // Not `count + len`: a length near SIZE_MAX would overflow that sum, and the trap would end the host; one
            // past Int.max reads as negative here (size_t imports as Int).
            guard len > 0, len <= w.limit - w.body.count else {
                w.refusal = "write: the answer's body would pass its limit of \(w.limit) bytes"
                return KEEL_ERR_LIMIT
            }
            w.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: len))
            return KEEL_OK
        }()) }
        return withExtendedLifetime(writer) { body(&res) }
    }

    static func responseWriter(_ res: UnsafeMutablePointer<keel_http_response>?) -> ResponseWriter? {
        guard let data = res?.pointee.host_data else { return nil }
        return Unmanaged<ResponseWriter>.fromOpaque(data).takeUnretainedValue()
    }

    static func withPrincipalBuilder(_ writer: PrincipalWriter,
                                     _ body: (UnsafeMutablePointer<keel_principal_builder>) -> keel_status) -> keel_status {
        var b = keel_principal_builder()
        b.struct_size = UInt32(MemoryLayout<keel_principal_builder>.size)
        b.host_data = Unmanaged.passUnretained(writer).toOpaque()
        b.set_identity = { b, id, name, tenant in
            guard let data = b?.pointee.host_data, let i = id.validated(limit: 256), !i.isEmpty,
                  let n = name.validated(limit: 256), let t = tenant.validated(limit: 128),
                  Principal.isPrintable(i), Principal.isPrintable(n), Principal.isPrintable(t) else { return KEEL_ERR_INVALID_ARGUMENT }
            let w = Unmanaged<PrincipalWriter>.fromOpaque(data).takeUnretainedValue()
            w.id = i
            w.displayName = n
            w.tenant = t
            return KEEL_OK
        }
        b.add_role = { b, role in
            // No comma: a proxied app reads the roles as one comma-separated header (`X-Keel-Roles`), where "viewer,admin"
            // would be two.
            guard let data = b?.pointee.host_data, let r = role.validated(limit: 128), !r.isEmpty, Principal.isPrintable(r),
                  !r.contains(",") else {
                return KEEL_ERR_INVALID_ARGUMENT
            }
            let w = Unmanaged<PrincipalWriter>.fromOpaque(data).takeUnretainedValue()
            guard w.roles.count < 64 else { return KEEL_ERR_LIMIT }
            w.roles.append(r)
            return KEEL_OK
        }
        return withExtendedLifetime(writer) { body(&b) }
    }
}
