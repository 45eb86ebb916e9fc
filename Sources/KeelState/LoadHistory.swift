// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Each plugin's load history (one row per attempt to load a build) and the checksums that passed the
/// child-process probe.
///
/// Thread-safe and blocking, like every `StateStore` call. Each write is one statement (its own transaction) and
/// throws `StateError` when SQLite fails.
extension StateStore {
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
        /// The host that recorded it, on a state several hosts share (`observe(as:)`); nil on a state one host owns.
        /// The store's (ignored on insert).
        public var host: String?

        public init(generation: Int, version: String, checksum: String, at: String = "", outcome: String, detail: String = "",
                    host: String? = nil) {
            self.generation = generation
            self.version = version
            self.checksum = checksum
            self.at = at
            self.outcome = outcome
            self.detail = detail
            self.host = host
        }
    }

    /// How many of a plugin's generations its load history keeps: rows of older ones go as newer ones are recorded.
    /// Every activation is a generation, a lazy plugin's wake too, so without a bound a lazy plugin with a short
    /// idle time-out, woken by anyone's requests, grew the state file by a row per wake for ever.
    public static let loadHistoryGenerations = 1000

    /// Appends to a plugin's load history (one transaction), dropping its rows older than its last
    /// `loadHistoryGenerations` generations. The time and the host are the store's, not `load.at` and `load.host`
    /// (the host is the one it observes for, `observe(as:)`). An `activated` load also records its generation as that
    /// host's.
    public func recordLoad(_ id: String, _ load: Load) throws(StateError) {
        let observer = observingHost
        let host = load.outcome == "activated" ? observer : nil
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                try db.query("""
                    INSERT INTO loads (plugin_id, generation, version, checksum, at, outcome, detail, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """, [.text(id), .int(Int64(load.generation)), .text(load.version), .text(load.checksum), .text(Self.now()),
                          .text(load.outcome), .text(load.detail), observer.map { .text($0) } ?? .null])
                // One seek of `loads_generation`: generations count up by one per load, so this finds the rows of
                // one generation (its load, its retirement) or none; the first write after an upgrade from a Keel
                // that kept everything drops the whole backlog at once.
                if load.generation > Self.loadHistoryGenerations {
                    try db.query("DELETE FROM loads WHERE plugin_id = ? AND generation <= ?",
                                 [.text(id), .int(Int64(load.generation - Self.loadHistoryGenerations))])
                }
                if let host { try Self.observeGeneration(db, host: host, id, load.generation) }
            }
        }
    }

    /// A plugin's load history, oldest first (at most the last `limit`).
    public func loads(for id: String, limit: Int) throws(StateError) -> [Load] {
        try locked { db throws(StateError) in
            try db.query("""
                SELECT * FROM (SELECT * FROM loads WHERE plugin_id = ? ORDER BY seq DESC LIMIT ?) AS recent ORDER BY seq
                """, [.text(id), .int(Int64(limit))]).map {
                Load(generation: Int($0["generation"]?.int ?? 0), version: $0["version"]?.text ?? "",
                     checksum: $0["checksum"]?.text ?? "", at: $0["at"]?.text ?? "", outcome: $0["outcome"]?.text ?? "",
                     detail: $0["detail"]?.text ?? "", host: $0["host"]?.text)
            }
        }
    }

    /// The highest generation number recorded for a plugin (0 when none).
    public func lastGeneration(_ id: String) throws(StateError) -> Int {
        try locked { db throws(StateError) in
            Int(try db.query("SELECT MAX(generation) AS g FROM loads WHERE plugin_id = ?", [.text(id)]).first?["g"]?.int ?? 0)
        }
    }

    /// The highest generation number recorded for every plugin with a load history, by plugin id.
    public func lastGenerations() throws(StateError) -> [String: Int] {
        try locked { db throws(StateError) in
            var byID: [String: Int] = [:]
            for row in try db.query("SELECT plugin_id, MAX(generation) AS g FROM loads GROUP BY plugin_id", []) {
                guard let id = row["plugin_id"]?.text, let g = row["g"]?.int else { continue }
                byID[id] = Int(g)
            }
            return byID
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
            try db.query("""
                INSERT INTO probes (checksum, detail, at) VALUES (?, ?, ?)
                ON CONFLICT (checksum) DO UPDATE SET detail = excluded.detail, at = excluded.at
                """,
                         [.text(checksum), .text(detail), .text(Self.now())])
        }
    }
}
