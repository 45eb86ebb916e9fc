// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Why a kernel operation failed. `description` is one line naming the plugin and the reason.
public struct KernelError: Error, Sendable, CustomStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// No plugin with that id is known.
        public static let unknownPlugin = Code(name: "unknown-plugin")
        /// The plugin could not be loaded, verified or activated.
        public static let loadFailed = Code(name: "load-failed")
        /// A dependency is missing, inactive, of a wrong version, or part of a cycle; or a dependent blocks it.
        public static let dependency = Code(name: "dependency")
        /// A route or menu id is taken by another plugin.
        public static let conflict = Code(name: "conflict")
        /// The state file could not be read or written.
        public static let state = Code(name: "state")
        /// The plugin folder or a bundle cannot be used.
        public static let bundle = Code(name: "bundle")
        /// A configuration its plugin's schema refuses, or that is not valid YAML (`setConfig`): the file, the key
        /// and the reason.
        public static let badConfig = Code(name: "bad-config")
        /// A grant or revoke names an unknown capability, or grants one the plugin does not ask for. Nothing changed.
        public static let badGrant = Code(name: "bad-grant")
        /// A tenant, role or binding change was refused for the state it found (a name already taken, a tenant still
        /// in use, ...). An unknown name is `notFound`, a malformed one `badRequest` (`KernelError.directory(_:)`).
        public static let directory = Code(name: "directory")
        /// A tenant, role or other name the command gives is not known. Nothing changed.
        public static let notFound = Code(name: "not-found")
        /// A name or item the command gives is malformed: a tenant or role name, a principal id, a permission item.
        /// Nothing changed.
        public static let badRequest = Code(name: "bad-request")
        /// A plugin command could not be called or failed (unknown, bad argument, refused, its own error status).
        public static let command = Code(name: "command")
        /// An install or upgrade was refused because the package is not signed by the key the plugin is pinned to
        /// (or by the key the operator named with `--signer`). Nothing was installed or changed.
        public static let signerMismatch = Code(name: "signer-mismatch")
        /// A plugin was not loaded again because the copies of stopped plugins' libraries that stay mapped in the
        /// process reached their limit (`KernelConfiguration.staleCopies`); a restart of the host frees them.
        public static let staleCopyLimit = Code(name: "stale-copy-limit")
        /// The running server did not take a queued command, or did not finish it, within the client's timeout
        /// (`RemoteControl.submit`); the reason says which, and whether the command was cancelled.
        public static let unanswered = Code(name: "unanswered")
        /// No repository offers the plugin, or the version asked for, to install or upgrade. Nothing changed.
        public static let notOffered = Code(name: "not-offered")
        /// A plugin to wake is not enabled (any more): disabled, removed or failed while the call waited for it.
        public static let notEnabled = Code(name: "not-enabled")
    }

    public var code: Code
    public var pluginID: String?
    public var reason: String
    /// The same reason with the host's paths in it (the plugin folder searched), for a front end on the host itself
    /// (the CLI); nil when `reason` says all. The admin API and the console show `reason` only: their callers are
    /// not told the host's paths.
    public var localReason: String?

    public init(_ code: Code, pluginID: String? = nil, reason: String, localReason: String? = nil) {
        self.code = code
        self.pluginID = pluginID
        self.reason = reason
        self.localReason = localReason
    }

    public var description: String { reason }

    /// A refused change of tenants, roles or bindings, coded by what refused it: an unknown name `notFound`, a
    /// malformed one `badRequest`, anything else (a name taken, a tenant in use) `directory`. The store says why in
    /// words only (`StateStore.ChangeResult`); the words it uses for each are read here, in one place.
    static func directory(_ reason: String, pluginID: String? = nil) -> KernelError {
        let code: Code = reason.hasPrefix("unknown ") || reason.hasPrefix("no tenant ") ? .notFound
            : ["is not a valid", "is not a permission", "not in Unicode NFC", "must be 1", "no authenticate hook can name"]
                .contains(where: reason.contains) ? .badRequest : .directory
        return KernelError(code, pluginID: pluginID, reason: reason)
    }
}
