// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The schema of the state file, one migration per step.
///
/// Rule: a migration, once released, is never edited; a change is a new entry at the end. Index + 1 is the schema
/// version stored in `PRAGMA user_version`, so a file records how far it was migrated and a newer file is refused.
extension StateStore {
    /// Schema migrations, applied in order; index + 1 is the schema version (PRAGMA user_version).
    static let migrations: [String] = [
        """
        CREATE TABLE plugins (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            version TEXT NOT NULL DEFAULT '',
            bundle_path TEXT NOT NULL DEFAULT '',
            enabled INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            reason TEXT,
            changed_at TEXT NOT NULL,
            installed_at TEXT NOT NULL
        );
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            plugin_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX events_plugin ON events(plugin_id, seq);
        """,
        """
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE commands (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            op TEXT NOT NULL,
            plugin_id TEXT NOT NULL,
            cascade INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'pending',
            result TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            done_at TEXT
        );
        """,
        """
        CREATE TABLE loads (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            plugin_id TEXT NOT NULL,
            generation INTEGER NOT NULL,
            version TEXT NOT NULL,
            checksum TEXT NOT NULL,
            at TEXT NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX loads_plugin ON loads(plugin_id, seq);
        """,
        """
        CREATE TABLE probes (
            checksum TEXT PRIMARY KEY,
            detail TEXT NOT NULL DEFAULT '',
            at TEXT NOT NULL
        );
        """,
        """
        CREATE TABLE grants (
            plugin_id TEXT NOT NULL,
            capability TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (plugin_id, capability)
        );
        """,
        """
        CREATE TABLE tenants (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
        INSERT INTO tenants (name, created_at) VALUES ('default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
        CREATE TABLE roles (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
        INSERT INTO roles (name, created_at) VALUES ('admin', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
        CREATE TABLE role_permissions (role TEXT NOT NULL, permission TEXT NOT NULL, PRIMARY KEY (role, permission));
        CREATE TABLE members (tenant TEXT NOT NULL, principal TEXT NOT NULL, role TEXT NOT NULL,
                              PRIMARY KEY (tenant, principal, role));
        CREATE TABLE plugin_tenants (plugin_id TEXT NOT NULL, tenant TEXT NOT NULL, PRIMARY KEY (plugin_id, tenant));
        """,
        """
        CREATE TABLE repositories (name TEXT PRIMARY KEY, location TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
                                   added_at TEXT NOT NULL);
        CREATE TABLE trusted_keys (name TEXT PRIMARY KEY, public_key TEXT NOT NULL, added_at TEXT NOT NULL);
        """,
        """
        CREATE TABLE plugin_config (plugin_id TEXT PRIMARY KEY, yaml TEXT NOT NULL, json TEXT NOT NULL, updated_at TEXT NOT NULL);
        """,
        // Commands carry a JSON body and a deadline. Rows queued by an older keel are never run now: the CLI that
        // queued them has long given up waiting.
        """
        ALTER TABLE commands ADD COLUMN body TEXT NOT NULL DEFAULT '';
        ALTER TABLE commands ADD COLUMN deadline TEXT;
        UPDATE commands SET state = 'cancelled', result = 'queued by an older keel; not run',
                            done_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE state IN ('pending', 'running');
        """,
        // The operator's choice of provider per interface: tenant '' is the host-wide choice.
        """
        CREATE TABLE service_selections (interface TEXT NOT NULL, tenant TEXT NOT NULL DEFAULT '',
                                         plugin_id TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (interface, tenant));
        """,
        // The audit trail (Audit.swift): bounded to the last StateStore.auditCapacity rows by every insert.
        """
        CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
                            principal TEXT, origin TEXT, command TEXT NOT NULL, target TEXT NOT NULL DEFAULT '',
                            outcome TEXT NOT NULL, detail TEXT);
        CREATE INDEX audit_at ON audit(at);
        """,
        // What each host sharing the state observes of each plugin (HostObservations.swift): its own status, reason
        // and generation, instead of one row every host overwrites. Empty on a store no host shares.
        """
        CREATE TABLE host_plugins (host TEXT NOT NULL, plugin_id TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
                                   generation INTEGER NOT NULL DEFAULT 0, changed_at TEXT NOT NULL,
                                   PRIMARY KEY (host, plugin_id));
        """,
        // The key each plugin installed from a signed package is pinned to (Signers.swift). A plugin an earlier keel
        // installed signed by a key still trusted under that name is pinned to that key now: its signature record
        // (`signature.<id>`, JSON written by the installer) says `"status":"signed by NAME"`.
        """
        CREATE TABLE plugin_signers (plugin_id TEXT PRIMARY KEY, signer TEXT NOT NULL, public_key TEXT NOT NULL,
                                     pinned_at TEXT NOT NULL);
        INSERT INTO plugin_signers (plugin_id, signer, public_key, pinned_at)
            SELECT substr(s.key, 11), t.name, t.public_key, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM settings s JOIN trusted_keys t ON instr(s.value, '"status":"signed by ' || t.name || '"') > 0
            WHERE substr(s.key, 1, 10) = 'signature.' AND EXISTS (SELECT 1 FROM plugins p WHERE p.id = substr(s.key, 11));
        """,
        // Each activation numbers its generation past the plugin's highest recorded one (`lastGeneration`): without
        // this index that read visited every load the plugin ever had, so each enable or reload got slower with the
        // plugin's history (94 µs of CPU after 750 loads).
        "CREATE INDEX IF NOT EXISTS loads_generation ON loads(plugin_id, generation);",
        // The running server's view of each plugin for `keel plugins list` (Settings.swift, `updateLiveView`): a row
        // per plugin, so that a command rewrites what it changed, not a text of every plugin (700 KB for 1,000).
        "CREATE TABLE IF NOT EXISTS live_plugins (id TEXT PRIMARY KEY, json TEXT NOT NULL);",
        // The host a queued command is for (`submitCommand(target:)`): on a state several hosts share, a reload or a
        // command call the CLI queued for the server beside it is claimed by that server only. NULL: any server.
        "ALTER TABLE commands ADD COLUMN target_host TEXT;",
        // The plugin ids a trusted key may sign (`TrustScope`, patterns joined by commas); NULL: any.
        "ALTER TABLE trusted_keys ADD COLUMN only_ids TEXT;",
        // The host that wrote a load or an audit row (`observe(as:)`, a shared state); NULL for a state one host owns.
        "ALTER TABLE loads ADD COLUMN host TEXT; ALTER TABLE audit ADD COLUMN host TEXT;",
    ]

    /// The schema version this Keel writes: the number of migrations.
    public static var schemaVersion: Int { migrations.count }

    /// Brings `database` up to `schemaVersion`, each migration in its own transaction together with the new
    /// `user_version`, so an interrupted run resumes at the first step not committed.
    ///
    /// Called once from `init`, before the store is shared. Throws: `StateError` when the file was written by a newer
    /// Keel (its version is past ours) or a step fails (that step is rolled back; earlier ones stay).
    static func migrate(_ database: SQLiteDatabase, path: String) throws(StateError) {
        let rows = try database.query("PRAGMA user_version")
        let version = Int(rows.first?["user_version"]?.int ?? 0)
        guard version <= migrations.count else {
            throw StateError(path: path, reason: "schema version \(version) was written by a newer keel (this one knows up to \(migrations.count))")
        }

        for (i, sql) in migrations.enumerated().dropFirst(version) {
            try database.transaction { () throws(StateError) in
                try database.execute(sql)
                try database.execute("PRAGMA user_version = \(i + 1)")
            }
        }
    }
}
