// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
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
}
