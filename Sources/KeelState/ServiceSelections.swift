// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The operator's choice of provider for each interface, host-wide (tenant "") and per tenant.
///
/// Thread-safe and blocking, like every `StateStore` call. Throws `StateError` when SQLite fails.
extension StateStore {
    /// One stored choice: `plugin` serves `interface` (an id like `gitops.sync/1`) for `tenant` ("" host-wide).
    public struct ServiceSelection: Sendable, Hashable, Codable {
        public var interface: String
        public var tenant: String
        public var plugin: String

        public init(interface: String, tenant: String, plugin: String) {
            self.interface = interface
            self.tenant = tenant
            self.plugin = plugin
        }
    }

    /// Every stored choice, by interface then tenant.
    public func serviceSelections() throws(StateError) -> [ServiceSelection] {
        try locked { db throws(StateError) in
            try db.query("SELECT interface, tenant, plugin_id FROM service_selections ORDER BY interface, tenant").compactMap { row in
                guard let i = row["interface"]?.text, let t = row["tenant"]?.text, let p = row["plugin_id"]?.text else { return nil }
                return ServiceSelection(interface: i, tenant: t, plugin: p)
            }
        }
    }

    /// Stores (or, with `plugin` nil, forgets) the choice for `interface` and `tenant`, with an event in the chosen
    /// plugin's history, in one transaction.
    public func setServiceSelection(interface: String, tenant: String, plugin: String?) throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                let before = try db.query("SELECT plugin_id FROM service_selections WHERE interface = ? AND tenant = ?",
                                          [.text(interface), .text(tenant)]).first?["plugin_id"]?.text
                let scope = tenant.isEmpty ? "" : " for tenant \(tenant)"
                if let plugin {
                    try db.query("""
                        INSERT INTO service_selections (interface, tenant, plugin_id, at) VALUES (?, ?, ?, ?)
                        ON CONFLICT (interface, tenant) DO UPDATE SET plugin_id = excluded.plugin_id, at = excluded.at
                        """,
                                 [.text(interface), .text(tenant), .text(plugin), .text(Self.now())])
                    try Self.event(db, plugin, "service-selected", "\(interface)\(scope)")
                } else {
                    try db.query("DELETE FROM service_selections WHERE interface = ? AND tenant = ?", [.text(interface), .text(tenant)])
                }
                if let before, before != plugin { try Self.event(db, before, "service-unselected", "\(interface)\(scope)") }
            }
        }
    }
}
