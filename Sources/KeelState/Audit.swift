// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// The audit trail: one row per command the kernel executed on someone's behalf (enable, disable, grants,
/// configuration, install, tenants, roles, token reset, ...) and per admin call the auth chain refused.
///
/// A row names who (the front end and, when known, the principal), from where (a remote address, or `local`), when,
/// what (the command's short name and its target: a plugin id, tenant, role or repository name) and the outcome
/// (`ok`, or an error code such as `unknown-plugin` or `forbidden`). It never holds a command's arguments: no
/// configuration values, no keys, no tokens. `detail` is written by the kernel only with text that cannot carry them
/// (which hook or which missing permission refused a call).
///
/// Bounded: the table keeps the last `auditCapacity` rows; every insert removes the rows older than those, in the
/// same transaction. Thread-safe and blocking, like every `StateStore` call; throws `StateError` when SQLite fails.
extension StateStore {
    /// How many audit rows are kept (the newest).
    public static let auditCapacity = 10_000

    /// One audited action.
    public struct AuditEntry: Sendable, Hashable, Codable {
        /// Increasing with every row (0 for an entry not stored yet).
        public var seq: Int64
        /// ISO 8601 UTC with milliseconds; the store's time (ignored on insert).
        public var at: String
        /// The front end that asked: `admin-api`, `console`, `cli`, `dev`, or an embedder's name.
        public var actor: String
        /// The caller's principal id (`admin` for the admin token, the OS user for the CLI), when known.
        public var principal: String?
        /// The remote address of an HTTP caller, `local` for a process on this machine, or nil.
        public var origin: String?
        /// The command's short name (`enable`, `config`, ...) or, for a refused admin call, `METHOD /path`.
        public var command: String
        /// What it is about: a plugin id, tenant, role, repository, interface ("" for none).
        public var target: String
        /// `ok`, or the error code (`unknown-plugin`, `bad-config`, `forbidden`, ...).
        public var outcome: String
        /// For a refusal: which hook or which missing permission refused it. Never a configuration value.
        public var detail: String?
        /// The host that executed it, on a state several hosts share (`observe(as:)`); nil on a state one host owns
        /// and for a command a CLI ran on the shared state itself. The store's (ignored on insert).
        public var host: String?

        public init(seq: Int64 = 0, at: String = "", actor: String, principal: String? = nil, origin: String? = nil,
                    command: String, target: String, outcome: String, detail: String? = nil, host: String? = nil) {
            self.host = host
            self.seq = seq
            self.at = at
            self.actor = actor
            self.principal = principal
            self.origin = origin
            self.command = command
            self.target = target
            self.outcome = outcome
            self.detail = detail
        }
    }

    /// Appends `entry` (stamped with the store's time and the host it observes for) and drops the rows beyond `auditCapacity`, in one transaction.
    public func recordAudit(_ entry: AuditEntry) throws(StateError) {
        func optional(_ s: String?) -> StateValue { s.map { .text($0) } ?? .null }
        let host = observingHost
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                try db.query("""
                    INSERT INTO audit (at, actor, principal, origin, command, target, outcome, detail, host)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, [.text(Self.now()), .text(entry.actor), optional(entry.principal), optional(entry.origin),
                          .text(entry.command), .text(entry.target), .text(entry.outcome), optional(entry.detail),
                          optional(host)])
                try db.query("DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?", [.int(Int64(Self.auditCapacity))])
            }
        }
    }

    /// Audit rows at or after `since` (an ISO 8601 UTC time as the store writes it; nil: from the start), oldest
    /// first, at most the newest `limit`.
    public func audit(since: String?, limit: Int) throws(StateError) -> [AuditEntry] {
        try locked { db throws(StateError) in
            try db.query("""
                SELECT * FROM (SELECT * FROM audit WHERE at >= ? ORDER BY seq DESC LIMIT ?) AS recent ORDER BY seq
                """, [.text(since ?? ""), .int(Int64(max(0, limit)))]).map { row in
                AuditEntry(seq: row["seq"]?.int ?? 0, at: row["at"]?.text ?? "", actor: row["actor"]?.text ?? "",
                           principal: row["principal"]?.text, origin: row["origin"]?.text,
                           command: row["command"]?.text ?? "", target: row["target"]?.text ?? "",
                           outcome: row["outcome"]?.text ?? "", detail: row["detail"]?.text, host: row["host"]?.text)
            }
        }
    }
}

extension StateStore {
    /// The time `text` names for `--since` and `?since=`, as the audit rows store it: a duration back from `now`
    /// (`90s`, `15m`, `2h`, `7d`) or an ISO 8601 time (`2026-11-29T09:00:00Z`, with or without fractional seconds)
    /// or date (`2026-11-29`, midnight UTC). Nil when it is neither.
    public static func auditTime(_ text: String, now: Date = Date()) -> String? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last.flatMap({ units[$0] }), let n = Double(text.dropLast()), n >= 0, n.isFinite {
            return timestamp.format(now.addingTimeInterval(-n * unit))
        }
        let plain = Date.ISO8601FormatStyle()
        let dateOnly = Date.ISO8601FormatStyle().year().month().day()
        for style in [timestamp, plain, dateOnly] {
            if let date = try? style.parse(text) { return timestamp.format(date) }
        }
        return nil
    }
}
