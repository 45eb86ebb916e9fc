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
/// A ticket keeps who its caller is (id, tenant, the plugin that authenticated them, the roles that plugin's hook
/// gave), not what the operator granted them then: at every request the gatekeeper asks `AccessControl.current` for
/// the caller as they stand now, so a binding removed, a tenant deleted or the authenticating plugin disabled takes
/// effect at once, as for a caller presenting a credential. A ticket also ends when the plugin that authenticated its
/// caller is loaded again (`Session.signIn`): a key rotated in its configuration, a reload or a disable and enable
/// ends the tickets its old generation vouched for.
///
/// Thread-safe. At most `perCaller` sessions are kept for one caller (user and tenant) on one plugin's pages and
/// `perUser` for that caller on all pages, their oldest going first; past `capacity` in all, expired sessions go
/// first, then the oldest of the caller holding the most. One signed-in user asking for page sessions in a loop,
/// over one plugin or many, replaces only their own; filling the table takes many callers, and even then those holding
/// few sessions (other users' open pages) go last.
final class PageSessions: Sendable {
    static let cookieName = "keel_page"
    let lifetime: Duration
    let capacity: Int
    let perCaller: Int
    let perUser: Int

    struct Session: Sendable {
        /// The caller as established when the ticket was issued (its `roleSources` say what its roles are made of).
        let principal: Principal
        let pluginID: String
        let expires: ContinuousClock.Instant
        /// The admin token's digest, for a ticket issued to its holder; nil for any other caller.
        let adminDigest: String?
        /// The generation of the plugin whose hook authenticated the caller, when the ticket was issued: the ticket
        /// ends when that plugin is loaded again (a reload, a new configuration such as a rotated key, a disable and
        /// enable), since the credential it vouched for may no longer be good. Nil for the admin token's holder.
        let signIn: Int?
    }

    /// The sessions by ticket, and each caller's tickets in the order they were issued: per plugin and in all.
    private struct Table {
        var sessions: [String: Session] = [:]
        var byCaller: [String: [String]] = [:]
        var byUser: [String: [String]] = [:]

        static func user(_ p: Principal) -> String { p.id + "\u{0}" + p.tenant }
        static func caller(_ p: Principal, _ plugin: String) -> String { user(p) + "\u{0}" + plugin }

        mutating func remove(_ ticket: String) {
            guard let session = sessions.removeValue(forKey: ticket) else { return }
            Self.drop(ticket, from: &byCaller, at: Self.caller(session.principal, session.pluginID))
            Self.drop(ticket, from: &byUser, at: Self.user(session.principal))
        }

        private static func drop(_ ticket: String, from index: inout [String: [String]], at key: String) {
            index[key]?.removeAll { $0 == ticket }
            if index[key]?.isEmpty == true { index[key] = nil }
        }

        /// The oldest ticket among those of the callers holding the most (O(callers): only when the table is full).
        func heaviestHoldersOldest() -> String? {
            var most = 0, oldest: (ticket: String, expires: ContinuousClock.Instant)?
            for tickets in byUser.values where tickets.count >= most {
                guard let first = tickets.first, let expires = sessions[first]?.expires else { continue }
                if tickets.count > most || oldest.map({ expires < $0.expires }) ?? true { oldest = (first, expires) }
                most = tickets.count
            }
            return oldest?.ticket
        }

        /// Removes the oldest tickets of `index[key]` until fewer than `limit` are left (issued in order, with one
        /// lifetime, the first is the oldest).
        mutating func trim(_ index: KeyPath<Table, [String: [String]]>, _ key: String, below limit: Int) {
            while let mine = self[keyPath: index][key], mine.count >= limit, let oldest = mine.first { remove(oldest) }
        }
    }

    private let table = Mutex(Table())

    init(lifetime: Duration = .seconds(3600), capacity: Int = 10_000, perCaller: Int = 16, perUser: Int = 128) {
        self.lifetime = lifetime
        self.capacity = max(1, capacity)
        self.perCaller = max(1, perCaller)
        self.perUser = max(1, perUser)
    }

    /// Sessions kept now (for tests and metrics).
    var count: Int { table.withLock { $0.sessions.count } }

    /// A new ticket for `principal` on `pluginID`'s pages. `adminDigest`: the admin token's digest when the caller presented that token (the ticket ends with it).
    func issue(_ principal: Principal, pluginID: String, adminDigest: String? = nil, signIn: Int? = nil) -> String {
        var generator = SystemRandomNumberGenerator()
        let ticket = Hex.lowercase((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
        let now = ContinuousClock.now
        let caller = Table.caller(principal, pluginID), user = Table.user(principal)
        table.withLock { t in
            t.trim(\.byCaller, caller, below: perCaller)
            t.trim(\.byUser, user, below: perUser)
            if t.sessions.count >= capacity {
                for (expired, session) in t.sessions where session.expires <= now { t.remove(expired) }
                // The heaviest holder's oldest: a flood spread over many callers thins itself before anyone's one page.
                while t.sessions.count >= capacity, let oldest = t.heaviestHoldersOldest() { t.remove(oldest) }
            }
            t.sessions[ticket] = Session(principal: principal, pluginID: pluginID,
                                         expires: now.advanced(by: lifetime), adminDigest: adminDigest, signIn: signIn)
            t.byCaller[caller, default: []].append(ticket)
            t.byUser[user, default: []].append(ticket)
        }
        return ticket
    }

    /// The session a ticket stands for on `pluginID`'s routes, or nil (unknown, expired, for another plugin, or issued
    /// under an admin token that is no longer `adminDigest`, the one in force). Its caller as they stand now is
    /// `AccessControl.current`'s to say (not needed for one issued under the admin token).
    func session(ticket: String, pluginID: String, adminDigest: String?) -> Session? {
        table.withLock { t -> Session? in
            guard let s = t.sessions[ticket] else { return nil }
            guard s.expires > ContinuousClock.now, s.adminDigest == nil || s.adminDigest == adminDigest else { t.remove(ticket); return nil }
            return s.pluginID == pluginID ? s : nil
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
