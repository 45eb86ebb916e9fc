// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Keel
@testable import KeelHTTP
import Testing

/// The console's page sessions (`PageSessions`): a ticket stands for its caller on one plugin's routes, and one issued
/// to the admin token's holder ends with that token.
@Suite("page sessions", .scheduled)
struct PageSessionsTests {
    @Test("a ticket issued under the admin token opens nothing once the token is reset; another caller's ticket is not tied to it")
    func endWithTheAdminToken() {
        let pages = PageSessions()
        let admin = Principal(id: "admin", displayName: "admin", tenant: "default", roles: ["admin"], authenticatedBy: "keel")
        let alice = Principal(id: "alice", displayName: "Alice", tenant: "default", roles: [], authenticatedBy: "idp")
        let adminTicket = pages.issue(admin, pluginID: "spy", adminDigest: "digest-1")
        let aliceTicket = pages.issue(alice, pluginID: "spy")
        #expect(pages.session(ticket: adminTicket, pluginID: "spy", adminDigest: "digest-1")?.principal.id == "admin")
        #expect(pages.session(ticket: adminTicket, pluginID: "other", adminDigest: "digest-1") == nil, "one plugin only")
        // `keel token reset`: the digest in force changes, and the old ticket is gone for good.
        #expect(pages.session(ticket: adminTicket, pluginID: "spy", adminDigest: "digest-2") == nil)
        #expect(pages.session(ticket: adminTicket, pluginID: "spy", adminDigest: "digest-1") == nil)
        #expect(pages.session(ticket: aliceTicket, pluginID: "spy", adminDigest: "digest-2")?.principal.id == "alice")
    }

    @Test("one caller asking for page sessions in a loop replaces only their own: other callers' sessions stay")
    func floodByOneCaller() {
        let pages = PageSessions(capacity: 100, perCaller: 8)
        let alice = Principal(id: "alice", displayName: "Alice", tenant: "default", roles: [], authenticatedBy: "idp")
        let mallory = Principal(id: "mallory", displayName: "Mallory", tenant: "default", roles: [], authenticatedBy: "idp")
        let aliceTickets = (0..<5).map { _ in pages.issue(alice, pluginID: "spy") }
        // Mallory's own page of another plugin, open in another tab, is not pushed out by the loop on "spy".
        let malloryElsewhere = pages.issue(mallory, pluginID: "notes")
        var malloryTickets: [String] = []
        for _ in 0..<10_000 { malloryTickets.append(pages.issue(mallory, pluginID: "spy")) }
        for ticket in aliceTickets { #expect(pages.session(ticket: ticket, pluginID: "spy", adminDigest: nil)?.principal.id == "alice") }
        // Mallory keeps the newest 8; the older ones open nothing.
        #expect(pages.count == 14)
        #expect(pages.session(ticket: malloryElsewhere, pluginID: "notes", adminDigest: nil)?.principal.id == "mallory")
        #expect(pages.session(ticket: malloryTickets[0], pluginID: "spy", adminDigest: nil) == nil)
        #expect(pages.session(ticket: malloryTickets[malloryTickets.count - 9], pluginID: "spy", adminDigest: nil) == nil)
        for ticket in malloryTickets.suffix(8) { #expect(pages.session(ticket: ticket, pluginID: "spy", adminDigest: nil)?.principal.id == "mallory") }
        // The same user in another tenant is another caller.
        let elsewhere = Principal(id: "mallory", displayName: "Mallory", tenant: "acme", roles: [], authenticatedBy: "idp")
        let other = pages.issue(elsewhere, pluginID: "spy")
        #expect(pages.session(ticket: other, pluginID: "spy", adminDigest: nil)?.principal.tenant == "acme")
        #expect(pages.session(ticket: malloryTickets.last ?? "", pluginID: "spy", adminDigest: nil)?.principal.id == "mallory")
    }

    @Test("one caller asking over many plugins keeps at most perUser sessions; other callers' stay")
    func floodOverManyPlugins() {
        let pages = PageSessions(capacity: 1_000, perCaller: 4, perUser: 32)
        let alice = Principal(id: "alice", displayName: "Alice", tenant: "default", roles: [], authenticatedBy: "idp")
        let mallory = Principal(id: "mallory", displayName: "Mallory", tenant: "default", roles: [], authenticatedBy: "idp")
        let aliceTicket = pages.issue(alice, pluginID: "spy")
        let malloryTickets = (0..<5_000).map { pages.issue(mallory, pluginID: "p\($0)") }
        #expect(pages.count == 33)
        #expect(pages.session(ticket: aliceTicket, pluginID: "spy", adminDigest: nil)?.principal.id == "alice")
        #expect(pages.session(ticket: malloryTickets[4_967], pluginID: "p4967", adminDigest: nil) == nil)
        #expect(pages.session(ticket: malloryTickets[4_968], pluginID: "p4968", adminDigest: nil)?.principal.id == "mallory")
    }

    @Test("a full table sheds the heaviest holders' oldest first: many callers' floods go before another user's one page")
    func fullTableShedsTheHeaviest() {
        let pages = PageSessions(capacity: 20, perCaller: 64, perUser: 64)
        let alice = Principal(id: "alice", displayName: "Alice", tenant: "default", roles: [], authenticatedBy: "idp")
        let aliceTicket = pages.issue(alice, pluginID: "spy")
        let floods = (0..<10).map { Principal(id: "m\($0)", displayName: "m", tenant: "default", roles: [], authenticatedBy: "idp") }
        var last: [String] = []
        for round in 0..<50 { for m in floods { last.append(pages.issue(m, pluginID: "spy\(round % 3)")) } }
        #expect(pages.count == 20)
        #expect(pages.session(ticket: aliceTicket, pluginID: "spy", adminDigest: nil)?.principal.id == "alice",
                "the flood of ten callers pushed out another user's only page session")
        #expect(pages.session(ticket: last[last.count - 1], pluginID: "spy1", adminDigest: nil)?.principal.id == "m9")
    }

    @Test("past the total capacity, among callers holding as many, the oldest sessions go")
    func capacity() {
        let pages = PageSessions(capacity: 10, perCaller: 64)
        let users = (0..<20).map { Principal(id: "u\($0)", displayName: "u", tenant: "default", roles: [], authenticatedBy: "idp") }
        let tickets = users.map { pages.issue($0, pluginID: "spy") }
        #expect(pages.count == 10)
        #expect(pages.session(ticket: tickets[0], pluginID: "spy", adminDigest: nil) == nil)
        #expect(pages.session(ticket: tickets[19], pluginID: "spy", adminDigest: nil)?.principal.id == "u19")
    }
}
