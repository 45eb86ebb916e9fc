// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState
import KeelSystem

/// What the kernel reports about plugins: `PluginInfo` for the CLI, the admin API and the console.
extension Kernel {
    /// The error for `id` when no bundle in the plugin folder claims it (`known: false`: nor does any record), with
    /// the id it most likely meant when one is near (`Counter` for `counter`, `helo` for `hello`).
    func notInFolder(_ id: String, known: Bool = true) -> KernelError {
        var near = Spelling.nearest(id, in: bundles.keys.sorted()).map { " (did you mean \"\($0)\"?)" } ?? ""
        // A folder's name given for the id its plugin.yaml declares (`hello-c` for `hello`), or the folder of a
        // duplicate id, which holds no plugin of its own: named with what it holds.
        let named = bundles.values.first { ($0.folder as NSString).lastPathComponent == id }
            ?? droppedBundles.values.first { ($0.folder as NSString).lastPathComponent == id }
        if let named, named.id != id {
            near = " (folder \(named.folder) holds plugin \"\(named.id)\" (its plugin.yaml's id:)"
                + (named.problem.map { ", refused: \($0)" } ?? "; use that id") + ")"
        }
        // A folder that is not there at all is most often a wrong path: named, not left to be guessed.
        let folder = configuration.pluginsDirectory
        if bundles.isEmpty, !folder.isEmpty, !FileManager.default.fileExists(atPath: folder) {
            near = ": the plugin folder \(folder) does not exist"
        }
        // Where it was looked for: a kernel given bundle folders one by one (an embedder's) has no plugin folder.
        let place = !folder.isEmpty ? "in the plugin folder"
            : configuration.bundleFolders.isEmpty ? "loaded (no plugin folder nor bundle folder is given)" : "among the bundle folders given"
        let reason = "no plugin \"\(id)\" " + (known ? place : "is known") + near
        // The CLI on this host names the folder it looked in (a wrong `--plugins` or `KEEL_PLUGINS` is then plain).
        // (Not when the reason names a folder already: the one that holds another plugin, or the missing one.)
        let namesFolder = near.hasPrefix(": ") || near.hasPrefix(" (folder ")
        let local = known && !folder.isEmpty && !namesFolder ? "no plugin \"\(id)\" in the plugin folder \(folder)" + near : nil
        return KernelError(.unknownPlugin, pluginID: id, reason: reason, localReason: local)
    }
}

extension Kernel {
    /// Every known plugin with its state and, for active ones, what it registered.
    public func plugins() throws(KernelError) -> [PluginInfo] {
        try plugins(only: nil)
    }

    /// Every known plugin's info, or only `id`'s (one record read, one info built).
    func plugins(only id: String?) throws(KernelError) -> [PluginInfo] {
        let records: [PluginRecord]
        do throws(StateError) {
            if let id { records = try state.plugin(id).map { [$0] } ?? [] } else { records = try state.plugins() }
        } catch {
            throw KernelError(.state, reason: error.description)
        }
        let context = InfoContext(snapshot: registry.snapshot, directory: access.directory)
        // The pins in one read (a listing does not cost a query per plugin).
        var pins: [String: StateStore.PinnedSigner] = [:]
        if let id { pins[id] = try? state.pinnedSigner(id) } else { pins = (try? state.pinnedSigners()) ?? [:] }
        return records.map { info($0, context, pin: pins[$0.id]) }
    }

    /// What the info of every plugin is read against: the registry and the tenants, as of one moment.
    struct InfoContext {
        let snapshot: Snapshot
        let directory: StateStore.Directory
    }

    /// The info of the plugin `record` describes (`pin`: its pinned signer, read by the caller).
    func info(_ record: PluginRecord, _ context: InfoContext, pin: StateStore.PinnedSigner?) -> PluginInfo {
        let snapshot = context.snapshot, directory = context.directory
        let bundle = bundles[record.id]
        // A bundle that cannot be read now (plugin.yaml broken mid-edit) while a build serves: that build's manifest.
        let m = bundle?.manifest ?? active[record.id]?.manifest
        let c = snapshot.plugins[record.id]
        var info = PluginInfo(
            id: record.id, name: m?.name ?? record.name, version: m.map { "\($0.version)" } ?? record.version,
            description: m?.description ?? "", abi: m.map { "\($0.abi)" } ?? "",
            bundlePath: bundle?.folder ?? record.bundlePath, library: m?.library ?? "",
            manifestOnly: m?.isManifestOnly ?? false,
            enabled: record.enabled, status: record.status, reason: record.reason, changedAt: record.changedAt,
            capabilities: ((m?.capabilities ?? []).map(\.rawValue) + (m?.routePrefixes ?? []).map(Capability.routePrefix)).sorted(),
            grants: m.map { manifest in
                let granted = (try? state.grants(record.id)) ?? []
                return (effectiveGrants(record.id, manifest).map(\.rawValue)
                    + manifest.routePrefixes.map(Capability.routePrefix).filter { granted.contains($0) }).sorted()
            } ?? [],
            dependencies: Dictionary(uniqueKeysWithValues: (m?.dependencies ?? []).map { ($0.id, $0.versions.text) }),
            routes: (c?.routes ?? []).map { "\($0.method) \($0.fullPath(plugin: record.id))" },
            menus: (c?.menus ?? []).map(\.entry.id),
            authenticators: (c?.authenticators ?? []).map(\.name),
            authorizers: (c?.authorizers ?? []).map(\.name),
            warnings: (bundle?.warnings ?? []).map(\.description),
            tenants: directory.pluginTenants[record.id].map { $0.sorted() },
            permissions: (m?.permissions ?? []).flatMap { p in p.actions.map { "\(p.key):\($0)" } },
            signature: signature(record.id, bundle: bundle),
            provides: (m?.provides ?? []).map { p in
                // The scopes `keel services list` says it serves (an idle operator's choice included). A kernel that
                // starts idle does not know who serves: the providers it left idle are not in its registry (the
                // server decides when it runs).
                let services = snapshot.services, asleep = idle.contains(record.id)
                let scopes = configuration.startsIdle ? [] : serving(
                    p.interface, providers: providerRows(p.interface, directory: services, declared: declaredServices(), whyStopped: { _ in nil }),
                    directory: services, tenants: directory.pluginTenants).filter { $0.provider == record.id }
                let serving = scopes.map { s in
                    s.tenant.isEmpty ? "host-wide (\(s.reason))" : "tenant \(s.tenant)" + (asleep ? " (\(Self.idleServingNote))" : "")
                }
                return "\(p.interface) \(p.version) ranking \(p.ranking)" + (serving.isEmpty ? "" : ", serving " + serving.joined(separator: ", "))
            },
            consumes: (m?.consumes ?? []).map { "\($0.interface) \($0.versions) \($0.optional ? "optional" : "required")" },
            commands: (m?.commands ?? []).map { CommandInfo(plugin: record.id, $0) },
            proxies: (c?.proxies ?? []).map { "/ext/\(record.id)\($0.prefix)/ → \($0.upstream)" },
            pages: (m?.console?.pages ?? []).map { "/ext/\(record.id)/pages/\($0.path)" },
            consoleFetch: m?.console?.fetchText(pluginID: record.id) ?? [],
            activation: m?.activation.rawValue ?? "eager",
            // A host started in safe mode loads nothing: its enabled plugins say so rather than read as serving.
            activity: safeMode && record.enabled && record.status == .enabled && active[record.id] == nil && !idle.contains(record.id)
                ? "not loaded: safe mode"
                : isLazy(record.id) && record.status == .enabled
                ? (idle.contains(record.id) ? (m?.activation == .lazy ? "idle" : "not loaded")
                    : active[record.id] != nil ? "active" : nil) : nil)
        info.signer = pin.map(ExtensionStore.describe)
        if let m, m.library != nil { info.isolation = isolation(of: record.id, m).rawValue }
        if let worker = active[record.id]?.worker {
            info.workerPID = worker.workerPID
            info.workerRestarts = worker.restarts
        }
        return info
    }

    /// How `id` was signed when installed, shown only while its bundle's library (plugin.yaml for a manifest-only
    /// bundle) is still the one installed then (a file replaced by hand, or another bundle with the same id, shows none).
    func signature(_ id: String, bundle: Bundle?) -> String? {
        guard let stored = (try? state.signatureRecord(id)) ?? nil, let path = bundle?.buildPath else { return nil }
        return ExtensionStore.signature(stored: stored, librarySum: libraryChecksum(path))
    }

    /// The SHA-256 of a library file, remembered for as long as the file keeps its stamp (`FileStamp`), when it had
    /// settled before it was read.
    func libraryChecksum(_ path: String) -> String? {
        guard let stamp = FileStamp(path: path) else { return nil }
        if let sum = checksums[path]?.sum(for: stamp) ?? shownChecksums[path]?.sum(for: stamp) { return sum }
        let readAt = FileStamp.now()
        guard let sum = GenerationStore.checksum(path) else { return nil }
        // For this display only: the identity and the bytes come from two opens of the path, which a swap of the
        // folder between them can tell apart, so loads never take a checksum from here.
        shownChecksums[path] = stamp.ifSettled(readAt: readAt, margin: configuration.libraryStampMargin).map { .init(stamp: $0, sum: sum) }
        return sum
    }

    /// One plugin's info.
    /// - Throws: `KernelError.Code.unknownPlugin`.
    public func plugin(_ id: String) throws(KernelError) -> PluginInfo {
        guard let info = try plugins(only: id).first else {
            throw notInFolder(id, known: false)
        }
        return info
    }
}
