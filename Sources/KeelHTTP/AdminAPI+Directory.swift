// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import Keel
import KeelSystem

/// The admin API's part for tenants, roles and bindings, as `KernelCommand`s (audited, refused with `not-found`,
/// `bad-request` or `conflict`). What it adds it can take away: a grant is revoked and a member removed here too (the
/// API could only add until 2026-12-08).
///
/// | route | does |
/// |---|---|
/// | `GET /api/v1/tenants`, `POST /api/v1/tenants {"name"}`, `DELETE /api/v1/tenants/<t>[?cascade=true]` | tenants |
/// | `POST /api/v1/tenants/<t>/members {"principal", "role"}`, `DELETE` with the same body | a binding |
/// | `GET /api/v1/roles`, `POST /api/v1/roles {"name"}`, `DELETE /api/v1/roles/<r>` | roles |
/// | `POST /api/v1/roles/<r>/grants {"permission", "force"}`, `DELETE` with `{"permission"}` | a role's items |
extension AdminAPI {
    func registerDirectory(on admin: RouterGroup<KeelRequestContext>) {
        admin.get("tenants") { _, _ -> Response in
            JSONBody.response(kernel.access.directory.tenantViews)
        }
        admin.post("tenants") { request, context -> Response in
            let body = try await self.body(NameBody.self, request, context)
            try await run(.createTenant(name: body.name))
            return JSONBody.response(["name": body.name], status: .created)
        }
        admin.delete("tenants/:tenant") { request, context -> Response in
            let name = try context.parameters.require("tenant")
            // `?cascade=yes` was taken for false, without a word.
            let cascade: Bool
            switch request.uri.queryParameters.get("cascade").map({ String($0) }) {
            case nil, "false": cascade = false
            case "true": cascade = true
            case let other?:
                throw APIError(.badRequest, "bad-request", "cascade=\(Printable.escapingControls(other)): write cascade=true or cascade=false")
            }
            let result = try await run(.deleteTenant(name: name, cascade: cascade))
            var answer = ["deleted": name]
            if let note = result.note { answer["note"] = note }
            return JSONBody.response(answer)
        }
        admin.post("tenants/:tenant/members") { request, context -> Response in
            let tenant = try context.parameters.require("tenant")
            let body = try await self.body(MemberBody.self, request, context)
            try await run(.setMember(tenant: tenant, principal: body.principal, role: body.role, member: true))
            return JSONBody.response(["tenant": tenant, "principal": body.principal, "role": body.role], status: .created)
        }
        admin.delete("tenants/:tenant/members") { request, context -> Response in
            let tenant = try context.parameters.require("tenant")
            let body = try await self.body(MemberBody.self, request, context)
            let result = try await run(.setMember(tenant: tenant, principal: body.principal, role: body.role, member: false))
            return JSONBody.response(Self.answer(["tenant": tenant, "principal": body.principal, "role": body.role], note: result.note))
        }
        admin.get("roles") { _, _ -> Response in
            JSONBody.response(kernel.access.directory.roleViews)
        }
        admin.post("roles") { request, context -> Response in
            let body = try await self.body(NameBody.self, request, context)
            try await run(.createRole(name: body.name))
            return JSONBody.response(["name": body.name], status: .created)
        }
        admin.delete("roles/:role") { _, context -> Response in
            let role = try context.parameters.require("role")
            let result = try await run(.deleteRole(name: role))
            return JSONBody.response(Self.answer(["deleted": role], note: result.note))
        }
        admin.post("roles/:role/grants") { request, context -> Response in
            let role = try context.parameters.require("role")
            let body = try await self.body(PermissionBody.self, request, context)
            // As `keel roles grant`: an item no plugin declares (a typo) is refused unless forced (not for the built-in
            // admin, where a grant changes nothing and says so).
            if body.force != true, role != StateStore.Directory.adminRole {
                let declared = ((try? await kernel.plugins()) ?? []).flatMap(\.permissions)
                if !Kernel.isDeclared(body.permission, among: declared) {
                    throw APIError(.badRequest, "undeclared-permission", "no plugin declares \"\(Printable.escapingControls(body.permission))\" ("
                                   + (declared.isEmpty ? "no plugin declares permission items" : "declared: " + declared.sorted().joined(separator: ", "))
                                   + "); send \"force\": true to grant it anyway")
                }
            }
            let result = try await run(.setRolePermission(role: role, permission: body.permission, granted: true))
            return JSONBody.response(Self.answer(["role": role, "permission": body.permission], note: result.note),
                                     status: result.note == nil ? .created : .ok)
        }
        admin.delete("roles/:role/grants") { request, context -> Response in
            let role = try context.parameters.require("role")
            let body = try await self.body(RevokeBody.self, request, context)
            let result = try await run(.setRolePermission(role: role, permission: body.permission, granted: false))
            return JSONBody.response(Self.answer(["role": role, "permission": body.permission], note: result.note))
        }
    }

    /// `fields`, with `note` when the command said something (a revoke that changed nothing, a wildcard that still allows).
    static func answer(_ fields: [String: String], note: String?) -> [String: String] {
        var answer = fields
        if let note { answer["note"] = note }
        return answer
    }
}

struct MemberBody: Decodable { var principal: String; var role: String }
struct PermissionBody: Decodable { var permission: String; var force: Bool? }
struct RevokeBody: Decodable { var permission: String }
