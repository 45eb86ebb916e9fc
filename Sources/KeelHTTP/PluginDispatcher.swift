// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import Hummingbird
import Keel
import NIOCore
import NIOHTTPTypes

/// Serves `/ext/<plugin-id>/...` from the registry's current route table.
///
/// Hummingbird's router is frozen once built, so plugin routes do not live in it: this responder looks each request
/// up in the registry snapshot taken when the request arrived, runs the auth chain, and calls the plugin's handler.
/// A route that disappears mid-request finishes on the snapshot it started with. Thread-safe.
struct PluginDispatcher: Sendable {
    let gatekeeper: Gatekeeper
    let maxBodySize: Int
    /// How long the whole body may take to arrive; a slower client gets 408 and its connection is closed.
    let bodyTimeout: Duration
    /// Upstream apps plugins bring in (`proxy:`).
    let proxy: PluginProxy

    /// - Parameter path: `request.uri.path`, read once by the caller (each read decodes it anew).
    func respond(to request: Request, context: KeelRequestContext, path: String) async throws -> Response {
        let method = request.method.rawValue
        let snapshot = gatekeeper.kernel.registry.snapshot
        guard let match = snapshot.route(method: method, path: path) else {
            // The first request of an idle lazy plugin activates it and is then served by it.
            if try await gatekeeper.wakeIdlePlugin(path, for: request) { return try await respond(to: request, context: context, path: path) }
            // No route: a prefix the plugin proxies, looked up only now so that routed requests pay nothing for it.
            guard let proxied = snapshot.proxy(for: path) else { throw APIError.notFound }
            if WebSocketProxy.isHandshake(request.headers) {
                // Not upgraded (a refused upgrade is answered before routing): not the connection's first request.
                _ = try await proxy.admit(request, pluginID: proxied.pluginID)
                throw APIError(.badRequest, "bad-websocket-handshake", "a WebSocket handshake must be the first request on its connection")
            }
            return try await proxy.respond(to: request, pluginID: proxied.pluginID, proxy: proxied.proxy, rest: proxied.rest,
                                           channel: context.channel)
        }
        // The request's id: the client's X-Request-Id when sane, else the server's. Lines logged while plugin code
        // runs for this request carry it (RequestScope), and so does the response, an error's too. A request with
        // neither a length nor a chunked body has none (HTTP/1.1): nothing to wait for, and the request is laid out
        // for C once, for the authorize hooks and the handler both, in one trip to the lane. One pass over the
        // headers finds both (several X-Request-Id fields read joined, as `HTTPFields` reads them).
        var hasBody = false, givenID: String?
        for field in request.headers {
            if field.name == .contentLength || field.name == .transferEncoding {
                hasBody = true
            } else if field.name == Gatekeeper.requestIDHeader {
                givenID = givenID.map { $0 + ", " + field.value } ?? field.value
            }
        }
        let tag = RequestScope.Tag(RequestScope.sane(givenID) ?? RequestIDs.next())
        // Metrics per route pattern (never the raw path); the status of an error answer counts too.
        guard let measured = gatekeeper.metrics?.route(plugin: match.pluginID, method: match.route.method,
                                                       pattern: match.route.pattern.description) else {
            do {
                return try await dispatch(request, context: context, path: path, match: match, snapshot: snapshot, measured: nil,
                                          bodiless: !hasBody, tag: tag)
            } catch var error as APIError {
                error.requestID = Self.answeredID(error, tag)
                throw error
            }
        }
        let started = ContinuousClock.now
        do {
            let response = try await dispatch(request, context: context, path: path, match: match, snapshot: snapshot, measured: measured,
                                              bodiless: !hasBody, tag: tag)
            measured.record(status: Int(response.status.code), elapsed: ContinuousClock.now - started)
            return response
        } catch {
            // A body that did not arrive in time was answered 408 on the connection (see `readBody`).
            let status = error is CancellationError ? 408 : (error as? APIError).map { Int($0.status.code) } ?? 500
            measured.record(status: status, elapsed: ContinuousClock.now - started)
            guard var answered = error as? APIError else { throw error }
            answered.requestID = Self.answeredID(answered, tag)
            throw answered
        }
    }

    /// The id an error answer carries: the request's, but for the host's 404, which must read as the one for a path no
    /// route matches (a route of a plugin another tenant runs does not exist for this caller, header included); one
    /// that already has its id (a plugin's own refusal) keeps it.
    private static func answeredID(_ error: APIError, _ tag: RequestScope.Tag) -> String? {
        error.requestID ?? (error.status == .notFound ? nil : tag.id)
    }

    /// Serves a request that matched a plugin route: the auth chain, the body, the handler (see `respond`).
    /// Plugin code (the hooks, the handler) runs in the plugin's lane, off the cooperative pool.
    private func dispatch(_ request: Request, context: KeelRequestContext, path: String, match: Snapshot.RouteMatch, snapshot: Snapshot,
                          measured: ServerMetrics.RouteMetrics?, bodiless: Bool, tag: RequestScope.Tag) async throws -> Response {
        let method = request.method.rawValue
        let lanes = gatekeeper.lanes, gatekeeper = self.gatekeeper
        /// Identifies the caller, runs the auth chain, and, for a request without a body, the handler. A local
        /// function, not a closure: run inline (the common case) it is called directly, with nothing copied into a
        /// closure context on the heap; only a call that goes to the lane's threads makes one.
        @Sendable func checkAndHandle() throws -> Checked {
            try RequestScope.with(tag) { () throws -> Checked in
                // The request as plugins see it is built once and shared by the hooks and the handler.
                var identified = try gatekeeper.identify(request, snapshot: snapshot, pluginID: match.pluginID, path: path)
                // A plugin enabled for other tenants only does not exist for this caller (its public static files aside:
                // console pages load them from an opaque origin, as an anonymous caller).
                guard gatekeeper.kernel.access.serves(match, tenant: identified.principal.tenant) else { throw APIError.notFound }
                identified.seen.routePath = match.routePath
                identified.seen.parameters = match.parameters
                identified.seen.requestID = tag.id
                // A constant from here: the closure below borrows it instead of copying it.
                let caller = identified
                guard bodiless else {
                    try gatekeeper.authorize(caller, request, snapshot: snapshot)
                    return Checked(seen: caller.seen, outcome: nil)
                }
                let (authorized, result) = PreparedRequest.prepare(caller.seen) { frame -> (Result<Void, Error>, Result<PluginResponse, PluginCallError>?) in
                    let authorized = Result { try gatekeeper.authorize(caller, request, snapshot: snapshot, prepared: frame) }
                    // A plugin in a worker is called below, without holding a thread while it works.
                    guard case .success = authorized, !match.route.handler.isRemote else { return (authorized, nil) }
                    return (authorized, ServerMetrics.timed(measured) { match.route.handler.handle(frame) })
                }
                try authorized.get()
                return Checked(seen: caller.seen, outcome: result)
            }
        }
        let checked: Checked = if let inline = try lanes.runInline(match.pluginID, checkAndHandle) {
            inline
        } else {
            try await lanes.run(match.pluginID, checkAndHandle)
        }
        // The common case: the handler answered in the same trip.
        var attempt = 0
        if let outcome = checked.outcome {
            if let response = try respond(outcome, method: method, path: path, requestID: tag.id, match: match) { return response }
            attempt = 1
        }
        var seen = checked.seen
        if !bodiless {
            if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodySize {
                throw APIError.tooLarge(maxBodySize)
            }
            var buffer = try await RequestBodyReader(timeout: bodyTimeout).collect(request, upTo: maxBodySize, context: context)
            seen.body = buffer.readBytes(length: buffer.readableBytes) ?? []
        }

        // A reload swaps generations atomically, but a request that looked up the old generation just before the
        // swap may reach it after it stopped admitting calls: such a request goes to the current generation.
        var match = match
        while true {
            if attempt > 0 {
                let current = gatekeeper.kernel.registry.snapshot
                guard let next = current.route(method: method, path: path) else {
                    // Its generation went idle (idle-timeout) as this request reached it: wake it again.
                    if try await gatekeeper.wakeIdlePlugin(path, for: nil) { continue }
                    throw APIError.notFound
                }
                // The current generation's route: the same plugin's (a path under a granted foreign prefix could now
                // be another plugin's), serving the caller's tenant, and passing the auth chain as it is now (its
                // hooks may have changed with the reload).
                guard next.pluginID == match.pluginID else {
                    throw APIError(.serviceUnavailable, "plugin-unavailable", "the plugin is being stopped; retry")
                }
                guard gatekeeper.kernel.access.serves(next, tenant: seen.principal.tenant) else { throw APIError.notFound }
                match = next
                seen.routePath = match.routePath
                seen.parameters = match.parameters
                let asked = seen
                try await lanes.run(match.pluginID) {
                    try RequestScope.with(tag) {
                        try gatekeeper.authorize(Gatekeeper.Caller(isAdmin: false, seen: asked), request,
                                                 snapshot: current)
                    }
                }
            }
            let result: Result<PluginResponse, PluginCallError>
            let route = match.route, asked = seen
            if route.handler.isRemote {
                let started = ContinuousClock.now
                result = await route.handler.handleAsync(asked)
                if let measured, ContinuousClock.now - started > measured.budget { measured.overruns.increment() }
            } else {
                result = try await lanes.run(match.pluginID) {
                    RequestScope.with(tag) { ServerMetrics.timed(measured) { route.handler.handle(asked) } }
                }
            }
            if let response = try respond(result, method: method, path: path, requestID: tag.id, match: match) { return response }
            guard attempt < 3 else {
                gatekeeper.log(LogRecord(level: .error, pluginID: match.pluginID,
                                         message: "\(method) \(path): the plugin kept refusing calls while stopping", requestID: tag.id))
                throw APIError(.serviceUnavailable, "plugin-unavailable", "the plugin is being stopped; retry")
            }
            attempt += 1
        }
    }

    /// The request as plugins see it, and the handler's outcome when it was called already. A struct, not a tuple:
    /// a tuple of these was copied and destroyed through the run-time's generic tuple witnesses.
    private struct Checked: Sendable {
        var seen: PluginRequest
        var outcome: Result<PluginResponse, PluginCallError>?
    }

    /// Where a plugin route's cookies may go: `/ext/<id>` for its routes there (a cookie's `Path` in the plugin's
    /// own paths, `/` its whole prefix), else (a route under a granted foreign prefix) the route's literal beginning,
    /// which lies inside the grant. Every plugin shares the host's origin: a cookie for `/` would reach the admin
    /// API, the console and every other plugin; one for `/ext/<other>` would plant a cookie in another plugin's
    /// requests (see `PluginProxy.scopedCookie`).
    static func cookieMount(_ match: Snapshot.RouteMatch) -> String {
        guard match.route.absolute else { return "/ext/" + match.pluginID }
        var mount = ""
        // Plain segments only, as a granted prefix's are (a literal may hold a `;`: "=/legacy/x;Path=/;/y" would have
        // written `Path=/legacy/x;Path=/;/y`, whose last attribute is `Path=/`). The prefix itself is always plain.
        for segment in match.route.pattern.segments {
            guard case let .literal(text) = segment, !text.isEmpty,
                  text.utf8.allSatisfy({ ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 46 || $0 == 95 || $0 == 126 })
            else { break }
            mount += "/" + text
        }
        return mount.isEmpty ? "/" : mount
    }

    static let contentSecurityPolicy = HTTPField.Name("content-security-policy")!
    /// What a plugin's content may do: run scripts, submit forms, open pop-ups and downloads, in an opaque origin.
    static let pluginSandbox = "sandbox allow-scripts allow-forms allow-popups allow-downloads"
    /// Made once, not per response.
    static let sandboxField = HTTPField(name: contentSecurityPolicy, value: pluginSandbox)
    static let nosniffField = HTTPField(name: .xContentTypeOptions, value: "nosniff")
    /// A handler's headers that never reach the client: the origin-wide ones and the framing (one look-up a header).
    static let dropped = PluginProxy.originWide.union(PluginProxy.framing)

    /// The HTTP response for a handler's outcome, with the request's id as its `X-Request-Id` (any the plugin set is
    /// dropped); nil when the generation it reached stopped admitting calls (a reload swapped it out just now) and
    /// the request should go to the current one.
    /// - Throws: `APIError` for a failed handler, as `StatusCode.httpAnswer` says (details only in the log).
    private func respond(_ outcome: Result<PluginResponse, PluginCallError>, method: String, path: String,
                         requestID: String, match: Snapshot.RouteMatch) throws -> Response? {
        switch outcome {
        case let .success(response) where !(200...599).contains(response.status):
            // Both paths to a handler hold it to 100...599 already (HTTPTypes traps on a status outside 0...999); an
            // interim status (1xx) is no final answer: sent as one, the client would read the connection's next
            // answer as this request's.
            gatekeeper.log(LogRecord(level: .error, pluginID: nil, message: "\(method) \(path): the plugin answered status \(response.status)",
                                     requestID: requestID))
            throw APIError(.internalServerError, "plugin-error", "the plugin failed to handle the request")
        case let .success(response):
            // The framing is the host's: a status that has no body (1xx, 204, 304) is sent without one, any other with
            // its body's own length, never the plugin's (bytes past the length the client reads would be read as the
            // answer to the connection's next request). An answer to HEAD may give the length a GET would have.
            let bodiless = response.status < 200 || response.status == 204 || response.status == 304
            // Gathered in an array and added to the fields in one call (each `HTTPFields.append` is a generic call
            // of its own), with the body's length when the plugin gave none (what `Response.init` would add through
            // the fields' subscript, at several times the cost).
            var fields: [HTTPField] = []
            fields.reserveCapacity(response.headers.count + 4)
            var hasLength = false
            for h in response.headers {
                guard let name = HTTPField.Name(h.name), name != .xContentTypeOptions, name != Gatekeeper.requestIDHeader,
                      !Self.dropped.contains(name) else { continue }
                if name == .setCookie {
                    // The page-session cookie is the host's: a plugin may not plant or overwrite it. Any other cookie
                    // stays below the plugin's own paths, as a proxied app's (`cookieMount`).
                    if PageSessions.setsPageCookie(h.value) { continue }
                    let mount = Self.cookieMount(match)
                    fields.append(HTTPField(name: name, value: PluginProxy.scopedCookie(h.value, mount: mount, basePath: "", requestPath: path)))
                    continue
                }
                if name == .contentLength {
                    guard method == "HEAD" else { continue }
                    hasLength = true
                }
                fields.append(HTTPField(name: name, value: h.value))
            }
            // Plugin content runs in an opaque origin wherever it is opened (in the console's frame or on its own),
            // so its scripts cannot reach the console's storage or credentials. Added after the plugin's own
            // headers: a plugin may tighten its policy with another one (browsers enforce all), never loosen this.
            fields.append(Self.sandboxField)
            fields.append(Self.nosniffField)
            fields.append(HTTPField(name: Gatekeeper.requestIDHeader, value: requestID))
            if !hasLength && !bodiless { fields.append(HTTPField(name: .contentLength, value: String(response.body.count))) }
            var headers = HTTPFields()
            headers.reserveCapacity(fields.count)
            headers.append(contentsOf: fields)
            return Response(status: .init(code: response.status), headers: headers,
                            body: ResponseBody(byteBuffer: bodiless ? ByteBuffer() : ByteBuffer(bytes: response.body)))
        case let .failure(error) where error.isNotActive:
            return nil
        case let .failure(error):
            // The plugin's own "not now" (its database down) is not made again: the client may retry. A refusal is
            // the client's fault (a warning); anything else the plugin's or its worker's (an error).
            let answer = error.httpAnswer, (level, text) = error.handlerLog(method: method, path: path)
            gatekeeper.log(LogRecord(level: level, pluginID: error.pluginID, message: text, requestID: requestID))
            // The plugin's own 404 carries the request's id: only the host's 404 must read as one for no route.
            var refusal = APIError(.init(code: answer.status), answer.code, answer.message)
            refusal.requestID = requestID
            throw refusal
        }
    }
}

/// Plugin routes as a middleware of the host's router: requests for `/ext/<id>/...` and for the foreign prefixes the
/// operator granted go to the plugin dispatcher; everything else goes on to the host's own routes. It is the first
/// middleware of the router, so whatever the host adds before it (request ids, metrics, audit) sees plugin requests
/// too; the host's own paths never reach a plugin.
struct PluginRoutesMiddleware: RouterMiddleware {
    typealias Context = KeelRequestContext
    let plugins: PluginDispatcher
    /// The host's own routes' methods, for a 405 on a host path asked with a method it does not take.
    let methods: MethodTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        // Foreign prefixes: only where a plugin route matches, and never the host's own paths.
        func foreign() -> Bool {
            let snapshot = plugins.gatekeeper.kernel.registry.snapshot
            guard snapshot.hasForeignRoutes, path != "/", Capability.reservedPrefix(of: path) == nil else { return false }
            return snapshot.route(method: request.method.rawValue, path: path) != nil
        }
        guard path.hasPrefix("/ext/") || path == "/ext" || foreign() else {
            // A host path served with other methods (`/healthz`, `/metrics`, the console's, the admin API's): 405,
            // naming them (`Allow`); an admin API path no route serves: the API's own error body, not an empty 404.
            do { return try await next(request, context) } catch let error as HTTPError where error.status == .notFound {
                let allowed = methods.methods(for: path)
                guard !allowed.isEmpty, !allowed.contains(request.method.rawValue) else {
                    guard path.hasPrefix("/api/") else { throw error }
                    return try APIError(.notFound, "not-found", "no such endpoint: \(request.method) \(path)").response(from: request, context: context)
                }
                var response = try APIError(.methodNotAllowed, "method-not-allowed",
                                            "\(path) takes \(allowed.joined(separator: ", ")), not \(request.method)").response(from: request, context: context)
                response.headers[.allow] = allowed.joined(separator: ", ")
                return response
            }
        }
        do { return try await plugins.respond(to: request, context: context, path: path) } catch let error as APIError {
            return try error.response(from: request, context: context)
        }
    }
}

/// The server's one responder: it makes the path canonical (one spelling for routing, the auth hooks and the
/// handlers; a path that has none gets 400), then hands the request to the router, whose middleware stack serves
/// plugin routes and host routes alike. Hummingbird's router is frozen once built, so plugin routes live in the
/// registry, reached through `PluginRoutesMiddleware`.
///
/// A path under `/ext/` skips the router's own route tree (which holds host routes only, and whose look-up would
/// miss): it goes to the router's middleware stack directly, `plugins`, the same stack the router puts in front of
/// "not found" and of every host route, so the same middleware sees it and `PluginRoutesMiddleware` serves it.
struct KeelResponder: HTTPResponder {
    typealias Context = KeelRequestContext
    let router: RouterResponder<KeelRequestContext>
    /// The router's middleware stack in front of `UnroutedResponder`: made from `Router.middlewares` once every
    /// middleware is added.
    let plugins: any HTTPResponder<KeelRequestContext>
    /// The names `Host` may give (DNS rebinding).
    let hosts: HostCheck
    /// The host's own routes' methods: a HEAD of a path only a GET route serves is answered as that GET, without
    /// its body (a load balancer's `HEAD /healthz`; `Allow` names HEAD wherever GET is).
    let methods: MethodTable

    func respond(to request: Request, context: Context) async throws -> Response {
        if hosts.active, let refusal = hosts.refusal(request.head.authority) { return try refusal.response(from: request, context: context) }
        var request = request
        let given = request.uri.path
        let path: String
        switch CanonicalPath.canonical(given) {
        case let .success(canonical) where canonical == given: path = given
        case let .success(canonical):
            var head = request.head
            head.path = canonical + (request.uri.query.map { "?" + $0 } ?? "")
            request = Request(head: head, body: request.body)
            path = canonical
        case let .failure(problem):
            return try APIError(.badRequest, "bad-path", problem.description).response(from: request, context: context)
        }
        guard path.hasPrefix("/ext/") || path == "/ext" else {
            guard request.method == .head, methods.serves("GET", path: path), !methods.serves("HEAD", path: path) else {
                return try await router.respond(to: request, context: context)
            }
            var head = request.head
            head.method = .get
            let answer = try await router.respond(to: Request(head: head, body: request.body), context: context)
            var headers = answer.headers
            if headers[.contentLength] == nil, let length = answer.body.contentLength { headers[.contentLength] = String(length) }
            return Response(status: answer.status, headers: headers, body: ResponseBody())
        }
        do { return try await plugins.respond(to: request, context: context) } catch let error as any HTTPResponseError {
            // As the router answers an error its middleware throws.
            return try error.response(from: request, context: context)
        }
    }
}

/// The end of the middleware stack `KeelResponder` sends plugin paths through: `PluginRoutesMiddleware` answers every
/// one of them, so this is reached only if that middleware is missing from the stack.
struct UnroutedResponder: HTTPResponder {
    typealias Context = KeelRequestContext
    func respond(to request: Request, context: Context) throws -> Response { throw HTTPError(.notFound) }
}

/// The headers the host adds to every answer of a plugin route: its sandbox policy, `nosniff` and a request id. For
/// the benchmark's built-in route that answers as a plugin route does, which tells the headers' cost from the
/// dispatch's. Thread-safe.
package enum PluginAnswerHeaders {
    /// The three fields, with a fresh request id.
    package static func fresh() -> [HTTPField] {
        [PluginDispatcher.sandboxField, PluginDispatcher.nosniffField, HTTPField(name: Gatekeeper.requestIDHeader, value: RequestIDs.next())]
    }
}
