// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelManifest
import Synchronization

/// Why a plugin folder could not be scanned: one line naming the folder and the reason.
public struct ScanError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}

/// A plugin bundle found on disk: a folder with a `plugin.yaml`, parsed or not.
public struct PluginBundle: Sendable {
    public var folder: String
    public var manifestPath: String
    public var manifest: Manifest?
    public var warnings: [ManifestWarning]
    /// Why this bundle cannot be used, when it cannot.
    public var problem: String?

    /// The id it is known by: the manifest's, or the folder name when the manifest is unusable.
    public var id: String { manifest?.id ?? PluginBundle.fallbackID(folder) }

    /// The library's path; nil without a usable manifest or for a manifest-only bundle.
    public var libraryPath: String? { manifest?.library.map { folder + "/" + $0 } }

    /// The file whose bytes identify a build (its checksum in load history, reload and signature checks): the
    /// library, or plugin.yaml for a manifest-only bundle; nil without a usable manifest.
    public var buildPath: String? {
        guard let manifest else { return nil }
        return manifest.library.map { folder + "/" + $0 } ?? manifestPath
    }

    public static func fallbackID(_ folder: String) -> String {
        let name = (folder as NSString).lastPathComponent.lowercased()
        let cleaned = String(name.map { c -> Character in
            c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_" || c == ".") ? c : "-"
        }.prefix(64))
        return Manifest.isValidID(cleaned) ? cleaned : "bundle-" + String(cleaned.prefix(50))
    }
}

/// Lists the bundles in a plugin folder. Each direct sub-folder is one bundle; files and hidden entries are
/// ignored; a sub-folder without a usable `plugin.yaml` is reported as a bundle with a problem. Two bundles with the
/// same id are both refused, naming each other: the kernel never guesses which one was meant.
public struct BundleScanner: Sendable {
    public var loader = ManifestLoader()

    public init() {}

    /// - Parameters:
    ///   - directory: the plugin folder; one that does not exist holds no bundles.
    ///   - bundleFolders: bundle folders named one by one (an embedder's, from code), scanned after the plugin folder's;
    ///     one that is not a folder is reported as a bundle with a problem.
    /// - Throws: `ScanError` naming the folder when it cannot be listed.
    public func scan(_ directory: String, bundleFolders: [String] = []) throws(ScanError) -> [PluginBundle] {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        var listed: [String] = []
        if fm.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw ScanError(reason: "\(directory): is a file, not a plugin folder")
            }
            let names: [String]
            do { names = try fm.contentsOfDirectory(atPath: directory) } catch {
                throw ScanError(reason: "\(directory): cannot be listed: \(error.localizedDescription)")
            }
            listed = names.sorted().filter { !$0.hasPrefix(".") }.map { directory + "/" + $0 }.filter { folder in
                var st = stat()
                return stat(folder, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR
            }
        }
        let folders = listed + bundleFolders.filter { !listed.contains($0) }
        // Manifests are independent: read them on every core.
        // Each worker fills its own slot; the lock is held only to store a finished bundle.
        let found = Mutex([PluginBundle?](repeating: nil, count: folders.count))
        let loader = self.loader
        DispatchQueue.concurrentPerform(iterations: folders.count) { i in
            let folder = folders[i], manifestPath = folder + "/" + ManifestLoader.fileName
            let bundle: PluginBundle
            do throws(ManifestError) {
                let (manifest, warnings) = try loader.load(path: manifestPath)
                bundle = PluginBundle(folder: folder, manifestPath: manifestPath, manifest: manifest, warnings: warnings)
            } catch {
                bundle = PluginBundle(folder: folder, manifestPath: manifestPath, manifest: nil, warnings: [],
                                problem: error.description)
            }
            found.withLock { $0[i] = bundle }
        }
        var bundles = found.withLock { $0 }.compactMap { $0 }
        // Same id twice: refuse every bundle that claims it.
        let byID = Dictionary(grouping: bundles.indices, by: { bundles[$0].id })
        for (id, indices) in byID where indices.count > 1 {
            let folders = indices.map { bundles[$0].folder }
            for i in indices where bundles[i].problem == nil {
                let others = folders.filter { $0 != bundles[i].folder }.joined(separator: ", ")
                bundles[i].problem = "\(bundles[i].manifestPath): duplicate plugin id \"\(id)\", also declared in \(others)"
            }
        }
        return bundles
    }
}

/// The version of the Keel host, as plugins' `host:` ranges and repository indexes see it.
public enum KeelVersion {
    public static let current = "1.0.0"
}
