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
        let method = request.method.rawValue
        guard var match = snapshot.route(method: method, path: request.uri.path) else { throw APIError.notFound }
        // The request as plugins see it is built once and shared by the hooks and the handler.
        var seen = Gatekeeper.pluginRequest(request)
        let (principal, _) = try gatekeeper.identify(request, snapshot: snapshot, as: seen)
        // A plugin enabled for other tenants only does not exist for this caller.
        guard gatekeeper.kernel.access.isVisible(match.pluginID, tenant: principal.tenant) else { throw APIError.notFound }
        try gatekeeper.authorize(principal, request, snapshot: snapshot, as: seen)

        if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodySize {
            throw APIError.tooLarge(maxBodySize)
        }
        var body: [UInt8] = []
        do {
            var buffer = try await request.body.collect(upTo: maxBodySize)
            body = buffer.readBytes(length: buffer.readableBytes) ?? []
        } catch is NIOTooManyBytesError {
            throw APIError.tooLarge(maxBodySize)
        }

        // A reload swaps generations atomically, but a request that looked up the old generation just before the
        // swap may reach it after it stopped admitting calls: such a request goes to the current generation.
        var attempts = 0
        while true {
            seen.principal = principal
            seen.routePath = match.routePath
            seen.parameters = match.parameters
            seen.body = body
            switch match.route.handler.handle(seen) {
            case let .success(response):
                var headers = HTTPFields()
                for h in response.headers {
                    guard let name = HTTPField.Name(h.name) else { continue }
                    headers.append(HTTPField(name: name, value: h.value))
                }
                return Response(status: .init(code: response.status), headers: headers,
                                body: ResponseBody(byteBuffer: ByteBuffer(bytes: response.body)))
            case let .failure(error) where error.status == StatusCode.unavailable && attempts < 3:
                attempts += 1
                snapshot = gatekeeper.kernel.registry.snapshot
                guard let next = snapshot.route(method: method, path: request.uri.path) else { throw APIError.notFound }
                match = next
            case let .failure(error):
                gatekeeper.log(LogRecord(level: .error, pluginID: error.pluginID,
                                         message: "\(method) \(request.uri.path) failed: \(error)"))
                if error.status == StatusCode.unavailable {
                    throw APIError(.serviceUnavailable, "plugin-unavailable", "the plugin is being stopped; retry")
                }
                throw APIError(.internalServerError, "plugin-error", "the plugin failed to handle the request")
            }
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
        let foreign = !path.hasPrefix("/api/") && plugins.gatekeeper.kernel.registry.snapshot.hasForeignRoutes
            && plugins.gatekeeper.kernel.registry.snapshot.route(method: request.method.rawValue, path: path) != nil
        if path.hasPrefix("/ext/") || path == "/ext" || foreign {
            do { return try await plugins.respond(to: request, context: context) } catch let error as APIError {
                return try error.response(from: request, context: context)
            }
        }
        return try await router.respond(to: request, context: context)
    }
}
