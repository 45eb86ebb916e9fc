// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import KeelState
import KeelStatePostgres
import Testing

/// The suites that use the PostgreSQL test server, one at a time: `SharedStateTests` restarts it, which would break
/// a state test running on it at that moment.
@Suite("on the PostgreSQL test server, one suite at a time", .serialized, .scheduled)
enum PostgresBackedTests {}

/// The engines a state test runs on: SQLite always; PostgreSQL when `KEEL_TEST_POSTGRES` names a server
/// (`postgres://user@127.0.0.1:PORT/db`, as `.ci/run` sets it from Scripts/postgres-test-server.sh).
enum StateEngine: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres

    var testDescription: String { rawValue }

    /// The server's URL, or nil when PostgreSQL tests are off.
    static var postgresURL: String? {
        ProcessInfo.processInfo.environment["KEEL_TEST_POSTGRES"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// What a parameterised test runs on.
    static var available: [StateEngine] { postgresURL == nil ? [.sqlite] : [.sqlite, .postgres] }

    /// A fresh, empty state location of this engine: a new SQLite file, or a new schema in the test database.
    func freshLocation() -> String {
        switch self {
        case .sqlite:
            return TestEnvironment.makeTemporaryDirectory("store") + "/state.db"
        case .postgres:
            let base = Self.postgresURL ?? ""
            let schema = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
            return base + (base.contains("?") ? "&" : "?") + "schema=" + schema
        }
    }

    /// Opens the store at `location` (one more connection each call).
    func open(_ location: String) throws -> StateStore {
        switch self {
        case .sqlite: return try StateStore(path: location)
        case .postgres: return try PostgresStore.open(location)
        }
    }
}
