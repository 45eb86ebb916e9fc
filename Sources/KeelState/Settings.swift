// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Small values the kernel and the front ends keep between runs, each behind a typed accessor.
///
/// They share one key/value table; the keys below are part of the state file's format (files written by earlier
/// versions are read as they are), so a key is never renamed. Callers never build keys themselves.
/// Thread-safe and blocking, like every `StateStore` call. Each write is one statement (its own transaction);
/// throws `StateError` when SQLite fails.
extension StateStore {
    /// The stored keys, one per kind of setting.
    enum SettingKey {
        /// The checksum of the library whose activate took the host down, per plugin.
        static func quarantine(_ id: String) -> String { "quarantine.\(id)" }
        /// How the installed archive of a plugin was signed (JSON written by the installer), per plugin.
        static func signature(_ id: String) -> String { "signature.\(id)" }
        /// The plugins a plugin with auth hooks needs (one id per line, maybe none), per such plugin.
        static func guardRecord(_ id: String) -> String { "guard.\(id)" }
        /// The operator's choice of where a plugin runs (`in-process` or `process`), per plugin.
        static func isolation(_ id: String) -> String { "isolation.\(id)" }
        /// The running server's view of every plugin (JSON), for other processes to read.
        static let livePlugins = "live.plugins"
        /// The running server's view of every interface between plugins (JSON).
        static let liveServices = "live.services"
        /// The SHA-256 (hex) of the admin token.
        static let adminTokenDigest = "admin.token.sha256"
        /// The host's secret for signing the identity it forwards to proxied apps (hex, 32 bytes).
        static let proxySecret = "proxy.secret"
    }

    /// A stored setting, or nil.
    func setting(_ key: String) throws(StateError) -> String? {
        try locked { db throws(StateError) in
            try db.query("SELECT value FROM settings WHERE key = ?", [.text(key)]).first?["value"]?.text
        }
    }

    /// Stores (or, with nil, removes) a setting in one transaction.
    func setSetting(_ key: String, _ value: String?) throws(StateError) {
        _ = try locked { db throws(StateError) in
            if let value {
                try db.query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                             [.text(key), .text(value)])
            } else {
                try db.query("DELETE FROM settings WHERE key = ?", [.text(key)])
            }
        }
    }

    // MARK: isolation

    /// The operator's choice of where `id` runs (`in-process`, `process`), or nil when its manifest decides.
    public func isolationChoice(_ id: String) throws(StateError) -> String? { try setting(SettingKey.isolation(id)) }

    /// Stores the operator's choice of where `id` runs; nil leaves it to the manifest.
    public func setIsolationChoice(_ id: String, _ mode: String?) throws(StateError) {
        try setSetting(SettingKey.isolation(id), mode)
    }

    // MARK: crash-loop quarantine

    /// The checksum of the library `id` was quarantined for (its activate took the host down), or nil when it is
    /// not quarantined.
    public func quarantinedChecksum(_ id: String) throws(StateError) -> String? {
        try setting(SettingKey.quarantine(id))
    }

    /// Every quarantined plugin with its checksum (`quarantinedChecksum` of each), in one read.
    public func quarantinedChecksums() throws(StateError) -> [String: String] {
        try settings(keyedBy: SettingKey.quarantine(""))
    }

    /// Every setting whose key starts with `prefix`, by the rest of its key (a plugin id), in one read.
    func settings(keyedBy prefix: String) throws(StateError) -> [String: String] {
        try locked { db throws(StateError) in
            var result: [String: String] = [:]
            for row in try db.query("SELECT key, value FROM settings WHERE key LIKE ?", [.text(prefix + "%")]) {
                guard let key = row["key"]?.text, let value = row["value"]?.text, key.hasPrefix(prefix) else { continue }
                result[String(key.dropFirst(prefix.count))] = value
            }
            return result
        }
    }

    // MARK: guards

    /// Every plugin whose last activation registered auth hooks, with the plugins it needs (its dependencies and
    /// the providers of interfaces it requires, transitively), in one read.
    public func guardRecords() throws(StateError) -> [String: [String]] {
        try settings(keyedBy: SettingKey.guardRecord("")).mapValues { $0.split(separator: "\n").map(String.init) }
    }

    /// Records that `id` guards requests and needs `needs`; nil: it does not guard requests.
    public func setGuardRecord(_ id: String, needs: [String]?) throws(StateError) {
        try setSetting(SettingKey.guardRecord(id), needs.map { $0.joined(separator: "\n") })
    }

    /// Quarantines `id` for the library with `checksum`; nil lifts the quarantine.
    public func setQuarantine(_ id: String, checksum: String?) throws(StateError) {
        try setSetting(SettingKey.quarantine(id), checksum)
    }

    // MARK: signature status

    /// How the installed archive of `id` was signed, as the installer recorded it (its JSON), or nil.
    public func signatureRecord(_ id: String) throws(StateError) -> String? {
        try setting(SettingKey.signature(id))
    }

    /// Records how the installed archive of `id` was signed; nil forgets it.
    public func setSignatureRecord(_ id: String, _ record: String?) throws(StateError) {
        try setSetting(SettingKey.signature(id), record)
    }

    // MARK: live view

    /// The running server's last published view of every plugin (a JSON array), or nil when none was published.
    /// Kept a plugin per row (`updateLiveView`), in the plugins' order; a whole text (`setLivePluginsJSON`, and
    /// files of earlier versions) is read as it is.
    public func livePluginsJSON() throws(StateError) -> String? {
        try locked { db throws(StateError) in
            guard let stored = try db.query("SELECT value FROM settings WHERE key = ?", [.text(SettingKey.livePlugins)]).first?["value"]?.text
            else { return nil }
            guard stored == Self.liveRowsMarker else { return stored }
            let parts = try db.query("SELECT json FROM live_plugins ORDER BY id", []).compactMap { $0["json"]?.text }
            return "[" + parts.joined(separator: ",") + "]"
        }
    }

    /// What `live.plugins` holds while the view is kept a plugin per row.
    static let liveRowsMarker = "rows"

    /// What changed in the live view since the last update: each part is one plugin's JSON object.
    public struct LiveViewChange: Sendable {
        /// Replace every part (the first publication of a server, or a full rebuild); else only `parts` and `removed`.
        public var replacesAll: Bool
        public var parts: [(id: String, json: String)]
        public var removed: [String]
        /// The interfaces' view (JSON), when it changed.
        public var services: String?

        public init(replacesAll: Bool, parts: [(id: String, json: String)], removed: [String], services: String?) {
            self.replacesAll = replacesAll
            self.parts = parts
            self.removed = removed
            self.services = services
        }

        public var isEmpty: Bool { !replacesAll && parts.isEmpty && removed.isEmpty && services == nil }
    }

    /// Publishes a change of the server's view in one transaction that does not wait for the disk (as
    /// `setLiveView`): what a command changed costs a row per plugin it changed, not the whole view. Inside a
    /// transaction (a command's audit row), all of the change or none of it joins it: a failure part-way leaves the
    /// view as it was, and the transaction's other writes.
    public func updateLiveView(_ change: LiveViewChange) throws(StateError) {
        guard !change.isEmpty else { return }
        try settling(sync: false) { () throws(StateError) in
            try locked { db throws(StateError) in
                try db.atomically("live_view") { () throws(StateError) in
                    if change.replacesAll {
                        try db.query("DELETE FROM live_plugins", [])
                        try setSetting(SettingKey.livePlugins, Self.liveRowsMarker)
                    }
                    for id in change.removed { try db.query("DELETE FROM live_plugins WHERE id = ?", [.text(id)]) }
                    for (id, json) in change.parts {
                        try db.query("INSERT INTO live_plugins (id, json) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET json = excluded.json",
                                     [.text(id), .text(json)])
                    }
                    if let services = change.services { try setSetting(SettingKey.liveServices, services) }
                }
            }
        }
    }

    /// Publishes the server's view of every plugin (JSON) for other processes.
    public func setLivePluginsJSON(_ json: String) throws(StateError) {
        try setSetting(SettingKey.livePlugins, json)
    }

    /// The running server's last published view of the interfaces between plugins (JSON), or nil.
    public func liveServicesJSON() throws(StateError) -> String? {
        try setting(SettingKey.liveServices)
    }

    /// Publishes the server's view of the interfaces between plugins (JSON) for other processes.
    public func setLiveServicesJSON(_ json: String) throws(StateError) {
        try setSetting(SettingKey.liveServices, json)
    }

    /// Publishes both views (`setLivePluginsJSON`, `setLiveServicesJSON`) in one transaction that does not wait for
    /// the disk: the live view describes a running server and is rewritten by the next one, so after a power cut an
    /// older view is as good as none. A reader sees both or neither.
    public func setLiveView(plugins: String, services: String) throws(StateError) {
        try settling(sync: false) { () throws(StateError) in
            try locked { db throws(StateError) in
                try db.transaction { () throws(StateError) in
                    try setSetting(SettingKey.livePlugins, plugins)
                    try setSetting(SettingKey.liveServices, services)
                }
            }
        }
    }

    // MARK: proxy secret

    /// The host's secret for signing forwarded identities, made (randomly) on first use and kept.
    public func proxySecret() throws(StateError) -> String {
        if let existing = try setting(SettingKey.proxySecret) { return existing }
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        let made = Hex.lowercase(bytes)
        _ = try locked { db throws(StateError) in
            try db.query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", [.text(SettingKey.proxySecret), .text(made)])
        }
        return try setting(SettingKey.proxySecret) ?? made
    }

    // MARK: admin token

    /// The stored SHA-256 (hex) of the admin token, or nil when none was made.
    public func adminTokenDigest() throws(StateError) -> String? {
        try setting(SettingKey.adminTokenDigest)
    }

    /// Stores the admin token's SHA-256 (hex), replacing the old one; nil removes it.
    public func setAdminTokenDigest(_ digest: String?) throws(StateError) {
        try setSetting(SettingKey.adminTokenDigest, digest)
    }

    /// Stores `digest` as the admin token's unless one is stored already, in one statement: of two hosts of a shared
    /// state starting at once, one token is kept. Returns whether this one was.
    public func setAdminTokenDigestIfNone(_ digest: String) throws(StateError) -> Bool {
        try locked { db throws(StateError) in
            try db.query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                         [.text(SettingKey.adminTokenDigest), .text(digest)])
            return try db.query("SELECT value FROM settings WHERE key = ?", [.text(SettingKey.adminTokenDigest)]).first?["value"]?.text == digest
        }
    }
}
