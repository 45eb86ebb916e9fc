// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest

/// Enable's refusal: what must be there before a plugin is enabled, judged before anything is stored.
extension Kernel {
    /// Why enabling `id` is refused before anything is stored: a dependency missing, disabled, of the wrong version,
    /// or one that cannot start itself for the same reasons (followed all the way down), or a required interface that
    /// no enabled plugin provides. A plugin left wanted but failed for want of another stayed so after that one was
    /// enabled, and a guard among them closed the host to every request. Nil for an active plugin.
    ///
    /// What counts as there: an active plugin; an idle one (lazy, or every plugin in a one-command kernel: `enable`
    /// wakes it first); and, in a kernel that activates nothing of its own accord (safe mode, a CLI's one-command
    /// kernel), one stored enabled. A one-command kernel does not know the interfaces an embedding program offers
    /// (`provide`), so there every required interface is left to the activation to judge.
    /// - Parameter tenancy: the tenants each plugin is enabled for with the change being judged (an enable for a
    ///   tenant, not yet stored); the stored ones by default.
    func enableRefusal(_ id: String, _ bundle: Bundle? = nil, tenancy: [String: Set<String>]? = nil) -> KernelError? {
        guard active[id] == nil else { return nil }
        let stored = safeMode || configuration.startsIdle
            ? Set(((try? state.plugins()) ?? []).filter(\.enabled).map(\.id)) : []
        var judged: [String: KernelError?] = [:]
        return enableRefusal(id, bundle, present: idle.union(stored), visiting: [], tenancy: tenancy, judged: &judged)
    }

    /// - Parameter judged: each plugin's answer once found, so that a plugin many others reach (a shared dependency,
    ///   a provider in a diamond) is judged once per enable, not once per path to it.
    private func enableRefusal(_ id: String, _ bundle: Bundle?, present: Set<String>, visiting: Set<String>,
                               tenancy: [String: Set<String>]?, judged: inout [String: KernelError?]) -> KernelError? {
        if let known = judged[id] { return known }
        let answer = judgeEnable(id, bundle, present: present, visiting: visiting, tenancy: tenancy, judged: &judged)
        judged[id] = .some(answer)
        return answer
    }

    private func judgeEnable(_ id: String, _ bundle: Bundle?, present: Set<String>, visiting: Set<String>,
                             tenancy: [String: Set<String>]?, judged: inout [String: KernelError?]) -> KernelError? {
        guard active[id] == nil, let manifest = (bundle ?? bundles[id])?.manifest else { return nil }
        let others = present.subtracting([id])
        if let unmet = unmetDependency(id, manifest, pending: others, hostInterfacesUnknown: configuration.startsIdle,
                                        tenancy: tenancy) {
            return unmet
        }
        // One level is not enough: an idle dependency whose own dependency is gone would leave this one failed.
        let below = visiting.union([id])
        for dep in manifest.dependencies where active[dep.id] == nil && !below.contains(dep.id) {
            if let deeper = enableRefusal(dep.id, nil, present: present, visiting: below, tenancy: tenancy, judged: &judged) {
                return KernelError(.dependency, pluginID: id, reason: "plugin \"\(id)\" needs \"\(dep.id)\", which cannot start: \(deeper.reason)")
            }
        }
        // A one-command kernel leaves interfaces to the activation: the embedding program may offer any of them.
        guard !configuration.startsIdle else { return nil }
        let services = registry.snapshot.services
        for need in manifest.consumes where !need.optional {
            if services.providers[need.interface]?.contains(where: { need.versions.contains($0.version) }) == true { continue }
            let providers = others.subtracting(below).filter { bundles[$0]?.manifest?.provides.contains(where: need.accepts) == true }.sorted()
            guard let first = providers.first else { continue }
            var deeper: KernelError?
            for provider in providers {
                guard let refusal = enableRefusal(provider, nil, present: present, visiting: below, tenancy: tenancy, judged: &judged) else { deeper = nil; break }
                if deeper == nil { deeper = refusal }
            }
            if let deeper {
                return KernelError(.dependency, pluginID: id,
                                   reason: "plugin \"\(id)\" needs interface \(need.interface), whose provider \"\(first)\" cannot start: \(deeper.reason)")
            }
        }
        return nil
    }
}
