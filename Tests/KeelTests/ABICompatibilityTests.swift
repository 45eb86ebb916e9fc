// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelLoader
import Testing

@Suite("the C ABI", .scheduled)
struct ABICompatibilityTests {
    @Test("a plugin built from the frozen 1.0 headers loads and works in this host")
    func frozenOneZero() async throws {
        let frozen = TestEnvironment.fixtures + "/abi-1.0"
        let lib = try TestEnvironment.buildPlugin(source: frozen + "/plugin_v1_0.c", name: "abi10",
                                                  include: frozen + "/include", extraFlags: ["-pedantic"])
        let f = KernelFixture()
        try TestEnvironment.makeBundle(in: f.plugins, folder: "abi10",
                                       manifest: String(contentsOfFile: frozen + "/plugin.yaml", encoding: .utf8), library: lib)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("abi10")
        let info = try await kernel.plugin("abi10")
        #expect(info.routes == ["* /ext/abi10/v1/*"])
        #expect(info.menus == ["abi10.main"])
        #expect(info.authenticators == ["noop"] && info.authorizers == ["noop"])
        #expect(get(kernel, "/ext/abi10/v1/a/b")?.1 == "abi10 /v1/a/b")
        await kernel.shutdown()
    }

    @Test("the frozen 1.0 headers still match the current ones for every 1.0 declaration")
    func frozenLayoutStillChecks() throws {
        // layout_check.c pins 1.0's sizes and offsets; compiling it against the frozen copy proves the pins are 1.0's.
        let out = TestEnvironment.makeTemporaryDirectory("layout") + "/l.o"
        let r = try TestEnvironment.run("/usr/bin/env", ["cc", "-std=c11", "-Wall", "-Werror", "-pedantic", "-c",
                                                         "-I", TestEnvironment.fixtures + "/abi-1.0/include",
                                                         TestEnvironment.repository.path + "/PluginABI/layout_check.c", "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test("every header compiles on its own as C11 and C++ with warnings as errors", arguments: [
        "keel.h", "version.h", "status.h", "types.h", "host.h", "entry.h", "identity.h", "http.h", "menu.h", "auth.h", "config.h",
        "services.h", "commands.h", "health.h", "keel_embed.h",
    ])
    func headersStandAlone(header: String) throws {
        let dir = TestEnvironment.makeTemporaryDirectory("hdr")
        try "#include <keel/\(header)>\n".write(toFile: dir + "/t.c", atomically: true, encoding: .utf8)
        try "#include <keel/\(header)>\n".write(toFile: dir + "/t.cpp", atomically: true, encoding: .utf8)
        let c = try TestEnvironment.run("/usr/bin/env", ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic",
                                                         "-fsyntax-only", "-I", TestEnvironment.abiInclude, dir + "/t.c"])
        #expect(c.status == 0, "\(c.stderr)")
        let cpp = try TestEnvironment.run("/usr/bin/env", ["c++", "-std=c++11", "-Wall", "-Wextra", "-Werror",
                                                           "-fsyntax-only", "-I", TestEnvironment.abiInclude, dir + "/t.cpp"])
        #expect(cpp.status == 0, "\(cpp.stderr)")
    }

    @Test("the minimal plugin from keel.h's comment builds with plain cc and loads")
    func minimalPlugin() async throws {
        let header = try String(contentsOfFile: TestEnvironment.abiInclude + "/keel/keel.h", encoding: .utf8)
        let start = try #require(header.range(of: " * MINIMAL PLUGIN\n"))
        let end = try #require(header.range(of: " */\n#pragma once"))
        let source = header[start.upperBound..<end.lowerBound].split(separator: "\n")
            .map { $0.hasPrefix(" *   ") ? String($0.dropFirst(5)) : "" }.joined(separator: "\n")
        let dir = TestEnvironment.makeTemporaryDirectory("minimal")
        try source.write(toFile: dir + "/hello.c", atomically: true, encoding: .utf8)
        let lib = try TestEnvironment.buildPlugin(source: dir + "/hello.c", name: "minimal", extraFlags: ["-Wextra", "-pedantic"])
        let f = KernelFixture()
        try TestEnvironment.makeBundle(in: f.plugins, folder: "hello", manifest: TestEnvironment.manifest(id: "hello", library: "libminimal.so"), library: lib)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("hello")
        #expect(get(kernel, "/ext/hello/")?.1 == "hello\n")
        await kernel.shutdown()
    }

    @Test("every code sample in the headers and the README compiles as C and as C++, with warnings as errors")
    func samplesCompileAsCAndCxx() throws {
        let header = try String(contentsOfFile: TestEnvironment.abiInclude + "/keel/keel.h", encoding: .utf8)
        let start = try #require(header.range(of: " * MINIMAL PLUGIN\n"))
        let end = try #require(header.range(of: " */\n#pragma once"))
        let minimal = header[start.upperBound..<end.lowerBound].split(separator: "\n")
            .map { $0.hasPrefix(" *   ") ? String($0.dropFirst(5)) : "" }.joined(separator: "\n")
        // README: every C source written by a heredoc (`cat > x.c <<'EOF'` ... `EOF`).
        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        var samples = [("keel.h minimal plugin", minimal)]
        var current: (String, [Substring])?
        for line in readme.split(separator: "\n", omittingEmptySubsequences: false) {
            if var open = current {
                if line == "EOF" { samples.append((open.0, open.1.joined(separator: "\n"))); current = nil } else { open.1.append(line); current = open }
            } else if line.hasPrefix("cat > "), line.hasSuffix(".c <<'EOF'") {
                current = ("README " + line.dropFirst(6).prefix { $0 != " " }, [])
            }
        }
        #expect(samples.count >= 2, "the README's C walk-through was not found")
        // Each sample at the path its heredoc writes, in a folder of its own; a test (tests/...) gets the walk-through's
        // src/plugin.c written beside it, which it includes as "../src/plugin.c".
        let dir = TestEnvironment.makeTemporaryDirectory("samples")
        var files: [String] = []
        for (i, (name, source)) in samples.enumerated() {
            let path = name.hasPrefix("README ") ? String(name.dropFirst(7)) : "sample\(i).c"
            let file = dir + "/\(i)/" + path
            files.append(file)
            try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try source.write(toFile: file, atomically: true, encoding: .utf8)
            if path.hasPrefix("tests/"), i > 0, let plugin = samples[..<i].lastIndex(where: { $0.0 == "README src/plugin.c" }) {
                try FileManager.default.createDirectory(atPath: dir + "/\(i)/src", withIntermediateDirectories: true)
                try samples[plugin].1.write(toFile: dir + "/\(i)/src/plugin.c", atomically: true, encoding: .utf8)
            }
        }
        for ((name, _), file) in zip(samples, files) {
            for (compiler, flags) in [("cc", ["-std=c11"]), ("c++", ["-std=c++23", "-x", "c++"])] {
                let r = try TestEnvironment.run("/usr/bin/env", [compiler] + flags + ["-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                                                                                      "-I", TestEnvironment.abiInclude, file])
                #expect(r.status == 0, "\(name) as \(compiler): \(r.stderr)")
            }
        }
    }

    @Test("registration outside activate is refused with KEEL_ERR_WRONG_STATE")
    func registrationAfterActivate() async throws {
        // The fixture keeps its host and ctx; calling register_route later must not succeed.
        let source = """
            #include <keel/keel.h>
            static const keel_host *h; static keel_ctx *c;
            static keel_status ok(void *u, const keel_http_request *q, keel_http_response *r) { (void)u; (void)q; (void)r; return KEEL_OK; }
            static keel_status late(void *u, const keel_http_request *q, keel_http_response *r) {
                (void)u; (void)q;
                const keel_host_http *http = h->get_service(c, keel_cstr(KEEL_SERVICE_HTTP));
                keel_route x = { sizeof x, KEEL_STR("GET"), KEEL_STR("/late"), ok, NULL };
                keel_status s = http->register_route(c, &x);
                char b[8]; int n = s == KEEL_ERR_WRONG_STATE ? 5 : 2; b[0] = n == 5 ? 'w' : 'n'; (void)b;
                return r->write(r, n == 5 ? "wrong" : "no", (size_t)n);
            }
            static keel_status act(const keel_host *host, keel_ctx *ctx) {
                h = host; c = ctx;
                const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
                keel_route x = { sizeof x, KEEL_STR("GET"), KEEL_STR("/try"), late, NULL };
                return http->register_route(ctx, &x);
            }
            static const keel_plugin d = { sizeof d, KEEL_ABI_VERSION_INIT, KEEL_STR("late"), KEEL_STR("1.0.0"), 0, act, NULL, NULL };
            KEEL_PLUGIN_ENTRY(d)
            """
        let dir = TestEnvironment.makeTemporaryDirectory("late")
        try source.write(toFile: dir + "/late.c", atomically: true, encoding: .utf8)
        let lib = try TestEnvironment.buildPlugin(source: dir + "/late.c", name: "late")
        let f = KernelFixture()
        try TestEnvironment.makeBundle(in: f.plugins, folder: "late", manifest: TestEnvironment.manifest(id: "late", library: "liblate.so"), library: lib)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("late")
        #expect(get(kernel, "/ext/late/try")?.1 == "wrong")
        #expect(get(kernel, "/ext/late/late") == nil)
        await kernel.shutdown()
    }

    @Test("a failing handler is reported with the plugin's message, not a crash")
    func failingHandler() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("grumpy", defines: ["HANDLER_FAILS"])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("grumpy")
        let match = try #require(kernel.registry.snapshot.route(method: "GET", path: "/ext/grumpy/ping"))
        guard case let .failure(error) = match.route.handler.handle(PluginRequest(method: "GET", path: "/ext/grumpy/ping")) else {
            Issue.record("handler should fail")
            return
        }
        #expect(error.description == "plugin \"grumpy\": KEEL_ERR_INTERNAL: handler failed on purpose")
        await kernel.shutdown()
    }

    @Test("a handler with no ctx of its own reports its error with set_error(NULL, ...)")
    func handlerErrorWithoutContext() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("loner", defines: ["HANDLER_FAILS_NO_CTX"])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("loner")
        let match = try #require(kernel.registry.snapshot.route(method: "GET", path: "/ext/loner/ping"))
        guard case let .failure(error) = match.route.handler.handle(PluginRequest(method: "GET", path: "/ext/loner/ping")) else {
            Issue.record("handler should fail")
            return
        }
        #expect(error.description == "plugin \"loner\": KEEL_ERR_INTERNAL: failed without a ctx")
        // Outside a call, a NULL ctx reaches no one: the next failure does not inherit a stale message.
        await kernel.shutdown()
    }

    @Test("auth hooks: first principal wins, any deny wins, an erroring hook denies")
    func authChain() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("authn", defines: ["AUTH_MODE=1", "ROUTE_PATH=\"/a\""])
        try f.fixtureBundle("rules", defines: ["AUTHZ_MODE=2", "ROUTE_PATH=\"/b\""])
        try f.fixtureBundle("allowall", defines: ["AUTHZ_MODE=1", "ROUTE_PATH=\"/c\""])
        try f.fixtureBundle("broken-authz", defines: ["AUTHZ_MODE=3", "ROUTE_PATH=\"/d\""])
        try f.fixtureBundle("broken-authn", defines: ["AUTH_MODE=2", "ROUTE_PATH=\"/e\""])
        let kernel = try f.kernel()
        await kernel.start()
        for id in ["authn", "rules", "allowall"] { try await kernel.enable(id) }
        var s = kernel.registry.snapshot
        let request = PluginRequest(method: "GET", path: "/x", headers: [("authorization", "Bearer kim")])
        let principal = try s.authenticate(request).get()
        #expect(principal.id == "kim" && principal.tenant == "acme" && principal.roles == ["admin"] && principal.authenticatedBy == "authn")
        #expect(try s.authenticate(PluginRequest(method: "GET", path: "/x")).get().isAnonymous)
        #expect(s.authorize(principal, action: "read", resource: "doc").0 == .allow)
        #expect(s.authorize(principal, action: "read", resource: "secret-doc").0 == .deny)

        try await kernel.enable("broken-authz")
        s = kernel.registry.snapshot
        let (decision, reason) = s.authorize(principal, action: "read", resource: "doc")
        #expect(decision == .deny)
        #expect(reason?.contains("authorize hook \"rules\" failed") == true)

        try await kernel.disable("broken-authz")
        try await kernel.disable("authn")
        try await kernel.enable("broken-authn")
        s = kernel.registry.snapshot
        guard case let .failure(error) = s.authenticate(request) else { Issue.record("erroring hook did not deny"); return }
        #expect(error.message == "authenticate hook broke")
        await kernel.shutdown()
    }

    @Test("a write of a length near SIZE_MAX is refused with KEEL_ERR_LIMIT, never a trap that would end the host")
    func hugeWrite() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("huge", defines: ["HUGE_WRITE"])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("huge")
        // (size_t)INT64_MAX after one byte overflowed the host's `count + len` (a security review, 2026-12-07).
        let r = call(kernel, "/ext/huge/ping")
        #expect(r.status == 200 && r.text.hasPrefix("<huge ") && r.text.hasSuffix(" huge=8 8"), "\(r.text)")
        await kernel.shutdown()
    }

    @Test("an authenticate hook cannot name a caller, tenant or role with a control or invisible formatting character; log lines escape them")
    func principalTextIsPrintable() async throws {
        let f = KernelFixture()
        // "idp" names the caller after the bearer token, as a hook that decodes a token or a Basic password would.
        try f.fixtureBundle("idp", defines: ["AUTH_MODE=1", "ROUTE_PATH=\"/a\""])
        try f.fixtureBundle("strict", defines: ["AUTH_MODE=3", "ROUTE_PATH=\"/b\""])
        // A role with a comma would read as two to a proxied app (`X-Keel-Roles: viewer,admin`).
        try f.fixtureBundle("comma", defines: ["AUTH_MODE=1", "AUTH_EXTRA_ROLE=\"viewer,owner\"", "ROUTE_PATH=\"/c\""])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("idp")
        var s = kernel.registry.snapshot
        func who(_ token: String) -> String? {
            guard case let .success(p) = s.authenticate(PluginRequest(method: "GET", path: "/x", headers: [("authorization", "Bearer " + token)])) else { return nil }
            return p.isAnonymous ? "anonymous" : p.id
        }
        #expect(who("kim") == "kim")
        #expect(who("Zoë") == "Zoë", "letters beyond ASCII are names")
        #expect(who("می\u{200C}خواهم") == "می\u{200C}خواهم" && who("👩\u{200D}💻") == "👩\u{200D}💻",
                "the joiners real names and emoji are spelt with are names (printed escaped)")
        // A line break would forge an audit row in `keel audit` and a line in the host's log (a security review,
        // 2026-12-07); an escape sequence would rewrite the operator's terminal; a bidirectional override would
        // reverse what follows. set_identity refuses each, and this hook, which ignores the refusal, names no one.
        for hostile in ["mallory\n2026-12-07T10:59:00.000Z  cli root@local  enable evil  ok", "x\u{1B}]0;pwned\u{07}", "kim\u{202E}nimda",
                        "a\u{85}b", "tab\there", "del\u{7F}"] {
            #expect(who(hostile) == "anonymous", "\(hostile.debugDescription)")
        }
        try await kernel.disable("idp")
        try await kernel.enable("strict")
        s = kernel.registry.snapshot
        #expect(who("kim\u{2028}") == nil, "a hook that returns the refusal fails the request")
        try await kernel.disable("strict")
        try await kernel.enable("comma")
        s = kernel.registry.snapshot
        guard case let .success(named) = s.authenticate(PluginRequest(method: "GET", path: "/x", headers: [("authorization", "Bearer kim")])) else {
            Issue.record("the hook failed")
            return
        }
        #expect(named.id == "kim" && named.roles == ["admin"], "\(named.roles)")
        #expect(LogRecord(level: .warn, pluginID: "p", message: "a\nb\u{1B}[2K\u{202E}c").description
                == "keel: warning: [p] a\\nb\\u{1B}[2K\\u{202E}c")
        await kernel.shutdown()
    }
}
