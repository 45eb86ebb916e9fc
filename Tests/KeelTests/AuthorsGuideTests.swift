// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelLoader
import Synchronization
import Testing

/// The author's guide (docs/authors-guide.md), checked as written: every ```c block compiles with the flags the
/// guide states, and every whole plugin that comes with a ```yaml plugin.yaml block is enabled in a real kernel,
/// which then serves its route.
@Suite("the author's guide's C samples compile and its plugins run", .scheduled)
struct AuthorsGuideTests {
    /// A code block of the guide: its info string ("c", "c fragment", "yaml"), text, and line.
    struct Block {
        var info: String
        var text: String
        var line: Int
    }

    /// A whole plugin of the guide: its C source and the plugin.yaml given just before it.
    struct Sample {
        var id: String
        var manifest: String
        var source: String
    }

    static let guidePath = TestEnvironment.repository.path + "/docs/authors-guide.md"

    /// Every fenced block of the guide, in order.
    static func blocks() throws -> [Block] {
        let text = try String(contentsOfFile: guidePath, encoding: .utf8)
        var blocks: [Block] = [], current: (info: String, line: Int, lines: [Substring])?
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let open = current {
                if line == "```" { blocks.append(Block(info: open.info, text: open.lines.joined(separator: "\n"), line: open.line)); current = nil }
                else { current?.lines.append(line) }
            } else if line.hasPrefix("```") {
                current = (String(line.dropFirst(3)), n + 1, [])
            }
        }
        return blocks
    }

    /// The whole plugins with a plugin.yaml block right before them.
    static func samples() throws -> [Sample] {
        let all = try blocks()
        return zip(all, all.dropFirst()).compactMap { yaml, c in
            guard yaml.info == "yaml", c.info == "c",
                  let idLine = yaml.text.split(separator: "\n").first(where: { $0.hasPrefix("id: ") }) else { return nil }
            return Sample(id: String(idLine.dropFirst(4)), manifest: yaml.text + "\n", source: c.text + "\n")
        }
    }

    /// Compiles `source` as the guide says (`buildPlugin` adds -fvisibility=hidden and caches the result).
    static func compile(_ source: String, name: String) throws -> String {
        let file = TestEnvironment.makeTemporaryDirectory("guide") + "/\(name).c"
        try source.write(toFile: file, atomically: true, encoding: .utf8)
        return try TestEnvironment.buildPlugin(source: file, name: name)
    }

    @Test("every ```c block of the guide compiles with -std=c11 -Wall -Werror -shared -fPIC")
    func everySampleCompiles() throws {
        let blocks = try Self.blocks()
        let code = blocks.filter { $0.info.hasPrefix("c") }
        #expect(code.count >= 10, "the guide has \(code.count) C blocks")
        // Only two kinds, so that a typo in the info string does not leave a block unchecked.
        for block in code { #expect(block.info == "c" || block.info == "c fragment", "line \(block.line): ```\(block.info)") }
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: code.count) { i in
            let block = code[i]
            let whole = block.info == "c"
            if whole != block.text.contains("KEEL_PLUGIN_ENTRY(") {
                failures.add("line \(block.line): a ```c block is a whole plugin with KEEL_PLUGIN_ENTRY; mark a fragment ```c fragment")
            }
            let source = (whole ? "" : "#include <keel/keel.h>\n") + block.text + "\n"
            do { _ = try Self.compile(source, name: "guide\(block.line)") } catch { failures.add("line \(block.line): \(error)") }
        }
        #expect(failures.all.isEmpty, "\(failures.all.joined(separator: "\n"))")
    }

    @Test("the guide's plugins are enabled in a kernel, which serves their routes as the guide says")
    func pluginsRun() async throws {
        let samples = try Self.samples()
        #expect(Set(samples.map(\.id)) == ["guide-hello", "guide-auth", "guide-clock", "guide-calc"])
        let dir = TestEnvironment.makeTemporaryDirectory("guide-kernel")
        for sample in samples {
            let library = try Self.compile(sample.source, name: sample.id)
            try TestEnvironment.makeBundle(in: dir + "/plugins", folder: sample.id, manifest: sample.manifest, library: library)
        }
        var configuration = KernelConfiguration(pluginsDirectory: dir + "/plugins", stateFile: dir + "/state.db")
        configuration.trustedCapabilities = Set(Capability.allCases) // the guide's auth plugin needs no grant here
        let kernel = try Kernel(configuration: configuration)
        await kernel.start()
        for sample in samples {
            do { try await kernel.enable(sample.id) } catch { Issue.record("\(sample.id): \(error)") }
        }
        #expect(try await kernel.plugin("guide-auth").menus == ["guide-auth.me"])

        func get(_ path: String, headers: [(name: String, value: String)] = []) throws -> String {
            let match = try #require(kernel.registry.snapshot.route(method: "GET", path: path), "no route for \(path)")
            var request = PluginRequest(method: "GET", path: path, routePath: match.routePath, parameters: match.parameters)
            request.headers = headers
            guard case let .success(response) = match.route.handler.handle(request) else { throw TestFailure("\(path) failed") }
            return String(decoding: response.body, as: UTF8.self)
        }
        #expect(try get("/ext/guide-hello/hello/ada") == "hello, ada\n")
        #expect(try get("/ext/guide-auth/me") == "anonymous\n")
        let sum = kernel.call("guide-calc", "add", arguments: [.text("2"), .text("40")], as: Kernel.operatorPrincipal)
        if case .success(.int(42)) = sum {} else { Issue.record("guide-calc add 2 40: \(sum)") }
        await kernel.shutdown()
    }
}

/// Messages from several threads.
private final class Failures: Sendable {
    private let messages = Mutex<[String]>([])
    func add(_ message: String) { messages.withLock { $0.append(message) } }
    var all: [String] { messages.withLock { $0 } }
}
