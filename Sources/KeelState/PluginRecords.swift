// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// What the kernel remembers about one plugin.
public struct PluginRecord: Sendable, Hashable, Codable {
    /// The values, behind one reference (`storage`): a start with a thousand plugins copies every record into a few
    /// tables, and a copy should cost one reference count, not one for each of its strings. Encoded as these fields.
    private struct Fields: Sendable, Hashable, Codable {
        var id: String
        var name: String
        var version: String
        var bundlePath: String
        var enabled: Bool
        var status: PluginStatus
        var reason: String?
        var changedAt: String
    }

    /// Copy on write: `mutate` copies it first unless this record is its only holder. (Each of Manifest, PluginBundle and
    /// PluginRecord has its own box: one generic box in another module made a start with 1,000 plugins 7–12 % slower.)
    /// `@unchecked Sendable`: `fields` is written only through `mutate`, which first makes sure that no other
    /// record holds this storage (`isKnownUniquelyReferenced`), so a storage shared between threads is never written.
    private final class Storage: @unchecked Sendable {
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }
    private var storage: Storage

    private mutating func mutate(_ change: (inout Fields) -> Void) {
        if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.fields) }
        change(&storage.fields)
    }

    public init(id: String, name: String, version: String, bundlePath: String, enabled: Bool, status: PluginStatus,
                reason: String?, changedAt: String) {
        storage = Storage(Fields(id: id, name: name, version: version, bundlePath: bundlePath, enabled: enabled, status: status,
                                 reason: reason, changedAt: changedAt))
    }

    public init(from decoder: any Decoder) throws { storage = Storage(try Fields(from: decoder)) }
    public func encode(to encoder: any Encoder) throws { try storage.fields.encode(to: encoder) }
    public static func == (a: PluginRecord, b: PluginRecord) -> Bool { a.storage === b.storage || a.storage.fields == b.storage.fields }
    public func hash(into hasher: inout Hasher) { storage.fields.hash(into: &hasher) }

    public var id: String {
        get { storage.fields.id }
        set { mutate { $0.id = newValue } }
    }
    public var name: String {
        get { storage.fields.name }
        set { mutate { $0.name = newValue } }
    }
    public var version: String {
        get { storage.fields.version }
        set { mutate { $0.version = newValue } }
    }
    /// The bundle folder it was last found in.
    public var bundlePath: String {
        get { storage.fields.bundlePath }
        set { mutate { $0.bundlePath = newValue } }
    }
    /// What the operator asked for: true after `enable`, false after `disable`.
    public var enabled: Bool {
        get { storage.fields.enabled }
        set { mutate { $0.enabled = newValue } }
    }
    public var status: PluginStatus {
        get { storage.fields.status }
        set { mutate { $0.status = newValue } }
    }
    /// Why it failed, when `status` is `.failed`.
    public var reason: String? {
        get { storage.fields.reason }
        set { mutate { $0.reason = newValue } }
    }
    /// When `status` last changed (ISO 8601, UTC).
    public var changedAt: String {
        get { storage.fields.changedAt }
        set { mutate { $0.changedAt = newValue } }
    }
}

/// The observed state of a plugin.
public enum PluginStatus: String, Sendable, Hashable, Codable, CaseIterable {
    /// Discovered, never enabled.
    case installed
    /// Active: its contributions are published.
    case enabled
    /// Switched off by the operator.
    case disabled
    /// Could not be loaded or activated; `reason` says why.
    case failed
    /// Its bundle is gone from the plugin folder.
    case missing
    /// Being fetched and unpacked from a repository.
    case installing
    /// The last install attempt failed; `reason` says why. It can be retried.
    case installFailed = "install-failed"
    /// A new version is being fetched, verified and swapped in.
    case upgrading
    /// The last upgrade failed and was rolled back; `reason` says why.
    case upgradeFailed = "upgrade-failed"
    /// Being disabled and removed.
    case uninstalling
}

/// Plugin records (desired and observed state) and each plugin's event history.
///
/// Thread-safe and blocking, like every `StateStore` call. Each change is one transaction, its history event
/// included, and throws `StateError` when SQLite fails (nothing written then).
extension StateStore {
    /// The columns `recordsQuery` selects, in order, as `record` reads them.
    static let recordColumns = ["id", "name", "version", "bundle_path", "enabled", "status", "reason", "changed_at"]

    static func record(_ v: [StateValue]) -> PluginRecord? {
        guard v.count == recordColumns.count, let id = v[0].text, let statusText = v[5].text else { return nil }
        return PluginRecord(id: id, name: v[1].text ?? "", version: v[2].text ?? "", bundlePath: v[3].text ?? "",
                            enabled: (v[4].int ?? 0) != 0, status: PluginStatus(rawValue: statusText) ?? .failed,
                            reason: v[6].text, changedAt: v[7].text ?? "")
    }

    /// Every plugin, by id (with this store's host's own status over the shared one: `observe(as:)`).
    public func plugins() throws(StateError) -> [PluginRecord] {
        let (sql, bindings) = Self.recordsQuery(host: observingHost, id: nil)
        return try locked { db throws(StateError) in try db.rows(sql, bindings, columns: Self.recordColumns).compactMap(Self.record) }
    }

    public func plugin(_ id: String) throws(StateError) -> PluginRecord? {
        let (sql, bindings) = Self.recordsQuery(host: observingHost, id: id)
        return try locked { db throws(StateError) in try db.rows(sql, bindings, columns: Self.recordColumns).compactMap(Self.record).first }
    }

    /// Records a bundle found on disk: a new id starts as `installed` and disabled; a known one keeps its desired
    /// state and gets its name, version and path refreshed, except through a store that observes for a host
    /// (`observe(as:)`): each host has its own plugin folder, and hosts refreshing the one shared row in turn would
    /// wake each other without end.
    public func discovered(id: String, name: String, version: String, bundlePath: String) throws(StateError) {
        let shared = observingHost != nil || dropsObservations.load(ordering: .relaxed)
        // Before and after: a live view built meanwhile on another thread read the record as it was before.
        touch(id)
        defer { touch(id) }
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                let now = Self.now()
                let existing = try db.query("SELECT name, version, bundle_path FROM plugins WHERE id = ?", [.text(id)])
                if let row = existing.first {
                    guard !shared, row["name"]?.text != name || row["version"]?.text != version || row["bundle_path"]?.text != bundlePath
                    else { return }
                    try db.query("UPDATE plugins SET name = ?, version = ?, bundle_path = ? WHERE id = ?",
                                 [.text(name), .text(version), .text(bundlePath), .text(id)])
                } else {
                    // Two hosts of a shared state starting at once both find the bundle new: the second insert is none.
                    try db.query("""
                        INSERT INTO plugins (id, name, version, bundle_path, enabled, status, changed_at, installed_at)
                        VALUES (?, ?, ?, ?, 0, 'installed', ?, ?) ON CONFLICT(id) DO NOTHING
                        """, [.text(id), .text(name), .text(version), .text(bundlePath), .text(now), .text(now)])
                    try Self.event(db, id, "discovered", "\(version) at \(bundlePath)")
                }
            }
        }
    }

    /// Sets what the operator wants (`enable`/`disable`) and the resulting status in one transaction (for a store
    /// that observes for a host, see `observe(as:)`).
    public func setEnabled(_ id: String, _ enabled: Bool, status: PluginStatus, reason: String?) throws(StateError) {
        try update(id, enabled: enabled, status: status, reason: reason, event: enabled ? "enable" : "disable")
    }

    /// Records the observed status (and the reason, for `.failed`) without touching the desired state (for a store
    /// that observes for a host, in that host's row only: see `observe(as:)`).
    public func setStatus(_ id: String, _ status: PluginStatus, reason: String?) throws(StateError) {
        try update(id, enabled: nil, status: status, reason: reason, event: status.rawValue)
    }

    private func update(_ id: String, enabled: Bool?, status: PluginStatus, reason: String?, event: String) throws(StateError) {
        let host = observingHost, drops = host == nil && dropsObservations.load(ordering: .relaxed)
        // Before and after: a live view built meanwhile on another thread read the record as it was before.
        touch(id)
        defer { touch(id) }
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                let exists = try db.query("SELECT status, reason, enabled FROM plugins WHERE id = ?", [.text(id)])
                var status = status, reason = reason
                if let host {
                    let changed = try Self.observe(db, host: host, id, status, reason: reason)
                    if enabled == nil && !exists.isEmpty {
                        // An observation: this host's alone; the shared row is every host's desired state.
                        if changed { try Self.event(db, id, event, "on \(host)" + (reason.map { ": \($0)" } ?? "")) }
                        return
                    }
                    if let enabled {
                        // A new desired state: every host tries it again, and the shared row records the wish.
                        try db.query("DELETE FROM host_plugins WHERE plugin_id = ? AND host <> ? AND status IN ('failed', 'install-failed')",
                                     [.text(id), .text(host)])
                        if enabled { (status, reason) = (.enabled, nil) }
                    }
                } else if drops {
                    // Observed by no host: nothing to record of a known plugin.
                    if enabled == nil && !exists.isEmpty { return }
                    // A new desired state from a process that is no host: every host tries it again.
                    if let enabled {
                        try db.query("DELETE FROM host_plugins WHERE plugin_id = ? AND status IN ('failed', 'install-failed')", [.text(id)])
                        if enabled { (status, reason) = (.enabled, nil) }
                    }
                }
                if exists.isEmpty {
                    let now = Self.now()
                    try db.query("""
                        INSERT INTO plugins (id, enabled, status, reason, changed_at, installed_at)
                        VALUES (?, ?, ?, ?, ?, ?)
                        """, [.text(id), .int((enabled ?? false) ? 1 : 0), .text(status.rawValue),
                              reason.map { .text($0) } ?? .null, .text(now), .text(now)])
                } else {
                    let row = exists[0]
                    let unchanged = row["status"]?.text == status.rawValue && row["reason"]?.text == reason
                        && (enabled == nil || (row["enabled"]?.int ?? 0 != 0) == enabled)
                    if unchanged { return }
                    // The time is made only for a change: a start sets every plugin's status, most of them unchanged.
                    let now = Self.now()
                    try db.query("""
                        UPDATE plugins SET enabled = COALESCE(?, enabled), status = ?, reason = ?, changed_at = ? WHERE id = ?
                        """, [enabled.map { .int($0 ? 1 : 0) } ?? .null, .text(status.rawValue),
                              reason.map { .text($0) } ?? .null, .text(now), .text(id)])
                }
                try Self.event(db, id, event, reason ?? "")
            }
        }
    }

    /// Forgets a plugin's record (after it is uninstalled); its grants, tenants, configuration and pinned signer stay
    /// unless `everything`; its history stays.
    public func forgetPlugin(_ id: String, everything: Bool) throws(StateError) {
        // Before and after: a live view built meanwhile on another thread read the record as it was before.
        touch(id)
        defer { touch(id) }
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                try db.query("DELETE FROM plugins WHERE id = ?", [.text(id)])
                try db.query("DELETE FROM host_plugins WHERE plugin_id = ?", [.text(id)])
                if everything {
                    try db.query("DELETE FROM plugin_config WHERE plugin_id = ?", [.text(id)])
                    try db.query("DELETE FROM grants WHERE plugin_id = ?", [.text(id)])
                    try db.query("DELETE FROM plugin_tenants WHERE plugin_id = ?", [.text(id)])
                    try db.query("DELETE FROM plugin_signers WHERE plugin_id = ?", [.text(id)])
                }
                try Self.event(db, id, "uninstalled", everything ? "" : "data kept")
            }
        }
    }

    // MARK: history

    /// Rows the plugins' histories keep in all (every enable, disable, grant, configuration change writes one): the
    /// oldest go, 256 at a time, so the table holds between this and 255 more.
    public static let eventCapacity = 100_000

    /// Appends an event to a plugin's history, inside the caller's transaction (the caller holds the lock); every
    /// 256th drops the rows beyond `eventCapacity`.
    static func event(_ db: any StateDatabase, _ id: String, _ kind: String, _ detail: String) throws(StateError) {
        let seq = try db.query("INSERT INTO events (at, plugin_id, kind, detail) VALUES (?, ?, ?, ?) RETURNING seq",
                               [.text(now()), .text(id), .text(kind), .text(detail)]).first?["seq"]?.int ?? 0
        if seq > Int64(eventCapacity), seq % 256 == 0 {
            try db.query("DELETE FROM events WHERE seq <= ?", [.int(seq - Int64(eventCapacity))])
        }
    }

    /// One entry of a plugin's history.
    public struct Event: Sendable, Hashable, Codable {
        public var at: String
        public var kind: String
        public var detail: String
    }

    /// A plugin's history, oldest first.
    public func events(for id: String) throws(StateError) -> [Event] {
        try locked { db throws(StateError) in
            try db.query("SELECT at, kind, detail FROM events WHERE plugin_id = ? ORDER BY seq", [.text(id)]).map {
                Event(at: $0["at"]?.text ?? "", kind: $0["kind"]?.text ?? "", detail: $0["detail"]?.text ?? "")
            }
        }
    }
}
