// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState
import KeelSystem

/// Where a PostgreSQL state lives: `postgres://user[:password]@host[:port]/database[?sslmode=disable|require]
/// [&schema=name]` (`postgresql://` too). `schema` keeps the state in that schema (made when missing), so one
/// database can hold several separate Keel states; default: the user's search path (normally `public`).
///
/// The password may be left out of the URL and given in `PGPASSWORD` instead, so it does not show in process lists
/// or shell history. `redacted` is the URL without its password: the only form errors and logs ever show.
public struct PostgresURL: Sendable, Hashable {
    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String
    /// `sslmode=require`: TLS with the server's certificate and host name verified. Default: no TLS.
    public var requireTLS: Bool
    /// The schema the state lives in, or nil for the default search path.
    public var schema: String?

    /// True for a state location that names PostgreSQL (`postgres://` or `postgresql://`, in any case, as URL schemes
    /// are), valid or not.
    public static func isPostgres(_ location: String) -> Bool {
        let scheme = location.prefix(13).lowercased()
        return scheme.hasPrefix("postgres://") || scheme.hasPrefix("postgresql://")
    }

    /// Parses `text`. `environment` supplies `PGPASSWORD` when the URL has no password.
    /// - Throws: `StateError` naming the URL (without password) and what is wrong with it.
    public init(_ text: String, environment: [String: String] = HeldSecrets.environment) throws(StateError) {
        let shown = Self.redact(text)
        guard Self.isPostgres(text), let parts = URLComponents(string: text) else {
            throw StateError(path: shown, reason: "not a PostgreSQL URL (postgres://user@host:port/database)")
        }
        guard let host = parts.host, !host.isEmpty else {
            throw StateError(path: shown, reason: "the URL names no host (postgres://user@host:port/database)")
        }
        guard let user = parts.user, !user.isEmpty else {
            throw StateError(path: shown, reason: "the URL names no user (postgres://user@host:port/database)")
        }
        let database = String(parts.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else {
            throw StateError(path: shown, reason: "the URL names no database (postgres://user@host:port/database)")
        }
        var requireTLS = false
        var schema: String?
        for item in parts.queryItems ?? [] {
            switch (item.name, item.value ?? "") {
            case ("sslmode", "disable"): requireTLS = false
            case ("sslmode", "require"), ("sslmode", "verify-full"): requireTLS = true
            case ("schema", let name):
                guard (1...63).contains(name.utf8.count),
                      name.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }) else {
                    throw StateError(path: shown, reason: "schema \"\(name)\" is not 1–63 lowercase letters, digits and '_'")
                }
                schema = name
            default:
                // The name only: the value may be a secret (libpq takes `password=` here; Keel does not).
                throw StateError(path: shown, reason: "unsupported parameter \"\(item.name)\" (only sslmode=disable|require and schema=name)")
            }
        }
        self.user = user.removingPercentEncoding ?? user
        self.password = parts.password.map { $0.removingPercentEncoding ?? $0 } ?? environment["PGPASSWORD"]
        self.host = host
        guard (1...65_535).contains(parts.port ?? 5432) else { throw StateError(path: shown, reason: "port \(parts.port ?? 0) is not between 1 and 65535") }
        self.port = parts.port ?? 5432
        self.database = database.removingPercentEncoding ?? database
        self.requireTLS = requireTLS
        self.schema = schema
    }

    /// The URL without its password.
    public var redacted: String {
        "postgres://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)" + (schema.map { "?schema=\($0)" } ?? "")
    }

    /// `text` with any password in its user part removed (for messages about a URL that may not even parse).
    public static func redact(_ text: String) -> String {
        // The user part ends at the URL's last `@`: a password may hold an unescaped `@`, and one holding `/`, `?` or
        // `#` unescaped ends the authority early (`ann:a@b/c@db`), so the authority's own last `@` can lie inside the
        // password. An `@` in the query then hides more than needed (the host), never less.
        guard let scheme = text.range(of: "://") else { return text }
        var shown = text
        if let at = text[scheme.upperBound...].lastIndex(of: "@"), let colon = text[scheme.upperBound..<at].firstIndex(of: ":") {
            shown = String(text[..<colon]) + String(text[at...])
        }
        // libpq's `password=` parameter, which Keel refuses, is not shown either.
        guard let query = shown.firstIndex(of: "?") else { return shown }
        let items = shown[shown.index(after: query)...].split(separator: "&", omittingEmptySubsequences: false).map { item in
            item.lowercased().hasPrefix("password=") ? "password=(hidden)" : String(item)
        }
        return String(shown[...query]) + items.joined(separator: "&")
    }
}
