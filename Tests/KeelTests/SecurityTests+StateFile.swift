// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Testing

extension SecurityTests {
    /// A plugin "toucher" with GET /touch: opens the file `$TOUCH_STATE` names, reads a little and closes it, as a
    /// plugin that reads or backs up the state would. A close of any descriptor of a file drops every POSIX lock the
    /// process holds on it: SQLite's lock on the state file among them.
    static let toucherSource = """
        #include <keel/keel.h>
        #include <fcntl.h>
        #include <stdlib.h>
        #include <unistd.h>
        static keel_status touch(void *u, const keel_http_request *q, keel_http_response *r) {
            (void)u; (void)q;
            const char *path = getenv("TOUCH_STATE");
            int fd = path ? open(path, O_RDONLY) : -1;
            if (fd >= 0) { char b[16]; if (read(fd, b, sizeof b) < 0) { /* nothing */ } close(fd); }
            return r->write(r, fd >= 0 ? "closed" : "none", fd >= 0 ? 6 : 4);
        }
        static keel_status act(const keel_host *h, keel_ctx *ctx) {
            const keel_host_http *http = h->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
            keel_route x = { sizeof x, KEEL_STR("GET"), KEEL_STR("/touch"), touch, NULL };
            return http->register_route(ctx, &x);
        }
        static const keel_plugin d = { sizeof d, KEEL_ABI_VERSION_INIT, KEEL_STR("toucher"), KEEL_STR("1.0.0"), 0, act, NULL, NULL };
        KEEL_PLUGIN_ENTRY(d)
        """

    /// Found by a security review (2026-12-08): after such a close, a CLI command beside the server took itself for
    /// the state's last user, removed the write-ahead log and its index, and the server wrote on into the removed ones:
    /// the next CLI command through the server's queue never reached it (10 s, then "did not take the command").
    @Test("a plugin that opens and closes the state file in the server's process does not cut the CLI off the server: the write-ahead log stays")
    func stateFileClosedByAPlugin() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("toucher")
        try Self.toucherSource.write(toFile: dir + "/toucher.c", atomically: true, encoding: .utf8)
        let lib = try TestEnvironment.buildPlugin(source: dir + "/toucher.c", name: "toucher")
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try TestEnvironment.makeBundle(in: f.plugins, folder: "toucher", manifest: TestEnvironment.manifest(
            id: "toucher", library: "libtoucher.so", capabilities: ["routes"]), library: lib)
        let keel = TestEnvironment.binPath + "/keel", at = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "toucher"] + at).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, environment: ["TOUCH_STATE": f.state])
        defer { server.stop() }
        for round in 0..<2 {
            #expect(try await server.request("GET", "/ext/toucher/touch").text == "closed")
            // Commands that open the state and close it again, as the last user they may now think they are.
            for _ in 0..<2 { #expect(try TestEnvironment.run(keel, ["plugins", "list"] + at).status == 0) }
            #expect(FileManager.default.fileExists(atPath: f.state + "-wal") && FileManager.default.fileExists(atPath: f.state + "-shm"),
                    "round \(round): the log and its index are still there")
            // A change through the server's queue reaches it, and the server and the CLI read one state.
            let change = try TestEnvironment.run(keel, ["plugins", round == 0 ? "disable" : "enable", "toucher"] + at)
            #expect(change.status == 0, "round \(round): \(change.stderr)")
            let listed = try TestEnvironment.run(keel, ["plugins", "list"] + at).stdout
            #expect(listed.contains(round == 0 ? "toucher 1.0.0  disabled" : "toucher 1.0.0  enabled"), "round \(round): \(listed)")
            if round == 0 {
                #expect(try await server.request("GET", "/ext/toucher/touch").status == 404)
                #expect(try TestEnvironment.run(keel, ["plugins", "enable", "toucher"] + at).status == 0)
            }
        }
    }

    /// Found in the last look at the day's change: `keel serve` reads the admin token after the plugins' activate ran,
    /// and read it from the environment as it was then, so an activate that `setenv`s it chose the admin token.
    @Test("a plugin that sets KEEL_ADMIN_TOKEN in its activate does not choose the admin token")
    func plantedAdminToken() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("planter")
        try """
            #define _POSIX_C_SOURCE 200809L
            #include <keel/keel.h>
            #include <stdlib.h>
            static keel_status act(const keel_host *h, keel_ctx *ctx) {
                (void)h; (void)ctx;
                setenv("KEEL_ADMIN_TOKEN", "planted-token", 1);
                return KEEL_OK;
            }
            static const keel_plugin d = { sizeof d, KEEL_ABI_VERSION_INIT, KEEL_STR("planter"), KEEL_STR("1.0.0"), 0, act, NULL, NULL };
            KEEL_PLUGIN_ENTRY(d)
            """.write(toFile: dir + "/planter.c", atomically: true, encoding: .utf8)
        let lib = try TestEnvironment.buildPlugin(source: dir + "/planter.c", name: "planter")
        let f = KernelFixture()
        try TestEnvironment.makeBundle(in: f.plugins, folder: "planter", manifest: TestEnvironment.manifest(
            id: "planter", library: "libplanter.so", capabilities: []), library: lib)
        let keel = TestEnvironment.binPath + "/keel"
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "planter", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        #expect(try await server.request("GET", "/api/v1/plugins", headers: ["Authorization": "Bearer planted-token"]).status == 401)
        #expect(try await server.request("GET", "/api/v1/plugins", admin: true).status == 200)
    }
}
