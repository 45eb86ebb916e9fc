// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader

/// Which of a consumer's tenants a set of providers serves together. [pure; any thread]
///
/// A plugin enabled without `--tenant` serves every tenant, those made later included; one enabled with it serves the
/// tenants named. A consumer enabled for every tenant is therefore served whole only by a provider enabled for every
/// tenant (or the host's own table): providers limited to tenants leave a tenant made later without one, however many
/// tenants they name together. An acquire in a tenant that no provider serves finds none (`KEEL_ERR_NOT_FOUND`), so a
/// required interface is only there when its providers reach every tenant the consumer serves.
struct TenantReach: Equatable, Sendable {
    /// The consumer's tenants: nil for every tenant.
    let wanted: Set<String>?
    /// Those of them that the providers serve: nil for every tenant (only when `wanted` is nil).
    let served: Set<String>?

    /// - Parameters:
    ///   - providers: provider ids (`ServiceProvision.hostID` for the host's own table, which serves every tenant).
    ///   - consumer: the tenants the consumer is enabled for; nil for every tenant.
    ///   - tenancy: plugin id → the tenants it is enabled for; absent for every tenant.
    init(providers: some Sequence<String>, consumer: Set<String>?, tenancy: [String: Set<String>]) {
        wanted = consumer
        var union = Set<String>()
        for id in providers {
            guard id != ServiceProvision.hostID, let limited = tenancy[id] else {
                served = consumer
                return
            }
            union.formUnion(limited)
        }
        served = consumer.map { $0.intersection(union) } ?? union
    }

    /// True when every tenant the consumer serves has a provider.
    var isWhole: Bool { served == wanted }

    /// The tenants of a consumer limited to tenants that no provider serves; nil when the consumer serves every
    /// tenant (then every tenant is wanted, and a gap is any provider's limit) or when nothing is missing.
    var unserved: Set<String>? {
        guard !isWhole, let wanted else { return nil }
        return wanted.subtracting(served ?? wanted)
    }
}
