// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// Build tool plugin: embeds the plugin SDK (PluginABI/include, PluginABI/sdk, the Rust crate sdk/rust/keel-plugin
// without build output, the Swift package sdk/swift/KeelPluginKit with the sources of Sources/KeelPluginKit, the
// example appliance Examples/appliance) and the `keel new` templates (Templates/) into the target it is applied to, as `EmbeddedFiles.files` (see
// BuildTools/KeelEmbed).

import Foundation
import PackagePlugin

@main
struct EmbedSDK: BuildToolPlugin {
    static let folders = ["PluginABI/include", "PluginABI/sdk", "Templates", "sdk/rust/keel-plugin", "sdk/swift/KeelPluginKit",
                          "Sources/KeelPluginKit", "Examples/appliance"]

    func createBuildCommands(context: PluginContext, target: Target) async throws -> [Command] {
        let root = context.package.directoryURL
        var relative: [String] = []
        for folder in Self.folders {
            let base = root.appending(path: folder)
            guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: [.isRegularFileKey]) else { continue }
            for case let url as URL in walker where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                let path = url.standardizedFileURL.path
                let prefix = root.standardizedFileURL.path + "/"
                guard path.hasPrefix(prefix) else { continue }
                // Build output is left out by the path inside the package (Keel itself may lie under a `.build`
                // folder, as a dependency of another package).
                let inside = String(path.dropFirst(prefix.count))
                guard !inside.contains("/target/"), !inside.contains("/.build/"), !inside.hasSuffix("/Cargo.lock") else { continue }
                relative.append(inside)
            }
        }
        relative.sort()
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedFiles.swift")
        return [.buildCommand(displayName: "Embedding the plugin SDK and templates (\(relative.count) files)",
                              executable: try context.tool(named: "KeelEmbed").url,
                              arguments: [output.path, root.path] + relative,
                              inputFiles: relative.map { root.appending(path: $0) },
                              outputFiles: [output])]
    }
}
