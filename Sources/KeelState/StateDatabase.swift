// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// A value bound to a statement or read from a row.
public enum StateValue: Sendable, Hashable {
    case text(String)
    case int(Int64)
    case null

    public var text: String? { if case let .text(s) = self { return s } else { return nil } }
    public var int: Int64? { if case let .int(n) = self { return n } else { return nil } }
}

/// One connection to the engine that holds the state: SQLite (`SQLiteDatabase`) or PostgreSQL
/// (`KeelStatePostgres`). `StateStore` runs all of its SQL through this, so both engines share one implementation
/// of every operation and so the same semantics.
///
/// The SQL `StateStore` sends is the dialect both engines accept: `?` placeholders (an implementation may rewrite
/// them), `INSERT ... ON CONFLICT`, `RETURNING`, aliased subqueries; engine-specific statements (`PRAGMA`, the
/// schema) stay behind this protocol. An operation added to `StateStore` must keep to that dialect, and a migration
/// added to `StateStore.migrations` needs its counterpart in the PostgreSQL schema (a test compares the counts).
///
/// Not thread-safe by itself: `StateStore` serialises every call under its lock. Errors are `StateError` naming
/// `location`, never a raw driver error.
public protocol StateDatabase: AnyObject {
    /// What errors name: the file path, or the URL without its password.
    var location: String { get }
    /// Runs statements without results.
    func execute(_ sql: String) throws(StateError)
    /// Runs `sql` with `bindings` and returns every row as columns by name.
    @discardableResult
    func query(_ sql: String, _ bindings: [StateValue]) throws(StateError) -> [[String: StateValue]]
    /// Runs `sql` with `bindings` and returns every row's values in the order of `columns`, the names of its result
    /// columns (a column not in the result reads as null). For reads of many rows: no map per row.
    func rows(_ sql: String, _ bindings: [StateValue], columns: [String]) throws(StateError) -> [[StateValue]]
    /// True while a transaction is open on this connection.
    var inTransaction: Bool { get }
    /// Opens a write transaction (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `BEGIN`).
    func begin() throws(StateError)
    /// A number that changes whenever another connection committed (see `StateStoring.dataVersion`).
    func dataVersion() throws(StateError) -> Int64
    /// The engine's own consistency check: "ok" when sound.
    func integrityCheck() throws(StateError) -> String
    /// Whether a commit waits until it is on disk (true, the default) or only until it is in the operating system's
    /// cache (`StateStore.settling`). Called between transactions only. An engine without the choice ignores it.
    func setDurable(_ durable: Bool) throws(StateError)
    /// Waits until every commit made so far is on disk (the end of `StateStore.settling`). An engine whose commits
    /// are always durable does nothing.
    func syncToDisk() throws(StateError)
    /// Folds what the engine keeps beside its main file back into it (SQLite: the write-ahead log), so that the main
    /// file alone holds every commit (a backup copies one file). An engine without such a file does nothing.
    func checkpoint() throws(StateError)
    /// Called with the duration of each commit (a transaction's COMMIT, or a write outside a transaction), on the
    /// writing thread, while the store's lock is held: it must be short and must not use the store. nil: none.
    var commitObserver: (@Sendable (Duration) -> Void)? { get set }
}

extension StateDatabase {
    public func setDurable(_ durable: Bool) throws(StateError) {}
    public func syncToDisk() throws(StateError) {}
    public func checkpoint() throws(StateError) {}

    @discardableResult
    public func query(_ sql: String) throws(StateError) -> [[String: StateValue]] { try query(sql, []) }

    public func rows(_ sql: String, _ bindings: [StateValue], columns: [String]) throws(StateError) -> [[StateValue]] {
        try query(sql, bindings).map { row in columns.map { row[$0] ?? .null } }
    }

    /// Runs `body` so that all it writes stays or none of it does, also inside an open transaction: there as a
    /// savepoint (released when it returns, rolled back to when it throws, the transaction's other writes kept),
    /// else as a transaction of its own. `name` is the savepoint's (an SQL identifier).
    public func atomically<T>(_ name: String, _ body: () throws(StateError) -> T) throws(StateError) -> T {
        guard inTransaction else { return try transaction(body) }
        return try bracket({ () throws(StateError) in try execute("SAVEPOINT \(name)") }, close: "RELEASE SAVEPOINT \(name)",
                           undo: ["ROLLBACK TO SAVEPOINT \(name)", "RELEASE SAVEPOINT \(name)"], body)
    }

    /// Runs `body` in one write transaction: committed when it returns, rolled back when it throws. Inside an
    /// open transaction (a `StateStore.batch`) it simply joins it.
    public func transaction<T>(_ body: () throws(StateError) -> T) throws(StateError) -> T {
        if inTransaction { return try body() }
        return try bracket({ () throws(StateError) in try begin() }, close: "COMMIT", undo: ["ROLLBACK"], body)
    }

    /// Runs `body` after `open`, then `close`; when either throws, runs `undo` (its errors ignored) and rethrows.
    private func bracket<T>(_ open: () throws(StateError) -> Void, close: String, undo: [String],
                            _ body: () throws(StateError) -> T) throws(StateError) -> T {
        try open()
        do {
            let result = try body()
            try execute(close)
            return result
        } catch {
            for sql in undo { try? execute(sql) }
            throw error
        }
    }
}
