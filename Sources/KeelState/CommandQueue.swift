// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// The queue through which another process (the `keel` CLI) asks the running server to act.
///
/// The client submits a command with a deadline and waits; the server notices the commit (`dataVersion`), claims
/// each pending command, runs it and records the outcome. Claim and cancel are each one conditional statement on
/// the `pending` state, so exactly one of them wins. Thread-safe and blocking, like every `StateStore` call;
/// throws `StateError` when SQLite fails.
extension StateStore {
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
        /// The host it is for (a shared state's host id, `observe(as:)`), or nil for whichever server takes it.
        public var targetHost: String? = nil
    }

    /// How long a finished command (done, failed or cancelled) is kept for its client to read its outcome (seconds).
    public static let finishedCommandsKept: Double = 3600

    /// Queues a command that the server may start only within `timeout` seconds from now; returns its sequence number.
    /// Commands finished more than `finishedCommandsKept` ago go (a result holds up to 1 MiB of a `keel call`'s output).
    /// - Parameter target: the host that may run it (its id on a shared state, as it observes, `observe(as:)`); nil
    ///   for any server of this state. Another host's `pendingCommands` does not list it.
    public func submitCommand(op: String, pluginID: String, body: String, timeout: Double, target: String?) throws(StateError) -> Int64 {
        let deadline = Self.timestamp.format(Date().addingTimeInterval(timeout))
        let expired = Self.timestamp.format(Date().addingTimeInterval(-Self.finishedCommandsKept))
        let stuck = Self.timestamp.format(Date().addingTimeInterval(-86_400))
        return try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                try db.query("DELETE FROM commands WHERE state IN ('done', 'failed', 'cancelled') AND done_at < ?", [.text(expired)])
                // Left running or pending by a server killed mid-way, a day on.
                try db.query("DELETE FROM commands WHERE state IN ('pending', 'running') AND created_at < ?", [.text(stuck)])
                return try db.query("""
                    INSERT INTO commands (op, plugin_id, body, deadline, created_at, target_host) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq
                    """, [.text(op), .text(pluginID), .text(body), .text(deadline), .text(Self.now()), target.map { .text($0) } ?? .null]
                ).first?["seq"]?.int ?? 0
            }
        }
    }

    public func command(_ seq: Int64) throws(StateError) -> Command? {
        try locked { db throws(StateError) in try db.query("SELECT * FROM commands WHERE seq = ?", [.int(seq)]).compactMap(Self.command).first }
    }

    /// Commands not yet handled, oldest first: those for any server, and, when this store observes for a host
    /// (`observe(as:)`, a shared state), those for that host; never another host's. A shared store that observes for
    /// no host (`keel dev --serve`, an embedder's server) lists only those for any server.
    public func pendingCommands() throws(StateError) -> [Command] {
        let (clause, bindings) = targetClause
        return try locked { db throws(StateError) in
            try db.query("SELECT * FROM commands WHERE state = 'pending'\(clause) ORDER BY seq", bindings).compactMap(Self.command)
        }
    }

    /// The condition on `target_host` that keeps another host's commands from this store (see `pendingCommands`).
    private var targetClause: (String, [StateValue]) {
        if let host = observingHost { return (" AND (target_host IS NULL OR target_host = ?)", [.text(host)]) }
        return isShared ? (" AND target_host IS NULL", []) : ("", [])
    }

    /// Server side: takes a pending command for running (`pending` → `running`, one statement). Returns false when
    /// the client cancelled it, its deadline passed (it is then marked `cancelled`), or it is another host's
    /// (`pendingCommands`): it must not run here.
    public func claimCommand(_ seq: Int64) throws(StateError) -> Bool {
        let (clause, bindings) = targetClause
        return try locked { db throws(StateError) in
            let now = Self.now()
            let claimed = try db.query("""
                UPDATE commands SET state = 'running' WHERE seq = ? AND state = 'pending' AND (deadline IS NULL OR deadline > ?)\(clause)
                RETURNING seq
                """, [.int(seq), .text(now)] + bindings)
            if !claimed.isEmpty { return true }
            try db.query("""
                UPDATE commands SET state = 'cancelled', result = 'its deadline passed before the server took it', done_at = ?, body = ''
                WHERE seq = ? AND state = 'pending' AND deadline IS NOT NULL AND deadline <= ?
                """, [.text(now), .int(seq), .text(now)])
            return false
        }
    }

    /// Client side: withdraws a command the server has not taken (`pending` → `cancelled`, one statement).
    /// Returns false when the server has already claimed it: then its real outcome follows.
    public func cancelCommand(_ seq: Int64) throws(StateError) -> Bool {
        try locked { db throws(StateError) in
            !(try db.query("""
                UPDATE commands SET state = 'cancelled', result = 'cancelled by the client', done_at = ?, body = ''
                WHERE seq = ? AND state = 'pending' RETURNING seq
                """, [.text(Self.now()), .int(seq)]).isEmpty)
        }
    }

    /// Records a command's outcome (`done` or `failed`) and its result text.
    public func finishCommand(_ seq: Int64, failed: Bool, result: String) throws(StateError) {
        _ = try locked { db throws(StateError) in
            // The body goes once the command ran: it may hold secrets (a configuration's API keys), and the row stays
            // (an hour, a day) only for its result.
            try db.query("UPDATE commands SET state = ?, result = ?, done_at = ?, body = '' WHERE seq = ?",
                         [.text(failed ? "failed" : "done"), .text(result), .text(Self.now()), .int(seq)])
        }
    }

    static func command(_ row: [String: SQLiteDatabase.Value]) -> Command? {
        guard let seq = row["seq"]?.int, let op = row["op"]?.text, let id = row["plugin_id"]?.text else { return nil }
        return Command(seq: seq, op: op, pluginID: id, cascade: (row["cascade"]?.int ?? 0) != 0,
                       state: row["state"]?.text ?? "pending", result: row["result"]?.text ?? "", body: row["body"]?.text ?? "",
                       targetHost: row["target_host"]?.text)
    }
}
