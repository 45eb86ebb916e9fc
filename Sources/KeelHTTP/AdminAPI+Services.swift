// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import Keel

/// The admin API's part for interfaces between plugins: which plugins provide and consume each interface, who
/// serves it, and the operator's choice of provider (host-wide or per tenant), as `KernelCommand.useProvider`.
///
/// | route | does |
/// |---|---|
/// | `GET /api/v1/services` | every interface: providers, who serves (host-wide, per tenant) and why, consumers |
/// | `PUT /api/v1/services/<name>/<major>/provider` `{"plugin": "flux-sync", "tenant": "acme"}` | chooses a provider |
/// | `DELETE /api/v1/services/<name>/<major>/provider[?tenant=acme]` | forgets the choice: the ranking rule decides |
extension AdminAPI {
    func registerServices(on admin: RouterGroup<KeelRequestContext>) {
        admin.get("services") { _, _ -> Response in JSONBody.response(await kernel.services()) }
        admin.put("services/:name/:major/provider") { request, context -> Response in
            let interface = try Self.interface(context)
            let body = try await self.body(ProviderChoice.self, request, context)
            try await run(.useProvider(interface: interface, plugin: body.plugin, tenant: body.tenant))
            return try await serving(interface)
        }
        admin.delete("services/:name/:major/provider") { request, context -> Response in
            let interface = try Self.interface(context)
            let tenant: String? = request.uri.queryParameters.get("tenant").map { "\($0)" }
            try await run(.useProvider(interface: interface, plugin: nil, tenant: tenant))
            return try await serving(interface)
        }
    }

    /// `name/major` from the path.
    static func interface(_ context: KeelRequestContext) throws -> String {
        "\(try context.parameters.require("name"))/\(try context.parameters.require("major"))"
    }

    /// The interface as `GET /api/v1/services` shows it.
    func serving(_ interface: String) async throws -> Response {
        guard let info = await kernel.services().first(where: { $0.interface == interface }) else {
            throw APIError(.notFound, "unknown-interface", "no installed plugin provides or consumes \(interface)")
        }
        return JSONBody.response(info)
    }
}

struct ProviderChoice: Decodable {
    var plugin: String
    var tenant: String?
}
