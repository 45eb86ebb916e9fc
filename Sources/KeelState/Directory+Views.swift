// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The directory as its readers see it: `GET /api/v1/tenants` and `keel tenants list --json` print `tenantViews`,
/// `GET /api/v1/roles` and `keel roles list --json` print `roleViews`, so a script reads one shape from either.
extension StateStore.Directory {
    /// One tenant: its members (by principal, each with its roles, sorted) and the plugins enabled for this tenant
    /// only (not those enabled for all tenants).
    public struct TenantView: Codable, Sendable, Equatable {
        public struct Member: Codable, Sendable, Equatable {
            public var principal: String
            public var roles: [String]
        }
        public var name: String
        public var members: [Member]
        public var plugins: [String]
    }

    /// One role: whether it grants everything (`admin`), and the permission items (`KEY:ACTION`) it grants.
    public struct RoleView: Codable, Sendable, Equatable {
        public var name: String
        public var grantsEverything: Bool
        public var permissions: [String]
    }

    /// The role that exists from the start and grants everything.
    public static let adminRole = "admin"

    /// Every tenant, by name.
    public var tenantViews: [TenantView] {
        tenants.map { t in
            TenantView(name: t,
                       members: (members[t] ?? [:]).sorted { $0.key < $1.key }.map { .init(principal: $0.key, roles: $0.value.sorted()) },
                       plugins: pluginTenants.filter { $0.value.contains(t) }.map(\.key).sorted())
        }
    }

    /// Every role, by name.
    public var roleViews: [RoleView] {
        roles.map { RoleView(name: $0, grantsEverything: $0 == Self.adminRole, permissions: (rolePermissions[$0] ?? []).sorted()) }
    }
}
