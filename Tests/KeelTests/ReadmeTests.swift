// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

/// The README's walk-throughs, run as written: each `sh` block of a section, in order, with bash, in a folder laid out
/// like the repository after `Scripts/examples.sh` (the examples staged and enabled in ./plugins, the build in
/// .build/debug, the headers in PluginABI/).
@Suite("the README's repository walk-through, as written", .serialized, .scheduled)
struct ReadmeRepositoryTests {
    /// The `sh` blocks of the README section whose heading starts with `heading`.
    static func blocks(under heading: String) throws -> [String] {
        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        guard let start = readme.range(of: "\n## " + heading) else { throw TestFailure("no README section \(heading)") }
        let rest = readme[start.upperBound...]
        let section = rest[..<(rest.range(of: "\n## ")?.lowerBound ?? rest.endIndex)]
        var blocks: [String] = [], current: [Substring]?
        for line in section.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line == "```sh" { current = [] } else if current != nil, line == "```" {
                blocks.append(current!.joined(separator: "\n")); current = nil
            } else { current?.append(line) }
        }
        return blocks
    }

    /// A folder like the repository root after `Scripts/examples.sh`.
    static func checkout() throws -> String {
        let dir = TestEnvironment.makeTemporaryDirectory("readme")
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/.build", withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: dir + "/.build/debug", withDestinationPath: TestEnvironment.binPath)
        try fm.createSymbolicLink(atPath: dir + "/PluginABI", withDestinationPath: TestEnvironment.repository.path + "/PluginABI")
        try TestEnvironment.stageExamples(into: dir + "/plugins")
        let keel = TestEnvironment.binPath + "/keel"
        for args in [["plugins", "grant", "hello", "authenticate"], ["plugins", "grant", "greeter", "authorize"],
                     ["plugins", "enable", "hello"], ["plugins", "enable", "greeter"]] {
            let r = try TestEnvironment.run(keel, args, currentDirectory: dir)
            #expect(r.status == 0, "\(args): \(r.stderr)")
        }
        return dir
    }

    func bash(_ script: String, in dir: String) throws -> (status: Int32, stdout: String, stderr: String) {
        var environment = ProcessInfo.processInfo.environment
        environment["KEEL_PLUGINS_DIR"] = nil
        environment["KEEL_STATE"] = nil
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-euo", "pipefail", "-c", script]
        process.environment = environment
        process.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = try TemporaryFile(), err = try TemporaryFile()
        process.standardOutput = out.handle
        process.standardError = err.handle
        try process.run()
        process.waitUntilExit()
        return (process.terminationStatus, out.text, err.text)
    }

    @Test("Embedding the kernel: every product the section tells an appliance to add is a library product of Package.swift")
    func embeddingProducts() throws {
        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        let start = try #require(readme.range(of: "\n## Embedding the kernel"))
        let rest = readme[start.upperBound...]
        let section = String(rest[..<(rest.range(of: "\n## ")?.lowerBound ?? rest.endIndex)])
        let package = try String(contentsOfFile: TestEnvironment.repository.path + "/Package.swift", encoding: .utf8)
        // "The `Keel` library product", "add the `KeelHTTP` product", `.product(name: "Keel", ...)`.
        let named = section.matches(of: /`(\w+)`( library)? product/).map { String($0.output.1) }
            + section.matches(of: /\.product\(name: "(\w+)"/).map { String($0.output.1) }
        #expect(Set(named).isSuperset(of: ["Keel", "KeelHTTP"]), "\(named)")
        for name in Set(named) {
            #expect(package.contains(".library(name: \"\(name)\""), "README names product \(name), which Package.swift does not offer")
        }
    }

    @Test("Repositories: publish the examples signed, install them into a second host, uninstall")
    func repositories() throws {
        let dir = try Self.checkout()
        let blocks = try Self.blocks(under: "Repositories")
        #expect(blocks.count == 1)
        let r = try bash(blocks.joined(separator: "\n"), in: dir)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("greeter 1.0.0  [main]"), "\(r.stdout)")
        #expect(r.stdout.contains("installed hello 1.0.0") && r.stdout.contains("installed greeter 1.0.0"), "\(r.stdout)")
        #expect(r.stdout.contains("signed by acme"), "\(r.stdout)")
        #expect(r.stdout.contains("uninstalled greeter"))
    }
}

/// Output of a child process, through a file: no pipe to fill up and deadlock on.
final class TemporaryFile {
    let path: String
    let handle: FileHandle

    init() throws {
        path = TestEnvironment.makeTemporaryDirectory("out") + "/out"
        FileManager.default.createFile(atPath: path, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: path) else { throw TestFailure("\(path): cannot be written") }
        self.handle = handle
    }

    var text: String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
    deinit { try? handle.close() }
}

extension ReadmeRepositoryTests {
    @Test("Commands: the 10-line C plugin builds, enables, and keel call / keel commands answer as the README says")
    func commands() throws {
        let dir = try Self.checkout()
        let blocks = try Self.blocks(under: "Commands")
        #expect(blocks.count == 1)
        let r = try bash(blocks.joined(separator: "\n"), in: dir)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("enabled calc 1.0.0"), "\(r.stdout)")
        #expect(r.stdout.contains("\n42\nhello, Ada\n"), "\(r.stdout)")
        #expect(r.stderr.contains("keel: error: argument 1 of calc.add: \"two\" is not an i64"), "\(r.stderr)")
        #expect(r.stdout.contains("calc add (i64, i64) -> i64  [calc.math:run]\n  Adds two numbers.\ncalc greet (str) -> status(str)  [admins]\n  Greets someone.\n"), "\(r.stdout)")
    }
}
