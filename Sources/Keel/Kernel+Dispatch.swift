// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelRegistry

/// Serving a plugin route without HTTP: the embedder's way in (the C API's `keel_dispatch`, a Swift appliance that
/// has its own transport). It is the HTTP-independent half of what the HTTP server's plugin dispatcher does, in the
/// same order, through the same `AccessControl`: one canonical path, the route lookup in one registry snapshot, the
/// authenticate hooks (the first principal wins; a failing hook denies), the plugin's tenants, the authorize hooks and
/// role grants (any deny wins), the handler, and a retry on the current generation when a reload swapped the one the
/// request reached. What stays in HTTP: the admin token, console page sessions, plugin lanes and body limits.
extension Kernel {
    /// True for an HTTP method as RFC 9110 spells it: one or more token characters (GET, PATCH, or an extension
    /// method such as PROPFIND).
    static func isMethodToken(_ method: String) -> Bool {
        !method.isEmpty && method.utf8.count <= 32 && method.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }

    /// Serves `request` from the composed plugin routes, on the calling thread.
    ///
    /// - Parameters:
    ///   - request: method, path (it may carry `?query`), headers (names in any case; plugins see them in lower
    ///     case, as from HTTP) and body. Its `principal`, `routePath` and `parameters` are filled in here; whatever
    ///     the caller put there is ignored.
    ///   - tenant: the tenant the caller names for itself (what HTTP's `X-Keel-Tenant` header says), or nil.
    /// - Returns: the plugin's response, or the host's own JSON answer `{"error":{"code","message"}}`: 400 for a
    ///   method that is no token or a path that is not absolute or has no canonical form, 404 when no route matches (or its plugin does not serve the caller's tenant),
    ///   403 when an authenticate hook failed or the chain denies, what `StatusCode.httpAnswer` says when the handler
    ///   returned an error (`PluginCallError.httpAnswer`: a refusal's 4xx, 501, 503 for `KEEL_ERR_UNAVAILABLE`, 502
    ///   and 504 for a crashed or timed-out worker, otherwise 500, a refusal the handler passed on included; called
    ///   once, its message only in the log), 503 when the plugin kept refusing calls while it was being stopped.
    ///
    /// Runs plugin code (the hooks and the handler) on the calling thread, which must not be one of Swift's
    /// cooperative pool: a plugin that blocks would stall it. Never waits for the kernel's lifecycle work.
    /// [thread-safe]
    public nonisolated func dispatch(_ request: PluginRequest, tenant: String? = nil) -> PluginResponse {
        var seen = request
        // What an HTTP server would refuse before routing: a method that is no token, a path that is not absolute.
        guard Self.isMethodToken(seen.method) else {
            return Self.errorResponse(400, "bad-request", "the method \"\(seen.method.prefix(32))\" is not an HTTP method token")
        }
        guard seen.path.hasPrefix("/") else {
            return Self.errorResponse(400, "bad-path", "the path \"\(seen.path.prefix(64))\" does not start with /")
        }
        if let mark = seen.path.firstIndex(of: "?") {
            seen.query = String(seen.path[seen.path.index(after: mark)...])
            seen.path = String(seen.path[..<mark])
        }
        switch CanonicalPath.canonical(seen.path) {
        case let .success(path): seen.path = path
        case let .failure(problem): return Self.errorResponse(400, "bad-path", problem.description)
        }
        // Header names as HTTP hands them to plugins: lower case.
        seen.headers = seen.headers.map { (name: $0.name.lowercased(), value: $0.value) }
        seen.principal = .anonymous
        seen.routePath = ""
        seen.parameters = []
        var snapshot = registry.snapshot
        guard var match = snapshot.route(method: seen.method, path: seen.path) else { return Self.notFound }

        switch access.identify(seen, tenant: tenant, snapshot: snapshot) {
        case let .success(principal): seen.principal = principal
        case let .failure(error):
            log(.warn, error.pluginID, "authenticate hook failed, request denied: \(error)")
            return Self.forbidden
        }
        for attempt in 0...3 {
            if attempt > 0 {
                snapshot = registry.snapshot
                guard let next = snapshot.route(method: seen.method, path: seen.path) else { return Self.notFound }
                match = next
            }
            guard access.serves(match, tenant: seen.principal.tenant) else { return Self.notFound }
            seen.routePath = match.routePath
            seen.parameters = match.parameters
            if access.denial(of: seen, snapshot: snapshot) != nil { return Self.forbidden }
            switch match.route.handler.handle(seen) {
            case let .success(response): return response
            case let .failure(error) where error.isNotActive: continue
            case let .failure(error):
                let answer = error.httpAnswer, (level, text) = error.handlerLog(method: seen.method, path: seen.path)
                log(level, error.pluginID, text)
                return Self.errorResponse(answer.status, answer.code, answer.message)
            }
        }
        log(.error, match.pluginID, "\(seen.method) \(seen.path): the plugin kept refusing calls while stopping")
        return Self.errorResponse(503, "plugin-unavailable", "the plugin is being stopped; retry")
    }

    static let notFound = errorResponse(404, "not-found", "no such resource")
    static let forbidden = errorResponse(403, "forbidden", "access denied")

    /// The host's own answer, in the admin API's error shape.
    static func errorResponse(_ status: Int, _ code: String, _ message: String) -> PluginResponse {
        PluginResponse(status: status, headers: [HeaderField(name: "Content-Type", value: "application/json; charset=utf-8")],
                       body: Array(#"{"error":{"code":"\#(code)","message":"\#(message)"}}"#.utf8))
    }
}
