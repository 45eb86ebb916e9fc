// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import Hummingbird
import Keel

/// Establishes who is calling and whether the auth chain lets them through. Shared by the admin API middleware
/// and the plugin dispatcher, so both see one auth chain.
///
/// The admin token (`Authorization: Bearer <token>`) is checked first and makes the built-in admin principal;
/// otherwise the plugins' authenticate hooks run in activation order and the first principal wins; none means
/// anonymous. A hook that fails denies the request: the chain fails closed. Thread-safe.
struct Gatekeeper: Sendable {
    let kernel: Kernel
    let token: AdminToken
    let log: @Sendable (LogRecord) -> Void

    /// Made once, not per request.
    static let requestIDHeader = HTTPField.Name("x-request-id")!

    static let admin = Principal(id: "admin", displayName: "Administrator", tenant: Principal.defaultTenant, roles: ["admin"],
                                 authenticatedBy: "keel")

    /// The caller of `request`, or a thrown 403 when an authenticate hook failed.
    func identify(_ request: Request, snapshot: Snapshot, as seen: PluginRequest? = nil) throws -> (Principal, isAdmin: Bool) {
        if let auth = request.headers[.authorization], auth.hasPrefix("Bearer "), token.verify(String(auth.dropFirst(7))) {
            return (Self.admin, true)
        }
        switch kernel.access.identify(seen ?? Self.pluginRequest(request), snapshot: snapshot) {
        case let .success(principal): return (principal, false)
        case let .failure(error):
            log(LogRecord(level: .warn, pluginID: error.pluginID, message: "authenticate hook failed, request denied: \(error)"))
            throw APIError.forbidden
        }
    }

    /// Runs the authorize hooks; throws 403 on a deny (or a failing hook). Returns the decision otherwise.
    @discardableResult
    /// `prepared`, when given, is the request already laid out for the handler: the hooks are asked about it.
    func authorize(_ principal: Principal, _ request: Request, snapshot: Snapshot, as seen: PluginRequest? = nil,
                   prepared: PreparedRequest? = nil) throws -> AuthDecision {
        var asked = seen ?? Self.pluginRequest(request)
        asked.principal = principal
        let (decision, reason) = kernel.access.authorize(principal, action: request.method.rawValue, resource: request.uri.path,
                                                         request: asked, prepared: prepared, snapshot: snapshot)
        if decision == .deny {
            log(LogRecord(level: .info, pluginID: nil, message: "\(request.method) \(request.uri.path) denied: \(reason ?? "denied")"))
            throw APIError.forbidden
        }
        return decision
    }

    /// The request as plugins see it (no body: hooks decide on headers, path and method).
    static func pluginRequest(_ request: Request, principal: Principal = .anonymous, routePath: String = "",
                              parameters: [(name: String, value: String)] = [], body: [UInt8] = []) -> PluginRequest {
        PluginRequest(method: request.method.rawValue, path: request.uri.path, routePath: routePath,
                      query: request.uri.query ?? "",
                      headers: request.headers.map { (name: $0.name.canonicalName, value: $0.value) },
                      parameters: parameters, body: body, principal: principal,
                      requestID: request.headers[requestIDHeader] ?? "")
    }
}

/// Puts every request of a route group through the gatekeeper; with `adminOnly`, the caller must also hold the
/// admin token (401 otherwise, saying nothing about what was wrong).
struct AuthMiddleware: RouterMiddleware {
    typealias Context = KeelRequestContext
    let gatekeeper: Gatekeeper
    let adminOnly: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let snapshot = gatekeeper.kernel.registry.snapshot
        let (principal, isAdmin) = try gatekeeper.identify(request, snapshot: snapshot)
        if adminOnly && !isAdmin { throw APIError.unauthorized }
        try gatekeeper.authorize(principal, request, snapshot: snapshot)
        var context = context
        context.principal = principal
        context.isAdmin = isAdmin
        return try await next(request, context)
    }
}
