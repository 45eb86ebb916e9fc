// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// Counts the change notifications a store received and tells its observers: the part of a PostgreSQL store other
/// threads touch (the listener runs on the store's event loop).
final class ChangeFeed: Sendable {
    private let received = Atomic<Int64>(0)
    private let observers = Mutex<[@Sendable (String) -> Void]>([])

    var count: Int64 { received.load(ordering: .acquiring) }

    /// A change was announced (`table` is its table), or may have been missed (`table` empty: a listener restarted).
    func bump(_ table: String) {
        received.add(1, ordering: .releasing)
        for observer in observers.withLock({ $0 }) { observer(table) }
    }

    func observe(_ observer: @escaping @Sendable (String) -> Void) { observers.withLock { $0.append(observer) } }
}

/// One blocking connection to PostgreSQL, for `StateStore`; plus, from the first `dataVersion()` on, a second one
/// that LISTENs on the change channel.
///
/// Threads: not thread-safe by itself (`StateStore` serialises every call). Every call blocks the calling thread
/// until the server answers, so it must never run on a NIO event loop thread: such a call throws instead of
/// blocking the loop. The connections live on a private one-thread event loop group, never on the HTTP server's.
/// A connection lost outside a transaction is opened again by the next call; a call in flight when it was lost
/// throws. Errors: `StateError` naming the URL without its password and the reason (the server's message).
final class PostgresDatabase: StateDatabase {
    /// The event loop the store's connections live on: one thread, apart from the HTTP server's loops.
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private static let nextID = Atomic<Int>(1)

    let url: PostgresURL
    let location: String
    let feed = ChangeFeed()
    private var connection: PostgresConnection?
    private var listener: PostgresConnection?
    private let logger: Logger
    private(set) var inTransaction = false
    var commitObserver: (@Sendable (Duration) -> Void)?

    /// Connects (a first connection, so a wrong URL or an unreachable server fails here) and migrates the schema.
    init(url: PostgresURL) throws(StateError) {
        self.url = url
        location = url.redacted
        var logger = Logger(label: "keel.state.postgres")
        logger.logLevel = .critical
        self.logger = logger
        do {
            connection = try connect()
            madeSchema = try PostgresSchema.migrate(self)
        } catch where error.reason.hasPrefix("permission denied") {
            // The first start makes tables (and, with `&schema=`, the schema): a role that may not is told what works.
            throw StateError(path: location, reason: error.reason + " (the first start makes Keel's tables: give the role " +
                             "a database of its own, CREATE DATABASE keel OWNER \(url.user), or the right to create here, " +
                             "ALTER DATABASE \(url.database) OWNER TO \(url.user) or GRANT CREATE ON SCHEMA \(url.schema ?? "public") TO \(url.user))")
        }
    }

    /// True when this connection found no Keel state in the database and made its tables.
    private(set) var madeSchema = false

    deinit {
        for c in [connection, listener].compactMap({ $0 }) { Self.close(c) }
    }

    /// Closes `connection`, keeping it alive until it is closed (PostgresNIO requires that).
    private static func close(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in _ = connection }
    }

    private func connect() throws(StateError) -> PostgresConnection {
        let tls: PostgresConnection.Configuration.TLS
        if url.requireTLS {
            do { tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration())) } catch {
                throw StateError(path: location, reason: "cannot set up TLS: \(Self.reason(error))")
            }
        } else {
            tls = .disable
        }
        var configuration = PostgresConnection.Configuration(host: url.host, port: url.port, username: url.user,
                                                             password: url.password, database: url.database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        let id = Self.nextID.add(1, ordering: .relaxed).newValue
        let connection: PostgresConnection
        do {
            try Self.refuseOnEventLoop(location)
            connection = try PostgresConnection.connect(on: Self.group.next(), configuration: configuration, id: id,
                                                        logger: logger).wait()
        } catch let error as StateError {
            throw error
        } catch {
            throw StateError(path: location, reason: "cannot connect: \(Self.reason(error))")
        }
        if let schema = url.schema {
            // The name is checked (lowercase letters, digits, '_') when the URL is parsed.
            do throws(StateError) {
                // Under the migration's lock: two sessions making one new schema at once, one fails otherwise.
                try run(connection, "SELECT pg_advisory_lock(\(PostgresSchema.lockKey))", [])
                do throws(StateError) { try run(connection, "CREATE SCHEMA IF NOT EXISTS \(schema)", []) } catch {
                    _ = try? run(connection, "SELECT pg_advisory_unlock(\(PostgresSchema.lockKey))", [])
                    throw error
                }
                try run(connection, "SELECT pg_advisory_unlock(\(PostgresSchema.lockKey))", [])
                try run(connection, "SET search_path TO \(schema)", [])
            } catch {
                Self.close(connection)
                throw error
            }
        }
        return connection
    }

    /// The open connection, opened again when it was lost (not inside a transaction: that one is gone).
    private func connected() throws(StateError) -> PostgresConnection {
        if let connection, !connection.isClosed { return connection }
        if let connection { Self.close(connection) }
        guard !inTransaction else { throw StateError(path: location, reason: "the connection was lost during a transaction") }
        let fresh = try connect()
        connection = fresh
        return fresh
    }

    // MARK: StateDatabase

    func execute(_ sql: String) throws(StateError) {
        if sql == "COMMIT" || sql == "ROLLBACK" { inTransaction = false }
        try query(sql, [])
    }

    @discardableResult
    func query(_ sql: String, _ bindings: [StateValue]) throws(StateError) -> [[String: StateValue]] {
        // A commit: COMMIT itself, or a write outside a transaction (which commits on its own).
        let started = commitObserver != nil && (sql == "COMMIT" || (!inTransaction && Self.writes(sql))) ? ContinuousClock.now : nil
        defer { if let started { commitObserver?(ContinuousClock.now - started) } }
        return try run(try connected(), sql, bindings).map(Self.row)
    }

    /// Whether `sql` changes data (its first word is INSERT, UPDATE or DELETE).
    static func writes(_ sql: String) -> Bool {
        let word = sql.drop { $0 == " " || $0 == "\n" }.prefix { $0.isLetter }.uppercased()
        return word == "INSERT" || word == "UPDATE" || word == "DELETE"
    }

    func begin() throws(StateError) {
        try query("BEGIN", [])
        inTransaction = true
    }

    /// The change sequence (bumped inside every change's transaction) and the notifications received (each after a
    /// commit): the first moves before the commit is visible, the second after it, so a poller that saw the first
    /// too early is woken again by the second.
    func dataVersion() throws(StateError) -> Int64 {
        try? listen()
        let sequence = try query("SELECT last_value FROM keel_change_seq", []).first?["last_value"]?.int ?? 0
        return sequence &* 1_000_003 &+ feed.count
    }

    func integrityCheck() throws(StateError) -> String {
        let version = try query("SELECT version FROM keel_schema WHERE component = 'state'", []).first?["version"]?.int
        return version == Int64(PostgresSchema.migrations.count) ? "ok" : "schema version \(version ?? 0), expected \(PostgresSchema.migrations.count)"
    }

    // MARK: change notifications

    /// Starts (or, after it was lost, restarts) the LISTEN connection. A restart counts as a change: notifications
    /// sent while no one listened are gone.
    func listen() throws(StateError) {
        if let listener, !listener.isClosed { return }
        if let listener { Self.close(listener) }
        let connection = try connect()
        let feed = self.feed
        connection.addListener(channel: PostgresSchema.changeChannel) { _, note in feed.bump(note.payload) }
        do throws(StateError) { try run(connection, "LISTEN \(PostgresSchema.changeChannel)", []) } catch {
            Self.close(connection)
            throw error
        }
        let restarted = listener != nil
        listener = connection
        if restarted { feed.bump("") }
    }

    // MARK: the wire

    @discardableResult
    private func run(_ connection: PostgresConnection, _ sql: String, _ bindings: [StateValue]) throws(StateError) -> [PostgresRow] {
        var binds = PostgresBindings(capacity: bindings.count)
        for value in bindings {
            switch value {
            case let .text(s): binds.append(s)
            case let .int(n): binds.append(n)
            case .null: binds.appendNull()
            }
        }
        do {
            try Self.refuseOnEventLoop(location)
            return try connection.query(PostgresQuery(unsafeSQL: Self.numbered(sql), binds: binds), logger: logger).wait().rows
        } catch let error as StateError {
            throw error
        } catch {
            throw StateError(path: location, reason: Self.reason(error))
        }
    }

    /// Blocking on a future from an event loop thread would stop that loop (and `wait()` traps there): refuse.
    private static func refuseOnEventLoop(_ location: String) throws(StateError) {
        if MultiThreadedEventLoopGroup.currentEventLoop != nil {
            throw StateError(path: location, reason: "called on a NIO event loop thread, where it would block the loop; call the state store from the kernel or a task")
        }
    }

    /// `sql` with its `?` placeholders (outside quoted literals) numbered `$1`, `$2`, ... as PostgreSQL wants them.
    static func numbered(_ sql: String) -> String {
        var out = ""
        var n = 0
        var quoted = false
        for ch in sql {
            if ch == "'" { quoted.toggle() }
            if ch == "?" && !quoted {
                n += 1
                out += "$\(n)"
            } else {
                out.append(ch)
            }
        }
        return out
    }

    static func row(_ row: PostgresRow) -> [String: StateValue] {
        var out: [String: StateValue] = [:]
        for cell in row {
            guard cell.bytes != nil else {
                out[cell.columnName] = .null
                continue
            }
            switch cell.dataType {
            case .int2, .int4, .int8: out[cell.columnName] = (try? cell.decode(Int64.self)).map { .int($0) } ?? .null
            case .bool: out[cell.columnName] = (try? cell.decode(Bool.self)).map { .int($0 ? 1 : 0) } ?? .null
            default: out[cell.columnName] = (try? cell.decode(String.self)).map { .text($0) } ?? .null
            }
        }
        return out
    }

    /// One line for a driver error: the server's message, or what failed on the way to it.
    static func reason(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            if let underlying = error.underlying { return reason(underlying) }
            switch error.code {
            case .serverClosedConnection, .clientClosedConnection, .uncleanShutdown: return "the server closed the connection"
            case .authMechanismRequiresPassword: return "the server wants a password (in the URL or PGPASSWORD)"
            case .sslUnsupported: return "the server does not offer TLS (sslmode=require)"
            default: return "PostgreSQL error (\(error.code))"
            }
        }
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return reason(first.error) }
            if (error.dnsAError ?? error.dnsAAAAError) != nil {
                return "cannot resolve \(error.host) (no such host, or no name server answered)"
            }
            return "cannot reach \(error.host):\(error.port)"
        }
        if error is SocketAddressError.UnknownHost { return "no such host" }
        if error is ChannelError { return "the connection failed (\(error))" }
        return "\(error)"
    }
}
