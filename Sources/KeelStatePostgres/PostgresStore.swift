// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelState

/// The state store on PostgreSQL, for several hosts that share one state.
///
/// It is a `StateStore` (`StateStoring`) on a PostgreSQL connection instead of a SQLite file: every operation,
/// and so every semantic (one transaction per change, `batch` atomic, claim/cancel exclusion, refusals that write
/// nothing), is the same code on both engines; this module adds the connection, the schema in PostgreSQL's dialect,
/// and the change channel. An operation added to `StateStore` works here as it is, provided its SQL keeps to the
/// dialect `StateDatabase` describes.
///
/// Threads: as `StateStore` (thread-safe, blocking), and never on a NIO event loop thread (such a call throws).
public enum PostgresStore {
    /// Opens the state at `url` (`postgres://user@host:port/database`), connecting and migrating the schema.
    /// - Throws: `StateError` naming the URL without its password and the reason: a bad URL, an unreachable server,
    ///   a refused login, a database migrated by a newer Keel.
    public static func open(_ url: String) throws(StateError) -> StateStore {
        try open(PostgresURL(url))
    }

    public static func open(_ url: PostgresURL) throws(StateError) -> StateStore {
        StateStore(database: try PostgresDatabase(url: url))
    }

    /// Calls `observer` (on the store's event loop thread: return quickly, do not call the store from it) with the
    /// table's name after each change another connection committed, and with "" when notifications may have been
    /// missed (the listening connection was lost and is back). Starts listening now. No-op for a SQLite store.
    public static func observeChanges(of store: StateStore, _ observer: @escaping @Sendable (String) -> Void) throws(StateError) {
        try store.withDatabase { db throws(StateError) in
            guard let db = db as? PostgresDatabase else { return }
            db.feed.observe(observer)
            try db.listen()
        }
    }

    /// Keeps the change listener up: starts it again when its connection was lost (PostgreSQL restarted), which
    /// observers hear as a change with table "". No-op for a SQLite store or a listener that is up.
    public static func listen(_ store: StateStore) throws(StateError) {
        try store.withDatabase { db throws(StateError) in try (db as? PostgresDatabase)?.listen() }
    }

    /// True when opening `store` found no Keel state in its database and made the tables (a first host, or a URL
    /// naming another database than meant). False for a SQLite store.
    public static func madeNewState(_ store: StateStore) -> Bool {
        (try? store.withDatabase { db throws(StateError) in (db as? PostgresDatabase)?.madeSchema ?? false }) ?? false
    }

    /// The schema steps this Keel writes (for the check that PostgreSQL's list keeps pace with SQLite's).
    public static var schemaVersion: Int { PostgresSchema.migrations.count }
}
