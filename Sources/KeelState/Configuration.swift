// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Each plugin's stored configuration: the operator's YAML and the validated JSON handed to the plugin.
///
/// Thread-safe and blocking, like every `StateStore` call. Validation is the kernel's job; the store keeps what it
/// is given. Throws `StateError` when SQLite fails.
extension StateStore {
    /// The stored configuration: the operator's YAML and the validated JSON handed to the plugin.
    public func config(_ id: String) throws(StateError) -> (yaml: String, json: String)? {
        try locked { db throws(StateError) in
            try db.query("SELECT yaml, json FROM plugin_config WHERE plugin_id = ?", [.text(id)]).first.flatMap {
                guard let y = $0["yaml"]?.text, let j = $0["json"]?.text else { return nil }
                return (y, j)
            }
        }
    }

    /// Every stored configuration, by plugin id: one read for a start-up that activates many plugins.
    public func allConfigs() throws(StateError) -> [String: (yaml: String, json: String)] {
        try locked { db throws(StateError) in
            var byID: [String: (yaml: String, json: String)] = [:]
            for row in try db.query("SELECT plugin_id, yaml, json FROM plugin_config", []) {
                guard let id = row["plugin_id"]?.text, let y = row["yaml"]?.text, let j = row["json"]?.text else { continue }
                byID[id] = (y, j)
            }
            return byID
        }
    }

    /// Stores a plugin's configuration; nil removes it. One transaction, with an event in the plugin's history.
    public func setConfig(_ id: String, _ config: (yaml: String, json: String)?, event: String) throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                if let config {
                    try db.query("""
                        INSERT INTO plugin_config (plugin_id, yaml, json, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (plugin_id)
                        DO UPDATE SET yaml = excluded.yaml, json = excluded.json, updated_at = excluded.updated_at
                        """,
                                 [.text(id), .text(config.yaml), .text(config.json), .text(Self.now())])
                } else {
                    try db.query("DELETE FROM plugin_config WHERE plugin_id = ?", [.text(id)])
                }
                try Self.event(db, id, event, config.map { "\($0.yaml.utf8.count) bytes" } ?? "removed")
            }
        }
    }
}
