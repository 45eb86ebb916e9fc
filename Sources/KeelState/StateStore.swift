// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization

/// What the kernel remembers about one plugin.
public struct PluginRecord: Sendable, Hashable, Codable {
    public var id: String
    public var name: String
    public var version: String
    /// The bundle folder it was last found in.
    public var bundlePath: String
    /// What the operator asked for: true after `enable`, false after `disable`.
    public var enabled: Bool
    public var status: PluginStatus
    /// Why it failed, when `status` is `.failed`.
    public var reason: String?
    /// When `status` last changed (ISO 8601, UTC).
    public var changedAt: String
}

/// The observed state of a plugin.
public enum PluginStatus: String, Sendable, Hashable, Codable, CaseIterable {
    /// Discovered, never enabled.
    case installed
    /// Active: its contributions are published.
    case enabled
    /// Switched off by the operator.
    case disabled
    /// Could not be loaded or activated; `reason` says why.
    case failed
    /// Its bundle is gone from the plugin folder.
    case missing
    /// Being fetched and unpacked from a repository.
    case installing
    /// The last install attempt failed; `reason` says why. It can be retried.
    case installFailed = "install-failed"
    /// A new version is being fetched, verified and swapped in.
    case upgrading
    /// The last upgrade failed and was rolled back; `reason` says why.
    case upgradeFailed = "upgrade-failed"
    /// Being disabled and removed.
    case uninstalling
}

/// Why the state file could not be read or written. One line: `<file>: <reason>`.
public struct StateError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "\(path): \(reason)" }
}

/// The kernel's persistent state in one SQLite file (WAL, full fsync): plugins, their desired and observed state,
/// and an event log. Every change is one transaction and is on disk when the call returns.
///
/// Thread-safe: calls are serialised on one connection. Blocking (disk I/O): call it off latency-sensitive paths.
public final class StateStore: @unchecked Sendable {
    private let lock = Mutex(())
    private let database: SQLiteDatabase
    public let path: String

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
    ]

    public static var schemaVersion: Int { migrations.count }

    /// Opens the state file at `path`, creating it and migrating its schema as needed.
    /// - Throws: `StateError` when it cannot be opened, is not a database, or was written by a newer Keel.
    public init(path: String) throws(StateError) {
        let database = try SQLiteDatabase(path: path)
        self.path = path
        let rows = try database.query("PRAGMA user_version")
        let version = Int(rows.first?["user_version"]?.int ?? 0)
        guard version <= Self.migrations.count else {
            throw StateError(path: path, reason: "schema version \(version) was written by a newer keel (this one knows up to \(Self.migrations.count))")
        }
        for (i, sql) in Self.migrations.enumerated().dropFirst(version) {
            try database.transaction { () throws(StateError) in
                try database.execute(sql)
                try database.execute("PRAGMA user_version = \(i + 1)")
            }
        }
        self.database = database
    }

    /// ISO 8601 with milliseconds, UTC. (A formatter made per call cost more than the write it stamps.)
    static let timestamp = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    static func now() -> String { timestamp.format(Date()) }

    private func locked<T>(_ body: (SQLiteDatabase) throws(StateError) -> T) throws(StateError) -> T {
        try lock.withLock { (_: inout Void) throws(StateError) -> T in try body(database) }
    }

    static func record(_ row: [String: SQLiteDatabase.Value]) -> PluginRecord? {
        guard let id = row["id"]?.text, let statusText = row["status"]?.text else { return nil }
        return PluginRecord(id: id, name: row["name"]?.text ?? "", version: row["version"]?.text ?? "",
                            bundlePath: row["bundle_path"]?.text ?? "", enabled: (row["enabled"]?.int ?? 0) != 0,
                            status: PluginStatus(rawValue: statusText) ?? .failed, reason: row["reason"]?.text,
                            changedAt: row["changed_at"]?.text ?? "")
    }

    /// Runs `body` with every change it makes in one transaction, committed (and synced) once at the end; if it
    /// throws, nothing it wrote remains. For start-up, where many small records are written in a row: call it only
    /// while no other thread writes through this store, because such writes would join the open transaction.
    public func batch<T>(_ body: () throws -> T) throws -> T {
        try locked { db throws(StateError) in try db.execute("BEGIN IMMEDIATE") }
        do {
            let result = try body()
            try locked { db throws(StateError) in try db.execute("COMMIT") }
            return result
        } catch {
            try? locked { db throws(StateError) in try db.execute("ROLLBACK") }
            throw error
        }
    }

    /// Every plugin, by id.
    public func plugins() throws(StateError) -> [PluginRecord] {
        try locked { db throws(StateError) in try db.query("SELECT * FROM plugins ORDER BY id").compactMap(Self.record) }
    }

    public func plugin(_ id: String) throws(StateError) -> PluginRecord? {
        try locked { db throws(StateError) in try db.query("SELECT * FROM plugins WHERE id = ?", [.text(id)]).compactMap(Self.record).first }
    }

    /// Records a bundle found on disk: a new id starts as `installed` and disabled; a known one keeps its desired
    /// state and gets its name, version and path refreshed.
    public func discovered(id: String, name: String, version: String, bundlePath: String) throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                let now = Self.now()
                let existing = try db.query("SELECT name, version, bundle_path FROM plugins WHERE id = ?", [.text(id)])
                if let row = existing.first {
                    guard row["name"]?.text != name || row["version"]?.text != version || row["bundle_path"]?.text != bundlePath
                    else { return }
                    try db.query("UPDATE plugins SET name = ?, version = ?, bundle_path = ? WHERE id = ?",
                                 [.text(name), .text(version), .text(bundlePath), .text(id)])
                } else {
                    try db.query("""
                        INSERT INTO plugins (id, name, version, bundle_path, enabled, status, changed_at, installed_at)
                        VALUES (?, ?, ?, ?, 0, 'installed', ?, ?)
                        """, [.text(id), .text(name), .text(version), .text(bundlePath), .text(now), .text(now)])
                    try Self.event(db, id, "discovered", "\(version) at \(bundlePath)")
                }
            }
        }
    }

    /// Sets what the operator wants (`enable`/`disable`) and the resulting status in one transaction.
    public func setEnabled(_ id: String, _ enabled: Bool, status: PluginStatus, reason: String? = nil) throws(StateError) {
        try update(id, enabled: enabled, status: status, reason: reason, event: enabled ? "enable" : "disable")
    }

    /// Records the observed status (and the reason, for `.failed`) without touching the desired state.
    public func setStatus(_ id: String, _ status: PluginStatus, reason: String? = nil) throws(StateError) {
        try update(id, enabled: nil, status: status, reason: reason, event: status.rawValue)
    }

    private func update(_ id: String, enabled: Bool?, status: PluginStatus, reason: String?, event: String) throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                let now = Self.now()
                let exists = try db.query("SELECT status, reason, enabled FROM plugins WHERE id = ?", [.text(id)])
                if exists.isEmpty {
                    try db.query("""
                        INSERT INTO plugins (id, enabled, status, reason, changed_at, installed_at)
                        VALUES (?, ?, ?, ?, ?, ?)
                        """, [.text(id), .int((enabled ?? false) ? 1 : 0), .text(status.rawValue),
                              reason.map { .text($0) } ?? .null, .text(now), .text(now)])
                } else {
                    let row = exists[0]
                    let unchanged = row["status"]?.text == status.rawValue && row["reason"]?.text == reason
                        && (enabled == nil || (row["enabled"]?.int ?? 0 != 0) == enabled)
                    if unchanged { return }
                    try db.query("""
                        UPDATE plugins SET enabled = COALESCE(?, enabled), status = ?, reason = ?, changed_at = ? WHERE id = ?
                        """, [enabled.map { .int($0 ? 1 : 0) } ?? .null, .text(status.rawValue),
                              reason.map { .text($0) } ?? .null, .text(now), .text(id)])
                }
                try Self.event(db, id, event, reason ?? "")
            }
        }
    }

    static func event(_ db: SQLiteDatabase, _ id: String, _ kind: String, _ detail: String) throws(StateError) {
        try db.query("INSERT INTO events (at, plugin_id, kind, detail) VALUES (?, ?, ?, ?)",
                     [.text(now()), .text(id), .text(kind), .text(detail)])
    }

    /// One entry of a plugin's history.
    public struct Event: Sendable, Hashable, Codable {
        public var at: String
        public var kind: String
        public var detail: String
    }

    /// A plugin's history, oldest first.
    public func events(for id: String) throws(StateError) -> [Event] {
        try locked { db throws(StateError) in
            try db.query("SELECT at, kind, detail FROM events WHERE plugin_id = ? ORDER BY seq", [.text(id)]).map {
                Event(at: $0["at"]?.text ?? "", kind: $0["kind"]?.text ?? "", detail: $0["detail"]?.text ?? "")
            }
        }
    }

    /// Runs SQLite's own consistency check; "ok" when the file is sound.
    public func integrityCheck() throws(StateError) -> String {
        try locked { db throws(StateError) in
            try db.query("PRAGMA integrity_check").first?["integrity_check"]?.text ?? "no answer"
        }
    }

    // MARK: settings

    /// A stored setting, or nil.
    public func setting(_ key: String) throws(StateError) -> String? {
        try locked { db throws(StateError) in
            try db.query("SELECT value FROM settings WHERE key = ?", [.text(key)]).first?["value"]?.text
        }
    }

    /// Stores (or, with nil, removes) a setting in one transaction.
    public func setSetting(_ key: String, _ value: String?) throws(StateError) {
        _ = try locked { db throws(StateError) in
            if let value {
                try db.query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                             [.text(key), .text(value)])
            } else {
                try db.query("DELETE FROM settings WHERE key = ?", [.text(key)])
            }
        }
    }

    // MARK: commands from other processes

    /// A request queued by another process (the CLI) for the running server.
    ///
    /// Its `state` moves `pending` → `running` → `done`/`failed`, or `pending` → `cancelled`. Both moves out of
    /// `pending` are single conditional updates (`claimCommand` by the server, `cancelCommand` by the client), so
    /// exactly one of them wins: a command the client gave up on never runs.
    public struct Command: Sendable, Hashable {
        public var seq: Int64
        /// A short name for logs (`enable`, `upgrade`, ...).
        public var op: String
        public var pluginID: String
        public var cascade: Bool
        public var state: String
        public var result: String
        /// The command as JSON (what the server decodes and runs).
        public var body: String
    }

    /// Queues a command that the server may start only within `timeout` seconds from now; returns its sequence number.
    public func submitCommand(op: String, pluginID: String, body: String, timeout: Double) throws(StateError) -> Int64 {
        let deadline = Self.timestamp.format(Date().addingTimeInterval(timeout))
        return try locked { db throws(StateError) in
            try db.query("INSERT INTO commands (op, plugin_id, body, deadline, created_at) VALUES (?, ?, ?, ?, ?) RETURNING seq",
                         [.text(op), .text(pluginID), .text(body), .text(deadline), .text(Self.now())]).first?["seq"]?.int ?? 0
        }
    }

    public func command(_ seq: Int64) throws(StateError) -> Command? {
        try locked { db throws(StateError) in try db.query("SELECT * FROM commands WHERE seq = ?", [.int(seq)]).compactMap(Self.command).first }
    }

    /// Commands not yet handled, oldest first.
    public func pendingCommands() throws(StateError) -> [Command] {
        try locked { db throws(StateError) in
            try db.query("SELECT * FROM commands WHERE state = 'pending' ORDER BY seq").compactMap(Self.command)
        }
    }

    /// Server side: takes a pending command for running (`pending` → `running`, one statement). Returns false when
    /// the client cancelled it, or its deadline passed (it is then marked `cancelled`): it must not run.
    public func claimCommand(_ seq: Int64) throws(StateError) -> Bool {
        try locked { db throws(StateError) in
            let now = Self.now()
            let claimed = try db.query("""
                UPDATE commands SET state = 'running' WHERE seq = ? AND state = 'pending' AND (deadline IS NULL OR deadline > ?)
                RETURNING seq
                """, [.int(seq), .text(now)])
            if !claimed.isEmpty { return true }
            try db.query("""
                UPDATE commands SET state = 'cancelled', result = 'its deadline passed before the server took it', done_at = ?
                WHERE seq = ? AND state = 'pending'
                """, [.text(now), .int(seq)])
            return false
        }
    }

    /// Client side: withdraws a command the server has not taken (`pending` → `cancelled`, one statement).
    /// Returns false when the server has already claimed it: then its real outcome follows.
    public func cancelCommand(_ seq: Int64) throws(StateError) -> Bool {
        try locked { db throws(StateError) in
            !(try db.query("""
                UPDATE commands SET state = 'cancelled', result = 'cancelled by the client', done_at = ?
                WHERE seq = ? AND state = 'pending' RETURNING seq
                """, [.text(Self.now()), .int(seq)]).isEmpty)
        }
    }

    /// Records a command's outcome (`done` or `failed`) and its result text.
    public func finishCommand(_ seq: Int64, failed: Bool, result: String) throws(StateError) {
        _ = try locked { db throws(StateError) in
            try db.query("UPDATE commands SET state = ?, result = ?, done_at = ? WHERE seq = ?",
                         [.text(failed ? "failed" : "done"), .text(result), .text(Self.now()), .int(seq)])
        }
    }

    static func command(_ row: [String: SQLiteDatabase.Value]) -> Command? {
        guard let seq = row["seq"]?.int, let op = row["op"]?.text, let id = row["plugin_id"]?.text else { return nil }
        return Command(seq: seq, op: op, pluginID: id, cascade: (row["cascade"]?.int ?? 0) != 0,
                       state: row["state"]?.text ?? "pending", result: row["result"]?.text ?? "", body: row["body"]?.text ?? "")
    }

    /// A number that changes whenever another connection commits to the file (PRAGMA data_version).
    public func dataVersion() throws(StateError) -> Int64 {
        try locked { db throws(StateError) in try db.query("PRAGMA data_version").first?["data_version"]?.int ?? 0 }
    }

    // MARK: load history

    /// One attempt to load a build of a plugin.
    public struct Load: Sendable, Hashable, Codable {
        public var generation: Int
        public var version: String
        /// SHA-256 of the library file, hex.
        public var checksum: String
        public var at: String
        /// `activated`, `failed`, `retired`, ...
        public var outcome: String
        public var detail: String

        public init(generation: Int, version: String, checksum: String, at: String = "", outcome: String, detail: String = "") {
            self.generation = generation
            self.version = version
            self.checksum = checksum
            self.at = at
            self.outcome = outcome
            self.detail = detail
        }
    }

    /// Appends to a plugin's load history (one transaction).
    public func recordLoad(_ id: String, _ load: Load) throws(StateError) {
        _ = try locked { db throws(StateError) in
            try db.query("""
                INSERT INTO loads (plugin_id, generation, version, checksum, at, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, [.text(id), .int(Int64(load.generation)), .text(load.version), .text(load.checksum), .text(Self.now()),
                      .text(load.outcome), .text(load.detail)])
        }
    }

    /// A plugin's load history, oldest first (at most the last `limit`).
    public func loads(for id: String, limit: Int = 1000) throws(StateError) -> [Load] {
        try locked { db throws(StateError) in
            try db.query("""
                SELECT * FROM (SELECT * FROM loads WHERE plugin_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq
                """, [.text(id), .int(Int64(limit))]).map {
                Load(generation: Int($0["generation"]?.int ?? 0), version: $0["version"]?.text ?? "",
                     checksum: $0["checksum"]?.text ?? "", at: $0["at"]?.text ?? "", outcome: $0["outcome"]?.text ?? "",
                     detail: $0["detail"]?.text ?? "")
            }
        }
    }

    /// The highest generation number recorded for a plugin (0 when none).
    public func lastGeneration(_ id: String) throws(StateError) -> Int {
        try locked { db throws(StateError) in
            Int(try db.query("SELECT MAX(generation) AS g FROM loads WHERE plugin_id = ?", [.text(id)]).first?["g"]?.int ?? 0)
        }
    }

    // MARK: probe results

    /// True when a library with this checksum already passed the child-process probe.
    public func probePassed(_ checksum: String) throws(StateError) -> Bool {
        try locked { db throws(StateError) in
            !(try db.query("SELECT 1 AS ok FROM probes WHERE checksum = ?", [.text(checksum)]).isEmpty)
        }
    }

    /// Remembers that a library with this checksum passed the probe.
    public func recordProbePassed(_ checksum: String, detail: String) throws(StateError) {
        _ = try locked { db throws(StateError) in
            try db.query("INSERT OR REPLACE INTO probes (checksum, detail, at) VALUES (?, ?, ?)",
                         [.text(checksum), .text(detail), .text(Self.now())])
        }
    }

    // MARK: grants

    /// Capabilities the operator granted to a plugin explicitly.
    public func grants(_ id: String) throws(StateError) -> Set<String> {
        try locked { db throws(StateError) in
            Set(try db.query("SELECT capability FROM grants WHERE plugin_id = ?", [.text(id)]).compactMap { $0["capability"]?.text })
        }
    }

    /// Grants or revokes capabilities in one transaction, with an event in the plugin's history.
    public func setGrants(_ id: String, grant: [String], revoke: [String]) throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                for c in grant {
                    try db.query("INSERT OR IGNORE INTO grants (plugin_id, capability, at) VALUES (?, ?, ?)", [.text(id), .text(c), .text(Self.now())])
                }
                for c in revoke {
                    try db.query("DELETE FROM grants WHERE plugin_id = ? AND capability = ?", [.text(id), .text(c)])
                }
                let detail = (grant.map { "+" + $0 } + revoke.map { "-" + $0 }).joined(separator: " ")
                try Self.event(db, id, "grants", detail)
            }
        }
    }

    // MARK: tenants, roles, members

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
                if let t = row["tenant"]?.text, let p = row["principal"]?.text, let r = row["role"]?.text {
                    d.members[t, default: [:]][p, default: []].insert(r)
                }
            }
            for row in try db.query("SELECT plugin_id, tenant FROM plugin_tenants") {
                if let id = row["plugin_id"]?.text, let t = row["tenant"]?.text { d.pluginTenants[id, default: []].insert(t) }
            }
            return d
        }
    }

    static func isName(_ s: String) -> Bool {
        let b = Array(s.utf8)
        return (1...64).contains(b.count) && b.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 || $0 == 46 }
    }

    /// The outcome of a directory change: done, or refused (rolled back) with the reason.
    public enum ChangeResult: Sendable { case ok, refused(String) }

    private func change(_ body: (SQLiteDatabase) throws(StateError) -> String?) throws(StateError) -> ChangeResult {
        try locked { db throws(StateError) in
            try db.execute("BEGIN IMMEDIATE")
            do throws(StateError) {
                if let refusal = try body(db) {
                    try? db.execute("ROLLBACK")
                    return .refused(refusal)
                }
                try db.execute("COMMIT")
                return .ok
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        }
    }

    static func exists(_ db: SQLiteDatabase, _ table: String, _ name: String) throws(StateError) -> Bool {
        !(try db.query("SELECT 1 AS x FROM \(table) WHERE name = ?", [.text(name)]).isEmpty)
    }

    public func createTenant(_ name: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(name) else { return "\"\(name)\" is not a valid tenant name (lowercase letters, digits, '-', '_', '.'; at most 64)" }
            guard !(try Self.exists(db, "tenants", name)) else { return "tenant \"\(name)\" already exists" }
            try db.query("INSERT INTO tenants (name, created_at) VALUES (?, ?)", [.text(name), .text(Self.now())])
            return nil
        }
    }

    /// Removes a tenant with its members. Refused while plugins are enabled for it specifically, unless `cascade`
    /// (which takes it out of their tenant lists; a plugin left with no tenant stays enabled for none).
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
            try db.query("DELETE FROM tenants WHERE name = ?", [.text(name)])
            return nil
        }
    }

    public func createRole(_ name: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(name) else { return "\"\(name)\" is not a valid role name" }
            guard !(try Self.exists(db, "roles", name)) else { return "role \"\(name)\" already exists" }
            try db.query("INSERT INTO roles (name, created_at) VALUES (?, ?)", [.text(name), .text(Self.now())])
            return nil
        }
    }

    /// Grants (or revokes) a permission ("key:action" or "key:*") to a role.
    public func setRolePermission(_ role: String, _ permission: String, granted: Bool) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard try Self.exists(db, "roles", role) else { return "unknown role \"\(role)\"" }
            if granted {
                try db.query("INSERT OR IGNORE INTO role_permissions (role, permission) VALUES (?, ?)", [.text(role), .text(permission)])
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
                try db.query("INSERT OR IGNORE INTO members (tenant, principal, role) VALUES (?, ?, ?)", [.text(tenant), .text(principal), .text(role)])
            } else {
                try db.query("DELETE FROM members WHERE tenant = ? AND principal = ? AND role = ?", [.text(tenant), .text(principal), .text(role)])
            }
            return nil
        }
    }

    /// Sets the tenants a plugin is enabled for (nil: all tenants).
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

    // MARK: repositories and trusted keys

    public struct Repository: Sendable, Hashable, Codable {
        public var name: String
        public var location: String
        public var priority: Int

        public init(name: String, location: String, priority: Int) {
            self.name = name
            self.location = location
            self.priority = priority
        }
    }

    public func repositories() throws(StateError) -> [Repository] {
        try locked { db throws(StateError) in
            try db.query("SELECT name, location, priority FROM repositories ORDER BY priority DESC, name").compactMap {
                guard let n = $0["name"]?.text, let l = $0["location"]?.text else { return nil }
                return Repository(name: n, location: l, priority: Int($0["priority"]?.int ?? 0))
            }
        }
    }

    public func addRepository(_ r: Repository) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(r.name) else { return "\"\(r.name)\" is not a valid repository name" }
            guard try db.query("SELECT 1 AS x FROM repositories WHERE name = ?", [.text(r.name)]).isEmpty else {
                return "repository \"\(r.name)\" already exists"
            }
            try db.query("INSERT INTO repositories (name, location, priority, added_at) VALUES (?, ?, ?, ?)",
                         [.text(r.name), .text(r.location), .int(Int64(r.priority)), .text(Self.now())])
            return nil
        }
    }

    public func removeRepository(_ name: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard !(try db.query("SELECT 1 AS x FROM repositories WHERE name = ?", [.text(name)]).isEmpty) else {
                return "unknown repository \"\(name)\""
            }
            try db.query("DELETE FROM repositories WHERE name = ?", [.text(name)])
            return nil
        }
    }

    /// Trusted ed25519 public keys (base64 raw representation), by name.
    public func trustedKeys() throws(StateError) -> [String: String] {
        try locked { db throws(StateError) in
            var keys: [String: String] = [:]
            for row in try db.query("SELECT name, public_key FROM trusted_keys") {
                if let n = row["name"]?.text, let k = row["public_key"]?.text { keys[n] = k }
            }
            return keys
        }
    }

    public func trustKey(name: String, publicKey: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(name) else { return "\"\(name)\" is not a valid key name" }
            try db.query("INSERT OR REPLACE INTO trusted_keys (name, public_key, added_at) VALUES (?, ?, ?)",
                         [.text(name), .text(publicKey), .text(Self.now())])
            return nil
        }
    }

    /// Forgets a plugin's record (after it is uninstalled); grants, tenants and history stay unless `everything`.
    public func forgetPlugin(_ id: String, everything: Bool) throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                try db.query("DELETE FROM plugins WHERE id = ?", [.text(id)])
                if everything {
                    try db.query("DELETE FROM plugin_config WHERE plugin_id = ?", [.text(id)])
                    try db.query("DELETE FROM grants WHERE plugin_id = ?", [.text(id)])
                    try db.query("DELETE FROM plugin_tenants WHERE plugin_id = ?", [.text(id)])
                }
                try Self.event(db, id, "uninstalled", everything ? "" : "data kept")
            }
        }
    }

    // MARK: per-plugin configuration

    /// The stored configuration: the operator's YAML and the validated JSON handed to the plugin.
    public func config(_ id: String) throws(StateError) -> (yaml: String, json: String)? {
        try locked { db throws(StateError) in
            try db.query("SELECT yaml, json FROM plugin_config WHERE plugin_id = ?", [.text(id)]).first.flatMap {
                guard let y = $0["yaml"]?.text, let j = $0["json"]?.text else { return nil }
                return (y, j)
            }
        }
    }

    /// Stores a plugin's configuration; nil removes it. One transaction, with an event in the plugin's history.
    public func setConfig(_ id: String, _ config: (yaml: String, json: String)?, event: String = "config") throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                if let config {
                    try db.query("INSERT OR REPLACE INTO plugin_config (plugin_id, yaml, json, updated_at) VALUES (?, ?, ?, ?)",
                                 [.text(id), .text(config.yaml), .text(config.json), .text(Self.now())])
                } else {
                    try db.query("DELETE FROM plugin_config WHERE plugin_id = ?", [.text(id)])
                }
                try Self.event(db, id, event, config.map { "\($0.yaml.utf8.count) bytes" } ?? "removed")
            }
        }
    }

    public func setConfig(_ id: String, yaml: String, json: String) throws(StateError) {
        try setConfig(id, (yaml, json))
    }
}
