// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import KeelManifest

extension KeelCommand {
    /// `keel new ID --lang c|swift|rust [--dir DIR]`: a plugin project outside Keel's checkout, from the templates
    /// embedded in this binary (Templates/<lang>/ in Keel's repository).
    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a plugin project (C, Swift or Rust) that builds into a ready bundle with `make`.",
            discussion: """
                `make` builds with the language's tool (cc with pkg-config, swift build, cargo build) and assembles \
                bundle/ID/ (plugin.yaml + library, no sources); `make test` runs the project's own tests. C and Swift \
                need the plugin SDK on pkg-config's path: `keel sdk install`; Rust needs its crate and Swift the \
                KeelPluginKit package, which `keel sdk install` installs too (the project's Cargo.toml or Package.swift \
                names the path `keel sdk path` resolves to, here and now).
                """)

        @Argument(help: "The plugin id (lowercase letters, digits, '-', '_', '.'; starts with a letter or digit).") var id: String
        @Option(help: "The language: c, swift or rust.") var lang: ProjectTemplate.Language
        @Option(help: "The project folder to create (default: ./ID); it must not exist or be empty.") var dir: String?

        func validate() throws {
            guard !Manifest.reservedIDs.contains(id) else {
                throw ValidationError("\"\(id)\" is the host's own name: no plugin may take it; choose another id")
            }
            guard Manifest.isValidID(id) else {
                throw ValidationError("\"\(id)\" is not a plugin id: use 1 to 64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit")
            }
        }

        func run() async throws {
            try await reporting {
                let folder = absolute(dir ?? id)
                var template = ProjectTemplate(language: lang, id: id)
                if lang == .rust { template.rustCrate = try ProjectTemplate.installedRustCrate() }
                if lang == .swift { template.swiftPackage = try ProjectTemplate.installedSwiftPackage() }
                let written = try template.write(into: folder)
                print("created \(folder) (\(lang.rawValue) plugin \(id), \(written.count) files)")
                if (try? PluginSDK.runTool(["pkg-config", "--exists", PluginSDK.packageName]).status) != 0 {
                    print("pkg-config cannot find keel-plugin: run `keel sdk install` (and set PKG_CONFIG_PATH as it says)")
                } else if let prefix = PluginSDK.prefixFromPkgConfig(), case .stale = PluginSDK.state(prefix: prefix) {
                    // The project builds against what is installed: an SDK of another keel version says so now,
                    // not as a build error later.
                    print("note: the SDK in \(prefix) is not this keel's (`keel sdk path` lists what differs); `keel sdk install --prefix \(prefix)` updates it")
                }
                print("next: cd \(folder) && make && make test   # builds bundle/\(id)/")
            }
        }
    }
}

/// One of the project templates this binary carries, rendered for a plugin id. Placeholders: `{{id}}` the plugin
/// id, `{{ident}}` the id as an identifier (library, crate and product names: `-` and `.` become `_`), `{{abi}}`
/// the ABI of the embedded headers ("1.1"), `{{keel_plugin_crate}}` the installed Rust SDK crate's folder,
/// `{{keel_plugin_kit}}` the installed Swift SDK package's. A template file named `gitignore` is written as
/// `.gitignore`.
struct ProjectTemplate {
    enum Language: String, CaseIterable, ExpressibleByArgument {
        case c, swift, rust
    }

    var language: Language
    var id: String
    /// The Rust SDK crate's folder, for a Rust project's Cargo.toml.
    var rustCrate = ""
    /// The Swift SDK package's folder, for a Swift project's Package.swift.
    var swiftPackage = ""

    /// The Rust SDK crate under the prefix `keel sdk path` resolves to (pkg-config's, else the default prefix).
    /// - Throws: `CLIError` naming the folder and the fix when no crate is installed there.
    static func installedRustCrate() throws -> String {
        try installed("Rust SDK crate", PluginSDK.rustCrateDirectory, holding: "Cargo.toml")
    }

    /// The Swift SDK package (KeelPluginKit) under the prefix `keel sdk path` resolves to.
    /// - Throws: `CLIError` naming the folder and the fix when no package is installed there.
    static func installedSwiftPackage() throws -> String {
        try installed("Swift SDK package", PluginSDK.swiftPackageDirectory, holding: "Package.swift")
    }

    /// The folder `folder(prefix)` under the prefix `keel sdk path` resolves to (pkg-config's, else the default
    /// prefix), when it holds `file`. - Throws: `CLIError` naming the folder and the fix.
    private static func installed(_ what: String, _ folder: (String) -> String, holding file: String) throws -> String {
        let found = PluginSDK.prefixFromPkgConfig()
        let prefix = absolute(found ?? PluginSDK.defaultPrefix)
        let path = folder(prefix)
        guard FileManager.default.fileExists(atPath: path + "/" + file) else {
            let looked = found == nil ? " (pkg-config finds no keel-plugin on its path, so the default prefix was looked in)" : ""
            throw CLIError("no \(what) in \(path)\(looked); run `keel sdk install --prefix \(prefix)` (and set PKG_CONFIG_PATH as it says)")
        }
        return path
    }

    var ident: String { String(id.map { $0 == "-" || $0 == "." ? "_" : $0 }) }

    /// (path in the project, rendered text), sorted by path.
    var files: [(path: String, text: String)] {
        let root = "Templates/\(language.rawValue)/"
        return EmbeddedFiles.files.compactMap { path, text in
            guard path.hasPrefix(root) else { return nil }
            var relative = String(path.dropFirst(root.count))
            if relative == "gitignore" { relative = ".gitignore" }
            return (relative, render(text))
        }.sorted { $0.path < $1.path }
    }

    func render(_ text: String) -> String {
        text.replacingOccurrences(of: "{{id}}", with: id)
            .replacingOccurrences(of: "{{ident}}", with: ident)
            .replacingOccurrences(of: "{{abi}}", with: PluginSDK.abiMajorMinor)
            .replacingOccurrences(of: "{{keel_plugin_crate}}", with: rustCrate)
            .replacingOccurrences(of: "{{keel_plugin_kit}}", with: swiftPackage)
    }

    /// Writes the project into `folder`, which must not exist or be empty; returns the paths written.
    /// - Throws: `CLIError` naming the folder or file and the reason.
    func write(into folder: String) throws -> [String] {
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: folder), !existing.isEmpty {
            throw CLIError("\(folder): already exists and is not empty; pass --dir with a new folder")
        }
        try makeFolder(folder)
        var written: [String] = []
        for (path, text) in files {
            try PluginSDK.writeText(text, to: folder + "/" + path)
            written.append(folder + "/" + path)
        }
        return written
    }
}
