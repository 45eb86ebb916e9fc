// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization
import Testing

/// Paths and helpers shared by the tests: the repository, the build folder, C fixtures built with `cc`, and
/// temporary plugin folders with real bundles in them.
enum TestEnvironment {
    static let repository: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var abiInclude: String { repository.appendingPathComponent("PluginABI/include").path }
    static var fixtures: String { repository.appendingPathComponent("Tests/KeelTests/Fixtures").path }

    /// The folder holding `keel` and the example plugin libraries built by `swift build`.
    static var binPath: String {
        let candidates = [
            URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent().path,
            repository.appendingPathComponent(".build/debug").path,
        ]
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/libhello-c.so") } ?? candidates[1]
    }

    static func builtLibrary(_ name: String) throws -> String {
        let path = binPath + "/" + name
        guard FileManager.default.fileExists(atPath: path) else {
            throw TestFailure("\(path) is missing: run `swift build` before `swift test`")
        }
        return path
    }

    static let scratch: String = {
        let dir = NSTemporaryDirectory() + "keel-tests-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }()

    private static let counter = Atomic<Int>(0)

    /// A fresh empty folder under the scratch folder.
    static func makeTemporaryDirectory(_ label: String = "t") -> String {
        let n = counter.wrappingAdd(1, ordering: .relaxed).newValue
        let dir = scratch + "/\(label)-\(n)"
        try? FileManager.default.removeItem(atPath: dir)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Runs a program and returns its exit status and output.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                    currentDirectory: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    /// Builds a C plugin with `cc` (against `include`, by default the current ABI headers) into a uniquely named
    /// shared object and returns its path.
    static func buildPlugin(source: String, name: String, defines: [String] = [], include: String? = nil,
                            extraFlags: [String] = []) throws -> String {
        let dir = makeTemporaryDirectory("cc")
        let output = dir + "/lib\(name).so"
        let args = ["-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden",
                    "-I", include ?? abiInclude] + defines.map { "-D" + $0 } + extraFlags + ["-o", output, source]
        let result = try run("/usr/bin/env", ["cc"] + args)
        guard result.status == 0 else { throw TestFailure("cc failed for \(name): \(result.stderr)") }
        return output
    }

    /// Builds `fixture.c` with `defines`.
    static func buildFixture(_ name: String, _ defines: [String] = []) throws -> String {
        try buildPlugin(source: fixtures + "/plugins/fixture.c", name: name, defines: defines)
    }

    /// Writes a bundle folder `pluginsDir/folder` with `manifest` and a copy of `library` (as `libraryName`).
    @discardableResult
    static func makeBundle(in pluginsDir: String, folder: String, manifest: String, library: String?,
                           libraryName: String? = nil) throws -> String {
        let dir = pluginsDir + "/" + folder
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try manifest.write(toFile: dir + "/plugin.yaml", atomically: true, encoding: .utf8)
        if let library {
            let name = libraryName ?? (library as NSString).lastPathComponent
            try? FileManager.default.removeItem(atPath: dir + "/" + name)
            try FileManager.default.copyItem(atPath: library, toPath: dir + "/" + name)
        }
        return dir
    }

    /// A manifest for a fixture plugin.
    static func manifest(id: String, version: String = "1.0.0", library: String, abi: String = "1.0",
                         capabilities: [String] = ["routes", "menus", "authenticate", "authorize"],
                         extra: String = "") -> String {
        """
        id: \(id)
        name: Test \(id)
        version: \(version)
        abi: "\(abi)"
        library: \(library)
        capabilities: [\(capabilities.joined(separator: ", "))]
        \(extra)
        """
    }

    /// Grants `authenticate` and `authorize` (as far as the plugin asks for them) with the real `keel` command.
    static func grantSensitive(_ id: String, plugins: String, state: String) throws {
        for capability in ["authenticate", "authorize"] {
            _ = try run(binPath + "/keel", ["plugins", "grant", id, capability, "--plugins", plugins, "--state", state])
        }
    }

    /// Stages the example bundles from Plugins/ (manifest + library from the build folder) into `pluginsDir`.
    static func stageExamples(into pluginsDir: String) throws {
        let hello = try makeBundle(in: pluginsDir, folder: "hello-c",
                                   manifest: String(contentsOfFile: repository.path + "/Plugins/hello-c/plugin.yaml", encoding: .utf8),
                                   library: builtLibrary("libhello-c.so"))
        try? FileManager.default.removeItem(atPath: hello + "/config.schema.yaml")
        try FileManager.default.copyItem(atPath: repository.path + "/Plugins/hello-c/config.schema.yaml",
                                         toPath: hello + "/config.schema.yaml")
        try makeBundle(in: pluginsDir, folder: "greeter-swift",
                       manifest: String(contentsOfFile: repository.path + "/Plugins/greeter-swift/plugin.yaml", encoding: .utf8),
                       library: builtLibrary("libgreeter-swift.so"))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Collects log records for assertions.
final class LogCollector: Sendable {
    private let records = Mutex<[String]>([])
    func append(_ line: String) { records.withLock { $0.append(line) } }
    var lines: [String] { records.withLock { $0 } }
}
