// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// The hosts that share one state (PostgreSQL), each with its heartbeat and what it runs.
///
/// Only a shared store has the `hosts` table; on SQLite `hosts()` is empty and `heartbeat` does nothing. Writes
/// here do not announce a change (a heartbeat must not wake every other host). Thread-safe and blocking, like every
/// `StateStore` call; throws `StateError` when the engine fails.
extension StateStore {
    /// One host as it last reported itself.
    public struct Host: Sendable, Hashable, Codable {
        public var id: String
        /// Where it serves (`http://127.0.0.1:8470`), "" before it listens.
        public var address: String
        /// Its Keel version.
        public var version: String
        public var startedAt: String
        /// When it last reported (ISO 8601, UTC).
        public var heartbeat: String
        /// The plugins it runs, at which generation.
        public var plugins: [String: Int]
        /// What it observed of each plugin it knows: status (a failure with its reason) and generation.
        public var observed: [String: Observation]

        public init(id: String, address: String, version: String, startedAt: String, heartbeat: String = "", plugins: [String: Int],
                    observed: [String: Observation] = [:]) {
            self.id = id
            self.address = address
            self.version = version
            self.startedAt = startedAt
            self.heartbeat = heartbeat
            self.plugins = plugins
            self.observed = observed
        }
    }

    /// True when several hosts may share this store (its engine is not a local SQLite file).
    public var isShared: Bool {
        (try? locked { db throws(StateError) in !(db is SQLiteDatabase) }) ?? false
    }

    /// Every host that reported, by id, with its observations; empty for a store that is not shared.
    public func hosts() throws(StateError) -> [Host] {
        guard isShared else { return [] }
        let observed = try observations()
        return try locked { db throws(StateError) in
            try db.query("SELECT * FROM hosts ORDER BY id", []).compactMap { row in
                guard let id = row["id"]?.text else { return nil }
                let plugins = (row["plugins"]?.text?.data(using: .utf8))
                    .flatMap { try? JSONDecoder().decode([String: Int].self, from: $0) } ?? [:]
                return Host(id: id, address: row["address"]?.text ?? "", version: row["version"]?.text ?? "",
                            startedAt: row["started_at"]?.text ?? "", heartbeat: row["heartbeat"]?.text ?? "", plugins: plugins,
                            observed: observed[id] ?? [:])
            }
        }
    }

    /// Records `host` as alive now, with what it runs (its `heartbeat` is the store's time, not the one given).
    public func heartbeat(_ host: Host) throws(StateError) {
        guard isShared else { return }
        let plugins = (try? JSONEncoder().encode(host.plugins)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        _ = try locked { db throws(StateError) in
            try db.query("""
                INSERT INTO hosts (id, address, version, started_at, heartbeat, plugins) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
                    started_at = excluded.started_at, heartbeat = excluded.heartbeat, plugins = excluded.plugins
                """, [.text(host.id), .text(host.address), .text(host.version), .text(host.startedAt), .text(Self.now()), .text(plugins)])
        }
    }

    /// Forgets the hosts whose last heartbeat is older than `seconds`, and their observations: a host killed leaves
    /// its row, and its id (`hostname-pid`) is new at every start, so these would pile up for ever.
    public func forgetHosts(silentFor seconds: Double) throws(StateError) {
        guard isShared else { return }
        let cutoff = Self.timestamp.format(Date().addingTimeInterval(-seconds))
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                try db.query("DELETE FROM host_plugins WHERE host IN (SELECT id FROM hosts WHERE heartbeat < ?)", [.text(cutoff)])
                try db.query("DELETE FROM hosts WHERE heartbeat < ?", [.text(cutoff)])
            }
        }
    }

    /// Forgets a host (one that stopped cleanly) and its observations.
    public func removeHost(_ id: String) throws(StateError) {
        guard isShared else { return }
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                try db.query("DELETE FROM hosts WHERE id = ?", [.text(id)])
                try db.query("DELETE FROM host_plugins WHERE host = ?", [.text(id)])
            }
        }
    }
}
