// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

@Suite("keel serve over HTTP", .serialized, .scheduled)
struct HTTPTests {
    /// A server with the examples enabled, plus fixture plugins for the auth chain.
    func startServer(_ f: KernelFixture, enable: [String] = ["hello", "greeter"], grant: [String] = []) throws -> ServerProcess {
        for id in Set(enable + grant) { try TestEnvironment.grantSensitive(id, plugins: f.plugins, state: f.state) }
        for id in enable {
            let r = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "enable", id, "--plugins", f.plugins, "--state", f.state])
            #expect(r.status == 0, "\(r.stderr)")
        }
        return try ServerProcess(plugins: f.plugins, state: f.state)
    }

    @Test("plugin routes answer with the plugin's status, headers and body; unknown and disabled plugins are 404")
    func routes() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("echo", defines: ["ROUTE_PATH=\"/items/:id\""])
        try f.fixtureBundle("legacy", defines: ["ROUTE_PATH=\"=/legacy/items/:id\""], capabilities: ["routes", "route-prefix:/legacy"])
        #expect(try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "grant", "legacy", "route-prefix:/legacy",
                                                                            "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try startServer(f, enable: ["hello", "greeter", "echo", "legacy"])
        defer { server.stop() }

        let hello = try await server.request("GET", "/ext/hello/greet/ada")
        #expect(hello.status == 200 && hello.text == "hello, ada (as anonymous)\n")
        #expect(hello.headers["content-type"] == "text/plain; charset=utf-8")
        let keyed = try await server.request("GET", "/ext/hello/greet/ada", headers: ["Authorization": "Bearer hello-demo-key"])
        #expect(keyed.text == "hello, ada (as demo)\n")
        let echo = try await server.request("GET", "/ext/echo/items/42?x=1")
        #expect(echo.headers["x-plugin"] == "echo")
        // Plugin content is sandboxed wherever it is opened (its own tab too): an opaque origin, no sniffing.
        let sandbox = "sandbox allow-scripts allow-forms allow-popups allow-downloads"
        for answer in [hello, echo] {
            #expect(answer.headers["content-security-policy"] == sandbox && answer.headers["x-content-type-options"] == "nosniff",
                    "\(answer.headers)")
        }
        #expect(echo.text.contains("route=/items/42") && echo.text.contains("id=42"))
        let page = try await server.request("GET", "/ext/greeter/")
        #expect(page.headers["content-type"] == "text/html; charset=utf-8" && page.text.contains("<h1 id=\"greeting\">Hello, stranger!</h1>"))

        // A granted foreign prefix is served outside /ext/, through the same auth chain.
        let legacy = try await server.request("GET", "/legacy/items/9", headers: ["Authorization": "Bearer hello-demo-key"])
        #expect(legacy.status == 200 && legacy.text.contains("id=9") && legacy.text.contains("who=demo"))
        #expect(legacy.headers["content-security-policy"] == sandbox, "a foreign prefix is the plugin's content too: \(legacy.headers)")
        #expect(try await server.request("GET", "/legacy/other").status == 404)
        #expect(try await server.request("GET", "/healthz").status == 200)
        #expect(try await server.request("GET", "/ext/nobody/x").status == 404)
        #expect(try await server.request("GET", "/ext/hello/nothing-here").status == 404)
        #expect(try await server.request("POST", "/ext/hello/greet/ada").status == 404)
        #expect(try await server.request("GET", "/ext/hello/greet/ada").errorCode == nil)
        let disabled = try await server.request("POST", "/api/v1/plugins/echo/disable", admin: true)
        #expect(disabled.status == 200)
        let gone = try await server.request("GET", "/ext/echo/items/1")
        #expect(gone.status == 404 && gone.errorCode == "not-found")
        // An admin API path no route serves: the API's JSON error too; one it serves with other methods: 405, naming them.
        let unknown = try await server.request("GET", "/api/v1/nosuch", admin: true)
        #expect(unknown.status == 404 && unknown.errorCode == "not-found")
        let wrongMethod = try await server.request("PUT", "/api/v1/plugins", admin: true)
        #expect(wrongMethod.status == 405 && wrongMethod.errorCode == "method-not-allowed", "\(wrongMethod.text)")
        #expect(wrongMethod.headers["allow"] == "GET, HEAD", "\(wrongMethod.headers)")
        let getEnable = try await server.request("GET", "/api/v1/plugins/echo/enable", admin: true)
        #expect(getEnable.status == 405 && getEnable.text.contains("/api/v1/plugins/echo/enable takes POST, not GET"), "\(getEnable.text)")
        #expect(try await server.request("DELETE", "/api/v1/plugins/echo/enable/extra", admin: true).status == 404)
        // The host's other paths too: `/healthz` and `/metrics` were an empty 404 to a POST.
        for path in ["/healthz", "/metrics"] {
            let posted = try await server.request("POST", path)
            #expect(posted.status == 405 && posted.errorCode == "method-not-allowed" && posted.headers["allow"] == "GET, HEAD", "\(path): \(posted.text)")
        }
        #expect(try await server.request("POST", "/nosuch").status == 404)
        // HEAD of a host path a GET serves (a load balancer's health check) is that GET without its body; it was 404
        // while `Allow` named HEAD. The next answer on the connection is read as its own.
        let fd = try RawHTTP.connect(port: server.port)
        defer { close(fd) }
        RawHTTP.send(fd, "HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        let both = RawHTTP.readAll(fd)
        let answers = both.components(separatedBy: "HTTP/1.1 ")
        #expect(answers.count == 3 && answers[1].hasPrefix("200") && answers[1].hasSuffix("\r\n\r\n") && answers[2].hasPrefix("200"), "\(both)")
        #expect(answers.last?.hasSuffix("\"status\":\"ok\"}") == true, "\(both)")
        #expect(try await server.request("HEAD", "/api/v1/session").status == 200)
        // The event stream's HEAD opens no stream (as its GET, it subscribed for good).
        let events = try await server.request("HEAD", "/api/v1/events", admin: true)
        #expect(events.status == 200 && events.headers["content-type"]?.hasPrefix("text/event-stream") == true, "\(events.headers)")
        // An HTTP/1.1 request without Host, or any with two, is 400 bad-host (RFC 9112 3.2); both were answered, the
        // first Host being the one the DNS-rebinding check read. HTTP/1.0 may come without one.
        for head in ["GET /healthz HTTP/1.1\r\n", "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"] {
            let raw = try RawHTTP.connect(port: server.port)
            defer { close(raw) }
            RawHTTP.send(raw, head + "Connection: close\r\n\r\n")
            let refused = RawHTTP.readAll(raw)
            #expect(refused.hasPrefix("HTTP/1.1 400") && refused.contains(#""code":"bad-host""#), "\(refused)")
        }
        let old = try RawHTTP.connect(port: server.port)
        defer { close(old) }
        RawHTTP.send(old, "GET /healthz HTTP/1.0\r\n\r\n")
        #expect(RawHTTP.readAll(old).contains(" 200 "))
    }

    @Test("a request that ends its connection ends it after the answer however it says so (Close, close among other tokens, HTTP/1.0); one that does not keeps it for the next request")
    func connectionClose() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let server = try startServer(f, enable: ["hello"])
        defer { server.stop() }
        let closing = ["HTTP/1.1\r\nConnection: Close", "HTTP/1.1\r\nConnection: close, Upgrade\r\nUpgrade: h2c",
                       "HTTP/1.1\r\nConnection: TE, close\r\nTE: trailers", "HTTP/1.0", "HTTP/1.1\r\nConnection: close"]
        for (i, head) in closing.enumerated() {
            let fd = try RawHTTP.connect(port: server.port)
            defer { close(fd) }
            let path = i % 2 == 0 ? "/healthz" : "/ext/hello/greet/ada"
            let started = ContinuousClock.now
            RawHTTP.send(fd, "GET \(path) \(head)\r\nHost: 127.0.0.1\r\n\r\n")
            // Read to the end of the connection: within a second, not at the idle time-out (or the 10 s receive limit).
            let text = RawHTTP.readAll(fd)
            #expect(text.hasPrefix("HTTP/1.1 200 "), "\(head): \(text)")
            #expect(ContinuousClock.now - started < .seconds(3), "\(head): the server kept the connection open")
        }
        // Kept alive (HTTP/1.1 by default, HTTP/1.0 when it asks): two requests on one connection, still open after.
        for head in ["HTTP/1.1", "HTTP/1.0\r\nConnection: keep-alive"] {
            let fd = try RawHTTP.connect(port: server.port)
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 65536)
            for _ in 0..<2 {
                RawHTTP.send(fd, "GET /healthz \(head)\r\nHost: 127.0.0.1\r\n\r\n")
                let n = RawHTTP.receive(fd, &buffer)
                #expect(n > 0 && String(decoding: buffer[0..<max(n, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 200 "), "\(head)")
            }
            #expect(!RawHTTP.closedByPeer(fd, within: 1), "\(head): the connection stays open")
        }
    }

    @Test("a request NIO cannot parse (an unknown method, a header line without a colon) is answered 400 bad-request at once and its connection closed, first on its connection or later; it was left unanswered until the idle time-out when it came first")
    func unparsableRequest() async throws {
        let f = KernelFixture()
        let server = try startServer(f, enable: [])
        defer { server.stop() }
        for (request, says) in [("FOO /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "its method is not an HTTP method"),
                                ("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nNo colon here\r\n\r\n", "not valid HTTP/1.1")] {
            let fd = try RawHTTP.connect(port: server.port)
            defer { close(fd) }
            let started = ContinuousClock.now
            RawHTTP.send(fd, request)
            let text = RawHTTP.readAll(fd)
            #expect(text.hasPrefix("HTTP/1.1 400 ") && text.contains(#""code":"bad-request""#) && text.contains(says), "\(text)")
            #expect(ContinuousClock.now - started < .seconds(3), "the server held the connection: \(text)")
        }
        // After a good request on the same connection, Hummingbird's own handling answers (400, closed).
        let fd = try RawHTTP.connect(port: server.port)
        defer { close(fd) }
        RawHTTP.send(fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nFOO /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        let both = RawHTTP.readAll(fd)
        #expect(both.hasPrefix("HTTP/1.1 200 ") && both.contains("HTTP/1.1 400 "), "\(both)")
        #expect(try await server.request("GET", "/healthz").status == 200)
    }

    @Test("bad input: plugin errors are 500 without internals (503 for a handler's KEEL_ERR_UNAVAILABLE, called once), big bodies 413, malformed JSON 400, bad tokens 401")
    func badInput() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try f.fixtureBundle("grumpy", defines: ["HANDLER_FAILS"])
        let busyCalls = TestEnvironment.makeTemporaryDirectory("busy") + "/called"
        try f.fixtureBundle("busy", defines: ["HANDLER_UNAVAILABLE=\"\(busyCalls)\""])
        try f.fixtureBundle("upload", defines: ["ROUTE_METHOD=\"POST\""])
        let server = try startServer(f, enable: ["hello", "grumpy", "busy", "upload"])
        defer { server.stop() }

        let failed = try await server.request("GET", "/ext/grumpy/ping")
        #expect(failed.status == 500 && failed.errorCode == "plugin-error")
        #expect(!failed.text.contains("on purpose"))
        #expect(await waitFor(10) {
            server.errors.value.contains("[grumpy] GET /ext/grumpy/ping failed: plugin \"grumpy\": KEEL_ERR_INTERNAL: handler failed on purpose")
        })

        // A handler's own KEEL_ERR_UNAVAILABLE (its store is down) is called once, answered 503, its reason logged;
        // only the host's refusal of a stopping generation is tried again on the current one.
        let unavailable = try await server.request("GET", "/ext/busy/ping")
        #expect(unavailable.status == 503 && unavailable.errorCode == "plugin-unavailable" && !unavailable.text.contains("store"), "\(unavailable.text)")
        #expect(unavailable.text.contains("the plugin cannot handle the request now; retry"), "\(unavailable.text)")
        #expect((try? Data(contentsOf: URL(fileURLWithPath: busyCalls)))?.count == 1)
        #expect(await waitFor(10) {
            server.errors.value.contains("[busy] GET /ext/busy/ping: the plugin cannot serve it now: plugin \"busy\": KEEL_ERR_UNAVAILABLE: the item store is down")
        })

        let big = try await server.request("POST", "/ext/upload/ping", body: Data(count: 2 << 20))
        #expect(big.status == 413 && big.errorCode == "body-too-large")
        #expect(try await server.request("POST", "/ext/upload/ping", body: Data(count: 1000)).status == 200)

        let malformed = try await server.request("POST", "/api/v1/plugins/hello/disable", admin: true, body: Data("{\"cascade\": tr".utf8))
        #expect(malformed.status == 400 && malformed.errorCode == "malformed-json")
        #expect((malformed.json as? [String: [String: String]])?["error"]?["message"] == "malformed JSON body: not valid JSON (unexpected end of file)", "\(malformed.text)")
        let stray = try await server.request("POST", "/api/v1/plugins/hello/disable", admin: true, body: Data("{\"cascade\": x}".utf8))
        #expect((stray.json as? [String: [String: String]])?["error"]?["message"] == "malformed JSON body: not valid JSON (invalid value around character 12)",
                "\(stray.text)")
        // Plain words, never the decoder's own text ("Expected to decode Bool but found a string instead.").
        let mistyped = try await server.request("POST", "/api/v1/plugins/hello/disable", admin: true, body: Data(#"{"cascade": "yes"}"#.utf8))
        #expect((mistyped.json as? [String: [String: String]])?["error"]?["message"] == "malformed JSON body: cascade: expected true or false", "\(mistyped.text)")

        for headers in [[:], ["Authorization": "Bearer nope"], ["Authorization": "Basic YWRtaW46YWRtaW4="], ["Authorization": "Bearer hello-demo-key"]] {
            let r = try await server.request("GET", "/api/v1/plugins", headers: headers)
            #expect(r.status == 401 && r.errorCode == "unauthorized" && r.text.contains("authentication required"), "\(headers)")
        }
        #expect(try await server.request("GET", "/api/v1/plugins/ghost", admin: true).errorCode == "unknown-plugin")
        #expect(try await server.request("GET", "/ext/hello/greet/still-alive").status == 200)
    }

    @Test("a route handler's error status is answered as its meaning: a refusal its 4xx, UNSUPPORTED 501, LIMIT, INTERNAL and an unknown status 500; the plugin's words only in the log, and refusals never disable it")
    func handlerStatusAnswers() async throws {
        let f = KernelFixture()
        // status → (HTTP status, code)
        let cases: [(Int32, Int, String)] = [(2, 400, "bad-request"), (4, 403, "forbidden"), (5, 404, "not-found"), (3, 409, "conflict"),
                                             (7, 409, "conflict"), (6, 501, "not-implemented"), (8, 500, "plugin-error"),
                                             (1, 500, "plugin-error"), (77, 500, "plugin-error"), (200, 500, "plugin-error")]
        for (status, _, _) in cases { try f.fixtureBundle("st\(status)", defines: ["HANDLER_STATUS=\(status)"]) }
        // A handler that passes on the host's refusal of its own call (set_status(42): KEEL_ERR_INVALID_ARGUMENT) is
        // answered 500, not 400: the client did nothing wrong. One that returns another status than the host's is
        // answered as that status says. Both in a worker too.
        try f.fixtureBundle("passon", defines: ["HANDLER_STATUS=2", "HANDLER_ASKS_BADLY"])
        try f.fixtureBundle("ownword", defines: ["HANDLER_STATUS=5", "HANDLER_ASKS_BADLY"])
        try f.fixtureBundle("wpasson", defines: ["HANDLER_STATUS=2", "HANDLER_ASKS_BADLY"], extra: "isolation: process\n")
        // A refusal the handler dealt with, followed by a call that succeeded, is not what it passes on.
        try f.fixtureBundle("recovered", defines: ["HANDLER_STATUS=2", "HANDLER_ASKS_BADLY", "THEN_WELL"])
        let server = try startServer(f, enable: cases.map { "st\($0.0)" } + ["passon", "ownword", "wpasson", "recovered"])
        defer { server.stop() }
        for (status, http, code) in cases {
            let answer = try await server.request("GET", "/ext/st\(status)/ping")
            #expect(answer.status == http && answer.errorCode == code, "status \(status): \(answer.status) \(answer.text)")
            #expect(!answer.text.contains("refused with"), "the plugin's message reached the client: \(answer.text)")
            // Every error answer carries the request's id, the plugin's own 404 too (the host's 404 has none).
            #expect(answer.headers["x-request-id"]?.isEmpty == false, "\(answer.headers)")
        }
        #expect(try await server.request("GET", "/ext/st5/nothing").headers["x-request-id"] == nil, "the host's own 404 has no id")
        for id in ["passon", "wpasson"] {
            let passed = try await server.request("GET", "/ext/\(id)/ping")
            #expect(passed.status == 500 && passed.errorCode == "plugin-error", "\(id): \(passed.status) \(passed.text)")
        }
        #expect(try await server.request("GET", "/ext/ownword/ping").status == 404)
        #expect(try await server.request("GET", "/ext/recovered/ping").status == 400)
        #expect(await waitFor(10) {
            server.errors.value.contains(#"[st5] GET /ext/st5/ping: the plugin refused it (404): plugin "st5": KEEL_ERR_NOT_FOUND: refused with status 5"#)
                && server.errors.value.contains(#"[st6] GET /ext/st6/ping: the plugin refused it (501): plugin "st6": KEEL_ERR_UNSUPPORTED"#)
                && server.errors.value.contains(#"[st1] GET /ext/st1/ping failed: plugin "st1": KEEL_ERR_INTERNAL: refused with status 1"#)
                && server.errors.value.contains(#"[passon] GET /ext/passon/ping failed: the handler passed on the host's refusal of its call (set_status(42): an HTTP status is 100 to 599): plugin "passon": KEEL_ERR_INVALID_ARGUMENT"#)
                // `return 200;`: the likely mistake is said.
                && server.errors.value.contains("(unknown status 200: an HTTP status? calls return a keel_status such as KEEL_OK; a handler sets the HTTP status with res->set_status)")
        }, "\(server.errors.value)")
        // Past the failure threshold (20 in a row), a refusing plugin still serves; an internal error's does not.
        for _ in 0..<25 {
            _ = try await server.request("GET", "/ext/st2/ping")
            _ = try await server.request("GET", "/ext/st1/ping")
        }
        #expect(try await server.request("GET", "/ext/st2/ping").status == 400)
        #expect(await waitFor(10) { (try? await server.request("GET", "/ext/st1/ping").status) == 404 }, "st1 kept serving past 20 internal errors")
    }

    @Test("the admin API lists, enables and disables; changes survive a restart")
    func adminAPI() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        var server = try startServer(f, enable: ["hello"], grant: ["greeter"])
        let health = try await server.request("GET", "/healthz")
        #expect(health.status == 200 && (health.json as? [String: Any])?["active"] as? [String] == ["hello"])
        let list = try await server.request("GET", "/api/v1/plugins", admin: true)
        #expect((list.json as? [[String: Any]])?.map { $0["id"] as? String } == ["greeter", "hello"])
        let enabled = try await server.request("POST", "/api/v1/plugins/greeter/enable", admin: true)
        #expect(enabled.status == 200 && (enabled.json as? [String: Any])?["status"] as? String == "enabled")
        let routes = try await server.request("GET", "/api/v1/routes", admin: true)
        #expect((routes.json as? [[String: String]])?.map { $0["path"] ?? "" }.contains("/ext/greeter/hello/:name") == true)
        let refused = try await server.request("POST", "/api/v1/plugins/hello/disable", admin: true)
        #expect(refused.status == 409 && refused.errorCode == "dependency")
        let cascade = try await server.request("POST", "/api/v1/plugins/hello/disable", admin: true, body: Data(#"{"cascade": true}"#.utf8))
        #expect(cascade.status == 200)
        #expect(try await server.request("POST", "/api/v1/plugins/hello/enable", admin: true).status == 200)
        #expect(server.stop() == 0)

        server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        let after = try await server.request("GET", "/api/v1/plugins", admin: true)
        let states = (after.json as? [[String: Any]])?.map { "\($0["id"]!)=\($0["status"]!)" }
        #expect(states == ["greeter=disabled", "hello=enabled"])
        #expect(try await server.request("GET", "/ext/greeter/hello/x").status == 404)
    }

    @Test("a plugin enabled for some tenants only cannot make its callers admins, nor give them any role: neither the roles it claims nor an operator's admin binding of the id it names count; other bindings do")
    func tenantHookCannotGrantAdmin() async throws {
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel", at = ["--plugins", f.plugins, "--state", f.state]
        // "idp" answers "Bearer <id>" with tenant acme and the roles admin and viewer (AUTH_MODE=1).
        try f.fixtureBundle("idp", defines: ["AUTH_MODE=1", "AUTH_EXTRA_ROLE=\"viewer\"", "ROUTE_PATH=\"/me\""])
        try f.fixtureBundle("open", defines: ["MENU_ID=\"open.menu\"", "MENU_PERMISSION=\"open:view\""])
        #expect(try TestEnvironment.run(keel, ["tenants", "create", "acme"] + at).status == 0)
        try TestEnvironment.grantSensitive("idp", plugins: f.plugins, state: f.state)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "idp", "--tenant", "acme"] + at).status == 0)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "open"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        func menus() async throws -> [String] {
            let r = try await server.request("GET", "/api/v1/menus", headers: ["Authorization": "Bearer zoe", "X-Keel-Tenant": "acme"])
            return ((r.json as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }.sorted()
        }
        let me = try await server.request("GET", "/ext/idp/me", headers: ["Authorization": "Bearer zoe", "X-Keel-Tenant": "acme"])
        #expect(me.text.contains("who=zoe tenant=acme anon=0"), "\(me.text)")
        // The permission-gated entry needs a role that grants open:view; the hook's "admin" no longer does.
        #expect(try await menus() == [], "a tenant's plugin made its caller an admin")
        // Nor does an operator's binding of "zoe" as admin in acme: the hook can name any id, and the binding may be
        // meant for the zoe another (every-tenant) sign-in vouches for.
        #expect(try TestEnvironment.run(keel, ["tenants", "add-member", "acme", "zoe", "admin"] + at).status == 0)
        // A role that grants the permission itself does count (bound after the admin binding: once it shows, both are read).
        for args in [["roles", "create", "viewer"], ["roles", "grant", "viewer", "open:view", "--force"], ["tenants", "add-member", "acme", "ann", "viewer"]] {
            let r = try TestEnvironment.run(keel, args + at)
            #expect(r.status == 0, "\(args): \(r.stderr)")
        }
        let ann = ["Authorization": "Bearer ann", "X-Keel-Tenant": "acme"]
        func annMenus() async throws -> [String] {
            let r = try await server.request("GET", "/api/v1/menus", headers: ann)
            return ((r.json as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }.sorted()
        }
        let deadline = Date().addingTimeInterval(10)
        while try await annMenus() != ["open.menu"], Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(try await annMenus() == ["open.menu"])
        #expect(try await menus() == [], "the operator's admin binding reached a caller a tenant's plugin named")
        // Nor any role the hook claims ("viewer", which grants open:view): roles are the host's, not a tenant's plugin's.
        let roles = try await server.request("GET", "/api/v1/session", headers: ["Authorization": "Bearer zoe", "X-Keel-Tenant": "acme"])
        #expect((roles.json as? [String: Any])?["roles"] as? [String] == [], "\(roles.text)")
    }

    @Test("the auth chain: allow, deny, abstain and an erroring hook; menus filtered by permission")
    func authChain() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("authn", defines: ["AUTH_MODE=1", "ROUTE_PATH=\"/me\""])
        try f.fixtureBundle("rules", defines: ["AUTHZ_MODE=2", "MENU_ID=\"rules.secret\"", "MENU_PERMISSION=\"secret:view\""])
        try f.fixtureBundle("open", defines: ["MENU_ID=\"open.menu\"", "MENU_PERMISSION=\"open:view\""])
        try f.fixtureBundle("public", defines: ["MENU_ID=\"public.menu\"", "ROUTE_PATH=\"/secret\""])
        try f.fixtureBundle("allowall", defines: ["AUTHZ_MODE=1"])
        try f.fixtureBundle("broken", defines: ["AUTHZ_MODE=3"])
        // The authenticate hook puts its callers in tenant "acme": the operator creates it.
        #expect(try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["tenants", "create", "acme", "--state", f.state]).status == 0)
        let server = try startServer(f, enable: ["authn", "rules", "open", "public"], grant: ["allowall", "broken"])
        defer { server.stop() }

        // Abstain everywhere: plugin routes are open, and the caller is who the authenticate hook says.
        let me = try await server.request("GET", "/ext/authn/me", headers: ["Authorization": "Bearer zoe"])
        #expect(me.text.contains("who=zoe tenant=acme anon=0"))
        #expect(try await server.request("GET", "/ext/authn/me").text.contains("anon=1"))
        // Deny wins.
        #expect(try await server.request("GET", "/ext/rules/ping").status == 200)
        let denied = try await server.request("GET", "/ext/public/secret")
        #expect(denied.status == 403 && denied.errorCode == "forbidden")
        // Menus: permission entries need an allow; the admin sees everything.
        func menuIDs(admin: Bool) async throws -> [String] {
            let r = try await server.request("GET", "/api/v1/menus", admin: admin)
            return ((r.json as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }.sorted()
        }
        #expect(try await menuIDs(admin: false) == ["public.menu"])
        // The admin's role grants every permission, but a hook's deny still wins.
        #expect(try await menuIDs(admin: true) == ["open.menu", "public.menu"])
        #expect(try await server.request("POST", "/api/v1/plugins/allowall/enable", admin: true).status == 200)
        #expect(try await menuIDs(admin: false) == ["open.menu", "public.menu"])
        // A hook that fails denies every request it sees, admin or not: the chain fails closed.
        #expect(try await server.request("POST", "/api/v1/plugins/broken/enable", admin: true).status == 200)
        #expect(try await server.request("GET", "/ext/rules/ping").status == 403)
        let adminDenied = try await server.request("GET", "/api/v1/plugins", admin: true)
        #expect(adminDenied.status == 403)
        #expect(try await server.request("GET", "/healthz").status == 200)
    }

    @Test("keel plugins enable/disable/list while serve runs take effect in the server within a second")
    func cliAgainstServer() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let server = try startServer(f, enable: [], grant: ["hello", "greeter"])
        defer { server.stop() }
        let keel = TestEnvironment.binPath + "/keel"
        let common = ["--plugins", f.plugins, "--state", f.state]
        #expect(try await server.request("GET", "/ext/hello/greet/x").status == 404)
        let start = Date()
        let enable = try TestEnvironment.run(keel, ["plugins", "enable", "hello"] + common)
        #expect(enable.status == 0 && enable.stdout.hasPrefix("enabled hello 1.0.0"), "\(enable.stderr)")
        #expect(try await server.request("GET", "/ext/hello/greet/x").status == 200)
        #expect(Date().timeIntervalSince(start) < 5) // includes the first probe of the library; ~0.2 s in a release build
        let list = try TestEnvironment.run(keel, ["plugins", "list"] + common)
        #expect(list.stdout.contains("hello 1.0.0  enabled") && list.stdout.contains("greeter 1.0.0  installed"))
        let refused = try TestEnvironment.run(keel, ["plugins", "enable", "greeter", "--plugins", f.plugins, "--state", f.state])
        #expect(refused.status == 0)
        let blocked = try TestEnvironment.run(keel, ["plugins", "disable", "hello"] + common)
        #expect(blocked.status == 1 && blocked.stderr.contains("needed by enabled plugin(s) \"greeter\""))
        let disable = try TestEnvironment.run(keel, ["plugins", "disable", "hello", "--cascade"] + common)
        #expect(disable.status == 0)
        #expect(try await server.request("GET", "/ext/hello/greet/x").status == 404)
        #expect(try await server.request("GET", "/ext/greeter/hello/x").status == 404)
    }

    @Test("the admin token: made once and stored only as a hash; reset replaces it in the running server")
    func adminToken() async throws {
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel"
        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: ["KEEL_ADMIN_TOKEN": ""])
        let printed = server.output.value
        let range = try #require(printed.range(of: #"keel_[0-9a-f]{64}"#, options: .regularExpression))
        let token = String(printed[range])
        #expect(try await server.request("GET", "/api/v1/plugins", headers: ["Authorization": "Bearer \(token)"]).status == 200)
        let db = try Data(contentsOf: URL(fileURLWithPath: f.state))
        #expect(db.range(of: Data(token.utf8)) == nil)

        let reset = try TestEnvironment.run(keel, ["token", "reset", "--state", f.state], environment: ["KEEL_ADMIN_TOKEN": ""])
        let fresh = reset.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(fresh.hasPrefix("keel_") && fresh != token)
        #expect(try await waitFor(10) {
            try await server.request("GET", "/api/v1/plugins", headers: ["Authorization": "Bearer \(token)"]).status == 401
        })
        #expect(try await server.request("GET", "/api/v1/plugins", headers: ["Authorization": "Bearer \(fresh)"]).status == 200)
        #expect(server.stop() == 0)
        let again = try ServerProcess(plugins: f.plugins, state: f.state, environment: ["KEEL_ADMIN_TOKEN": ""])
        #expect(!again.output.value.contains("admin token"))
        again.stop()

        // A server given its token in $KEEL_ADMIN_TOKEN: a reset revokes that one too (the operator answering a leak
        // is told a new token; the old one must stop working), and the printed one is taken.
        let fromEnvironment = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { fromEnvironment.stop() }
        #expect(try await fromEnvironment.request("GET", "/api/v1/plugins", admin: true).status == 200)
        let revoked = try TestEnvironment.run(keel, ["token", "reset", "--state", f.state], environment: ["KEEL_ADMIN_TOKEN": ""])
        let replacement = revoked.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await waitFor(10) { try await fromEnvironment.request("GET", "/api/v1/plugins", admin: true).status == 401 })
        #expect(try await fromEnvironment.request("GET", "/api/v1/plugins", headers: ["Authorization": "Bearer \(replacement)"]).status == 200)
    }

    @Test("the console page and its assets are served")
    func console() async throws {
        let f = KernelFixture()
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        let page = try await server.request("GET", "/")
        #expect(page.status == 200 && page.headers["content-type"] == "text/html; charset=utf-8" && page.text.contains("<nav id=\"nav\""))
        #expect(try await server.request("GET", "/console.js").text.contains("/api/v1/menus"))
        #expect(try await server.request("GET", "/console.css").status == 200)
        // Its scripts run by a nonce made for each answer, not by origin: a plugin's script under /ext/ (same origin)
        // could not run in the console, which holds the admin token, even if some text there were read as a tag.
        func nonce(_ page: ServerProcess.Reply) -> String? {
            let policy = page.headers["content-security-policy"] ?? ""
            guard let range = policy.range(of: "script-src 'nonce-") else { return nil }
            return String(policy[range.upperBound...].prefix { $0 != "'" })
        }
        let first = try #require(nonce(page)), second = try #require(nonce(try await server.request("GET", "/")))
        #expect(first.count == 32 && first != second)
        let policy = page.headers["content-security-policy"] ?? ""
        #expect(!policy.contains("script-src 'self'") && policy.contains("object-src 'none'"), "\(policy)")
        let tags = page.text.components(separatedBy: "<script").count - 1
        #expect(tags >= 9 && page.text.components(separatedBy: "<script nonce=\"\(first)\" src=\"/console").count - 1 == tags, "\(page.text)")
    }
}
