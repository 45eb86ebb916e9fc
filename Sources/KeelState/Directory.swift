// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelSystem

/// Tenants, roles, role permissions, members (principal bindings) and the tenants each plugin is enabled for.
///
/// Thread-safe and blocking, like every `StateStore` call. Every change is one transaction that either commits or
/// is refused as a whole: a refusal (`ChangeResult.refused`, one line for the operator) leaves nothing written.
/// Throws `StateError` only when SQLite fails.
extension StateStore {
    /// Everything the access checks need, read in one transaction.
    public struct Directory: Sendable, Hashable {
        public var tenants: [String] = []
        public var roles: [String] = []
        /// role → permissions ("key:action", "key:*")
        public var rolePermissions: [String: Set<String>] = [:]
        /// tenant → principal → roles
        public var members: [String: [String: Set<String>]] = [:]
        /// plugin → tenants it is enabled for; absent = all tenants
        public var pluginTenants: [String: Set<String>] = [:]

        public init() {}
    }

    public func directory() throws(StateError) -> Directory {
        try locked { db throws(StateError) in
            var d = Directory()
            d.tenants = try db.query("SELECT name FROM tenants ORDER BY name").compactMap { $0["name"]?.text }
            d.roles = try db.query("SELECT name FROM roles ORDER BY name").compactMap { $0["name"]?.text }
            for row in try db.query("SELECT role, permission FROM role_permissions") {
                if let r = row["role"]?.text, let p = row["permission"]?.text { d.rolePermissions[r, default: []].insert(p) }
            }
            for row in try db.query("SELECT tenant, principal, role FROM members") {
                // A binding of an id not in Unicode NFC (made before they were refused) counts for no one: keyed by a
                // Swift String it would merge into, and grant, the NFC id it is canonically equal to. It stays
                // stored until `remove-member` takes it away (which takes such an id).
                if let t = row["tenant"]?.text, let p = row["principal"]?.text, let r = row["role"]?.text, CanonicalText.isNFC(p) {
                    d.members[t, default: [:]][p, default: []].insert(r)
                }
            }
            for row in try db.query("SELECT plugin_id, tenant FROM plugin_tenants") {
                if let id = row["plugin_id"]?.text, let t = row["tenant"]?.text { d.pluginTenants[id, default: []].insert(t) }
            }
            return d
        }
    }

    public func createTenant(_ name: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(name) else { return "\(Self.quoted(name)) is not a valid tenant name (lowercase letters, digits, '-', '_', '.'; at most 64)" }
            guard !(try Self.exists(db, "tenants", name)) else { return "tenant \"\(name)\" already exists" }
            // A choice of provider left by an earlier tenant of this name (a state from before `deleteTenant` removed
            // them) is not the new tenant's.
            try db.query("DELETE FROM service_selections WHERE tenant = ?", [.text(name)])
            try db.query("INSERT INTO tenants (name, created_at) VALUES (?, ?)", [.text(name), .text(Self.now())])
            return nil
        }
    }

    /// Removes a tenant with its members and its choices of service provider. Refused while plugins are enabled for
    /// it specifically, unless `cascade` (which takes it out of their tenant lists; a plugin left with no tenant stays
    /// enabled for none).
    public func deleteTenant(_ name: String, cascade: Bool) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard name != "default" else { return "the default tenant cannot be removed" }
            guard try Self.exists(db, "tenants", name) else { return "unknown tenant \"\(name)\"" }
            let plugins = try db.query("SELECT plugin_id FROM plugin_tenants WHERE tenant = ? ORDER BY plugin_id", [.text(name)])
                .compactMap { $0["plugin_id"]?.text }
            if !plugins.isEmpty && !cascade {
                return "tenant \"\(name)\" still has plugin(s) enabled: \(plugins.joined(separator: ", ")); disable them for it first or use --cascade"
            }
            try db.query("DELETE FROM plugin_tenants WHERE tenant = ?", [.text(name)])
            try db.query("DELETE FROM members WHERE tenant = ?", [.text(name)])
            try db.query("DELETE FROM service_selections WHERE tenant = ?", [.text(name)])
            try db.query("DELETE FROM tenants WHERE name = ?", [.text(name)])
            return nil
        }
    }

    public func createRole(_ name: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(name) else { return "\(Self.quoted(name)) is not a valid role name (lowercase letters, digits, '-', '_', '.'; at most 64)" }
            guard !(try Self.exists(db, "roles", name)) else { return "role \"\(name)\" already exists" }
            try db.query("INSERT INTO roles (name, created_at) VALUES (?, ?)", [.text(name), .text(Self.now())])
            return nil
        }
    }

    /// Removes a role with its permission items and its bindings in every tenant. The built-in admin role stays.
    public func deleteRole(_ name: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard name != Directory.adminRole else { return "the built-in admin role cannot be removed" }
            guard try Self.exists(db, "roles", name) else { return "unknown role \"\(name)\"" }
            try db.query("DELETE FROM members WHERE role = ?", [.text(name)])
            try db.query("DELETE FROM role_permissions WHERE role = ?", [.text(name)])
            try db.query("DELETE FROM roles WHERE name = ?", [.text(name)])
            return nil
        }
    }

    /// Grants (or revokes) a permission ("key:action" or "key:*") to a role.
    public func setRolePermission(_ role: String, _ permission: String, granted: Bool) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard try Self.exists(db, "roles", role) else { return "unknown role \"\(role)\"" }
            if granted {
                try db.query("INSERT INTO role_permissions (role, permission) VALUES (?, ?) ON CONFLICT DO NOTHING", [.text(role), .text(permission)])
            } else {
                try db.query("DELETE FROM role_permissions WHERE role = ? AND permission = ?", [.text(role), .text(permission)])
            }
            return nil
        }
    }

    /// Binds (or unbinds) a principal to a tenant with a role.
    public func setMember(tenant: String, principal: String, role: String, member: Bool) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard try Self.exists(db, "tenants", tenant) else { return "unknown tenant \"\(tenant)\"" }
            guard try Self.exists(db, "roles", role) else { return "unknown role \"\(role)\"" }
            guard !principal.isEmpty, principal.utf8.count <= 256 else { return "a principal id must be 1–256 bytes" }
            if member {
                try db.query("INSERT INTO members (tenant, principal, role) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [.text(tenant), .text(principal), .text(role)])
            } else {
                try db.query("DELETE FROM members WHERE tenant = ? AND principal = ? AND role = ?", [.text(tenant), .text(principal), .text(role)])
            }
            return nil
        }
    }

    /// Sets the tenants a plugin is enabled for (nil: all tenants), with an event in the plugin's history.
    public func setPluginTenants(_ id: String, _ tenants: Set<String>?) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            for t in tenants ?? [] where !(try Self.exists(db, "tenants", t)) { return "unknown tenant \"\(t)\"" }
            try db.query("DELETE FROM plugin_tenants WHERE plugin_id = ?", [.text(id)])
            for t in (tenants ?? []).sorted() {
                try db.query("INSERT INTO plugin_tenants (plugin_id, tenant) VALUES (?, ?)", [.text(id), .text(t)])
            }
            try Self.event(db, id, "tenants", tenants.map { $0.sorted().joined(separator: ",") } ?? "all")
            return nil
        }
    }
}
