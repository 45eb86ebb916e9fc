// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel
import KeelManifest
import KeelSystem

extension KeelCommand.Plugins {
    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a bundle folder, a bare .so or an installed plugin and print its id, version, ABI and capabilities.",
            discussion: """
                Runs the checks and a trial activation in a child process (so a hostile file cannot take this command \
                down), without touching the state file. Exits 1 with a one-line reason for a bad file.
                """)

        // Accepted anywhere, as on every command, but not shown: inspecting touches neither the state nor the plugins.
        @OptionGroup(visibility: .hidden) var options: GlobalOptions
        @Argument(help: "A bundle folder (with plugin.yaml), a shared object, or the id of a plugin in the plugins folder.",
                  completion: .file()) var path: String
        @Flag(help: "Print JSON instead of text.") var json = false
        @Option(help: "A configuration (YAML) for the trial activation, checked against the bundle's config.schema.yaml, as `keel plugins config` gives it to the host.",
                completion: .file()) var config: String?

        func run() async throws {
            try await reporting {
                let folder = try Self.bundleFolder(naming: path, in: options.pluginsDirectory)
                let path = folder ?? path
                let config = config
                let report = try await withProgress("probing \(path) in a child process (at most 10 s)") { try Self.probe(path, config: config) }
                if json { try printJSON(report); return }
                // An empty list says so, not a bare label.
                func listed(_ items: [String]) -> String { items.isEmpty ? "none" : items.joined(separator: ", ") }
                print("""
                    id:           \(report.id)\(report.name.map { "  (\($0))" } ?? "")
                    version:      \(report.version)
                    abi:          \(report.abi)\(report.unloadSafe ? " (unload-safe)" : "")\(report.reactivatable ? " (reactivatable)" : "")
                    library:      \(report.library.isEmpty ? "none (manifest only)" : report.library)
                    runs:         \(report.runningText)\(report.activation != nil && folder != nil ? " (as plugin.yaml says; where it runs on this host: keel plugins list)" : "")
                    capabilities: \(listed(report.capabilities))
                    routes:       \(listed(report.routes))
                    menus:        \(listed(report.menus))
                    hooks:        \(listed(report.authenticators.map { "authenticate \($0)" } + report.authorizers.map { "authorize \($0)" }))
                    """)
                if !report.services.isEmpty { print("provides:     " + report.services.joined(separator: ", ")) }
                if !report.consumes.isEmpty { print("consumes:     " + report.consumes.joined(separator: ", ")) }
                if !report.commands.isEmpty { print("commands:     " + report.commands.joined(separator: ", ")) }
                if !report.pages.isEmpty { print("pages:        " + report.pages.joined(separator: ", ")) }
                if !report.consoleFetch.isEmpty {
                    print("console.fetch: " + report.consoleFetch.joined(separator: ", ") + " — called with the rights of whoever views its pages")
                }
                if !report.dependencies.isEmpty {
                    print("dependencies: " + report.dependencies.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                }
                for w in report.warnings { SystemFile.say(w + "\n", to: 2) }
            }
        }

        /// The folder of the bundle in `plugins` whose id is `argument`, when `argument` names no file or folder here
        /// (`keel plugins inspect hello`, as `enable` takes it); nil otherwise, and the argument is a path.
        /// - Throws: `CLIError` when it is neither a path nor a plugin's id, naming the id it likely meant.
        static func bundleFolder(naming argument: String, in plugins: String) throws -> String? {
            guard !argument.contains("/"), !FileManager.default.fileExists(atPath: argument) else { return nil }
            let bundles = (try? BundleScanner().scan(plugins)) ?? []
            if let found = bundles.first(where: { $0.manifest?.id == argument }) { return found.folder }
            let near = Spelling.nearest(argument, in: bundles.compactMap { $0.manifest?.id }).map { " (did you mean \($0)?)" } ?? ""
            throw CLIError("\(argument): no such file or folder, and no plugin \"\(argument)\" in \(plugins)\(near)")
        }

        /// Said after a failed trial activation that had no `--config`.
        static let noConfigHint = " (its trial activation had no configuration; --config FILE gives it one)"

        /// Reads the manifest here (bounded, safe) and leaves the library to a child `keel probe`, whose trial
        /// activation gets the configuration `configFile` gives (`trialConfiguration`).
        static func probe(_ path: String, config configFile: String? = nil) throws -> InspectReport {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw CLIError("\(path): no such file or folder")
            }
            // A bundle's plugin.yaml named instead of its folder: the folder is meant.
            var path = path
            if !isDirectory.boolValue, (path as NSString).lastPathComponent == ManifestLoader.fileName {
                path = (path as NSString).deletingLastPathComponent
                if path.isEmpty { path = "." }
                isDirectory = true
            }
            var library = path, manifestPath: String?, warnings: [ManifestWarning] = [], running: Manifest?, config = ""
            if isDirectory.boolValue {
                try refuseProjectForBundle(path, command: "plugins inspect")
                let file = path + "/" + ManifestLoader.fileName
                manifestPath = file
                let manifest: Manifest
                do { (manifest, warnings) = try ManifestLoader().load(path: file) } catch { throw CLIError(error.description) }
                // Manifest-only: no code to load, nothing to isolate in a child; and nothing a --config is given to (it
                // was taken without a word).
                guard let name = manifest.library else {
                    if let configFile {
                        SystemFile.say("keel: note: --config \(configFile) is not used: \(manifest.id) is a manifest-only bundle (no library: no code it configures)\n", to: 2)
                    }
                    return Inspector.report(manifestOnly: manifest, path: path, warnings: warnings)
                }
                // A name the folder lacks: said as the host says it (the key, the folder, the likely name).
                if let missing = PluginBundle(folder: path, manifestPath: file, manifest: manifest, warnings: warnings).missingLibrary {
                    for w in warnings { SystemFile.say("\(w)\n", to: 2) }
                    throw CLIError(missing)
                }
                library = path + "/" + name
                running = manifest
                config = try trialConfiguration(folder: path, id: manifest.id, file: configFile)
            } else if configFile != nil {
                config = try trialConfiguration(folder: nil, id: (path as NSString).lastPathComponent, file: configFile)
            }
            guard OwnExecutable.path != nil else { throw CLIError("cannot find the keel executable to probe with (is /proc mounted?)") }
            switch PluginProbe(executable: OwnExecutable.execPath).run(library: library, manifestPath: manifestPath, shownPath: library, config: config) {
            case var .passed(report):
                report.path = path
                if let running { report.describeRunning(running) }
                return report
            case let .failed(reason, _):
                // The manifest's warnings first: a misspelt key is often why the plugin failed.
                for w in warnings { SystemFile.say("\(w)\n", to: 2) }
                // A plugin that checks its own configuration fails without one: said how to give it one.
                throw CLIError(reason + (configFile == nil && running != nil && reason.contains("activate returned") ? Self.noConfigHint : ""))
            }
        }
    }
}
