// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import Keel
import Synchronization
import Testing

/// Runs curl against the server and returns the raw response head and the body bytes.
func curl(_ url: String, _ arguments: [String] = []) throws -> (head: String, body: Data) {
    let dir = TestEnvironment.makeTemporaryDirectory("curl")
    let r = try TestEnvironment.run("/usr/bin/env", ["curl", "-sS", "-D", dir + "/head", "-o", dir + "/body"] + arguments + [url])
    guard r.status == 0 else { throw TestFailure("curl \(url): \(r.stderr)") }
    let head = (try? String(contentsOfFile: dir + "/head", encoding: .utf8)) ?? ""
    return (head.lowercased(), (try? Data(contentsOf: URL(fileURLWithPath: dir + "/body"))) ?? Data())
}

@Suite("bundle assets under /ext/<id>/assets/", .serialized, .scheduled)
struct AssetsTests {
    @Test("content types, strong ETags and 304, immutable hashed names, gzip, HEAD; hidden, escaping and oversized files refused; a changed file is served at once")
    func assets() async throws {
        let f = KernelFixture()
        let lib = try TestEnvironment.buildFixture("web", ["PLUGIN_ID=\"web\""])
        let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "web", manifest: TestEnvironment.manifest(
            id: "web", library: "libweb.so", capabilities: ["routes"]), library: lib)
        let assets = bundle + "/assets"
        try FileManager.default.createDirectory(atPath: assets + "/css", withIntermediateDirectories: true)
        let script = String(repeating: "export const greeting = 'hello';\n", count: 40)
        try script.write(toFile: assets + "/app.js", atomically: true, encoding: .utf8)
        try "body { color: teal }\n".write(toFile: assets + "/css/site.3f2a9c1e.css", atomically: true, encoding: .utf8)
        try "secret\n".write(toFile: assets + "/.env", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: assets + "/passwd", withDestinationPath: "/etc/passwd")
        let big = FileHandle(forWritingAtPath: { FileManager.default.createFile(atPath: assets + "/big.bin", contents: nil); return assets + "/big.bin" }())
        try big?.truncate(atOffset: 17 << 20)
        try big?.close()

        let keel = TestEnvironment.binPath + "/keel"
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "web", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let base = server.base + "/ext/web/assets"

        var r = try curl(base + "/app.js")
        #expect(r.head.hasPrefix("http/1.1 200"), "\(r.head)")
        #expect(r.head.contains("content-type: text/javascript; charset=utf-8"))
        #expect(r.head.contains("cache-control: no-cache"))
        #expect(r.head.contains("content-security-policy: sandbox"), "assets are plugin content: sandboxed like its routes")
        #expect(String(decoding: r.body, as: UTF8.self) == script)
        let etag = try #require(r.head.split(separator: "\r\n").first { $0.hasPrefix("etag: ") }).dropFirst(6)
        #expect(etag.count == 34, "a strong ETag from the content hash: \(etag)")

        r = try curl(base + "/app.js", ["-H", "If-None-Match: \(etag)"])
        #expect(r.head.hasPrefix("http/1.1 304") && r.body.isEmpty, "\(r.head)")
        r = try curl(base + "/app.js", ["-H", "Accept-Encoding: gzip"])
        #expect(r.head.contains("content-encoding: gzip") && r.body.count < script.utf8.count, "\(r.head)")
        r = try curl(base + "/app.js", ["-H", "Accept-Encoding: gzip", "--compressed"])
        #expect(String(decoding: r.body, as: UTF8.self) == script, "the gzip body decodes to the file")
        r = try curl(base + "/app.js", ["-I"])
        #expect(r.head.hasPrefix("http/1.1 200") && !String(decoding: r.body, as: UTF8.self).contains("greeting"), "HEAD sends no body")
        r = try curl(base + "/css/site.3f2a9c1e.css")
        #expect(r.head.contains("cache-control: public, max-age=31536000, immutable") && r.head.contains("content-type: text/css"))

        #expect(try curl(base + "/.env").head.hasPrefix("http/1.1 404"), "hidden names are not served")
        #expect(try curl(base + "/passwd").head.hasPrefix("http/1.1 404"), "a link leaving the folder is not followed")
        #expect(try curl(base + "/css").head.hasPrefix("http/1.1 404"), "a folder is not a file")
        #expect(try curl(base + "/nope.js").head.hasPrefix("http/1.1 404"))
        #expect(try curl(base + "/big.bin").head.hasPrefix("http/1.1 403"), "over the size limit")
        #expect(try curl(base + "/%2e%2e/plugin.yaml").head.hasPrefix("http/1.1 400"), "no way out through the path")

        // A changed file is served at once, with a new ETag.
        try "export const greeting = 'bonjour';\n".write(toFile: assets + "/app.js", atomically: true, encoding: .utf8)
        r = try curl(base + "/app.js", ["-H", "If-None-Match: \(etag)"])
        #expect(r.head.hasPrefix("http/1.1 200") && String(decoding: r.body, as: UTF8.self).contains("bonjour"), "\(r.head)")

        // Assets go with the plugin.
        #expect(try await server.request("POST", "/api/v1/plugins/web/disable", admin: true).status == 200)
        #expect(try curl(base + "/app.js").head.hasPrefix("http/1.1 404"))
    }

    @Test("an assets folder that leads outside the bundle serves nothing, and says so (one within it is followed); a FIFO as a bundle's plugin.yaml, library or config.schema.yaml is refused at once, never waited on")
    func linkedAssetsAndFIFOs() async throws {
        let f = KernelFixture()
        // A manifest-only bundle (no code runs) whose assets/ is a link to a folder outside it: until 2026-12-07 it
        // served /etc/shadow, /proc/self/environ (the admin token in the server's environment) or the state's folder
        // to anyone (a security review).
        let outside = TestEnvironment.makeTemporaryDirectory("outside")
        try "the state\n".write(toFile: outside + "/secret.txt", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: f.plugins + "/linked", withIntermediateDirectories: true)
        try "id: linked\nname: Linked\nversion: 1.0.0\nabi: \"1.0\"\n".write(toFile: f.plugins + "/linked/plugin.yaml", atomically: true, encoding: .utf8)
        #expect(symlink(outside, f.plugins + "/linked/assets") == 0)
        // FIFOs where a bundle's files go: each used to hang the kernel's thread (and the admin API, and a stop) in open.
        try f.fixtureBundle("fifolib")
        #expect(unlink(f.plugins + "/fifolib/libfifolib.so") == 0 && mkfifo(f.plugins + "/fifolib/libfifolib.so", 0o644) == 0)
        try f.fixtureBundle("fifoschema")
        #expect(mkfifo(f.plugins + "/fifoschema/config.schema.yaml", 0o644) == 0)
        // A link that stays within the bundle (a build's output folder) is followed.
        try FileManager.default.createDirectory(atPath: f.plugins + "/within/web/dist", withIntermediateDirectories: true)
        try "id: within\nname: Within\nversion: 1.0.0\nabi: \"1.0\"\n".write(toFile: f.plugins + "/within/plugin.yaml", atomically: true, encoding: .utf8)
        try "ok\n".write(toFile: f.plugins + "/within/web/dist/app.js", atomically: true, encoding: .utf8)
        #expect(symlink("web/dist", f.plugins + "/within/assets") == 0)
        try FileManager.default.createDirectory(atPath: f.plugins + "/fifoyaml", withIntermediateDirectories: true)
        #expect(mkfifo(f.plugins + "/fifoyaml/plugin.yaml", 0o644) == 0)

        let kernel = try f.kernel()
        /// `body`'s outcome ("ok" or its error), or nil when it has not ended within 20 s (it hangs: left behind).
        func within(_ body: @escaping @Sendable () async throws -> Void) async -> String? {
            let outcome = Mutex<String?>(nil)
            Task.detached {
                do { try await body(); outcome.withLock { $0 = "ok" } } catch { outcome.withLock { $0 = "\(error)" } }
            }
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline {
                if let done = outcome.withLock({ $0 }) { return done }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }
        #expect(await within { await kernel.start() } == "ok", "the scan waited on a FIFO plugin.yaml")
        let yaml = await within { try await kernel.enable("fifoyaml") }
        #expect(yaml?.contains("is not a regular file") == true, "\(yaml ?? "hung")")
        let library = await within { try await kernel.enable("fifolib") }
        #expect(library?.contains("not a regular file") == true, "\(library ?? "hung")")
        let schema = await within { try await kernel.enable("fifoschema") }
        #expect(schema?.contains("is not a regular file") == true, "\(schema ?? "hung")")
        #expect(await within { try await kernel.enable("linked") } == "ok")
        #expect(get(kernel, "/ext/linked/assets/secret.txt") == nil, "a linked assets/ folder is served")
        #expect(await within { try await kernel.enable("within") } == "ok")
        #expect(get(kernel, "/ext/within/assets/app.js")?.1 == "ok\n", "a link within the bundle is followed")
        #expect(f.log.lines.contains { $0.contains("linked/assets is a symbolic link that leads outside the bundle, or to no folder: its files are not served") },
                "\(f.log.lines.suffix(5))")
        await kernel.shutdown()
    }
}
