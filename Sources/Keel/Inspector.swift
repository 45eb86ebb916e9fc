// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelSystem
import KeelRegistry

/// What `keel plugins inspect` reports about a bundle or a bare shared object.
public struct InspectReport: Sendable, Codable, Hashable {
    public var path: String
    public var library: String
    public var id: String
    public var name: String?
    public var version: String
    public var abi: String
    public var unloadSafe: Bool
    /// Declares `KEEL_PLUGIN_FLAG_REACTIVATABLE`.
    public var reactivatable = false
    public var capabilities: [String]
    public var dependencies: [String: String]
    public var routes: [String]
    public var menus: [String]
    public var authenticators: [String]
    public var authorizers: [String]
    public var warnings: [String]
    /// Interfaces it registered tables for, as `name/major version`.
    public var services: [String] = []
    /// Commands, as `name (signature)`.
    public var commands: [String] = []
    /// What plugin.yaml says of when and where it runs: `activation` ("eager" or "lazy"), its `idle-timeout:` in
    /// seconds, and `isolation` ("in-process" or "process"); nil for a bare library.
    public var activation: String?
    public var idleTimeout: Double?
    public var isolation: String?
    /// The interfaces plugin.yaml says it consumes, as `name/major range`, `(optional)` when so.
    public var consumes: [String] = []
    /// Its console pages (`/ext/<id>/pages/<path>`), and the host endpoints they call with the viewer's rights
    /// (`ConsoleDeclaration.fetchText`).
    public var pages: [String] = []
    public var consoleFetch: [String] = []

    /// Fills `activation`, `idleTimeout` and `isolation` from `manifest`. [the caller that read it]
    public mutating func describeRunning(_ manifest: Manifest) {
        activation = manifest.activation == .lazy ? "lazy" : "eager"
        idleTimeout = manifest.idleTimeout
        isolation = manifest.isolation.rawValue
        consumes = manifest.consumes.map { "\($0.interface) \($0.versions)" + ($0.optional ? " (optional)" : "") }
        pages = (manifest.console?.pages ?? []).map { "/ext/\(manifest.id)/pages/\($0.path)" }
        consoleFetch = manifest.console?.fetchText(pluginID: manifest.id) ?? []
    }

    /// `activation`, `idleTimeout` and `isolation` in one line ("lazy, idle-timeout 10m, in-process"); "as the
    /// operator enables it" for a bare library, which has no plugin.yaml to say.
    public var runningText: String {
        guard let activation else { return "no plugin.yaml: eager, in-process" }
        var parts = [activation]
        if let seconds = idleTimeout {
            let whole = seconds.rounded() == seconds ? Int(seconds) : nil
            let shown = whole.map { $0 % 3600 == 0 ? "\($0 / 3600)h" : $0 % 60 == 0 ? "\($0 / 60)m" : "\($0)s" } ?? "\(seconds)s"
            parts.append("idle-timeout " + shown)
        }
        parts.append(isolation ?? "in-process")
        return parts.joined(separator: ", ")
    }
}

/// Loads a bundle folder or a bare `.so`, checks it as the kernel would, runs a trial activation against a
/// private registry, and reports what it registered. Touches no state file.
/// Runs plugin code in this process: a library that crashes in its constructor takes the caller down with it.
public enum Inspector {
    /// - Throws: `KernelError` with the one-line reason (manifest, load, ABI or activation failure).
    public static func inspect(path: String, limits: RegistrationLimits = .default) throws(KernelError) -> InspectReport {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw KernelError(.bundle, reason: "\(path): no such file or folder")
        }
        var manifest: Manifest?
        var warnings: [ManifestWarning] = []
        var manifestPath = ""
        var libraryPath = path
        if isDirectory.boolValue {
            manifestPath = path + "/" + ManifestLoader.fileName
            do { (manifest, warnings) = try ManifestLoader().load(path: manifestPath) } catch {
                throw KernelError(.bundle, reason: error.description)
            }
            guard let manifest, let library = manifest.library else {
                return manifest.map { Self.report(manifestOnly: $0, path: path, warnings: warnings) }
                    ?? InspectReport(path: path, library: "", id: "", version: "", abi: "", unloadSafe: false, capabilities: [],
                                     dependencies: [:], routes: [], menus: [], authenticators: [], authorizers: [], warnings: [])
            }
            libraryPath = path + "/" + library
        }
        var report = try inspect(library: libraryPath, manifest: manifest, manifestPath: manifestPath, warnings: warnings,
                                 limits: limits)
        report.path = path
        return report
    }

    /// What a manifest-only bundle contributes: its manifest's menus and proxies; no code is loaded or run.
    public static func report(manifestOnly manifest: Manifest, path: String, warnings: [ManifestWarning]) -> InspectReport {
        var report = InspectReport(
            path: path, library: "", id: manifest.id, name: manifest.name, version: "\(manifest.version)", abi: "\(manifest.abi)",
            unloadSafe: true, capabilities: manifest.capabilities.map(\.rawValue).sorted(),
            dependencies: Dictionary(uniqueKeysWithValues: manifest.dependencies.map { ($0.id, $0.versions.text) }),
            routes: manifest.proxies.map { "* /ext/\(manifest.id)\($0.prefix)/… → \($0.upstream)" }, menus: manifest.menus.map(\.id),
            authenticators: [], authorizers: [], warnings: warnings.map(\.description))
        report.describeRunning(manifest)
        return report
    }

    /// Checks the library at `library` (possibly a private copy; `shownPath` names it in messages) against
    /// `manifest`, when there is one, and runs the trial activation with `config` (JSON, as the host hands a
    /// plugin its configuration; empty: none).
    /// - Throws: `KernelError` with the one-line reason.
    public static func inspect(library libraryPath: String, manifest: Manifest?, manifestPath: String,
                               warnings: [ManifestWarning] = [], shownPath: String? = nil,
                               limits: RegistrationLimits = .default, config: String = "") throws(KernelError) -> InspectReport {
        let path = shownPath ?? libraryPath
        let library: PluginLibrary
        do {
            library = try PluginLibrary.open(path: libraryPath, expectedID: manifest?.id, reportAs: shownPath)
            if let manifest { try library.verify(against: manifest, manifestPath: manifestPath) }
        } catch {
            throw KernelError(.loadFailed, pluginID: manifest?.id, reason: error.description)
        }
        let id = library.descriptor.id
        // A descriptor without a version takes the manifest's; a bare library without either has none to show.
        let version = library.descriptor.version ?? manifest?.version.description ?? "unset (the bundle's plugin.yaml gives it)"
        let registry = PluginRegistry()
        let environment = KernelEnvironment(registry: registry, log: KernelConfiguration.silentLog)
        let grants = manifest?.capabilities ?? Set(Capability.allCases)
        // Interfaces it consumes have no provider here: a probe or an inspection runs the plugin alone.
        let context = ActivationContext(pluginID: id, grants: grants, routePrefixes: manifest?.routePrefixes ?? [],
                                        requestedRoutePrefixes: manifest?.routePrefixes ?? [], requestedCapabilities: manifest?.capabilities,
                                        config: config, limits: limits,
                                        identity: ServiceIdentity(version: version, generation: 1,
                                                                  provides: manifest?.provides ?? [], consumes: manifest?.consumes ?? [],
                                                                  calls: manifest?.calls ?? []),
                                        environment: environment)
        var seed = Contributions()
        seed.menus = (manifest?.menus ?? []).map { MenuRegistration(entry: $0, fromManifest: true) }
        let c: Contributions
        do {
            // Every command's symbol must be exported (checked here, in the probe's child process, before the host
            // maps the library).
            seed.commands = try library.prepareCommands(manifest?.commands ?? [], context: context)
            c = try library.activate(context, seed: seed)
        } catch {
            throw KernelError(.loadFailed, pluginID: id, reason: error.description)
        }
        defer { library.deactivate(context) }
        // Commands that declare sample arguments are called once: a crash or an error fails the probe.
        for command in c.commands {
            if let error = command.probeFailure() {
                throw KernelError(.loadFailed, pluginID: id, reason: "command \"\(command.name)\" failed its probe call: \(error.message)")
            }
        }
        return InspectReport(
            path: path, library: shownPath ?? libraryPath, id: id, name: manifest?.name, version: version,
            abi: "\(library.descriptor.abi).\(library.descriptor.abiPatch)", unloadSafe: library.descriptor.unloadSafe,
            reactivatable: library.descriptor.reactivatable,
            capabilities: (grants.map(\.rawValue) + (manifest?.routePrefixes ?? []).map(Capability.routePrefix)).sorted(),
            dependencies: Dictionary(uniqueKeysWithValues: (manifest?.dependencies ?? []).map { ($0.id, $0.versions.text) }),
            // The plugin's own text, printed on a terminal: its control characters written out.
            routes: c.routes.map { Printable.escapingControls("\($0.method) \($0.fullPath(plugin: id))") }, menus: c.menus.map(\.entry.id),
            authenticators: c.authenticators.map(\.name), authorizers: c.authorizers.map(\.name),
            warnings: warnings.map(\.description) + (c.ignoredRefusal.map { [Contributions.ignoredRefusalNote($0, running: false)] } ?? [])
                + c.routeMistakes(pluginID: id),
            services: c.services.map { "\($0.interface) \($0.version)" + ($0.ranking != 0 ? ", ranking \($0.ranking)" : "") },
            commands: c.commands.map { "\($0.name) \($0.declaration.signature)" })
    }
}
