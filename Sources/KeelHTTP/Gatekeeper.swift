// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import Hummingbird
import Keel
import NIOCore

/// Establishes who is calling and whether the auth chain lets them through. Shared by the admin API middleware
/// and the plugin dispatcher, so both see one auth chain.
///
/// The admin token (`Authorization: Bearer <token>`) is checked first and makes the built-in admin principal; then
/// a console page session (the `keel_page` cookie, on the routes of the plugin it was issued for); otherwise the
/// plugins' authenticate hooks run in activation order and the first principal wins; none means anonymous. A hook
/// that fails denies the request: the chain fails closed.
///
/// The host's own credentials never reach plugin code: the request plugins see (hooks and handlers alike) has no
/// `Authorization` header that carries the admin token, and no `keel_page` cookie. Thread-safe.
///
/// A class: every request's closures capture it, and a reference is one retain where the struct's seven were.
final class Gatekeeper: Sendable {
    let kernel: Kernel
    let token: AdminToken
    let pages: PageSessions
    /// Where plugin code runs (never on the cooperative pool).
    let lanes: PluginLanes
    let log: @Sendable (LogRecord) -> Void
    /// Where denials are counted (nil: metrics off).
    let metrics: ServerMetrics?
    /// The plugins' health checks (nil: not run).
    let health: HealthMonitor?

    init(kernel: Kernel, token: AdminToken, pages: PageSessions, lanes: PluginLanes, log: @escaping @Sendable (LogRecord) -> Void,
         metrics: ServerMetrics? = nil, health: HealthMonitor? = nil) {
        self.kernel = kernel
        self.token = token
        self.pages = pages
        self.lanes = lanes
        self.log = log
        self.metrics = metrics
        self.health = health
    }

    /// Made once, not per request.
    static let requestIDHeader = HTTPField.Name("x-request-id")!
    /// The tenant a caller names for itself: selects which tenant-limited authenticate hooks may see its credentials.
    static let tenantHeader = HTTPField.Name("x-keel-tenant")!

    static let admin = Principal(id: "admin", displayName: "Administrator", tenant: Principal.defaultTenant, roles: ["admin"],
                                 authenticatedBy: "keel")

    /// A caller as the gatekeeper established it, with the request as plugins may see it.
    struct Caller: Sendable {
        var isAdmin: Bool
        /// The request for hooks and handlers: host credentials removed, the principal filled in.
        var seen: PluginRequest
        /// Who is calling (kept in `seen` only: one copy, not two, on every plugin request).
        var principal: Principal { seen.principal }
    }

    /// The caller of `request`, or a thrown 403 when an authenticate hook failed.
    /// - Parameters:
    ///   - pluginID: the plugin whose route the request is for (page sessions count there only).
    ///   - path: `request.uri.path` when the caller has read it already (each read decodes it anew).
    func identify(_ request: Request, snapshot: Snapshot, pluginID: String? = nil, path: String? = nil) throws -> Caller {
        var tickets: [String] = [], isAdmin = false, tenant: String?
        var seen = pluginRequest(request, path: path ?? request.uri.path, isAdmin: &isAdmin, pageTickets: &tickets, tenant: &tenant)
        if isAdmin {
            seen.principal = Self.admin
            return Caller(isAdmin: true, seen: seen)
        }
        if let pluginID, !tickets.isEmpty, case let digest = token.digest,
           let principal = tickets.lazy.compactMap({ self.pageCaller(ticket: $0, pluginID: pluginID, adminDigest: digest, snapshot: snapshot) }).first {
            seen.principal = principal
            return Caller(isAdmin: false, seen: seen)
        }
        switch kernel.access.identify(seen, tenant: tenant, snapshot: snapshot) {
        case let .success(principal):
            seen.principal = principal
            return Caller(isAdmin: false, seen: seen)
        case let .failure(error):
            log(LogRecord(level: .warn, pluginID: error.pluginID, message: "authenticate hook failed, request denied: \(error)"))
            if let metrics, let hook = error.hook { metrics.hookDenied(plugin: error.pluginID, hook: hook) }
            throw APIError.forbidden(because: "authenticate hook of plugin \"\(error.pluginID)\" failed")
        }
    }

    /// The caller a page-session ticket stands for now on `pluginID`'s routes (`PageSessions`), or nil.
    func pageCaller(ticket: String, pluginID: String, adminDigest: String?, snapshot: Snapshot) -> Principal? {
        guard let session = pages.session(ticket: ticket, pluginID: pluginID, adminDigest: adminDigest) else { return nil }
        if session.adminDigest != nil { return session.principal }
        // Issued under another load of the signing-in plugin (or none running now): its credential may be gone.
        guard let signIn = session.signIn, signIn == Self.signInGeneration(session.principal, snapshot) else { return nil }
        return kernel.access.current(session.principal, snapshot: snapshot)
    }

    /// The generation of the plugin whose authenticate hook named `principal`, as `snapshot` runs it; nil when none
    /// of its hooks runs there (or for a caller no hook named).
    static func signInGeneration(_ principal: Principal, _ snapshot: Snapshot) -> Int? {
        snapshot.authenticators.first { $0.pluginID == principal.authenticatedBy }?.context.identity.generation
    }

    /// Records a refused admin call that would change something (not GET or HEAD) in the audit trail, with the
    /// reason the auth chain gave (`error.denial`).
    func auditRefusal(_ request: Request, principal: Principal?, channel: (any Channel)?, _ error: APIError) {
        guard request.method != .get, request.method != .head, let denial = error.denial else { return }
        let caller = AuditCaller(request, principal: principal ?? .anonymous, channel: channel)
        kernel.auditRefusal(actor: caller.actor, principal: caller.principal, origin: caller.origin,
                            call: "\(request.method) \(request.uri.path)", reason: denial)
    }

    /// True when an `Authorization` value is `Bearer <admin token>` (scheme in any case).
    func presentsAdminToken(_ value: String) -> Bool {
        // The common case read as bytes, with no lowercased copy: "Bearer " in any case (letters compared with their
        // case bit set, the space as it is), then ASCII that is no white space at either end (nothing to trim, and no
        // combining mark that would join the blank before it).
        let bytes = value.utf8
        if bytes.count > 8, zip(bytes, "bearer ".utf8).allSatisfy({ $1 == 0x20 ? $0 == 0x20 : $0 | 0x20 == $1 }),
           let first = bytes.dropFirst(7).first, let last = bytes.last, first > 0x20, first < 0x80, last > 0x20, last < 0x80 {
            return token.verify(String(value.dropFirst(7)))
        }
        guard value.count > 7, value.prefix(7).lowercased() == "bearer " else { return false }
        // Trimmed as `.whitespaces` trims (spaces and tabs), without a trip through NSString on every admin call.
        var candidate = value.dropFirst(7)
        while let c = candidate.first, c.isWhitespace, !c.isNewline { candidate.removeFirst() }
        while let c = candidate.last, c.isWhitespace, !c.isNewline { candidate.removeLast() }
        return token.verify(String(candidate))
    }

    /// Runs the auth chain about the caller's request (`AccessControl.denial`, which logs who was denied and why);
    /// throws 403 on a deny (or a failing hook), counting the denying hook. `prepared`, when given, is the request
    /// already laid out for the handler: the hooks are asked about it.
    /// `admittedWhileClosed`: a missing guard does not deny (the admin API with the admin token; `Snapshot.authorize`).
    func authorize(_ caller: Caller, _ request: Request, snapshot: Snapshot, prepared: PreparedRequest? = nil,
                   admittedWhileClosed: Bool = false) throws {
        guard let denial = kernel.access.denial(of: caller.seen, prepared: prepared, snapshot: snapshot,
                                                admittedWhileClosed: admittedWhileClosed) else { return }
        if let metrics, let hook = denial.hook { metrics.hookDenied(plugin: hook.pluginID, hook: hook.name) }
        var refusal = APIError.forbidden(because: denial.reason)
        // The operator (the admin token) is told why, the host closed for a guard that is not running included; any
        // other caller learns only that it was denied (the reason goes to the log and the audit trail).
        if caller.isAdmin { refusal.message = "access denied: \(denial.reason)" }
        throw refusal
    }

    /// The request as plugins see it (no body: hooks decide on headers, path and method), without the host's own
    /// credentials: every `Authorization` header that carries the admin token (in whatever position, so a second
    /// header cannot smuggle it past), and the `keel_page` cookie, whose values go to `pageTickets`. `isAdmin` is
    /// set when the first `Authorization` header is the admin token (the one the host honours). `tenant` gets the
    /// `X-Keel-Tenant` value (several joined with ", ", as `HTTPFields` reads them); the request id, the
    /// `X-Request-Id` value likewise. One pass over the headers finds them all.
    func pluginRequest(_ request: Request, path: String, isAdmin: inout Bool, pageTickets: inout [String], tenant: inout String?) -> PluginRequest {
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(request.headers.count)
        var firstAuthorization = true
        var requestID: String?
        for field in request.headers {
            if field.name == Self.requestIDHeader {
                requestID = requestID.map { $0 + ", " + field.value } ?? field.value
            } else if field.name == Self.tenantHeader {
                tenant = tenant.map { $0 + ", " + field.value } ?? field.value
            }
            if field.name == .authorization {
                let admin = presentsAdminToken(field.value)
                if firstAuthorization { isAdmin = admin }
                firstAuthorization = false
                if admin { continue }
            } else if field.name == .cookie {
                let (tickets, rest) = PageSessions.split(cookieHeader: field.value)
                pageTickets += tickets
                if let rest { headers.append((name: field.name.canonicalName, value: rest)) }
                continue
            }
            headers.append((name: field.name.canonicalName, value: field.value))
        }
        return PluginRequest(method: request.method.rawValue, path: path, query: request.uri.query ?? "",
                             headers: headers, requestID: requestID ?? "")
    }
}

/// Puts every request of a route group through the gatekeeper; with `adminOnly`, the caller must also hold the
/// admin token (401 otherwise, saying nothing about what was wrong).
struct AuthMiddleware: RouterMiddleware {
    typealias Context = KeelRequestContext
    let gatekeeper: Gatekeeper
    let adminOnly: Bool

    /// The admin requests answered while the lifecycle is stalled: reads of the audit trail and of a plugin's logs.
    static func answersWhileStalled(_ request: Request) -> Bool {
        guard request.method == .get else { return false }
        let path = request.uri.path
        return path == "/api/v1/audit" || (path.hasPrefix("/api/v1/plugins/") && path.hasSuffix("/logs"))
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let snapshot = gatekeeper.kernel.registry.snapshot
        let gatekeeper = self.gatekeeper, adminOnly = self.adminOnly
        // The hooks are plugin code: they run in the host's lane, off the cooperative pool.
        let channel = context.channel
        let caller = try await gatekeeper.lanes.run(PluginLanes.host) { () throws -> Gatekeeper.Caller in
            let caller: Gatekeeper.Caller
            do { caller = try gatekeeper.identify(request, snapshot: snapshot) } catch let error as APIError {
                gatekeeper.auditRefusal(request, principal: nil, channel: channel, error)
                throw error
            }
            if adminOnly && !caller.isAdmin { throw APIError.unauthorized }
            // While a guard is missing the host is closed, but not to the operator's token on the admin API: the
            // console and `/api/v1` stay usable to see why and to disable or fix the guard.
            do { try gatekeeper.authorize(caller, request, snapshot: snapshot, admittedWhileClosed: caller.isAdmin) } catch let error as APIError {
                gatekeeper.auditRefusal(request, principal: caller.principal, channel: channel, error)
                throw error
            }
            return caller
        }
        // The admin API waits for the kernel: while its lifecycle thread is stuck in plugin code, say so at once
        // instead of waiting with it. The audit trail and the plugins' logs do not need the kernel (what to look at).
        if adminOnly, let stall = gatekeeper.kernel.lifecycleStall, !Self.answersWhileStalled(request) {
            throw APIError.stalled(stall)
        }
        var context = context
        context.principal = caller.principal
        context.isAdmin = caller.isAdmin
        return try await AuditCaller.$current.withValue(AuditCaller(request, principal: caller.principal, channel: context.channel)) {
            // Every error is an answer with a body (`{"error": ...}`): a kernel's with its stable code, a state store's
            // as 503 `state` (a shared PostgreSQL that is down), anything else as 500 `internal`, logged. Hummingbird
            // answers an error it does not know with an empty 500 (the plugin list did, while PostgreSQL was down).
            do { return try await next(request, context) } catch let error as any HTTPResponseError { throw error } catch is CancellationError {
                throw CancellationError()
            } catch {
                let answer = AdminAPI.apiError(error)
                if answer.status == .internalServerError {
                    gatekeeper.log(LogRecord(level: .error, pluginID: nil, message: "\(request.method) \(request.uri.path): \(error)"))
                }
                throw answer
            }
        }
    }
}
