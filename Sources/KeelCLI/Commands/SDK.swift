// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import KeelSystem

extension KeelCommand {
    /// `keel sdk install|path`: the plugin headers and `keel-plugin.pc`, from this binary (see `PluginSDK`).
    struct SDK: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sdk",
            abstract: "Install the plugin SDK (headers and keel-plugin.pc for pkg-config) or print where it is.",
            subcommands: [Install.self, Path.self])

        struct Install: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Write the plugin headers to PREFIX/include/keel, PREFIX/lib/pkgconfig/keel-plugin.pc, the Rust SDK crate to PREFIX/share/keel/rust/keel-plugin, the Swift package KeelPluginKit to PREFIX/share/keel/swift/KeelPluginKit, and libkeel.so with keel.pc.",
                discussion: "The default prefix is /usr/local for root (on pkg-config's default path), else ~/.local.")
            @Option(help: "Where to install (default: /usr/local for root, else ~/.local).") var prefix: String?

            func run() async throws {
                try await reporting {
                    let prefix = absolute(prefix ?? PluginSDK.defaultPrefix)
                    try PluginSDK.install(prefix: prefix)
                    print("installed the Keel plugin SDK (ABI \(PluginSDK.abiVersion)) in \(prefix)")
                    print("  headers:    \(PluginSDK.includeDirectory(prefix: prefix))/keel (\(PluginSDK.headers.count) files)")
                    print("  Rust crate: \(PluginSDK.rustCrateDirectory(prefix: prefix)) (\(PluginSDK.rustCrate.count) files)")
                    print("  Swift:      \(PluginSDK.swiftPackageDirectory(prefix: prefix)) (the KeelPluginKit package, \(PluginSDK.swiftPackage(prefix: prefix).count) files)")
                    print("  pkg-config: \(PluginSDK.pcDirectory(prefix: prefix))/\(PluginSDK.packageName).pc")
                    let embedding = try EmbeddingSDK.install(prefix: prefix)
                    if embedding.isEmpty {
                        SystemFile.say("keel: warning: " + EmbeddingSDK.missing + "\n", to: 2)
                    } else {
                        print("  embedding:  \(embedding.prefix(2).joined(separator: ", ")) (cc app.c $(pkg-config --cflags --libs keel))")
                        print("  example:    \(EmbeddingSDK.exampleDirectory(prefix: prefix))/appliance.c (an appliance that embeds Keel)")
                    }
                    if !PluginSDK.pkgConfigSearches(prefix: prefix) {
                        print("pkg-config does not search \(PluginSDK.pcDirectory(prefix: prefix)); add it to your shell profile:")
                        print("  export PKG_CONFIG_PATH=\"\(PluginSDK.pcDirectory(prefix: prefix))${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}\"")
                    }
                }
            }
        }

        struct Path: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print the include folder of the installed plugin SDK (what `pkg-config --cflags keel-plugin` adds).",
                discussion: """
                    Without --prefix: the prefix pkg-config finds keel-plugin under, else the default prefix. Exit 1 when \
                    no SDK is installed there; a warning on stderr when it is from another Keel version.
                    """)
            @Option(help: "The prefix it was installed under.") var prefix: String?

            func run() async throws {
                try await reporting {
                    let prefix = absolute(prefix ?? PluginSDK.prefixFromPkgConfig() ?? PluginSDK.defaultPrefix)
                    switch PluginSDK.state(prefix: prefix) {
                    case .missing:
                        throw CLIError("no plugin SDK in \(prefix); run `keel sdk install --prefix \(prefix)`")
                    case let .stale(files):
                        SystemFile.say("keel: warning: the plugin SDK in \(prefix) differs from this keel's "
                            + "(ABI \(PluginSDK.abiVersion)) in \(files.count) file(s), e.g. \(files[0]); "
                            + "run `keel sdk install --prefix \(prefix)`\n", to: 2)
                    case .current:
                        break
                    }
                    print(PluginSDK.includeDirectory(prefix: prefix))
                }
            }
        }
    }
}

/// `path` made absolute against the current folder, with `.` and `..` resolved.
func absolute(_ path: String) -> String {
    URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL.path
}
