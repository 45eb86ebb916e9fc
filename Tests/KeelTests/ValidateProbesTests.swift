// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// The struct-size probes and the reload under calls of `keel plugins validate`, on hostile plugins built here.
@Suite("keel plugins validate: struct sizes and a reload under calls", .scheduled)
struct ValidateProbesTests {
    /// A plugin "bad" with one route, GET /ping; `extra` goes before activate, `body` into it before the route is
    /// registered, `cleanup` into deactivate and into activate's failure path; `size` is the descriptor's struct_size.
    static func source(extra: String = "", body: String = "", cleanup: String = "", size: String = "sizeof(keel_plugin)") -> String {
        """
        #define _POSIX_C_SOURCE 200809L
        #include <keel/keel.h>
        #include <fcntl.h>
        #include <stdio.h>
        #include <unistd.h>
        static keel_status ping(void *u, const keel_http_request *req, keel_http_response *res) {
            (void)u; (void)req;
            return res->write(res, "pong", 4);
        }
        \(extra)
        static keel_status activate(const keel_host *host, keel_ctx *ctx) {
            const keel_host_http *http = (const keel_host_http *)host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
            if (!http) return KEEL_ERR_UNSUPPORTED;
            \(body)
            keel_route route = { sizeof route, KEEL_STR("GET"), KEEL_STR("/ping"), ping, NULL };
            keel_status s = http->register_route(ctx, &route);
            if (s != KEEL_OK) { \(cleanup) }
            return s;
        }
        static keel_status deactivate(const keel_host *host, keel_ctx *ctx) { (void)host; (void)ctx; \(cleanup) return KEEL_OK; }
        static const keel_plugin d = { \(size), KEEL_ABI_VERSION_INIT, KEEL_STR("bad"), KEEL_STR_EMPTY, 0, activate, deactivate, NULL };
        KEEL_PLUGIN_ENTRY(d)
        """
    }

    static func validate(_ source: String, label: String) throws -> (status: Int32, stdout: String) {
        let dir = TestEnvironment.makeTemporaryDirectory(label)
        try source.write(toFile: dir + "/bad.c", atomically: true, encoding: .utf8)
        let lib = try TestEnvironment.buildPlugin(source: dir + "/bad.c", name: "bad")
        let bundle = try TestEnvironment.makeBundle(in: dir + "/plugins", folder: "bad", manifest: TestEnvironment.manifest(id: "bad", library: "libbad.so"), library: lib)
        let r = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "validate", bundle])
        return (r.status, r.stdout)
    }

    @Test("a well-behaved plugin passes the probes and the reload, and each is printed as a check")
    func wellBehavedPasses() throws {
        let r = try Self.validate(Self.source(), label: "probes-ok")
        #expect(r.status == 0, "\(r.stdout)")
        #expect(r.stdout.contains("ok   states a sane descriptor struct_size: 80 bytes for ABI 1.1"), "\(r.stdout)")
        #expect(r.stdout.contains("ok   passes the host struct sizes it accepts: no registration refused for its size"), "\(r.stdout)")
        #expect(r.stdout.contains("ok   serves every call while it is reloaded 3 times: ") && r.stdout.contains("across 4 generations, none failed"), "\(r.stdout)")
    }

    @Test("a plugin that starts a process as it loads does not hold the run: the run's process group is killed at its end")
    func helperProcessDoesNotHoldTheRun() throws {
        let forks = """
            #include <stdlib.h>
            __attribute__((constructor)) static void start_helper(void) {
                if (fork() == 0) { sleep(60); _exit(0); }
            }
            """
        let started = Date()
        let r = try Self.validate(Self.source(extra: forks), label: "probes-forks")
        #expect(r.status == 0, "\(r.stdout)")
        #expect(Date().timeIntervalSince(started) < 30, "the run waited for the plugin's helper process")
    }

    @Test("a descriptor whose struct_size is not a sizeof this host can know fails")
    func oversizedDescriptorFails() throws {
        let r = try Self.validate(Self.source(size: "sizeof(keel_plugin) + 16"), label: "probes-descriptor")
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stdout.contains("FAIL states a sane descriptor struct_size: descriptor struct_size 96 is larger than keel_plugin of ABI 1.1 (80 bytes): set it to sizeof(keel_plugin)"), "\(r.stdout)")
    }

    @Test("a registration the host refused for its struct_size fails, even when activate ignored the refusal")
    func refusedStructSizeFails() throws {
        // A keel_route claiming 8 bytes; the status is ignored and a correct route follows.
        let body = """
            keel_route short_route = { 8, KEEL_STR("GET"), KEEL_STR("/short"), ping, NULL };
            (void)http->register_route(ctx, &short_route);
            """
        let r = try Self.validate(Self.source(body: body), label: "probes-short")
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stdout.contains("FAIL passes the host struct sizes it accepts: 1 registration(s) refused, e.g. ")
                && r.stdout.contains("struct_size 8 is smaller than its ABI 1.0 size"), "\(r.stdout)")
    }

    @Test("a plugin that cannot be activated beside its running generation fails the reload check with the reason")
    func exclusiveResourceFailsReload() throws {
        // activate takes a lock file only one activation can hold (as a fixed port would be): a second copy,
        // activated while the first serves, fails.
        let extra = "static char lock_path[64];"
        let body = """
            snprintf(lock_path, sizeof lock_path, "/tmp/keel-validate-lock-%ld", (long)getpid());
            int fd = open(lock_path, O_CREAT | O_EXCL | O_WRONLY, 0600);
            if (fd < 0) { host->set_error(ctx, keel_cstr("the lock file is held by another activation")); return KEEL_ERR_CONFLICT; }
            close(fd);
            """
        let r = try Self.validate(Self.source(extra: extra, body: body, cleanup: "unlink(lock_path);"), label: "probes-reload")
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stdout.contains("ok   activate and deactivate 10 times"), "\(r.stdout)")
        #expect(r.stdout.contains("FAIL serves every call while it is reloaded 3 times: 1 failure(s) in ")
                && r.stdout.contains("reload 1: activating a new copy while the old one serves failed: ")
                && r.stdout.contains("the lock file is held by another activation"), "\(r.stdout)")
    }
}
