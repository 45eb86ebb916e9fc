// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI

/// A plugin's route handler: a C function pointer and its user data, bound to the activation that registered it.
///
/// `handle` may be called from any thread, concurrently (the ABI's [request] tag). It refuses calls once the
/// activation is draining, so deactivate never overlaps a call.
/// `@unchecked` because of the C function pointer and `userData`: both are immutable, and the ABI's [request] tag
/// makes the plugin responsible for calls on any thread at once.
public final class RouteHandler: @unchecked Sendable {
    let function: keel_http_handler_fn?
    let userData: UnsafeMutableRawPointer?
    /// A route the host serves on the plugin's behalf (its bundle's assets), instead of `function`.
    let host: (@Sendable (PluginRequest) -> PluginResponse)?
    /// Names this route when the host dies inside `function` (nil for a host-served route).
    let site: CrashSite?
    /// A route of a plugin running in a worker process: the call goes there instead (see `RemoteCalls`).
    let remote: RemoteTarget?
    /// Public static files the host serves for the plugin (its bundle's assets): served to callers of every tenant
    /// while the plugin is enabled for any, because console pages load them from an opaque origin, without cookies.
    public let everyTenant: Bool
    public let context: ActivationContext
    /// Largest body a handler may write (bytes).
    public static let responseLimit = 16 * 1024 * 1024

    /// `route` names the route in a crash record, e.g. `GET /ext/x/items/:id`.
    init(function: keel_http_handler_fn, userData: UnsafeMutableRawPointer?, route: String, context: ActivationContext) {
        self.function = function
        self.userData = userData
        self.host = nil
        site = context.crashSite("handler " + route)
        remote = nil
        self.everyTenant = false
        self.context = context
    }

    /// Route number `index` of a plugin running in a worker process, reached through `calls`.
    init(remote calls: any RemoteCalls, index: Int, context: ActivationContext) {
        function = nil
        userData = nil
        host = nil
        site = nil
        remote = RemoteTarget(calls: calls, index: index)
        everyTenant = false
        self.context = context
    }

    /// A route served by the host for the plugin: admitted, drained and guarded like the plugin's own routes.
    public init(hostServed serve: @escaping @Sendable (PluginRequest) -> PluginResponse, everyTenant: Bool = false,
                context: ActivationContext) {
        function = nil
        userData = nil
        host = serve
        site = nil
        remote = nil
        self.everyTenant = everyTenant
        self.context = context
    }

    public var pluginID: String { context.pluginID }

    /// Runs the handler on the calling thread.
    /// - Returns: what the handler wrote, or a `PluginCallError` with the plugin's status and message when it
    ///   failed, or when the activation is no longer accepting calls (`KEEL_ERR_UNAVAILABLE`).
    public func handle(_ request: PluginRequest) -> Result<PluginResponse, PluginCallError> {
        PreparedRequest.prepare(request) { handle($0) }
    }

    /// Same as `handle(_:)` with a request already laid out (shared with the authorize hooks that ran before).
    public func handle(_ prepared: PreparedRequest) -> Result<PluginResponse, PluginCallError> {
        guard context.enter() else {
            return .failure(.notActive(pluginID))
        }
        if let remote { return handleRemotely(remote, prepared.request) }
        guard let function, let site else {
            defer { context.leave() }
            return .success(host.map { $0(prepared.request) } ?? PluginResponse(status: 404))
        }
        let outer = ActivationContext.beginCall(context)
        let outerRequest = ActivationContext.beginRequest(prepared, serving: context)
        defer { ActivationContext.endRequest(outerRequest); ActivationContext.endCall(outer); context.leave() }
        let writer = ResponseWriter(limit: Self.responseLimit)
        let started = ActivationContext.now()
        HostRefusal.reset()
        let status = HostABI.withResponse(writer) { res in site.around { function(userData, prepared.pointer, res) } }
        let message = status == KEEL_OK ? "" : context.takeError()
        // Whether the refusal passed on was of a call on this response, whose writer then says why (read before
        // `passedOn` forgets it).
        let onResponse = HostRefusal.lastWasOnResponse
        let passedOn = status != KEEL_OK && HostRefusal.passedOn(status)
        let request = prepared.request
        _ = context.account("\(request.method) \(request.path) handler", started: started, budget: context.budgets.handler,
                            failed: status != KEEL_OK, declined: StatusCode.isRefusal(status),
                            detail: StatusCode.name(status) + (message.isEmpty ? "" : " " + message))
        guard status == KEEL_OK else {
            var error = PluginCallError(pluginID: pluginID, status: status, message: message)
            error.passedOn = passedOn
            if passedOn && onResponse { error.hostRefusal = writer.refusal }
            return .failure(error)
        }
        return .success(PluginResponse(status: writer.status, headers: writer.headers, body: writer.body))
    }

    /// True for a route of a plugin running in a worker process: `handleAsync` reaches it without holding a thread.
    public var isRemote: Bool { remote != nil }

    /// For a remote route (`isRemote`): the call, suspending the task while the worker works; admitted and accounted
    /// for like any call. For any other route, the same as `handle(_:)`.
    public func handleAsync(_ request: PluginRequest) async -> Result<PluginResponse, PluginCallError> {
        guard let remote else { return handle(request) }
        guard context.enter() else {
            return .failure(.notActive(pluginID))
        }
        defer { context.leave() }
        let started = ActivationContext.now()
        let result = await remote.calls.handleAsync(route: remote.index, request)
        _ = context.account("\(request.method) \(request.path) handler", started: started, budget: context.budgets.handler,
                            failed: result.failure != nil, declined: result.failure.map { StatusCode.isRefusal($0.status) } ?? false,
                            detail: result.failure.map { "\($0)" } ?? "")
        return result
    }

    /// The call to a worker process, admitted and accounted for like a call into a library in this process.
    private func handleRemotely(_ remote: RemoteTarget, _ request: PluginRequest) -> Result<PluginResponse, PluginCallError> {
        defer { context.leave() }
        let started = ActivationContext.now()
        let result = remote.calls.handle(route: remote.index, request)
        _ = context.account("\(request.method) \(request.path) handler", started: started, budget: context.budgets.handler,
                            failed: result.failure != nil, declined: result.failure.map { StatusCode.isRefusal($0.status) } ?? false,
                            detail: { if case let .failure(e) = result { return "\(e)" }; return "" }())
        return result
    }
}

/// Where a handler's response accumulates; reached from C through `keel_http_response.host_data`.
final class ResponseWriter {
    var status = 200
    var headers: [HeaderField] = []
    var body: [UInt8] = []
    let limit: Int
    /// A write went past `limit` (and was refused).
    var overflowed = false
    /// Why the host refused the handler's last refused call on this response (`set_status(999): ...`), for the log
    /// line of a handler that passes the refusal on: the status alone does not say which rule it broke. Host text.
    var refusal: String?

    init(limit: Int) { self.limit = limit }
}

extension Principal {
    /// True when `text` holds no control character (C0, DEL, C1), no line or paragraph separator and no
    /// bidirectional embedding, override or isolate: what a hook names a caller, its tenant and roles goes into audit
    /// rows, log lines and a proxied app's headers, where one would break a line, forge another or reverse what
    /// follows (`keel_principal_builder` refuses such text). The joiners and marks real names are spelt with (U+200C in
    /// Persian, U+200D in emoji, U+200F) are names; printed, they are escaped (`Printable`). ASCII is checked byte by byte.
    public static func isPrintable(_ text: String) -> Bool {
        var ascii = true
        for byte in text.utf8 {
            if byte < 0x20 || byte == 0x7F { return false }
            if byte >= 0x80 { ascii = false }
        }
        return ascii || !text.unicodeScalars.contains { scalar in
            switch scalar.value {
            case 0x80...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: true
            default: false
            }
        }
    }
}

/// Where an authenticate hook's principal accumulates; reached through `keel_principal_builder.host_data`.
final class PrincipalWriter {
    var id: String?
    var displayName = ""
    var tenant = ""
    var roles: [String] = []
}

/// What the authenticate and authorize hooks share: the C function (or the worker's hook number), its user data,
/// the activation that registered it, the crash site that names it and the watch that stops asking it while too many
/// of its calls hang. `Function` is the hook's C function type.
/// `@unchecked` for the same reason as `RouteHandler`: an immutable C function pointer and `userData`, callable from
/// any thread at once ([request]).
public class PluginHook<Function>: @unchecked Sendable {
    public let name: String
    /// Nil for a hook of a plugin running in a worker process (`remote`).
    let function: Function?
    let userData: UnsafeMutableRawPointer?
    let remote: RemoteTarget?
    public let context: ActivationContext

    /// Names this hook when the host dies inside it.
    let site: CrashSite
    /// Its calls now, to stop asking it while too many of them hang.
    let watch: HookWatch

    /// `kind` names the hook in crash records: "authenticate hook", "authorize hook".
    init(kind: String, name: String, function: Function, userData: UnsafeMutableRawPointer?, context: ActivationContext) {
        self.name = name
        self.function = function
        self.userData = userData
        self.remote = nil
        self.context = context
        site = context.crashSite("\(kind) \"\(name)\"")
        watch = HookWatch(budget: context.budgets.hook)
    }

    /// Hook number `index` of a plugin running in a worker process, reached through `calls`.
    init(kind: String, name: String, remote calls: any RemoteCalls, index: Int, context: ActivationContext) {
        self.name = name
        function = nil
        userData = nil
        remote = RemoteTarget(calls: calls, index: index)
        self.context = context
        site = context.crashSite("\(kind) \"\(name)\"")
        watch = HookWatch(budget: context.budgets.hook)
    }

    public var pluginID: String { context.pluginID }
}

/// A plugin's authenticate hook (see `PluginHook`).
public final class AuthenticateHook: PluginHook<keel_authenticate_fn>, @unchecked Sendable {
    init(name: String, function: keel_authenticate_fn, userData: UnsafeMutableRawPointer?, context: ActivationContext) {
        super.init(kind: "authenticate hook", name: name, function: function, userData: userData, context: context)
    }

    /// Hook number `index` of a plugin running in a worker process, reached through `calls`.
    init(name: String, remote calls: any RemoteCalls, index: Int, context: ActivationContext) {
        super.init(kind: "authenticate hook", name: name, remote: calls, index: index, context: context)
    }

    /// Asks the hook who is calling. `.success(nil)` is an abstention; a failure must be treated as a denial.
    /// [request]
    public func authenticate(_ request: PluginRequest) -> Result<Principal?, PluginCallError> {
        guard context.enter() else {
            return .failure(.notActive(pluginID))
        }
        if let remote {
            defer { context.leave() }
            remote.calls.waitForWorker()
            let started = ActivationContext.now()
            let result = remote.calls.authenticate(hook: remote.index, request)
            if let error = context.finishHook("authenticate hook \"\(name)\"", hook: name, started: started, failure: result.failure) {
                return .failure(error)
            }
            return result
        }
        guard let function else { context.leave(); return .success(nil) }
        let started = ActivationContext.now()
        let slot = watch.enter(at: started)
        if slot < -1 {
            context.leave()
            return .failure(context.refuseHook(watch.refusal("authenticate hook \"\(name)\"", slot)))
        }
        let outer = ActivationContext.beginCall(context)
        defer { watch.leave(slot); ActivationContext.endCall(outer); context.leave() }
        let writer = PrincipalWriter()
        let status = CFrame.withRequest(request) { req in
            HostABI.withPrincipalBuilder(writer) { b in site.around { function(userData, req, b) } }
        }
        if let error = context.finishHook("authenticate hook \"\(name)\"", hook: name, started: started, status: status) {
            return .failure(error)
        }
        guard let id = writer.id else { return .success(nil) }
        return .success(Principal(id: id, displayName: writer.displayName,
                                  tenant: writer.tenant,
                                  roles: writer.roles, authenticatedBy: pluginID))
    }
}

/// A plugin's authorize hook (see `PluginHook`).
public final class AuthorizeHook: PluginHook<keel_authorize_fn>, @unchecked Sendable {
    init(name: String, function: keel_authorize_fn, userData: UnsafeMutableRawPointer?, context: ActivationContext) {
        super.init(kind: "authorize hook", name: name, function: function, userData: userData, context: context)
    }

    /// Hook number `index` of a plugin running in a worker process, reached through `calls`.
    init(name: String, remote calls: any RemoteCalls, index: Int, context: ActivationContext) {
        super.init(kind: "authorize hook", name: name, remote: calls, index: index, context: context)
    }

    /// Asks the hook for a decision. A failure (error status, unknown decision) must be treated as a denial.
    /// [request]
    public func authorize(_ principal: Principal, action: String, resource: String,
                          request: PluginRequest? = nil) -> Result<AuthDecision, PluginCallError> {
        if remote != nil { return callRemote(principal, action: action, resource: resource, request: request) }
        var result: Result<AuthDecision, PluginCallError> = .success(.abstain)
        Self.withQuestion(principal, action: action, resource: resource, request: request) { q in result = call(q) }
        return result
    }

    /// Asks `hooks` in order, building the C question (and the request it carries) once for all of them. Any deny,
    /// or any failure, wins and stops the round; otherwise an allow from any hook allows.
    /// - Returns: the decision, and for a deny the hook and its reason (for the log).
    /// [request]
    /// - Parameter stopped: asked about a hook whose plugin stopped taking calls (a reload replaced it, or it was
    ///   disabled); its answer only tells the caller to ask the chain as it is now: the decision is a deny either way.
    public static func decide(_ hooks: [AuthorizeHook], principal: Principal, action: String, resource: String,
                              request: PluginRequest? = nil, prepared: PreparedRequest? = nil,
                              stopped: (AuthorizeHook) -> Void = { _ in }) -> (AuthDecision, String?) {
        guard !hooks.isEmpty else { return (.abstain, nil) }
        var outcome: (AuthDecision, String?) = (.abstain, nil)
        withQuestion(principal, action: action, resource: resource, request: request, prepared: prepared) { q in
            var allowed = false
            for hook in hooks {
                let answer = hook.remote == nil ? hook.call(q)
                    : hook.callRemote(principal, action: action, resource: resource, request: request ?? prepared?.request)
                switch answer {
                case .success(.deny):
                    outcome = (.deny, "authorize hook \"\(hook.name)\" of plugin \"\(hook.pluginID)\" denied")
                    return
                case .success(.allow): allowed = true
                case .success(.abstain): continue
                case let .failure(error):
                    if error.isNotActive { stopped(hook) }
                    outcome = (.deny, "authorize hook \"\(hook.name)\" failed: \(error)")
                    return
                }
            }
            outcome = (allowed ? .allow : .abstain, nil)
        }
        return outcome
    }

    /// Lays out a `keel_authz_request` valid during `body`.
    static func withQuestion(_ principal: Principal, action: String, resource: String, request: PluginRequest?,
                             prepared: PreparedRequest? = nil, _ body: (UnsafeMutablePointer<keel_authz_request>) -> Void) {
        func ask(_ http: UnsafePointer<keel_http_request>?, _ p: UnsafePointer<keel_principal>) {
            var arena = StringArena(capacity: action.utf8.count + resource.utf8.count)
            let a = arena.add(action), r = arena.add(resource)
            arena.withStrings { str in
                var q = keel_authz_request(struct_size: UInt32(MemoryLayout<keel_authz_request>.size), principal: p,
                                           action: str(a), resource: str(r), http: http)
                body(&q)
            }
        }
        if let prepared, prepared.request.principal == principal {
            ask(prepared.pointer, prepared.pointer.pointee.principal)
        } else if let request {
            var withPrincipal = request
            withPrincipal.principal = principal
            CFrame.withRequest(withPrincipal) { req in ask(req, req.pointee.principal) }
        } else {
            CFrame.withPrincipal(principal) { p in ask(nil, p) }
        }
    }

    /// One call into the hook with a prepared question (a hook in this process; see `callRemote`).
    func call(_ q: UnsafeMutablePointer<keel_authz_request>) -> Result<AuthDecision, PluginCallError> {
        guard context.enter() else {
            return .failure(.notActive(pluginID))
        }
        guard let function else { context.leave(); return .success(.abstain) }
        let started = ActivationContext.now()
        let slot = watch.enter(at: started)
        if slot < -1 {
            context.leave()
            return .failure(context.refuseHook(watch.refusal("authorize hook \"\(name)\"", slot)))
        }
        let outer = ActivationContext.beginCall(context)
        defer { watch.leave(slot); ActivationContext.endCall(outer); context.leave() }
        var decision: keel_auth_decision = -1
        let status = site.around { function(userData, q, &decision) }
        if let error = context.finishHook("authorize hook \"\(name)\"", hook: name, started: started, status: status) {
            return .failure(error)
        }
        switch decision {
        case KEEL_AUTH_ALLOW: return .success(.allow)
        case KEEL_AUTH_DENY: return .success(.deny)
        case KEEL_AUTH_ABSTAIN: return .success(.abstain)
        default:
            return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.invalidArgument,
                                            message: "authorize hook \"\(name)\" wrote unknown decision \(decision)"))
        }
    }

    /// One call into a hook of a plugin running in a worker process, with the question as values.
    func callRemote(_ principal: Principal, action: String, resource: String,
                    request: PluginRequest?) -> Result<AuthDecision, PluginCallError> {
        guard let remote else { return .success(.abstain) }
        guard context.enter() else {
            return .failure(.notActive(pluginID))
        }
        defer { context.leave() }
        remote.calls.waitForWorker()
        let started = ActivationContext.now()
        let result = remote.calls.authorize(hook: remote.index, principal, action: action, resource: resource, request: request)
        if let error = context.finishHook("authorize hook \"\(name)\"", hook: name, started: started, failure: result.failure) {
            return .failure(error)
        }
        return result
    }
}
