// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel
import KeelManifest

/// The bundles of a plugin folder, read without loading anything (manifests only).
enum PluginFolder {
    /// The manifests of the bundle folders under `directory` that parse; hidden folders and broken bundles are
    /// skipped (the kernel reports those).
    static func manifests(_ directory: String) -> [Manifest] {
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return folders.filter { !$0.hasPrefix(".") }.sorted().compactMap { folder in
            let path = directory + "/" + folder + "/" + ManifestLoader.fileName
            guard FileManager.default.fileExists(atPath: path) else { return nil }
            return try? ManifestLoader().load(path: path).0
        }
    }
}

/// Dynamic shell completion (`keel --generate-completion-script bash|zsh|fish`): plugin ids from the plugin folder
/// and the state file, tenants and roles from the state file. The folder and file are the ones the command line
/// being completed names with `--plugins` / `--state`, else the defaults. A missing state file completes nothing
/// (it is never created by completing).
enum Completion {
    static let plugins = CompletionKind.custom { words, _, prefix in
        let (pluginsDirectory, stateFile) = locations(words)
        var ids = Set(PluginFolder.manifests(pluginsDirectory).map(\.id))
        if let state = existingState(stateFile), let records = try? state.plugins() { ids.formUnion(records.map(\.id)) }
        return ids.filter { $0.hasPrefix(prefix) }.sorted()
    }

    static let tenants = CompletionKind.custom { words, _, prefix in
        let names = (try? existingState(locations(words).state)?.directory().tenants) ?? []
        return names.filter { $0.hasPrefix(prefix) }
    }

    static let roles = CompletionKind.custom { words, _, prefix in
        let names = (try? existingState(locations(words).state)?.directory().roles) ?? []
        return names.filter { $0.hasPrefix(prefix) }
    }

    /// The permission items (KEY:ACTION and KEY:*) the plugins in the folder declare.
    static let permissions = CompletionKind.custom { words, _, prefix in
        let declared = PluginFolder.manifests(locations(words).plugins).flatMap(\.permissions)
        let items = Set(declared.flatMap { d in d.actions.map { "\(d.key):\($0)" } + ["\(d.key):*"] })
        return items.filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// `--plugins` and `--state` as written on the command line being completed, else the defaults.
    static func locations(_ words: [String]) -> (plugins: String, state: String) {
        func value(_ name: String) -> String? {
            if let i = words.firstIndex(of: name), i + 1 < words.count { return words[i + 1] }
            return words.first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) }
        }
        return (value("--plugins") ?? KernelConfiguration.defaultPluginsDirectory,
                value("--state") ?? KernelConfiguration.defaultStateFile)
    }

    private static func existingState(_ path: String) -> StateStore? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try? StateStore(path: path)
    }
}
