// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The distinct label values a plugin chooses (its route patterns, its hook names), counted per plugin and metric
/// family up to a limit: past it, a new value is recorded as `(other)`.
///
/// Each value makes series that every later scrape prints, for the life of the server, and a plugin may choose new
/// ones at each activation (a reload, a lazy plugin's wake on anyone's request): without a limit, a plugin that
/// registered new patterns each time grew `GET /metrics` and the server's memory with every activation. A value
/// already admitted stays admitted. Not thread-safe: `ServerMetrics` holds it under a lock.
struct LabelBudget {
    /// The label value past the limit.
    static let other = "(other)"
    /// Distinct values per plugin, by family.
    let limits: [String: Int]
    private var seen: [FamilyKey: Set<String>] = [:]

    private struct FamilyKey: Hashable {
        let family: String
        let plugin: String
    }

    init(limits: [String: Int]) { self.limits = limits }

    /// `value`, or `other` when `plugin` already has its limit of other values in `family` (a family without a limit
    /// admits every value).
    mutating func admit(_ value: String, family: String, plugin: String) -> String {
        let key = FamilyKey(family: family, plugin: plugin)
        if seen[key]?.contains(value) == true { return value }
        guard let limit = limits[family] else { return value }
        guard seen[key, default: []].count < limit else { return Self.other }
        seen[key, default: []].insert(value)
        return value
    }
}
