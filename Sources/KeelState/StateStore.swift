// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelSystem
import Synchronization

/// Why the state file could not be read or written. One line: `<file>: <reason>`.
public struct StateError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "\(path): \(reason)" }

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }
}

/// The kernel's persistent state in one SQLite file (WAL, full fsync): plugins, their desired and observed state,
/// and an event log. Every change is one transaction and is on disk when the call returns.
///
/// The operations are grouped by concern, one extension per file: `PluginRecords.swift` (records and history),
/// `LoadHistory.swift` (loads and probes), `Grants.swift`, `Directory.swift` (tenants, roles, members),
/// `CommandQueue.swift` (CLI → server), `Configuration.swift`, `Repositories.swift` (repositories, trusted keys),
/// `Settings.swift` (typed settings), `Audit.swift` (the audit trail) and `Migrations.swift` (the schema). `StateStoring` names the operations a
/// second store must provide.
///
/// Thread-safe: calls are serialised on one connection. Blocking (disk I/O): call it off latency-sensitive paths.
/// Errors: every operation throws `StateError` (`<file>: <reason>`) when SQLite fails; nothing it wrote remains then.
public final class StateStore: StateStoring, @unchecked Sendable {
    // @unchecked Sendable: the only mutable state is the connection inside `database`, and every use of it goes
    // through `locked`, which holds `lock` for the whole call.
    // The lock's value is whether the connection currently waits for the disk on commit (see `settling`).
    private let lock = Mutex(true)
    private let database: any StateDatabase
    /// The thread holding `lock` (0: none), so that `transaction`'s body can call the store's own methods.
    private let owner = Atomic<UInt>(0)
    /// The thread inside `settling` (0: none): its commits do not wait for the disk.
    private let settlingThread = Atomic<UInt>(0)
    /// The state file's path, or (PostgreSQL) the database URL without its password.
    public let path: String
    /// The host whose observations this store records and reads back (see `observe(as:)`), nil for none.
    let observer = Mutex<String?>(nil)
    /// Set by `observeForNoHost`: the observations of a process that is no host (the CLI on a shared state) are dropped.
    let dropsObservations = Atomic<Bool>(false)
    /// The plugins whose records a call through this store may have changed since `takeTouchedRecords` (a superset:
    /// a call that changed nothing, or was rolled back, counts too).
    private let touched = Mutex<Set<String>>([])

    /// Notes that plugin `id`'s record may change (the plugin records' writers call it).
    func touch(_ id: String) { touched.withLock { _ = $0.insert(id) } }

    /// The plugins whose records calls through this store may have changed since the last call (changes that other
    /// connections made are not among them: see `dataVersion`).
    public func takeTouchedRecords() -> Set<String> {
        touched.withLock { set in
            defer { set = [] }
            return set
        }
    }

    /// The `path` of a store that lives in memory only (SQLite's `:memory:`): nothing is written to disk, and the
    /// state ends with the process. For appliances with read-only disks.
    public static let inMemory = ":memory:"
    /// True for a store opened with `StateStore.inMemory`.
    public var isInMemory: Bool { path == Self.inMemory }

    /// Opens the state file at `path` (or an in-memory store for `StateStore.inMemory`), creating it and migrating
    /// its schema as needed.
    /// - Throws: `StateError` when it cannot be opened, is not a database, or was written by a newer Keel.
    /// `requireWritable`: a file that can only be read is refused at once, leaving nothing beside it (a kernel, which
    /// writes from its start); else such a file opens for reading and `readOnlyReason` says why it cannot be written.
    public init(path: String, requireWritable: Bool = false) throws(StateError) {
        let database = try SQLiteDatabase(path: path, requireWritable: requireWritable)
        try Self.migrate(database, path: path)
        self.path = path
        self.database = database
        readOnlyReason = database.readOnlyReason
    }

    /// Why the state can be read but not written (a file of mode 0400, say), naming it; nil when it can be written.
    /// Reads work; a kernel, which writes, refuses such a state (`Kernel.init`).
    public let readOnlyReason: String?

    /// A store on another engine's connection (PostgreSQL: `KeelStatePostgres`), already migrated by its opener.
    /// The store owns the connection from now on and serialises every use of it.
    public init(database: any StateDatabase) {
        self.path = database.location
        self.database = database
        readOnlyReason = nil
    }

    /// Calls `observer` with the duration of each commit to the state (a write transaction's COMMIT, or a write
    /// outside one; on PostgreSQL the round trip that commits), on the writing thread, while the store's lock is
    /// held: it must be short and must not use the store. nil stops it. For the `keel_state_commit_duration_seconds`
    /// metric.
    public func observeCommits(_ observer: (@Sendable (Duration) -> Void)?) {
        lock.withLock { _ in database.commitObserver = observer }
    }

    /// ISO 8601 with milliseconds, UTC. (A formatter made per call cost more than the write it stamps.)
    static let timestamp = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// The time now as `timestamp` formats it (`Timestamp.now`).
    static func now() -> String { Timestamp.now() }

    /// This thread's identity for `owner` and `settlingThread`.
    private static var currentThread: UInt {
        #if os(Linux)
        UInt(pthread_self())
        #else
        UInt(bitPattern: pthread_self())
        #endif
    }

    /// Runs `body` with the connection, holding the lock: the one way the extensions reach the database. Re-entrant
    /// on the thread that holds it (inside `transaction`).
    func locked<T>(_ body: (any StateDatabase) throws(StateError) -> T) throws(StateError) -> T {
        let me = Self.currentThread
        if owner.load(ordering: .acquiring) == me { return try body(database) }
        let settling = settlingThread.load(ordering: .relaxed) == me
        return try lock.withLock { (durable: inout Bool) throws(StateError) -> T in
            owner.store(me, ordering: .releasing)
            defer { owner.store(0, ordering: .releasing) }
            // The mode is switched only between transactions (an open `batch` keeps the one it began with).
            if durable == settling, !database.inTransaction {
                try database.setDurable(!settling)
                durable = !settling
            }
            return try body(database)
        }
    }

    /// Runs `body` with every change it makes through this store, on this thread, in one transaction, holding the
    /// store for the whole time: other threads' calls wait, and nothing of it is seen before the single commit. If
    /// `body` throws, nothing it wrote remains. Keep `body` to state calls: never plugin code or anything that waits
    /// for another thread using this store (it would wait for ever).
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        // The body's own error, carried past the typed-throws layers below and thrown as it was.
        var failure: (any Error)?
        do {
            return try locked { db throws(StateError) -> T in
                try db.transaction { () throws(StateError) -> T in
                    do { return try body() } catch let error as StateError { throw error } catch {
                        failure = error
                        throw StateError(path: path, reason: "rolled back")
                    }
                }
            }
        } catch {
            throw failure ?? error
        }
    }

    /// Runs `body` with the commits this thread makes through the store not waiting for the disk, then makes all of
    /// them durable with one sync before it returns (also when `body` throws). Each commit is still atomic and seen
    /// by other connections at once; a crash of the process loses none of them (they are in the operating system's
    /// cache); a power cut before the sync loses a suffix of them, never a middle part (the write-ahead log is
    /// replayed in order). Other threads' commits wait for the disk as always. For a command that writes several
    /// records in a row (`Kernel.execute`): one sync instead of one per record. On PostgreSQL every commit is
    /// durable as before. Nests (an inner call leaves the sync to the outer one).
    public func settling<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        try settling(sync: true, body)
    }

    /// `settling`, with the sync at the end only when `sync` (without it the commits reach the disk with the next
    /// durable commit or checkpoint: for records that are worthless after a crash, such as the live view).
    package func settling<T, E: Error>(sync: Bool, _ body: () throws(E) -> T) throws(E) -> T {
        let me = Self.currentThread
        guard settlingThread.load(ordering: .relaxed) != me else { return try body() }
        settlingThread.store(me, ordering: .relaxed)
        defer {
            settlingThread.store(0, ordering: .relaxed)
            if sync { try? locked { db throws(StateError) in try db.syncToDisk() } }
        }
        return try body()
    }

    /// Runs `body` with the connection under the lock, for an engine's own module (PostgreSQL's change channel and
    /// hosts table). Operations belong in `StateStore` itself, so that both engines share them.
    public func withDatabase<T>(_ body: (any StateDatabase) throws(StateError) -> T) throws(StateError) -> T {
        try locked(body)
    }

    /// Runs `body` with every change it makes in one transaction, committed (and synced) once at the end; if it
    /// throws, nothing it wrote remains. For start-up, where many small records are written in a row: call it only
    /// while no other thread writes through this store, because such writes would join the open transaction.
    public func batch<T>(_ body: () throws -> T) throws -> T {
        try locked { db throws(StateError) in try db.begin() }
        do {
            let result = try body()
            try locked { db throws(StateError) in try db.execute("COMMIT") }
            return result
        } catch {
            try? locked { db throws(StateError) in try db.execute("ROLLBACK") }
            throw error
        }
    }

    /// The outcome of a directory change: done, or refused (rolled back) with the reason.
    public enum ChangeResult: Sendable { case ok, refused(String) }

    /// Runs `body` in one IMMEDIATE transaction under the lock. `body` returns nil to commit, or a refusal (one
    /// line for the operator) to roll back everything it wrote; a thrown `StateError` also rolls back.
    func change(_ body: (any StateDatabase) throws(StateError) -> String?) throws(StateError) -> ChangeResult {
        try locked { db throws(StateError) in
            try db.begin()
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

    /// A number that changes whenever another connection commits (SQLite: PRAGMA data_version).
    public func dataVersion() throws(StateError) -> Int64 {
        try locked { db throws(StateError) in try db.dataVersion() }
    }

    /// Runs the engine's own consistency check; "ok" when the state is sound.
    public func integrityCheck() throws(StateError) -> String {
        try locked { db throws(StateError) in try db.integrityCheck() }
    }

    /// Folds the write-ahead log into the state file (a host that stops leaves one file that holds everything: a
    /// backup of `state.db` alone is complete). Waits for readers of other processes that hold the log; fails
    /// (`StateError`) when the file cannot be written.
    public func checkpoint() throws(StateError) {
        try locked { db throws(StateError) in try db.checkpoint() }
    }

    /// True for a name the operator may give a tenant, role, repository or key: 1–64 bytes of lowercase ASCII
    /// letters, digits, '-', '_' and '.'.
    static func isName(_ s: String) -> Bool {
        let b = Array(s.utf8)
        return (1...64).contains(b.count) && b.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 || $0 == 46 }
    }

    /// A name as a refusal quotes it: escaped (`Printable`), and cut after 64 bytes with the rest counted (a name
    /// refused for its length was echoed whole, thousands of characters).
    static func quoted(_ name: String) -> String {
        let shown = Printable.escapingControls(name)
        guard shown.utf8.count > 64 else { return "\"\(shown)\"" }
        var cut = "", bytes = 0
        for c in shown {
            bytes += c.utf8.count
            if bytes > 64 { break }
            cut.append(c)
        }
        return "\"\(cut)\"… (\(name.utf8.count) bytes)"
    }

    /// True when `table` has a row whose `name` column is `name`. `table` is one of our own table names, never input.
    static func exists(_ db: any StateDatabase, _ table: String, _ name: String) throws(StateError) -> Bool {
        !(try db.query("SELECT 1 AS x FROM \(table) WHERE name = ?", [.text(name)]).isEmpty)
    }
}
