// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel

/// The plugin SDK this binary carries (embedded at build time from PluginABI/, see BuildTools/EmbedSDK): the public
/// headers and a pkg-config file, installed under a prefix so that out-of-tree builds find them with
/// `pkg-config --cflags keel-plugin`, never with a path into Keel's checkout. Stateless; every call touches only
/// the files under the prefix it is given.
enum PluginSDK {
    static let packageName = "keel-plugin"
    private static let headerSource = "PluginABI/include/"
    private static let pcTemplate = "PluginABI/sdk/keel-plugin.pc.in"
    private static let rustCrateSource = "sdk/rust/keel-plugin/"
    private static let swiftPackageSource = "sdk/swift/KeelPluginKit/"
    private static let swiftKitSource = "Sources/KeelPluginKit/"

    /// The public headers as (path under `include/`, text): `keel/keel.h`, `keel/private/macros.h`, ... The module
    /// map that builds Keel itself is not part of the SDK.
    static var headers: [(path: String, text: String)] {
        EmbeddedFiles.files.compactMap { path, text in
            guard path.hasPrefix(headerSource + "keel/") else { return nil }
            return (String(path.dropFirst(headerSource.count)), text)
        }.sorted { $0.path < $1.path }
    }

    /// "1.1.0": the ABI of the embedded headers, read from version.h (so it cannot disagree with them).
    static var abiVersion: String {
        let text = EmbeddedFiles.files[headerSource + "keel/version.h"] ?? ""
        func number(_ name: String) -> String {
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ", omittingEmptySubsequences: true)
                if words.count >= 3, words[0] == "#define", words[1] == name { return String(words[2]) }
            }
            return "0"
        }
        return "\(number("KEEL_ABI_VERSION_MAJOR")).\(number("KEEL_ABI_VERSION_MINOR")).\(number("KEEL_ABI_VERSION_PATCH"))"
    }

    /// "1.1": what a manifest's `abi:` says for a plugin built against the embedded headers.
    static var abiMajorMinor: String { abiVersion.split(separator: ".").prefix(2).joined(separator: ".") }

    /// `/usr/local` for root (on pkg-config's default search path), else `~/.local`.
    static var defaultPrefix: String {
        if getuid() == 0 { return "/usr/local" }
        return (ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()) + "/.local"
    }

    /// The Rust SDK crate's sources as (path inside the crate, text): `Cargo.toml`, `src/lib.rs`, ...
    static var rustCrate: [(path: String, text: String)] {
        EmbeddedFiles.files.compactMap { path, text in
            path.hasPrefix(rustCrateSource) ? (String(path.dropFirst(rustCrateSource.count)), text) : nil
        }.sorted { $0.path < $1.path }
    }

    /// The Swift SDK package's files for an install under `prefix`, as (path inside the package, text): its
    /// `Package.swift`, the `CKeelABI` module, and `Sources/KeelPluginKit/`, the same sources Keel's own Swift plugins
    /// build with.
    ///
    /// `CKeelABI`'s module map names `prefix/include/keel/keel.h` itself (not a shim that includes it): a C target of
    /// the plugin's package whose header includes `<keel/keel.h>` (an interface's header) then imports that one
    /// module instead of declaring `keel_str` again in its own, so the kit's extensions of `keel_str` apply to the
    /// table's fields too (with a second declaration, a debug build did not see them). The headers' folder still
    /// reaches C targets through pkg-config.
    static func swiftPackage(prefix: String) -> [(path: String, text: String)] {
        let keelH = (includeDirectory(prefix: prefix) + "/keel/keel.h")
            .replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        return EmbeddedFiles.files.compactMap { path, text in
            if path.hasPrefix(swiftPackageSource) {
                return (String(path.dropFirst(swiftPackageSource.count)), text.replacingOccurrences(of: "@KEEL_H@", with: keelH))
            }
            if path.hasPrefix(swiftKitSource), path.hasSuffix(".swift") { return (path, text) }
            return nil
        }.sorted { $0.path < $1.path }
    }

    static func includeDirectory(prefix: String) -> String { prefix + "/include" }
    /// Where `install` puts the Rust SDK crate, which `keel new --lang rust` projects name as a path dependency.
    static func rustCrateDirectory(prefix: String) -> String { prefix + "/share/keel/rust/keel-plugin" }
    /// Where `install` puts the Swift SDK package, which `keel new --lang swift` projects name as a path dependency.
    static func swiftPackageDirectory(prefix: String) -> String { prefix + "/share/keel/swift/KeelPluginKit" }
    static func pcDirectory(prefix: String) -> String { prefix + "/lib/pkgconfig" }

    /// The pkg-config file for headers installed under `prefix`.
    static func pcFile(prefix: String) -> String {
        (EmbeddedFiles.files[pcTemplate] ?? "")
            .replacingOccurrences(of: "@PREFIX@", with: prefix)
            .replacingOccurrences(of: "@ABI_VERSION@", with: abiVersion)
            .replacingOccurrences(of: "@KEEL_VERSION@", with: Kernel.version)
    }

    /// Writes the headers to `prefix/include/keel/`, `prefix/lib/pkgconfig/keel-plugin.pc`, the Rust SDK crate to
    /// `rustCrateDirectory(prefix:)` and the Swift SDK package to `swiftPackageDirectory(prefix:)` (each file replaced
    /// whole, through a rename), and returns the paths written.
    /// - Throws: `CLIError` naming the file and the reason.
    @discardableResult
    static func install(prefix: String) throws -> [String] {
        var written: [String] = []
        for (path, text) in headers {
            let target = includeDirectory(prefix: prefix) + "/" + path
            try writeText(text, to: target)
            written.append(target)
        }
        for (path, text) in rustCrate {
            let target = rustCrateDirectory(prefix: prefix) + "/" + path
            try writeText(text, to: target)
            written.append(target)
        }
        // The kit's sources are replaced as a whole: a file an older SDK had and this one has not would still compile.
        let kitSources = swiftPackageDirectory(prefix: prefix) + "/Sources/KeelPluginKit"
        if FileManager.default.fileExists(atPath: kitSources) {
            do { try FileManager.default.removeItem(atPath: kitSources) } catch {
                throw CLIError("\(kitSources): cannot replace the older kit's sources: \(error.localizedDescription)")
            }
        }
        for (path, text) in swiftPackage(prefix: prefix) {
            let target = swiftPackageDirectory(prefix: prefix) + "/" + path
            try writeText(text, to: target)
            written.append(target)
        }
        let pc = pcDirectory(prefix: prefix) + "/\(packageName).pc"
        try writeText(pcFile(prefix: prefix), to: pc)
        written.append(pc)
        return written
    }

    enum InstallState: Equatable {
        case current
        case missing
        /// The files that differ from this binary's (an SDK from another Keel version).
        case stale([String])
    }

    /// Whether `prefix` holds exactly this binary's headers and pkg-config file, and its Rust crate and Swift package
    /// where they are installed.
    static func state(prefix: String) -> InstallState {
        let pc = pcDirectory(prefix: prefix) + "/\(packageName).pc"
        guard FileManager.default.fileExists(atPath: includeDirectory(prefix: prefix) + "/keel/keel.h") || FileManager.default.fileExists(atPath: pc) else {
            return .missing
        }
        var differing: [String] = []
        for (path, text) in headers {
            let target = includeDirectory(prefix: prefix) + "/" + path
            if FileManager.default.contents(atPath: target) != Data(text.utf8) { differing.append(target) }
        }
        if FileManager.default.contents(atPath: pc) != Data(pcFile(prefix: prefix).utf8) { differing.append(pc) }
        // The Rust crate and the Swift package, where installed (a prefix may hold an older SDK's copy of either).
        for (folder, files) in [(rustCrateDirectory(prefix: prefix), rustCrate), (swiftPackageDirectory(prefix: prefix), swiftPackage(prefix: prefix))]
        where FileManager.default.fileExists(atPath: folder) {
            for (path, text) in files where FileManager.default.contents(atPath: folder + "/" + path) != Data(text.utf8) {
                differing.append(folder + "/" + path)
            }
        }
        // A kit source this SDK does not have (an older one's) compiles into every project too.
        let kitSources = swiftPackageDirectory(prefix: prefix) + "/Sources/KeelPluginKit"
        let shipped = Set(swiftPackage(prefix: prefix).map(\.path))
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: kitSources)) ?? []).sorted()
        where !shipped.contains("Sources/KeelPluginKit/" + name) {
            differing.append(kitSources + "/" + name)
        }
        return differing.isEmpty ? .current : .stale(differing)
    }

    /// The prefix pkg-config resolves `keel-plugin` to (honouring PKG_CONFIG_PATH), or nil when it finds none.
    static func prefixFromPkgConfig() -> String? {
        guard let out = try? runTool(["pkg-config", "--variable=prefix", packageName]), out.status == 0 else { return nil }
        let prefix = out.output.trimmingCharacters(in: .whitespacesAndNewlines)
        return prefix.isEmpty ? nil : prefix
    }

    /// True when pkg-config searches `prefix/lib/pkgconfig` without help (its default path or PKG_CONFIG_PATH).
    static func pkgConfigSearches(prefix: String) -> Bool {
        var folders = (ProcessInfo.processInfo.environment["PKG_CONFIG_PATH"] ?? "").split(separator: ":").map(String.init)
        if let out = try? runTool(["pkg-config", "--variable", "pc_path", "pkg-config"]), out.status == 0 {
            folders += out.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").map(String.init)
        }
        let wanted = URL(fileURLWithPath: pcDirectory(prefix: prefix)).standardizedFileURL.path
        return folders.contains { URL(fileURLWithPath: $0).standardizedFileURL.path == wanted }
    }

    /// Writes `text` to `path` (making its folder) through a temporary file and a rename, so a reader never sees
    /// half a file. - Throws: `CLIError` naming the path and the reason.
    static func writeText(_ text: String, to path: String) throws {
        try makeFolder(URL(fileURLWithPath: path).deletingLastPathComponent().path)
        do { try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch { throw CLIError(error) }
    }

    /// Runs a tool found on PATH; its standard output and exit status (standard error is dropped).
    static func runTool(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
