// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// What each host sharing the state observes of each plugin: its own status, reason and generation, in its own row
/// of `host_plugins`, instead of one status row that every host overwrites.
///
/// A store becomes a host's with `observe(as:)` (`keel serve` on a shared state does it before it loads anything).
/// From then on, through this store:
/// - `setStatus` records the host's observation only; the shared `plugins` row (the desired state every host reads)
///   is left alone.
/// - `setEnabled` is a new desired state: the shared row takes `enabled` (and, as its status, the wish: `enabled`, or
///   the status given for a disable), the host's row takes the status given, and every host's failure of that plugin
///   is forgotten, so that each host tries the new desired state again.
/// - `plugins()` and `plugin(_:)` return the shared rows with this host's status, reason and time over them, so the
///   kernel's decisions (a failed plugin is not retried, a missing bundle) are this host's own.
/// - an `activated` load records the generation in the host's row.
/// A store that observes for no host (SQLite, the CLI, an embedder) behaves as before, and `host_plugins` stays empty.
///
/// Thread-safe and blocking, like every `StateStore` call; throws `StateError` when the engine fails.
extension StateStore {
    /// One host's view of one plugin.
    public struct Observation: Sendable, Hashable, Codable {
        /// `enabled` (active on that host), `disabled`, `failed`, `missing`, `install-failed`, ...
        public var status: String
        /// Why, for a failure: one line.
        public var reason: String?
        /// The generation it runs (its last activation there), 0 before any.
        public var generation: Int
        /// When the status last changed (ISO 8601, UTC).
        public var changedAt: String

        public init(status: String, reason: String?, generation: Int, changedAt: String) {
            self.status = status
            self.reason = reason
            self.generation = generation
            self.changedAt = changedAt
        }
    }

    /// Makes this store record and read back the observations of host `id` (nil: of none). Call it before the
    /// kernel loads anything.
    public func observe(as id: String?) {
        observer.withLock { $0 = id }
        if id != nil { dropsObservations.store(false, ordering: .relaxed) }
    }

    /// Makes this store drop what a process that is no host observes (the CLI's own kernel on a shared state, whose
    /// plugin folder and trial activations say nothing of any host's): `setStatus` of a known plugin and
    /// `discovered` of a known one write nothing, so a `keel plugins list` run where the plugin folder differs does
    /// not record every plugin `missing` for every host. A new desired state (`setEnabled`) is written as always, and
    /// every host's failure of that plugin is forgotten, so that each host tries it again.
    public func observeForNoHost() {
        guard observingHost == nil else { return }
        dropsObservations.store(true, ordering: .relaxed)
    }

    /// The host this store observes for, if any.
    public var observingHost: String? { observer.withLock { $0 } }

    /// Every host's observations: host id → plugin id → observation.
    public func observations() throws(StateError) -> [String: [String: Observation]] {
        try locked { db throws(StateError) in
            var out: [String: [String: Observation]] = [:]
            for row in try db.query("SELECT * FROM host_plugins ORDER BY host, plugin_id") {
                guard let host = row["host"]?.text, let id = row["plugin_id"]?.text else { continue }
                out[host, default: [:]][id] = Observation(status: row["status"]?.text ?? "", reason: row["reason"]?.text,
                                                          generation: Int(row["generation"]?.int ?? 0),
                                                          changedAt: row["changed_at"]?.text ?? "")
            }
            return out
        }
    }

    /// The SELECT behind `plugins()`/`plugin(_:)`: the shared rows, with `host`'s observation over them when given.
    static func recordsQuery(host: String?, id: String?) -> (String, [StateValue]) {
        let filter = id == nil ? "" : " WHERE p.id = ?"
        guard let host else {
            return ("""
                SELECT p.id AS id, p.name AS name, p.version AS version, p.bundle_path AS bundle_path, p.enabled AS enabled,
                       p.status AS status, p.reason AS reason, p.changed_at AS changed_at FROM plugins AS p\(filter) ORDER BY p.id
                """, id.map { [.text($0)] } ?? [])
        }
        return ("""
            SELECT p.id AS id, p.name AS name, p.version AS version, p.bundle_path AS bundle_path, p.enabled AS enabled,
                   COALESCE(h.status, p.status) AS status,
                   CASE WHEN h.status IS NULL THEN p.reason ELSE h.reason END AS reason,
                   COALESCE(h.changed_at, p.changed_at) AS changed_at
            FROM plugins AS p LEFT JOIN host_plugins AS h ON h.plugin_id = p.id AND h.host = ?\(filter) ORDER BY p.id
            """, [.text(host)] + (id.map { [.text($0)] } ?? []))
    }

    /// Records `host`'s status of `id`, inside the caller's transaction. Returns false when it was already that.
    @discardableResult
    static func observe(_ db: any StateDatabase, host: String, _ id: String, _ status: PluginStatus,
                        reason: String?) throws(StateError) -> Bool {
        let row = try db.query("SELECT status, reason FROM host_plugins WHERE host = ? AND plugin_id = ?", [.text(host), .text(id)]).first
        if let row, row["status"]?.text == status.rawValue, row["reason"]?.text == reason { return false }
        try db.query("""
            INSERT INTO host_plugins (host, plugin_id, status, reason, generation, changed_at) VALUES (?, ?, ?, ?, 0, ?)
            ON CONFLICT (host, plugin_id) DO UPDATE SET status = excluded.status, reason = excluded.reason,
                changed_at = excluded.changed_at
            """, [.text(host), .text(id), .text(status.rawValue), reason.map { .text($0) } ?? .null, .text(now())])
        return true
    }

    /// Records the generation `host` activated of `id`, inside the caller's transaction.
    static func observeGeneration(_ db: any StateDatabase, host: String, _ id: String, _ generation: Int) throws(StateError) {
        try db.query("""
            INSERT INTO host_plugins (host, plugin_id, status, reason, generation, changed_at) VALUES (?, ?, 'enabled', NULL, ?, ?)
            ON CONFLICT (host, plugin_id) DO UPDATE SET generation = excluded.generation
            """, [.text(host), .text(id), .int(Int64(generation)), .text(now())])
    }
}
