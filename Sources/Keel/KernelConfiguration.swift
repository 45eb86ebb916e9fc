// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelIsolation
import KeelLoader
import KeelManifest
import KeelState
import KeelSystem

/// How a kernel is set up. Plain data; every field has a documented default.
public struct KernelConfiguration: Sendable {
    /// The folder holding plugin bundles (one sub-folder each, with `plugin.yaml`).
    /// Default: `$KEEL_PLUGINS_DIR`, else `./plugins`.
    public var pluginsDirectory: String
    /// Bundle folders registered from code, in addition to the plugin folder's (which may then be "" for none).
    /// They are scanned on every rescan, as the plugin folder's are, but not watched and not managed by install.
    public var bundleFolders: [String] = []
    /// The SQLite state file. Default: `$KEEL_STATE`, else `./.keel/state.db`. With `openState` set (a shared
    /// store), it only anchors this host's own files: the server lock, the libraries' private copies.
    /// `StateStore.inMemory` (`:memory:`)
    /// keeps the state in memory and writes nothing to disk: no state file, no activation mark, no file copies of
    /// libraries (a load that cannot be copied into memory fails instead).
    public var stateFile: String
    /// Opens the state store. Default nil: the SQLite file at `stateFile`. A shared store (PostgreSQL, from
    /// `KeelStatePostgres.PostgresStore.open`) is opened through this, so `Keel` itself never links its driver.
    /// Called once, from `Kernel.init`; its `StateError` becomes `KernelError.Code.state`.
    public var openState: (@Sendable () throws(StateError) -> StateStore)?

    /// Opens the state store: `openState`, else the SQLite file at `stateFile`.
    func makeState() throws(StateError) -> StateStore {
        if let openState { return try openState() }
        return try StateStore(path: stateFile, requireWritable: true)
    }
    /// Ceilings per plugin on routes, menu entries and hooks.
    public var limits: RegistrationLimits
    /// How long deactivation waits for a plugin's calls in flight (seconds).
    public var drainTimeout: Double
    /// Seconds one call into plugin code on the kernel's lifecycle thread (a library's load and unload, activate,
    /// deactivate after its drain, a service listener, `get_extension`) may run before the lifecycle counts as
    /// stalled (`Kernel.lifecycleStall`).
    /// Default 30.
    public var stallLimit: Double = 30
    /// When set, every library with a checksum not seen before is first tried in a child process (see
    /// `PluginProbe`) and never loaded into this process if the child crashes, exits, hangs or refuses it.
    /// Default: nil (an embedder opts in by naming the `keel` executable); `keel serve` always sets it.
    public var probe: PluginProbe?
    /// Capabilities every plugin gets when its manifest asks for them. The rest (by default the sensitive ones,
    /// `authenticate` and `authorize`) need an explicit grant from the operator. An appliance that trusts every
    /// plugin it ships can list all of them here.
    public var trustedCapabilities: Set<Capability> = [.routes, .menus]
    /// Time budgets for handlers and hooks, and how many failed calls in a row disable a plugin.
    public var budgets: CallBudgets = .default
    /// How messages about a capability not granted say to grant it: the CLI's command by default; an embedder
    /// names its own call (the C API sets `keel_grant(...)`).
    public var grantHint: GrantHint = .cli
    /// How a message says to keep a provider the operator chose (`{interface}`, `{plugin}`): the CLI's command by
    /// default; libkeel's `keel_use_provider(k, "{interface}", "{plugin}")`.
    public var useProviderHint = "`keel services use {interface} {plugin}`"
    /// How a message says to enable a plugin again (a quarantine's "... or run X to try again"), `{id}` where the
    /// plugin's id goes: the CLI's command by default; an embedder's own call (`keel_enable(k, "{id}")` for libkeel).
    public var enableHint = "`keel plugins enable {id}`"

    /// `enableHint` for plugin `id`.
    func enableCommand(_ id: String) -> String { enableHint.replacingOccurrences(of: "{id}", with: id) }
    /// Where each load's private copy of a library lives. `true` (default): in memory (memfd), opened by the dynamic
    /// loader through `/proc/self/fd`; `false`: a file under `<state dir>/generations/`, removed once mapped. Memory
    /// is used only where it works; files are the fallback either way. An installed package's library is loaded
    /// without a copy through its descriptor the same way (see `GenerationStore`), so with `false` it is copied too.
    public var copiesInMemory: Bool = true
    /// Seconds after a library file's last change within which its stamp is not trusted to stand for its bytes
    /// (`FileStamp.isSettled`): the copy of a reactivatable plugin read that soon is not kept for its next activation
    /// (a second write in the same clock tick could leave the same stamp). Default 2.
    public var libraryStampMargin: Double = 2
    /// When set, `start()` installs the process's fatal-signal handler: if the process dies of SIGSEGV, SIGBUS,
    /// SIGILL, SIGFPE or SIGABRT, a crash record beside the state file names the plugin that was running, and the
    /// next start quarantines it (see `CrashGuard`). Process-wide: the last kernel started names the file. Default:
    /// false (an embedder opts in); `keel serve` sets it.
    public var recordsCrashes: Bool = false
    /// The operator's idle time-out for every lazy plugin (seconds), in place of each manifest's `idle-timeout:`;
    /// 0 keeps lazy plugins loaded once used. Default: nil (each manifest decides).
    public var lazyIdleTimeout: Double?
    /// Every enabled plugin with a library starts idle, as a lazy one does, and is activated only when something
    /// needs it: a command call, a service acquire, or `enable` (which activates it, so that a failure shows at
    /// once). Nothing idle is written back to the state store (a stored failure and its reason stay as they are).
    /// For a kernel that runs one operator command and stops: the CLI's own kernel when no server runs, so that
    /// `keel plugins list` runs no plugin code and adds no generation to any plugin's history. Default: false.
    public var startsIdle: Bool = false
    /// The `keel` executable that runs plugins with `isolation: process` (as `keel worker`). Default: nil, and such
    /// a plugin fails to activate with a reason that says so (an embedder opts in); `keel serve` sets it.
    public var workerExecutable: String?
    /// Call budget, restarts and resource limits of worker processes.
    public var isolation: IsolationPolicy = .default
    /// How many copies of stopped plugins' libraries may stay mapped before a plugin is refused another copy (see
    /// `StaleCopyLimits`).
    public var staleCopies: StaleCopyLimits = .default
    /// Where the kernel and plugins log. Called from any thread. Default: one line per record to stderr.
    public var log: @Sendable (LogRecord) -> Void

    public init(pluginsDirectory: String = KernelConfiguration.defaultPluginsDirectory,
                stateFile: String = KernelConfiguration.defaultStateFile,
                limits: RegistrationLimits = .default, drainTimeout: Double = 5, probe: PluginProbe? = nil,
                log: @escaping @Sendable (LogRecord) -> Void = KernelConfiguration.standardErrorLog) {
        self.pluginsDirectory = pluginsDirectory
        self.stateFile = stateFile
        self.limits = limits
        self.drainTimeout = drainTimeout
        self.probe = probe
        self.log = log
    }

    public static var defaultPluginsDirectory: String {
        ProcessInfo.processInfo.environment["KEEL_PLUGINS_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "plugins"
    }

    public static var defaultStateFile: String {
        // Through `HeldSecrets`: a postgres:// URL in it may carry a password, taken out of the environment.
        HeldSecrets.environment["KEEL_STATE"].flatMap { $0.isEmpty ? nil : $0 } ?? ".keel/state.db"
    }

    public static let standardErrorLog: @Sendable (LogRecord) -> Void = { record in
        SystemFile.say(record.description + "\n", to: 2)
    }

    /// A log that drops everything (for tools that print their own output).
    public static let silentLog: @Sendable (LogRecord) -> Void = { _ in }
}

/// One log line from the kernel or a plugin.
public struct LogRecord: Sendable, CustomStringConvertible {
    public var level: LogLevel
    /// The plugin it concerns, if any.
    public var pluginID: String?
    public var message: String
    /// The plugin's generation it concerns: the one that logged it, or the one serving when the host logged it.
    public var generation: Int?
    /// The HTTP request it happened in, when it happened in one (`X-Request-Id`, or the id the server gave it).
    public var requestID: String?

    public init(level: LogLevel, pluginID: String?, message: String, generation: Int? = nil, requestID: String? = nil) {
        self.level = level
        self.pluginID = pluginID
        self.message = message
        self.generation = generation
        self.requestID = requestID
    }

    /// `debug`, `info`, `warning` or `error`.
    public var levelName: String { ["debug", "info", "warning", "error"][level.rawValue] }

    /// One line: control and invisible formatting characters in the message (a plugin's, a client's) escaped
    /// (`Printable`), so that no line written to a terminal or a log file breaks, forges another or moves the cursor.
    public var description: String {
        let text = Printable.escapingControls(message)
        return pluginID.map { "keel: \(levelName): [\($0)] \(text)" } ?? "keel: \(levelName): \(text)"
    }
}
