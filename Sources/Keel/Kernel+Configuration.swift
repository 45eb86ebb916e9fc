// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState

/// Per-plugin configuration and capability grants.
extension Kernel {
    // MARK: configuration

    /// The JSON a plugin gets at activation: its stored configuration, checked against the schema its bundle ships
    /// now (an upgrade may tighten it). A bundle with a schema and no stored configuration gets `{}`, checked too.
    /// Also returns the stored text's stamp (`configStamp`), which the activation keeps.
    func configJSON(_ id: String, bundle: Bundle) throws(KernelError) -> (json: String, stamp: Int) {
        let schemaPath = Self.schemaPath(bundle)
        let stored: (yaml: String, json: String)?
        if let pending = pendingConfig, pending.id == id {
            stored = (pending.yaml, pending.json)
        } else if let reads = startReads {
            stored = reads.configs[id]
        } else {
            stored = (try? state.config(id)) ?? nil
        }
        let stamp = Self.configStamp(stored?.yaml)
        do {
            return (try PluginConfig.activationJSON(yaml: stored?.yaml,
                                                    file: stored == nil ? "configuration of \(id) (none stored)" : "configuration of \(id)",
                                                    schemaPath: schemaPath), stamp)
        } catch {
            // A schema that cannot be read or is wrong is the plugin author's to fix: no hint to configure.
            if error.file == schemaPath { throw KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\": its configuration schema is unusable: \(error)") }
            let hint = stored == nil ? "; give it one with `keel plugins config \(id) FILE`" : ""
            throw KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\" needs a valid configuration: \(error)\(hint)")
        }
    }

    /// The bundle's configuration schema, when it ships one.
    static func schemaPath(_ bundle: Bundle) -> String? { PluginConfig.schema(inBundle: bundle.folder) }

    /// The configuration schema `id`'s bundle ships, as JSON; nil when it ships none.
    /// - Throws: `KernelError` for an unknown plugin, or `.bundle` naming the schema file when it cannot be read.
    public func configSchema(_ id: String) throws(KernelError) -> String? {
        guard let bundle = bundles[id] else {
            throw notInFolder(id)
        }
        guard let path = Self.schemaPath(bundle) else { return nil }
        do { return try PluginConfig.schemaJSON(at: path) } catch {
            // The reason without the host's path: it reaches API clients.
            throw KernelError(.bundle, pluginID: id, reason: "\(PluginConfig.schemaFile) of \(id): \(error.reason)")
        }
    }

    /// Sets a plugin's configuration from YAML (`file` names it in errors): checked against the bundle's schema,
    /// applied by re-activating the plugin when it is active, and stored once it runs with it. A configuration its
    /// code rejects leaves the old activation serving, as any failed reload does, and is never stored (so no other
    /// host of a shared state runs it meanwhile). A plugin that is enabled but failed (not quarantined) is started
    /// with it: what it lacked may have been this configuration.
    /// - Returns: a note when that plugin started, or still cannot start.
    /// - Throws: `KernelError` with the file, the key and the reason.
    @discardableResult
    public func setConfig(_ id: String, yaml: String, file: String) throws(KernelError) -> String? {
        if bundles[id] == nil { rescan() }
        guard let bundle = bundles[id] else {
            throw notInFolder(id)
        }
        let json: String
        do { json = try PluginConfig.validate(yaml: yaml, file: file, schemaPath: Self.schemaPath(bundle)) } catch {
            throw KernelError(.badConfig, pluginID: id, reason: error.description)
        }
        func store() throws(KernelError) {
            do { try state.setConfig(id, yaml: yaml, json: json) } catch { throw KernelError(.state, pluginID: id, reason: error.description) }
        }
        guard active[id] != nil else {
            try store()
            // What an enabled plugin that failed lacked may have been this configuration: it is tried again.
            return startFailed(id)
        }
        // The new generation is activated with it before anything is stored.
        pendingConfig = (id, yaml, json)
        do { try reload(id, cause: "configuration changed") } catch {
            pendingConfig = nil
            throw error
        }
        pendingConfig = nil
        do { try store() } catch {
            // Not stored: back to the stored configuration, so that what runs is what a restart would run.
            try? reload(id, cause: "configuration put back (the new one could not be stored)")
            throw error
        }
        return nil
    }

    /// What tells one stored configuration from another within this process: an activation keeps the stamp of the
    /// text it was given, and a host following a shared state reloads a plugin whose stored text another host changed.
    /// Hashed as bytes: `String`'s own hash takes canonically equivalent texts (NFC and NFD) for one.
    nonisolated static func configStamp(_ yaml: String?) -> Int {
        guard var yaml else { return 0 }
        var hasher = Hasher()
        yaml.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        return hasher.finalize()
    }

    // MARK: capabilities

    /// What a plugin may use: what its manifest asks for, limited to the trusted capabilities and the operator's
    /// explicit grants.
    nonisolated func effectiveGrants(_ id: String, _ manifest: Manifest) -> Set<Capability> {
        effectiveGrants(manifest, granted: (try? state.grants(id)) ?? [])
    }

    /// `effectiveGrants(id, manifest)` for a caller that has just read the plugin's grants.
    nonisolated func effectiveGrants(_ manifest: Manifest, granted: Set<String>) -> Set<Capability> {
        manifest.capabilities.intersection(configuration.trustedCapabilities.union(granted.compactMap(Capability.init(rawValue:))))
    }

    /// Grants (or revokes) capabilities to a plugin, persisted at once; an active plugin is reloaded so the change
    /// takes effect. A grant whose reload fails leaves the old generation serving, as any failed reload; a revoke
    /// that took a right away (one granted and not trusted anyway) never does (the old generation holds the right the
    /// operator took back): the plugin, and those that depend on it, are taken down and recorded failed with the
    /// reason, and stay enabled, so a new grant (or `enable` after a fixed bundle) brings the plugin back. A grant to
    /// a plugin that is enabled but failed (not quarantined) starts it: what it lacked may have been that grant.
    /// - Returns: a note when the plugin stopped for a revoke, or started (or still cannot start) after a grant, or
    ///   when a revoke names nothing the plugin was granted (then nothing is stored or reloaded).
    /// - Throws: `KernelError` for an unknown plugin or capability, or one the plugin does not ask for, or a reload
    ///   that failed (the grants are stored all the same).
    @discardableResult
    public func setGrants(_ id: String, grant: [String] = [], revoke: [String] = []) throws(KernelError) -> String? {
        if bundles[id] == nil { rescan() }
        guard let bundle = bundles[id] else { throw notInFolder(id) }
        // A bundle whose plugin.yaml is broken is there: say what is wrong with it, not that it is missing.
        guard let manifest = bundle.manifest else {
            throw KernelError(.bundle, pluginID: id, reason: bundle.problem ?? "\(bundle.manifestPath): no usable manifest")
        }
        for name in grant + revoke {
            if name.hasPrefix("route-prefix:") {
                let prefix = String(name.dropFirst("route-prefix:".count))
                if grant.contains(name) && !manifest.routePrefixes.contains(prefix) {
                    throw KernelError(.badGrant, pluginID: id,
                                      reason: "plugin \"\(id)\" does not ask for \"\(name)\" in its plugin.yaml; nothing to grant")
                }
                continue
            }
            guard let capability = Capability(rawValue: name) else {
                let known = Capability.allCases.map(\.rawValue).joined(separator: ", ")
                throw KernelError(.badGrant, pluginID: id, reason: "unknown capability \"\(name)\" (known: \(known))")
            }
            if grant.contains(name) && !manifest.capabilities.contains(capability) {
                throw KernelError(.badGrant, pluginID: id,
                                  reason: "plugin \"\(id)\" does not ask for \"\(name)\" in its plugin.yaml; nothing to grant")
            }
        }
        // The rights this revoke really takes away: granted before, and not trusted without a grant.
        let held: Set<String>
        do { held = try state.grants(id) } catch { throw KernelError(.state, pluginID: id, reason: error.description) }
        let taken = revoke.filter { name in
            held.contains(name) && !(Capability(rawValue: name).map(configuration.trustedCapabilities.contains) ?? false)
        }
        // A revoke of nothing held changes nothing: said, and nothing is reloaded.
        if grant.isEmpty, !revoke.isEmpty, revoke.allSatisfy({ !held.contains($0) }) {
            return "it held no such grant; nothing changed"
        }
        do { try state.setGrants(id, grant: grant, revoke: revoke) } catch {
            throw KernelError(.state, pluginID: id, reason: error.description)
        }
        guard active[id] != nil else { return grant.isEmpty ? nil : startFailed(id) }
        return try regrant(id, taken: taken)
    }

    /// Reloads active plugin `id` with its stored grants. When the reload fails and the grants took rights away
    /// (`taken`), the running generation is not left holding them: the plugin and its dependents are taken down and
    /// recorded failed (still enabled), and the note says so. `following`: the change was another host's (a shared
    /// state): only this host's observation is recorded, not the desired state.
    /// - Throws: the reload's error when nothing was taken away (the old generation keeps serving).
    func regrant(_ id: String, taken: [String], following: Bool = false, cause: String = "grants changed") throws(KernelError) -> String? {
        do { try reload(id, cause: cause) } catch where !taken.isEmpty {
            let guarded = registry.snapshot.plugins[id]?.guardsRequests == true
            let reason = "revoked \(taken.joined(separator: ", ")) and it cannot run without: \(error.reason); stopped until it is "
                + "granted again"
            takeDown(id, wanted: following ? nil : true, reason: reason, dependentsReason: "had a capability revoked and was stopped")
            return "\(id) cannot run without it and was stopped (\(error.reason)); granting it again starts it"
                + (guarded ? "; it has auth hooks, so every request is denied until it runs again or is disabled" : "")
        }
        return nil
    }

    /// For a host following a shared state: the active plugins whose stored grants or configuration differ from those
    /// their generation runs with (another host, or the CLI, changed them) are reloaded with the stored ones, as on the
    /// host that made the change. A revoke the plugin cannot run without stops it here too; a reload that fails
    /// otherwise leaves the running generation serving (logged, as any failed reload).
    /// - Returns: the plugins reloaded, those stopped (with their dependents), and those not running here whose grants
    ///   or configuration changed since the last pass: a plugin that failed here for want of them is tried again.
    func followGrantsAndConfiguration() -> (reloaded: [String], stopped: [String], changed: Set<String>) {
        guard let grants = try? state.allGrants(), let configs = try? state.allConfigs() else { return ([], [], []) }
        let stamps = configs.mapValues { Self.configStamp($0.yaml) }
        var changed: Set<String> = []
        if let last = followedSettings {
            for id in Set(grants.keys).union(last.grants.keys) where grants[id] != last.grants[id] { changed.insert(id) }
            for id in Set(stamps.keys).union(last.configs.keys) where stamps[id] != last.configs[id] { changed.insert(id) }
        }
        followedSettings = (grants, stamps)
        var reloaded: [String] = [], stopped: [String] = []
        for id in activationOrder {
            guard let running = active[id] else { continue }  // taken down with a dependency meanwhile
            let granted = grants[id] ?? []
            let rights = effectiveGrants(running.manifest, granted: granted)
            let prefixes = running.manifest.routePrefixes.filter { granted.contains(Capability.routePrefix($0)) }
            let stamp = stamps[id] ?? 0
            guard rights != running.context.grants || prefixes != running.context.routePrefixes
                    || stamp != running.configStamp else { followFailed[id] = nil; continue }
            if let failed = followFailed[id], failed.grants == granted, failed.stamp == stamp { continue }
            let taken = running.context.grants.subtracting(rights).map(\.rawValue).sorted()
                + running.context.routePrefixes.filter { !prefixes.contains($0) }.map(Capability.routePrefix)
            let before = Set(active.keys)
            // What changed, as the generation's history says it (a configuration alone read "grants changed").
            let regranted = rights != running.context.grants || prefixes != running.context.routePrefixes
            let what = regranted && stamp != running.configStamp ? "grants and configuration changed" : regranted ? "grants changed" : "configuration changed"
            do throws(KernelError) { _ = try regrant(id, taken: taken, following: true, cause: what + " on the shared state") } catch {
                // Logged by the reload; the running generation keeps serving, and this is not tried again as it is.
                followFailed[id] = (granted, stamp)
                continue
            }
            followFailed[id] = nil
            if active[id] != nil { reloaded.append(id) } else { stopped += before.subtracting(active.keys).sorted() }
        }
        return (reloaded, stopped, changed.filter { active[$0] == nil })
    }

    /// After a grant or a configuration: starts `id` when it is enabled but failed (and not quarantined), saying how
    /// it went.
    private func startFailed(_ id: String) -> String? {
        // Safe mode runs no plugin code. (A one-command kernel holds every enabled plugin idle, a failed one too: it
        // is activated once as `enable` would, to say whether it starts; a server runs it.)
        guard !safeMode, !idle.contains(id) || configuration.startsIdle, let record = (try? state.plugin(id)) ?? nil, record.enabled, record.status == .failed,
              (try? isQuarantined(id)) != true else { return nil }
        do throws(KernelError) { try enable(id) } catch {
            return "\(id) is enabled but still cannot start: \(error.reason)"
        }
        guard active[id] != nil || idle.contains(id) else { return nil }
        return configuration.startsIdle ? "\(id) starts now (it activated here; `keel serve` runs it)" : "\(id) started"
    }
}
