// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelExtensions
import Synchronization

/// One operation a user can ask of the kernel, whichever front end asked: the admin API, the console, the `keel`
/// CLI (in its own process, or queued to a running server as JSON), and an embedder. Each front end builds the value
/// and hands it to `Kernel.execute`, so the audit line, the change events and the outcome are the same for all.
/// Codable: the queue between the CLI and a running server stores it as JSON.
public enum KernelCommand: Codable, Sendable, Hashable {
    case enable(id: String, tenant: String?)
    case disable(id: String, tenant: String?, cascade: Bool)
    case reload(id: String)
    /// Loads the plugin's current build only when it is not the one serving (another library or plugin.yaml), as the
    /// folder watcher does; otherwise changes nothing. `keel dev` sends it after each build: when the server's watcher
    /// has already reloaded the copy, no second generation of the same build is made. A plugin not serving: as `reload`.
    case refresh(id: String)
    /// Re-reads the plugin folder.
    case rescan
    /// Grants and revokes capabilities (`authenticate`, `route-prefix:/legacy`, ...).
    case grants(id: String, grant: [String], revoke: [String])
    /// Sets the plugin's configuration from YAML (checked against its schema); `file` names it in errors.
    case config(id: String, yaml: String, file: String? = nil)
    /// Runs the plugin in the host (`in-process`) or in a worker process of its own (`process`); nil goes back to
    /// what its manifest asks for. An active plugin is reloaded into its new place.
    case isolation(id: String, mode: Isolation?)
    /// Installs from the repositories. `signer` is the operator's word on the plugin's pinned signer (see
    /// `SignerChange`); nil keeps the pin (a plugin uninstalled with `--keep-data` stays pinned).
    case install(id: String, version: String?, allowUnsigned: Bool, signer: SignerChange? = nil)
    /// Upgrades (or moves to `version`): the package must be signed by the key the plugin is pinned to, unless
    /// `signer` deliberately moves it to another key (`.key`) or forgets the pin (`.forget`).
    case upgrade(id: String, version: String?, allowUnsigned: Bool, signer: SignerChange? = nil)
    case uninstall(id: String, cascade: Bool, keepData: Bool)
    case createTenant(name: String)
    case deleteTenant(name: String, cascade: Bool)
    /// Binds (or, with `member` false, unbinds) a principal to a role in a tenant.
    case setMember(tenant: String, principal: String, role: String, member: Bool)
    case createRole(name: String)
    /// Removes a role, its permission items and its bindings (not the built-in admin).
    case deleteRole(name: String)
    /// Grants (or revokes) a permission item `KEY:ACTION` to a role.
    case setRolePermission(role: String, permission: String, granted: Bool)
    case addRepository(name: String, location: String, priority: Int)
    case removeRepository(name: String)
    /// `only`: the plugin ids it may sign (`TrustScope` patterns; nil: any, or, for a key already trusted, as it was).
    case trustKey(name: String, publicKey: String, only: [String]? = nil)
    /// Stops trusting the key named `name` (plugins pinned to it keep the pin; see `StateStore.untrustKey`).
    case untrustKey(name: String)
    /// Makes `plugin` serve `interface` (`gitops.sync/1`) host-wide or for `tenant`; `plugin` nil forgets the choice.
    case useProvider(interface: String, plugin: String?, tenant: String?)
    /// Calls a plugin's command as the operator (an admin), acting in `tenant` (nil: the default tenant): a plugin
    /// enabled for some tenants only serves theirs. The result, as JSON, is in `CommandResult.output`. (A queue entry
    /// of an earlier keel, without `tenant`, reads as nil.)
    case call(plugin: String, command: String, arguments: [String], tenant: String? = nil)
    /// Replaces the stored admin token with a new random one (returned once, in `CommandResult.adminToken`).
    case resetAdminToken

    /// A short name for logs, the audit line and the queue's `op` column.
    public var name: String {
        switch self {
        case .enable: "enable"
        case .disable: "disable"
        case .reload: "reload"
        case .refresh: "refresh"
        case .rescan: "rescan"
        case .grants: "grants"
        case .config: "config"
        case .isolation: "isolation"
        case .install: "install"
        case .upgrade: "upgrade"
        case .uninstall: "uninstall"
        case .createTenant: "create-tenant"
        case .deleteTenant: "delete-tenant"
        case .setMember: "set-member"
        case .createRole: "create-role"
        case .deleteRole: "delete-role"
        case .setRolePermission: "set-role-permission"
        case .addRepository: "add-repository"
        case .removeRepository: "remove-repository"
        case .trustKey: "trust-key"
        case .untrustKey: "untrust-key"
        case .resetAdminToken: "reset-admin-token"
        case .useProvider: "use-provider"
        case .call: "call"
        }
    }

    /// What it is about: a plugin id, a tenant, a role or a repository ("" for a rescan).
    public var subject: String {
        switch self {
        case let .enable(id, _), let .disable(id, _, _), let .reload(id), let .refresh(id), let .grants(id, _, _), let .config(id, _, _),
             let .install(id, _, _, _), let .upgrade(id, _, _, _), let .uninstall(id, _, _), let .isolation(id, _): id
        case let .createTenant(name), let .deleteTenant(name, _), let .createRole(name), let .deleteRole(name), let .addRepository(name, _, _),
             let .removeRepository(name), let .trustKey(name, _, _), let .untrustKey(name): name
        case let .setMember(tenant, _, _, _): tenant
        case let .setRolePermission(role, _, _): role
        case let .useProvider(interface, _, _): interface
        case let .call(plugin, command, _, _): "\(plugin).\(command)"
        case .rescan, .resetAdminToken: ""
        }
    }

    /// The plugin it is about, when it is about one plugin: the one it changes, or the one whose command it calls.
    public var pluginID: String? {
        switch self {
        case let .call(id, _, _, _): id
        case let .enable(id, _), let .disable(id, _, _), let .reload(id), let .refresh(id), let .grants(id, _, _), let .config(id, _, _),
             let .install(id, _, _, _), let .upgrade(id, _, _, _), let .uninstall(id, _, _), let .isolation(id, _): id
        default: nil
        }
    }
}

/// The queue between the CLI and a running server carries kernel commands.
public typealias RemoteCommand = KernelCommand

/// What a command did, beyond succeeding.
public struct CommandResult: Codable, Sendable, Hashable {
    /// For an install: what was installed, dependencies first ("id version").
    public var installed: [String] = []
    /// For an admin token reset: the new token, to show once (never logged, never stored in clear).
    public var adminToken: String?
    /// Something the caller should know although it succeeded (e.g. "an http location is checked when it is used").
    public var note: String?
    /// For a command call: its result as JSON text.
    public var output: String?
    /// What the command was about as the kernel took it, when that differs from how it was asked: a bare interface
    /// name completed to `name/major` (`KernelCommand.subject`). Nil otherwise.
    public var subject: String?
    /// True when nothing changed: a refresh that loaded nothing (the bundle holds the serving build), a disable of a
    /// plugin not enabled (for that tenant). Nil otherwise.
    public var unchanged: Bool?

    public init(installed: [String] = [], adminToken: String? = nil, note: String? = nil, output: String? = nil) {
        self.installed = installed
        self.adminToken = adminToken
        self.note = note
        self.output = output
    }
}

/// Something that changed in the kernel.
public enum KernelEvent: Sendable {
    /// A command ran: who asked (`actor`: "admin-api", "cli", an embedder's name), and why it failed (nil: it
    /// succeeded). Emitted after the change is stored.
    case executed(KernelCommand, actor: String, failure: String?)
    /// Plugins changed state without a command: a watched bundle was reloaded, a lazy plugin was woken by its first
    /// use or went idle, a misbehaving plugin was disabled, another host's change to the shared state was applied.
    /// One event may stand for several changes.
    case pluginsChanged
}

/// Subscribers to the kernel's events: the live view other processes read, the console's live updates, audit and
/// metrics. A subscriber is called in order of subscription, on the kernel's executor, after the change is stored,
/// and is awaited: it must not call back into an operation that waits for the kernel's queue of commands.
/// Subscribers added with `subscribeNow` are called first, synchronously, on the kernel's own thread (no hop off it
/// and back); they must be short and must not block or call the kernel. Thread-safe.
public final class KernelEvents: Sendable {
    public typealias Handler = @Sendable (KernelEvent) async -> Void
    public typealias ImmediateHandler = @Sendable (KernelEvent) -> Void
    private enum Call { case later(Handler), now(ImmediateHandler) }
    private let handlers = Mutex<[(id: Int, executed: Bool, call: Call)]>([])
    private let next = Mutex(0)

    public init() {}

    /// Adds `handler`; returns a token for `unsubscribe`. With `executed` false it is not called for `.executed`
    /// events (a command then costs it no call, and the kernel no hop off its thread and back).
    @discardableResult
    public func subscribe(executed: Bool = true, _ handler: @escaping Handler) -> Int {
        add(executed: executed, .later(handler))
    }

    /// Adds a handler called synchronously on the kernel's thread, before the awaited ones; returns a token for
    /// `unsubscribe`. For a handler that only records or hands the event on (a ring, a stream's continuation).
    @discardableResult
    public func subscribeNow(_ handler: @escaping ImmediateHandler) -> Int {
        add(executed: true, .now(handler))
    }

    private func add(executed: Bool, _ call: Call) -> Int {
        let id = next.withLock { n -> Int in n += 1; return n }
        handlers.withLock { $0.append((id, executed, call)) }
        return id
    }

    public func unsubscribe(_ token: Int) {
        handlers.withLock { $0.removeAll { $0.id == token } }
    }

    /// Calls the immediate handlers of `event`; true when awaited ones want it too (`emitLater`).
    func emitNow(_ event: KernelEvent) -> Bool {
        let executed = if case .executed = event { true } else { false }
        var later = false
        for (_, wants, call) in handlers.withLock({ $0 }) where wants || !executed {
            switch call {
            case let .now(handler): handler(event)
            case .later: later = true
            }
        }
        return later
    }

    /// Awaits the handlers of `event` added with `subscribe`.
    func emitLater(_ event: KernelEvent) async {
        let executed = if case .executed = event { true } else { false }
        for (_, wants, call) in handlers.withLock({ $0 }) where wants || !executed {
            if case let .later(handler) = call { await handler(event) }
        }
    }

    func emit(_ event: KernelEvent) async {
        if emitNow(event) { await emitLater(event) }
    }
}
