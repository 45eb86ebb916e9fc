// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Capabilities the operator granted to each plugin explicitly.
///
/// Thread-safe and blocking, like every `StateStore` call. Throws `StateError` when SQLite fails.
extension StateStore {
    /// Capabilities the operator granted to a plugin explicitly.
    public func grants(_ id: String) throws(StateError) -> Set<String> {
        try locked { db throws(StateError) in
            Set(try db.query("SELECT capability FROM grants WHERE plugin_id = ?", [.text(id)]).compactMap { $0["capability"]?.text })
        }
    }

    /// Every plugin's explicit grants, by plugin id (a plugin with none is absent): one read for a start-up that
    /// activates many plugins.
    public func allGrants() throws(StateError) -> [String: Set<String>] {
        try locked { db throws(StateError) in
            var byID: [String: Set<String>] = [:]
            for row in try db.query("SELECT plugin_id, capability FROM grants", []) {
                guard let id = row["plugin_id"]?.text, let capability = row["capability"]?.text else { continue }
                byID[id, default: []].insert(capability)
            }
            return byID
        }
    }

    /// Grants or revokes capabilities in one transaction, with an event in the plugin's history.
    public func setGrants(_ id: String, grant: [String], revoke: [String]) throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                for c in grant {
                    try db.query("INSERT INTO grants (plugin_id, capability, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [.text(id), .text(c), .text(Self.now())])
                }
                for c in revoke {
                    try db.query("DELETE FROM grants WHERE plugin_id = ? AND capability = ?", [.text(id), .text(c)])
                }
                let detail = (grant.map { "+" + $0 } + revoke.map { "-" + $0 }).joined(separator: " ")
                try Self.event(db, id, "grants", detail)
            }
        }
    }
}
