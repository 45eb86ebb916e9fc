// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelState
import Synchronization

/// Who is looking at a plugin page inside the console, without handing the page any credential of the console.
///
/// Plugin pages run in a sandboxed frame with an opaque origin, so they can reach neither the console's storage nor
/// its token, and a frame's navigation carries no `Authorization` header. When the console opens a page it asks for
/// a page session (`POST /api/v1/session/page`, with its own credential); the host answers with an HttpOnly,
/// SameSite=Strict cookie `keel_page`, scoped to `/ext/<plugin>`, holding a random ticket. A request to that plugin's
/// routes carrying the ticket is made as the caller who opened the page. The ticket is a host credential: it is
/// taken out of the `Cookie` header before any plugin code sees the request, it is valid for one plugin only, it
/// opens nothing under `/api/`, and it expires after `lifetime` (or when the server stops). One issued to the admin
/// token's holder ends with that token: after `keel token reset` it opens nothing (a leaked token's tickets do not
/// outlive it).
///
/// Thread-safe. At most `capacity` sessions are kept, the oldest going first, and at most `perCaller` for one caller
/// (user and tenant) on one plugin's pages, that caller's oldest there going first: one signed-in user who asks for page sessions in a loop
/// replaces only their own, never the other users' (whose open plugin pages would otherwise lose their session).
final class PageSessions: Sendable {
    static let cookieName = "keel_page"
    let lifetime: Duration
    let capacity: Int
    let perCaller: Int

    struct Session: Sendable {
        let principal: Principal
        let pluginID: String
        let expires: ContinuousClock.Instant
        /// The admin token's digest, for a ticket issued to its holder; nil for any other caller.
        let adminDigest: String?
    }

    /// The sessions by ticket, and each caller's tickets in the order they were issued.
    private struct Table {
        var sessions: [String: Session] = [:]
        var byCaller: [String: [String]] = [:]

        static func caller(_ p: Principal, _ plugin: String) -> String { p.id + "\u{0}" + p.tenant + "\u{0}" + plugin }

        mutating func remove(_ ticket: String) {
            guard let session = sessions.removeValue(forKey: ticket) else { return }
            let key = Self.caller(session.principal, session.pluginID)
            byCaller[key]?.removeAll { $0 == ticket }
            if byCaller[key]?.isEmpty == true { byCaller[key] = nil }
        }
    }

    private let table = Mutex(Table())

    init(lifetime: Duration = .seconds(3600), capacity: Int = 10_000, perCaller: Int = 64) {
        self.lifetime = lifetime
        self.capacity = capacity
        self.perCaller = max(1, perCaller)
    }

    /// Sessions kept now (for tests and metrics).
    var count: Int { table.withLock { $0.sessions.count } }

    /// A new ticket for `principal` on `pluginID`'s pages; `adminDigest`: the admin token's digest when the caller
    /// presented that token (the ticket ends with it).
    func issue(_ principal: Principal, pluginID: String, adminDigest: String? = nil) -> String {
        var generator = SystemRandomNumberGenerator()
        let ticket = Hex.lowercase((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
        let now = ContinuousClock.now
        let key = Table.caller(principal, pluginID)
        table.withLock { t in
            // The caller's own oldest first: issued in order, with one lifetime, the first is the oldest.
            while let mine = t.byCaller[key], mine.count >= perCaller, let oldest = mine.first { t.remove(oldest) }
            if t.sessions.count >= capacity {
                for (expired, session) in t.sessions where session.expires <= now { t.remove(expired) }
                while t.sessions.count >= capacity, let oldest = t.sessions.min(by: { $0.value.expires < $1.value.expires })?.key {
                    t.remove(oldest)
                }
            }
            t.sessions[ticket] = Session(principal: principal, pluginID: pluginID, expires: now.advanced(by: lifetime), adminDigest: adminDigest)
            t.byCaller[key, default: []].append(ticket)
        }
        return ticket
    }

    /// The caller a ticket stands for on `pluginID`'s routes, or nil (unknown, expired, for another plugin, or issued
    /// under an admin token that is no longer `adminDigest`, the one in force).
    func principal(ticket: String, pluginID: String, adminDigest: String?) -> Principal? {
        table.withLock { t -> Principal? in
            guard let s = t.sessions[ticket] else { return nil }
            guard s.expires > ContinuousClock.now, s.adminDigest == nil || s.adminDigest == adminDigest else { t.remove(ticket); return nil }
            return s.pluginID == pluginID ? s.principal : nil
        }
    }

    /// The `Set-Cookie` value for a ticket.
    func cookie(_ ticket: String, pluginID: String) -> String {
        "\(Self.cookieName)=\(ticket); Path=/ext/\(pluginID); Max-Age=\(lifetime.components.seconds); HttpOnly; SameSite=Strict"
    }

    /// True when a `Set-Cookie` value would set the page-session cookie: its name (before the first `=`) is
    /// `keel_page`, in any case, once the spaces, tabs and control characters around it are gone, as browsers trim them
    /// and as `HTTPField` drops a leading one. Such a header from a plugin or a proxied app is dropped.
    static func setsPageCookie(_ value: String) -> Bool {
        let blank = { (c: Character) in c.unicodeScalars.allSatisfy { $0.value <= 0x20 || $0.value == 0x7f } }
        guard let equals = value.firstIndex(of: "="), !value[..<equals].contains(";") else { return false }
        var name = value[..<equals].drop(while: blank)
        while let last = name.last, blank(last) { name = name.dropLast() }
        return name.lowercased() == cookieName
    }

    /// The `keel_page` values in a `Cookie` header, and the header without them (nil when nothing else is left).
    static func split(cookieHeader: String) -> (tickets: [String], rest: String?) {
        guard cookieHeader.contains(cookieName) else { return ([], cookieHeader) }
        var tickets: [String] = [], rest: [Substring] = []
        for pair in cookieHeader.split(separator: ";") {
            let trimmed = pair.drop { $0 == " " }
            if trimmed.hasPrefix(cookieName + "=") {
                tickets.append(String(trimmed.dropFirst(cookieName.count + 1)))
            } else {
                rest.append(trimmed)
            }
        }
        return (tickets, rest.isEmpty ? nil : rest.joined(separator: "; "))
    }
}
