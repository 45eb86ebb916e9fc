// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import Hummingbird
import Keel
import NIOCore

/// Serves `/ext/<plugin-id>/...` from the registry's current route table.
///
/// Hummingbird's router is frozen once built, so plugin routes do not live in it: this responder looks each request
/// up in the registry snapshot taken when the request arrived, runs the auth chain, and calls the plugin's handler.
/// A route that disappears mid-request finishes on the snapshot it started with. Thread-safe.
struct PluginDispatcher: Sendable {
    let gatekeeper: Gatekeeper
    let maxBodySize: Int

    func respond(to request: Request, context: KeelRequestContext) async throws -> Response {
        var snapshot = gatekeeper.kernel.registry.snapshot
        let method = request.method.rawValue, path = request.uri.path
        guard var match = snapshot.route(method: method, path: path) else { throw APIError.notFound }
        // The request as plugins see it is built once and shared by the hooks and the handler.
        var seen = Gatekeeper.pluginRequest(request)
        let (principal, _) = try gatekeeper.identify(request, snapshot: snapshot, as: seen)
        // A plugin enabled for other tenants only does not exist for this caller.
        guard gatekeeper.kernel.access.isVisible(match.pluginID, tenant: principal.tenant) else { throw APIError.notFound }
        seen.principal = principal
        seen.routePath = match.routePath
        seen.parameters = match.parameters

        // A request with neither a length nor a chunked body has none (HTTP/1.1): nothing to wait for, and the
        // request is laid out for C once, for the authorize hooks and the handler both.
        let bodiless = request.headers[.contentLength] == nil && request.headers[.transferEncoding] == nil
        var outcome: Result<PluginResponse, PluginCallError>?
        if bodiless {
            let (authorized, result) = PreparedRequest.prepare(seen) { frame -> (Result<AuthDecision, Error>, Result<PluginResponse, PluginCallError>?) in
                let authorized = Result { try gatekeeper.authorize(principal, request, snapshot: snapshot, as: seen, prepared: frame) }
                guard case .success = authorized else { return (authorized, nil) }
                return (authorized, match.route.handler.handle(frame))
            }
            _ = try authorized.get()
            outcome = result
        } else {
            try gatekeeper.authorize(principal, request, snapshot: snapshot, as: seen)
            if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodySize {
                throw APIError.tooLarge(maxBodySize)
            }
            do {
                var buffer = try await request.body.collect(upTo: maxBodySize)
                seen.body = buffer.readBytes(length: buffer.readableBytes) ?? []
            } catch is NIOTooManyBytesError {
                throw APIError.tooLarge(maxBodySize)
            }
        }

        // A reload swaps generations atomically, but a request that looked up the old generation just before the
        // swap may reach it after it stopped admitting calls: such a request goes to the current generation.
        var attempt = 0
        while true {
            if attempt > 0 {
                snapshot = gatekeeper.kernel.registry.snapshot
                guard let next = snapshot.route(method: method, path: path) else { throw APIError.notFound }
                match = next
                seen.routePath = match.routePath
                seen.parameters = match.parameters
            }
            let result = outcome ?? match.route.handler.handle(seen)
            outcome = nil
            if let response = try respond(result, method: method, path: path) { return response }
            guard attempt < 3 else {
                gatekeeper.log(LogRecord(level: .error, pluginID: match.pluginID,
                                         message: "\(method) \(path): the plugin kept refusing calls while stopping"))
                throw APIError(.serviceUnavailable, "plugin-unavailable", "the plugin is being stopped; retry")
            }
            attempt += 1
        }
    }

    /// The HTTP response for a handler's outcome; nil when the generation it reached stopped admitting calls (a
    /// reload swapped it out just now) and the request should go to the current one.
    /// - Throws: `APIError` 500 for a failed handler (details only in the log).
    private func respond(_ outcome: Result<PluginResponse, PluginCallError>, method: String, path: String) throws -> Response? {
        switch outcome {
        case let .success(response):
            var headers = HTTPFields()
            for h in response.headers {
                guard let name = HTTPField.Name(h.name) else { continue }
                headers.append(HTTPField(name: name, value: h.value))
            }
            return Response(status: .init(code: response.status), headers: headers,
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: response.body)))
        case let .failure(error) where error.status == StatusCode.unavailable:
            return nil
        case let .failure(error):
            gatekeeper.log(LogRecord(level: .error, pluginID: error.pluginID, message: "\(method) \(path) failed: \(error)"))
            throw APIError(.internalServerError, "plugin-error", "the plugin failed to handle the request")
        }
    }
}

/// The server's one responder: plugin paths go to the dispatcher, everything else to the (frozen) router.
struct KeelResponder: HTTPResponder {
    typealias Context = KeelRequestContext
    let router: RouterResponder<KeelRequestContext>
    let plugins: PluginDispatcher

    func respond(to request: Request, context: Context) async throws -> Response {
        let path = request.uri.path
        // Plugin paths: /ext/<id>/..., and the foreign prefixes the operator granted (never the host's own paths).
        func foreign() -> Bool {
            guard !path.hasPrefix("/api/") else { return false }
            let snapshot = plugins.gatekeeper.kernel.registry.snapshot
            return snapshot.hasForeignRoutes && snapshot.route(method: request.method.rawValue, path: path) != nil
        }
        if path.hasPrefix("/ext/") || path == "/ext" || foreign() {
            do { return try await plugins.respond(to: request, context: context) } catch let error as APIError {
                return try error.response(from: request, context: context)
            }
        }
        return try await router.respond(to: request, context: context)
    }
}
