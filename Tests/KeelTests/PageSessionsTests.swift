// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Keel
@testable import KeelHTTP
import Testing

/// The console's page sessions (`PageSessions`): a ticket stands for its caller on one plugin's routes, and one issued
/// to the admin token's holder ends with that token.
@Suite("page sessions")
struct PageSessionsTests {
    @Test("a ticket issued under the admin token opens nothing once the token is reset; another caller's ticket is not tied to it")
    func endWithTheAdminToken() {
        let pages = PageSessions()
        let admin = Principal(id: "admin", displayName: "admin", tenant: "default", roles: ["admin"], authenticatedBy: "keel")
        let alice = Principal(id: "alice", displayName: "Alice", tenant: "default", roles: [], authenticatedBy: "idp")
        let adminTicket = pages.issue(admin, pluginID: "spy", adminDigest: "digest-1")
        let aliceTicket = pages.issue(alice, pluginID: "spy")
        #expect(pages.principal(ticket: adminTicket, pluginID: "spy", adminDigest: "digest-1")?.id == "admin")
        #expect(pages.principal(ticket: adminTicket, pluginID: "other", adminDigest: "digest-1") == nil, "one plugin only")
        // `keel token reset`: the digest in force changes, and the old ticket is gone for good.
        #expect(pages.principal(ticket: adminTicket, pluginID: "spy", adminDigest: "digest-2") == nil)
        #expect(pages.principal(ticket: adminTicket, pluginID: "spy", adminDigest: "digest-1") == nil)
        #expect(pages.principal(ticket: aliceTicket, pluginID: "spy", adminDigest: "digest-2")?.id == "alice")
    }
}
