// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CSQLite
import Foundation
import KeelSystem

// Why a hand-written layer and not GRDB (groue/GRDB.swift 7.10.0 is in the package mirror), decided for issue 14:
// - Small surface. The store has 15 small tables of plain rows, append-only migrations as SQL text, and needs four
//   things: open in WAL with `synchronous=FULL`, run SQL, bind text/int/null, and an IMMEDIATE transaction. That
//   is this file (~130 lines). GRDB's `DatabaseMigrator` and record protocols would replace the SQL strings with
//   more code, not less, and the migrations must stay byte-for-byte what earlier files were migrated with anyway.
// - Statement caching is measured. Re-preparing every statement was one of the costs profiled in the load
//   benchmark (README, Benchmarks); the bounded cache below removed it, in plain sight. GRDB caches too, but behind its
//   own queue/pool (`DatabaseQueue` serialises on a dispatch queue), which would sit on top of `StateStore`'s own
//   lock, the `batch` transaction and the cross-process `PRAGMA data_version` polling the command queue relies on.
// - Build time and dependencies. GRDB is a large module (Swift, plus its SQLite wrapper) to compile on the 2-core
//   CI machine for every clean build; KeelState today depends only on the system SQLite.
// - A second store (PostgreSQL, `StateStoring`) would not share GRDB anyway.
// Revisit if the schema grows many record types or needs observation (GRDB's ValueObservation).

/// A thin owner of one `sqlite3` connection. Not thread-safe by itself: `StateStore` serialises access.
final class SQLiteDatabase: StateDatabase {
    let path: String
    private var db: OpaquePointer?
    /// Prepared statements by SQL text, reused across calls (preparing costs more than running most of them).
    private var statements: [String: OpaquePointer] = [:]
    /// Told how long each commit took (see `StateStore.observeCommits`).
    var commitObserver: (@Sendable (Duration) -> Void)?
    /// Why this file can be read but not written (it opened read-only), in one line naming it; nil when writable.
    private(set) var readOnlyReason: String?

    /// Opens (creating if needed) the database at `path`, in WAL mode with full fsync on commit.
    /// - Throws: `StateError` when the file cannot be opened or is not a database.
    /// With `requireWritable`, a file that opens read-only is refused before any statement runs, so that nothing
    /// (no write-ahead log or shared-memory file, which SQLite would make with the file's own read-only mode) is left
    /// beside it.
    init(path: String, requireWritable: Bool = false) throws(StateError) {
        self.path = path
        var existing = false
        if let problem = SystemFile.urlLikeProblem(path) { throw StateError(path: path, reason: problem) }
        if let problem = SystemFile.prepareParent(of: path) {
            throw StateError(path: path, reason: problem == "\(path): is a folder, not a file" ? "is a folder, not a state file"
                                                   : "cannot be made: \(problem)")
        }
        // Owner-only: the state holds the secret the proxy's identity keys derive from, plugin configurations (API
        // keys) and command results. SQLite gives the -wal and -shm files the main file's mode; older files made
        // with the umask's 0644 are narrowed.
        if path != ":memory:" && !path.isEmpty {
            // SQLite plays a hot rollback journal (`-journal`) back into the database before it looks for a WAL.
            if let problem = SystemFile.ownershipProblem(path, companions: ["-wal", "-shm", "-journal"]) {
                throw StateError(path: path, reason: "not opened: \(problem)")
            }
            // Another kind of file is refused before anything touches it (its mode included); a FIFO or a device is not
            // even read.
            var info = stat()
            if stat(path, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
                throw StateError(path: path, reason: "is not a regular file, so not a state file; check the path, or name a new file to start a state")
            }
            let head = SystemFile.contents(path, limit: 100) ?? []
            if !head.isEmpty, Array(head.prefix(16)) != Array("SQLite format 3\0".utf8) {
                throw Self.notAState(path, damaged: false)
            }
            // A new (or empty) file is made owner-only before SQLite opens it. A database may be another program's,
            // checked below before anything (its mode included) is changed; it is narrowed then by path, with no
            // descriptor: closing any descriptor of the file in this process would drop the locks SQLite holds on it.
            existing = !head.isEmpty
            if !existing { SystemFile.keepToOwner(path, companions: ["-wal", "-shm", "-journal"]) }
        }
        // A read of a state this user could not write then (mode 0400) left its write-ahead log and shared memory
        // beside it with that mode (SQLite gives them the file's): once the file may be written again, so may they,
        // or every write failed with "attempt to write a readonly database". Only this user's own regular files.
        if access(path, W_OK) == 0 {
            for suffix in ["-wal", "-shm"] {
                var st = stat()
                let file = path + suffix
                if lstat(file, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid(), st.st_mode & 0o200 == 0 {
                    _ = chmod(file, 0o600)
                }
            }
        }
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        guard sqlite3_open_v2(path, &db, flags, nil) == SQLITE_OK else {
            // The system's reason (a read-only file system, a folder not allowed) rather than SQLite's "unable to
            // open database file".
            let code = db.map { sqlite3_system_errno($0) } ?? 0
            var message = code != 0 ? SystemFile.describe(errno: code) : db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            db = nil
            // A file that is not there yet: what keeps it from being made is its folder.
            let folder = (path as NSString).deletingLastPathComponent
            if access(path, F_OK) != 0 && errno == ENOENT && access(folder.isEmpty ? "." : folder, W_OK) != 0 {
                message = "its folder \(folder): \(SystemFile.describe(errno: errno))"
            }
            throw StateError(path: path, reason: "cannot be opened or made: \(message)")
        }
        // A file this user may read but not write (mode 0400) opens, read-only: reads work, and the first write failed
        // with SQLite's "attempt to write a readonly database". Said here; a kernel refuses such a state (`Kernel.init`).
        if sqlite3_db_readonly(db, "main") == 1 {
            let said = access(path, W_OK) != 0 ? SystemFile.describe(errno: errno) : "SQLite opened it read-only"
            let reason = "cannot be written: \(said) (the state and the write-ahead log SQLite keeps beside it must be writable)"
            guard !requireWritable else {
                sqlite3_close(db)
                db = nil
                throw StateError(path: path, reason: reason)
            }
            readOnlyReason = "\(path): " + reason
        }
        sqlite3_busy_timeout(db, 5000)
        do throws(StateError) {
            // The first statements read the file's header and schema: another kind of file is found here, and another
            // program's SQLite database (tables, but not Keel's), before anything is written to either.
            // Statements of their own, finalized at once: none stays prepared from before the journal mode is set.
            let tables = try once("SELECT name FROM sqlite_master WHERE type = 'table'")
            let version = Int(try once("PRAGMA user_version").first ?? "0") ?? 0
            if version == 0 ? !tables.isEmpty : !tables.contains("plugins") {
                throw StateError(path: path, reason: "is an SQLite database of another program, not a Keel state (tables "
                                 + tables.prefix(3).joined(separator: ", ") + (tables.count > 3 ? ", ..." : "")
                                 + "); nothing was changed in it: check the path, or name a new file to start a state")
            }
            if existing { SystemFile.keepToOwner(path, companions: ["-wal", "-shm", "-journal"], byPath: true) }
            try execute("PRAGMA journal_mode=WAL")
        } catch where error.reason.hasPrefix("is an SQLite database of another program") {
            throw error
        } catch {
            let code = sqlite3_extended_errcode(db) & 0xff
            if code == SQLITE_NOTADB || code == SQLITE_CORRUPT { throw Self.notAState(path, damaged: code == SQLITE_CORRUPT) }
            // A state on a read-only file system (or in a folder this user may not write): SQLite opened it read-only
            // and cannot make its write-ahead log beside it.
            let parent = (path as NSString).deletingLastPathComponent
            let folder = parent.isEmpty ? "." : parent
            let fileRefused = access(path, W_OK) != 0 ? errno : 0
            let folderRefused = access(folder, W_OK) != 0 ? errno : 0
            if code == SQLITE_CANTOPEN || code == SQLITE_READONLY, fileRefused != 0 || folderRefused != 0 {
                let said = fileRefused != 0 ? SystemFile.describe(errno: fileRefused) : "its folder \(folder): \(SystemFile.describe(errno: folderRefused))"
                throw StateError(path: path, reason: "cannot be written: \(said) "
                                 + "(the state and the write-ahead log SQLite keeps beside it must be writable)")
            }
            throw error
        }
        try execute("PRAGMA synchronous=FULL")
        // The write-ahead log and its index stay when a connection closes believing it is the last
        // (SQLITE_FCNTL_PERSIST_WAL): a connection takes itself for the last when it can lock the whole file, and POSIX
        // locks belong to the process, so any close() of the state file in the server's process (a plugin reading or
        // backing it up) dropped the server's lock; a CLI beside it then removed the log and its index, the server
        // went on writing into the removed ones, and its queue no longer reached it (found by a security review,
        // 2026-12-08). Kept, they are checkpointed as before, under the index's own locks, which such a close does not
        // touch.
        var persist: Int32 = 1
        sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist)
        try execute("PRAGMA foreign_keys=ON")
    }

    /// The write-ahead log folded into the main file and emptied (`wal_checkpoint(TRUNCATE)`); a no-op in memory.
    func checkpoint() throws(StateError) {
        guard path != ":memory:" && !path.isEmpty else { return }
        try execute("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    /// The first column of every row of `sql`, as text, from a statement finalized before this returns.
    private func once(_ sql: String) throws(StateError) -> [String] {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK, let stmt else {
            sqlite3_finalize(stmt)
            throw error("prepare")
        }
        defer { sqlite3_finalize(stmt) }
        var values: [String] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { return values }
            guard rc == SQLITE_ROW else { throw error("step") }
            values.append(sqlite3_column_text(stmt, 0).map { String(cString: $0) } ?? "")
        }
    }

    /// A file at the state's path that is not a Keel state.
    private static func notAState(_ path: String, damaged: Bool) -> StateError {
        StateError(path: path, reason: "is not a Keel state file (SQLite: \(damaged ? "a damaged database" : "not a database")); "
                   + "nothing was changed in it: check the path, or name a new file to start a state")
    }

    deinit {
        for stmt in statements.values { sqlite3_finalize(stmt) }
        sqlite3_close_v2(db)
    }

    func error(_ what: String) -> StateError {
        StateError(path: path, reason: "\(what): \(db.map { String(cString: sqlite3_errmsg($0)) } ?? "closed")")
    }

    /// Runs one or more statements without results.
    func execute(_ sql: String) throws(StateError) {
        var message: UnsafeMutablePointer<CChar>?
        // A transaction's COMMIT is where the write reaches the disk (WAL, synchronous=FULL): timed.
        let started = commitObserver != nil && sql == "COMMIT" ? ContinuousClock.now : nil
        defer { if let started { commitObserver?(ContinuousClock.now - started) } }
        guard sqlite3_exec(db, sql, nil, nil, &message) == SQLITE_OK else {
            let text = message.map { String(cString: $0) } ?? "unknown error"
            sqlite3_free(message)
            throw StateError(path: path, reason: text)
        }
    }

    typealias Value = StateValue

    var location: String { path }

    /// Runs `sql` with `bindings` and returns every row as columns by name.
    @discardableResult
    func query(_ sql: String, _ bindings: [Value]) throws(StateError) -> [[String: Value]] {
        let stmt = try prepared(sql)
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        try bind(bindings, to: stmt)
        // A write outside a transaction commits on its own: timed as a commit.
        let started = commitObserver != nil && sqlite3_get_autocommit(db) != 0 && sqlite3_stmt_readonly(stmt) == 0
            ? ContinuousClock.now : nil
        defer { if let started { commitObserver?(ContinuousClock.now - started) } }
        var rows: [[String: Value]] = []
        // The column names once per run, at its first row, not once per row (a start reads every plugin's record).
        var columns: [String]?
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error("step") }
            let names = columns ?? (0..<sqlite3_column_count(stmt)).map { String(cString: sqlite3_column_name(stmt, $0)) }
            columns = names
            var row = [String: Value](minimumCapacity: names.count)
            for (c, name) in zip(Int32(0)..., names) {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: row[name] = .int(sqlite3_column_int64(stmt, c))
                case SQLITE_NULL: row[name] = .null
                default: row[name] = .text(Self.text(stmt, c))
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// `query`'s rows as values in the order of `columns`: read by position when the statement's result columns
    /// are exactly `columns`, else by name.
    func rows(_ sql: String, _ bindings: [Value], columns: [String]) throws(StateError) -> [[Value]] {
        let stmt = try prepared(sql)
        let count = sqlite3_column_count(stmt)
        let inOrder = Int(count) == columns.count
            && columns.indices.allSatisfy { String(cString: sqlite3_column_name(stmt, Int32($0))) == columns[$0] }
        guard inOrder, sqlite3_stmt_readonly(stmt) != 0 else {
            return try query(sql, bindings).map { row in columns.map { row[$0] ?? .null } }
        }
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        try bind(bindings, to: stmt)
        var rows: [[Value]] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error("step") }
            rows.append((0..<count).map { c in
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: .int(sqlite3_column_int64(stmt, c))
                case SQLITE_NULL: .null
                default: .text(Self.text(stmt, c))
                }
            })
        }
        return rows
    }

    /// Column `c` of the current row as text: by its length (no `strlen`), through `String`'s UTF-8 fast path.
    private static func text(_ stmt: OpaquePointer, _ c: Int32) -> String {
        guard let bytes = sqlite3_column_text(stmt, c) else { return "" }
        return String(decoding: UnsafeBufferPointer(start: bytes, count: Int(sqlite3_column_bytes(stmt, c))), as: UTF8.self)
    }

    private func bind(_ bindings: [Value], to stmt: OpaquePointer) throws(StateError) {
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        for (i, value) in bindings.enumerated() {
            let index = Int32(i + 1)
            switch value {
            case let .text(s): sqlite3_bind_text(stmt, index, s, -1, transient)
            case let .int(n): sqlite3_bind_int64(stmt, index, n)
            case .null: sqlite3_bind_null(stmt, index)
            }
        }
    }

    /// The cached statement for `sql`, prepared on first use. The cache is bounded: SQL built at run time cannot
    /// grow it without limit.
    private func prepared(_ sql: String) throws(StateError) -> OpaquePointer {
        if let stmt = statements[sql] { return stmt }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK, let stmt else {
            sqlite3_finalize(stmt)
            throw error("prepare")
        }
        if statements.count >= 128 {
            for old in statements.values { sqlite3_finalize(old) }
            statements.removeAll()
        }
        statements[sql] = stmt
        return stmt
    }

    var inTransaction: Bool { sqlite3_get_autocommit(db) == 0 }

    /// FULL: each commit syncs the write-ahead log. NORMAL: commits only write it (SQLite still syncs it before
    /// each checkpoint, so the database file stays sound).
    func setDurable(_ durable: Bool) throws(StateError) {
        try execute(durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")
    }

    /// Syncs the write-ahead log, which holds every commit not yet checkpointed (nothing to do in memory).
    func syncToDisk() throws(StateError) {
        guard path != StateStore.inMemory else { return }
        let fd = open(path + "-wal", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }  // no log yet: every commit is in the database file, synced by its checkpoint
        defer { close(fd) }
        // fdatasync, as SQLite itself syncs on Linux: the data and the size, not the times.
        guard fdatasync(fd) == 0 else { throw StateError(path: path, reason: "cannot sync its write-ahead log (errno \(errno))") }
    }

    func begin() throws(StateError) { try execute("BEGIN IMMEDIATE") }

    /// A number that changes whenever another connection commits to the file (PRAGMA data_version).
    func dataVersion() throws(StateError) -> Int64 {
        try query("PRAGMA data_version").first?["data_version"]?.int ?? 0
    }

    func integrityCheck() throws(StateError) -> String {
        try query("PRAGMA integrity_check").first?["integrity_check"]?.text ?? "no answer"
    }
}
