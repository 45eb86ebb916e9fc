// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The operations the kernel and the front ends (HTTP admin API, `keel` CLI) need from the state store.
///
/// `StateStore` is the implementation on both engines: a SQLite file, or PostgreSQL (`KeelStatePostgres`, through
/// `StateStore(database:)`); both run the same code for every operation. Callers still name `StateStore` directly.
/// The value types (`PluginRecord`, `StateStore.Load`, `StateStore.Command`, `StateStore.Directory`, ...) are
/// shared by every implementation.
///
/// What an implementation must guarantee:
/// - **Thread-safe.** Any thread may call any method at any time; calls may block (I/O), and callers keep them
///   off latency-sensitive paths.
/// - **One transaction per change.** Every method that writes commits all of its rows, history event included,
///   atomically and durably before it returns; when it throws, nothing it wrote remains. A `ChangeResult.refused`
///   leaves nothing written either. Reads see only committed data (no partial change of another process).
/// - **`batch`** runs its body's writes in one transaction: all committed at the end, none when it throws. It is
///   used only while no other thread writes through the same store.
/// - **Change detection.** `dataVersion()` returns a value that differs from the last one returned whenever another
///   process (another connection) committed since; the server polls it and then reads `pendingCommands()`. A
///   value may also change without a new command (a spurious wake is harmless), but a committed command must never
///   go unnoticed. (SQLite: `PRAGMA data_version`; PostgreSQL: a change sequence and the LISTEN/NOTIFY notifications received.)
/// - **Claim/cancel atomicity.** `claimCommand` (server) and `cancelCommand` (client) each move a command out of
///   `pending` in one conditional step, so for one command exactly one of them returns true. `claimCommand` also
///   refuses (and marks `cancelled`) a command whose deadline passed. A command whose cancel won never runs.
/// - **Errors** are `StateError`, one line naming the store and the reason, never a raw driver error.
/// - **Settings keep their meaning across versions**: state written by an earlier Keel reads the same.
public protocol StateStoring: AnyObject, Sendable {
    // MARK: store
    func batch<T>(_ body: () throws -> T) throws -> T
    func transaction<T>(_ body: () throws -> T) throws -> T
    func settling<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T
    func dataVersion() throws(StateError) -> Int64
    func integrityCheck() throws(StateError) -> String

    // MARK: plugin records and history
    func plugins() throws(StateError) -> [PluginRecord]
    func plugin(_ id: String) throws(StateError) -> PluginRecord?
    func discovered(id: String, name: String, version: String, bundlePath: String) throws(StateError)
    func setEnabled(_ id: String, _ enabled: Bool, status: PluginStatus, reason: String?) throws(StateError)
    func setStatus(_ id: String, _ status: PluginStatus, reason: String?) throws(StateError)
    func forgetPlugin(_ id: String, everything: Bool) throws(StateError)
    func events(for id: String) throws(StateError) -> [StateStore.Event]

    // MARK: load history and probes
    func recordLoad(_ id: String, _ load: StateStore.Load) throws(StateError)
    func loads(for id: String, limit: Int) throws(StateError) -> [StateStore.Load]
    func lastGeneration(_ id: String) throws(StateError) -> Int
    func lastGenerations() throws(StateError) -> [String: Int]
    func probePassed(_ checksum: String) throws(StateError) -> Bool
    func recordProbePassed(_ checksum: String, detail: String) throws(StateError)

    // MARK: grants
    func grants(_ id: String) throws(StateError) -> Set<String>
    func allGrants() throws(StateError) -> [String: Set<String>]
    func setGrants(_ id: String, grant: [String], revoke: [String]) throws(StateError)

    // MARK: tenants, roles, members
    func directory() throws(StateError) -> StateStore.Directory
    func createTenant(_ name: String) throws(StateError) -> StateStore.ChangeResult
    func deleteTenant(_ name: String, cascade: Bool) throws(StateError) -> StateStore.ChangeResult
    func createRole(_ name: String) throws(StateError) -> StateStore.ChangeResult
    func deleteRole(_ name: String) throws(StateError) -> StateStore.ChangeResult
    func setRolePermission(_ role: String, _ permission: String, granted: Bool) throws(StateError) -> StateStore.ChangeResult
    func setMember(tenant: String, principal: String, role: String, member: Bool) throws(StateError) -> StateStore.ChangeResult
    func setPluginTenants(_ id: String, _ tenants: Set<String>?) throws(StateError) -> StateStore.ChangeResult

    // MARK: command queue (CLI → server)
    func submitCommand(op: String, pluginID: String, body: String, timeout: Double, target: String?) throws(StateError) -> Int64
    func command(_ seq: Int64) throws(StateError) -> StateStore.Command?
    func pendingCommands() throws(StateError) -> [StateStore.Command]
    func claimCommand(_ seq: Int64) throws(StateError) -> Bool
    func cancelCommand(_ seq: Int64) throws(StateError) -> Bool
    func finishCommand(_ seq: Int64, failed: Bool, result: String) throws(StateError)

    // MARK: per-plugin configuration
    func config(_ id: String) throws(StateError) -> (yaml: String, json: String)?
    func allConfigs() throws(StateError) -> [String: (yaml: String, json: String)]
    func setConfig(_ id: String, _ config: (yaml: String, json: String)?, event: String) throws(StateError)

    // MARK: repositories, trusted keys and the key each plugin is pinned to
    func repositories() throws(StateError) -> [StateStore.Repository]
    func addRepository(_ r: StateStore.Repository) throws(StateError) -> StateStore.ChangeResult
    func removeRepository(_ name: String) throws(StateError) -> StateStore.ChangeResult
    func trustedKeys() throws(StateError) -> [String: String]
    func trustKey(name: String, publicKey: String, only: [String]?) throws(StateError) -> StateStore.ChangeResult
    func trustedKeySet() throws(StateError) -> TrustedKeySet
    func untrustKey(_ name: String) throws(StateError) -> StateStore.ChangeResult
    func pinnedSigner(_ id: String) throws(StateError) -> StateStore.PinnedSigner?
    func pinnedSigners() throws(StateError) -> [String: StateStore.PinnedSigner]
    func setPinnedSigner(_ id: String, _ signer: StateStore.PinnedSigner?) throws(StateError)

    // MARK: settings
    func quarantinedChecksum(_ id: String) throws(StateError) -> String?
    func quarantinedChecksums() throws(StateError) -> [String: String]
    func setQuarantine(_ id: String, checksum: String?) throws(StateError)
    func guardRecords() throws(StateError) -> [String: [String]]
    func setGuardRecord(_ id: String, needs: [String]?) throws(StateError)
    func signatureRecord(_ id: String) throws(StateError) -> String?
    func setSignatureRecord(_ id: String, _ record: String?) throws(StateError)
    func livePluginsJSON() throws(StateError) -> String?
    func setLivePluginsJSON(_ json: String) throws(StateError)
    func liveServicesJSON() throws(StateError) -> String?
    func setLiveServicesJSON(_ json: String) throws(StateError)
    func setLiveView(plugins: String, services: String) throws(StateError)
    func updateLiveView(_ change: StateStore.LiveViewChange) throws(StateError)
    func serviceSelections() throws(StateError) -> [StateStore.ServiceSelection]
    func setServiceSelection(interface: String, tenant: String, plugin: String?) throws(StateError)
    func proxySecret() throws(StateError) -> String
    func adminTokenDigest() throws(StateError) -> String?
    func setAdminTokenDigest(_ digest: String?) throws(StateError)

    // MARK: audit
    // The audit trail (Audit.swift): who did what, from where, when, with what outcome; never a command's arguments.
    // Bounded: an implementation keeps at least the last `StateStore.auditCapacity` rows and prunes older ones as it
    // inserts. `since` is an ISO 8601 UTC time as `StateStore.now()` writes it.
    func recordAudit(_ entry: StateStore.AuditEntry) throws(StateError)
    func audit(since: String?, limit: Int) throws(StateError) -> [StateStore.AuditEntry]
}

extension StateStoring {
    /// `submitCommand` for whichever server of this state takes it.
    public func submitCommand(op: String, pluginID: String, body: String, timeout: Double) throws(StateError) -> Int64 {
        try submitCommand(op: op, pluginID: pluginID, body: body, timeout: timeout, target: nil)
    }

    /// Trusts `publicKey` under `name` for any plugin id (a scope it had stays).
    public func trustKey(name: String, publicKey: String) throws(StateError) -> StateStore.ChangeResult {
        try trustKey(name: name, publicKey: publicKey, only: nil)
    }

    /// `setEnabled` with no reason.
    public func setEnabled(_ id: String, _ enabled: Bool, status: PluginStatus) throws(StateError) {
        try setEnabled(id, enabled, status: status, reason: nil)
    }

    /// `setStatus` with no reason.
    public func setStatus(_ id: String, _ status: PluginStatus) throws(StateError) {
        try setStatus(id, status, reason: nil)
    }

    /// The last 1000 loads.
    public func loads(for id: String) throws(StateError) -> [StateStore.Load] {
        try loads(for: id, limit: 1000)
    }

    /// `setConfig` with the default event name.
    public func setConfig(_ id: String, _ config: (yaml: String, json: String)?) throws(StateError) {
        try setConfig(id, config, event: "config")
    }

    /// Stores a plugin's configuration (`setConfig(id, (yaml, json))`).
    public func setConfig(_ id: String, yaml: String, json: String) throws(StateError) {
        try setConfig(id, (yaml, json), event: "config")
    }
}
