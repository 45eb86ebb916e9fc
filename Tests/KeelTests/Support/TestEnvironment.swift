// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import KeelManifest
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

    /// This run's scratch folder, `keel-tests-<pid>` in the temporary folder: removed when the test process exits
    /// normally (`KEEL_TESTS_KEEP=1` keeps it, to look at), and at the start of a later run when its process is gone
    /// (a run that crashed). A run leaves tens of megabytes of libraries and state files there.
    static let scratch: String = {
        let temporary = NSTemporaryDirectory()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] where name.hasPrefix("keel-tests-") {
            guard let pid = pid_t(name.dropFirst("keel-tests-".count)), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(atPath: temporary + name) }
        }
        let dir = temporary + "keel-tests-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        if ProcessInfo.processInfo.environment["KEEL_TESTS_KEEP"] == nil {
            atexit { try? FileManager.default.removeItem(atPath: TestEnvironment.scratch) }
        }
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

    /// Runs a program and returns its exit status and output. Both pipes are drained at once, each on its own
    /// thread, so a child writing more than a pipe holds (64 KiB) to either stream never blocks on the other.
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
        let errData = Mutex(Data())
        let errDone = DispatchSemaphore(value: 0)
        let errReader = err.fileHandleForReading
        Thread.detachNewThread {
            let data = errReader.readDataToEndOfFile()
            errData.withLock { $0 = data }
            errDone.signal()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        errDone.wait()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self),
                String(decoding: errData.withLock { $0 }, as: UTF8.self))
    }

    /// Builds a C plugin with `cc` (against `include`, by default the current ABI headers) and returns the path of
    /// a private copy (`<fresh temporary folder>/lib<name>.so`): callers may change or delete it.
    ///
    /// Builds are cached across test runs in `$TMPDIR/keel-fixture-cache/<key>/lib<name>.so`, the key being a hash
    /// of the compiler arguments, the source file and every header in the include folder and beside the source, so
    /// changing any of them rebuilds. A build goes to a temporary name and is renamed into place, so tests building
    /// the same fixture in parallel (or two test processes) never see a half-written library.
    static func buildPlugin(source: String, name: String, defines: [String] = [], include: String? = nil,
                            extraFlags: [String] = []) throws -> String {
        let includeDir = include ?? abiInclude
        let flags = ["-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden",
                     "-I", includeDir] + defines.map { "-D" + $0 } + extraFlags
        let key = try fixtureKey(flags: flags, source: source, headerFolders: [includeDir, (source as NSString).deletingLastPathComponent])
        let cacheDir = fixtureCache + "/" + key
        let cached = cacheDir + "/lib\(name).so"
        if !FileManager.default.fileExists(atPath: cached) {
            try FileManager.default.createDirectory(atPath: cacheDir, withIntermediateDirectories: true)
            let temporary = cacheDir + "/.lib\(name).so.\(getpid()).\(counter.wrappingAdd(1, ordering: .relaxed).newValue)"
            let result = try run("/usr/bin/env", ["cc"] + flags + ["-o", temporary, source])
            guard result.status == 0 else {
                try? FileManager.default.removeItem(atPath: temporary)
                throw TestFailure("cc failed for \(name): \(result.stderr)")
            }
            guard rename(temporary, cached) == 0 else { throw TestFailure("\(cached): rename failed (errno \(errno))") }
        }
        let output = makeTemporaryDirectory("cc") + "/lib\(name).so"
        try FileManager.default.copyItem(atPath: cached, toPath: output)
        return output
    }

    /// `cc --version`, so that another compiler rebuilds the cache.
    static let compilerIdentity: String = (try? run("/usr/bin/env", ["cc", "--version"]).stdout) ?? ""

    /// Where compiled fixtures are kept between test runs.
    static let fixtureCache = NSTemporaryDirectory() + "keel-fixture-cache"

    /// SHA-256 (hex) over `cc --version`, the compiler `flags`, the `source` text and the name and text of every header (`.h`) found
    /// in `headerFolders` and their subfolders.
    static func fixtureKey(flags: [String], source: String, headerFolders: [String]) throws -> String {
        var hasher = SHA256()
        func add(_ label: String, _ data: Data) {
            hasher.update(data: Data("\(label)\u{0}\(data.count)\u{0}".utf8))
            hasher.update(data: data)
        }
        add("compiler", Data(compilerIdentity.utf8))
        add("flags", Data(flags.joined(separator: "\u{0}").utf8))
        add("source", try Data(contentsOf: URL(fileURLWithPath: source)))
        for folder in headerFolders {
            let headers = (FileManager.default.subpaths(atPath: folder) ?? []).filter { $0.hasSuffix(".h") }.sorted()
            for header in headers {
                add(folder + "/" + header, try Data(contentsOf: URL(fileURLWithPath: folder + "/" + header)))
            }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
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

    /// Grants, with the real `keel` command, the sensitive capabilities (`authenticate`, `authorize`) that plugin `id`
    /// asks for in its manifest under `plugins`, or `capabilities` when given. Fails when a grant is refused.
    static func grantSensitive(_ id: String, plugins: String, state: String, capabilities: [String]? = nil) throws {
        let wanted = try capabilities ?? sensitiveCapabilities(of: id, in: plugins)
        for capability in wanted {
            let r = try run(binPath + "/keel", ["plugins", "grant", id, capability, "--plugins", plugins, "--state", state])
            guard r.status == 0 else {
                throw TestFailure("keel plugins grant \(id) \(capability) failed (status \(r.status)): \(r.stderr)")
            }
        }
    }

    /// The sensitive capabilities plugin `id` declares: read from the manifest in `plugins` that names `id`.
    static func sensitiveCapabilities(of id: String, in plugins: String) throws -> [String] {
        let folders = try FileManager.default.contentsOfDirectory(atPath: plugins).sorted()
        for folder in folders {
            let path = plugins + "/" + folder + "/" + ManifestLoader.fileName
            guard FileManager.default.fileExists(atPath: path),
                  let (manifest, _) = try? ManifestLoader().load(path: path), manifest.id == id else { continue }
            return manifest.capabilities.filter(\.isSensitive).map(\.rawValue).sorted()
        }
        throw TestFailure("no manifest for plugin \"\(id)\" under \(plugins)")
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
