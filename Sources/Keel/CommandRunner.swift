// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState

/// Calls plugin commands by name ("keel.commands/1"), for every caller: the admin API, the CLI (through
/// `KernelCommand.call`), the console, and other plugins. One place decides who may: the plugin must serve the
/// caller's tenant, and the caller must hold the command's permission (`key:action` through the auth chain and role
/// grants; a command without one is for admins only). Then the arguments are checked against the signature and the
/// command is called on the calling thread, which must not be one of Swift's cooperative pool (plugin code).
/// Thread-safe.
struct CommandRunner: Sendable {
    let registry: PluginRegistry
    let access: AccessControl
    /// For the operator's answer about a plugin that is not active (its record's status and reason); nil: not said.
    var state: StateStore? = nil
    /// Where idle lazy plugins are woken.
    let environment: KernelEnvironment

    /// Wakes `plugin` when it is an idle lazy plugin and `principal` may call its command `name` (checked against
    /// its manifest first, so a caller refused anyway loads nothing). The error to answer, or nil to go on.
    func wakeIfIdle(_ plugin: String, _ name: String, _ principal: Principal) -> CommandError? {
        guard let check = mayWake(plugin, name, principal) else { return nil }
        if case let .failure(refusal) = check { return refusal }
        guard let error = environment.wake(.plugin(plugin)) else { return nil }
        if error.code == .notEnabled { return unreachable(plugin, name, principal, declared: false, visible: false) }
        return Self.wakeFailed(plugin, error, principal)
    }

    /// Nil when `plugin` is not idle; else whether `principal` may wake it to call its command `name`: the refusal
    /// to answer, or success. Runs the auth chain (plugin code): not on Swift's cooperative pool.
    func mayWake(_ plugin: String, _ name: String, _ principal: Principal) -> Result<Void, CommandError>? {
        guard let manifest = environment.idleManifest(plugin) else { return nil }
        let declaration = manifest.commands.first { $0.name == name }
        guard let declaration, access.isVisible(plugin, tenant: principal.tenant) else {
            // The same words as for an active plugin (`call`): an idle plugin another tenant has reads as none.
            let visible = access.isVisible(plugin, tenant: principal.tenant)
            return .failure(unreachable(plugin, name, principal, declared: declaration != nil, visible: visible))
        }
        if let refusal = refusal(plugin, name, permission: declaration.permission, principal) { return .failure(refusal) }
        return .success(())
    }

    /// The answer for a command `principal` cannot reach: for a plugin another tenant has, the same words as for none
    /// at all (`visible` false: "no active plugin"), so a caller learns nothing of other tenants' plugins; but the
    /// host's own admin (the operator, the admin token), who enabled it for those tenants, is told which.
    /// The host's own admin is also told why a plugin it knows is not active (disabled, or failed with its reason)
    /// and the command likely meant (`ad`: did you mean "add"?).
    func unreachable(_ plugin: String, _ name: String, _ principal: Principal, declared: Bool, visible: Bool) -> CommandError {
        let operatorAsks = principal.authenticatedBy == "keel" && principal.roles.contains("admin")
        if declared, operatorAsks,
           let tenants = access.directory.pluginTenants[plugin], !tenants.isEmpty, !tenants.contains(principal.tenant) {
            return CommandError(.unknown, "no command \(plugin).\(name) for tenant \(principal.tenant): \(plugin) serves "
                                + "tenant(s) \(tenants.sorted().joined(separator: ", ")) only (call it in one: keel call --tenant NAME)")
        }
        if operatorAsks, visible, let near = Spelling.nearest(name, in: registry.commandNames(plugin: plugin)) {
            return CommandError(.unknown, "no command \(plugin).\(name) (did you mean \"\(near)\"?)")
        }
        // Until 2026-12-08 the operator calling a plugin disabled automatically was told only "no active plugin".
        if operatorAsks, !visible, let record = (try? state?.plugin(plugin)) ?? nil {
            let why = record.status == .failed ? "is failed" + (record.reason.map { ": \($0)" } ?? "")
                : record.enabled ? "is enabled but not running" : "is not enabled (keel plugins enable \(plugin))"
            return CommandError(.unknown, "no command \(plugin).\(name): plugin \"\(plugin)\" \(why)")
        }
        return CommandError(.unknown, "no command \(plugin).\(name)" + (visible ? "" : " (no active plugin \"\(plugin)\")"))
    }

    /// The answer for a command whose idle plugin failed to wake. The reason (a `dlopen` error, the host's paths) is
    /// the operator's: told to the host's own admin, in the plugin's status and log for everyone else, as a route's
    /// caller is not told it either.
    static func wakeFailed(_ plugin: String, _ error: KernelError, _ principal: Principal) -> CommandError {
        let operatorAsks = principal.authenticatedBy == "keel" && principal.roles.contains("admin")
        return CommandError(.unavailable, "plugin \"\(plugin)\" could not be activated" + (operatorAsks ? ": \(error.reason)" : " (its status says why)"))
    }

    func call(plugin: String, name: String, arguments: [CommandArgument], principal: Principal) -> Result<CommandValue, CommandError> {
        // An active plugin's command is found at once; only when there is none is the plugin looked for among the
        // idle ones (a plugin is never both: it is published when woken, and parked only once revoked).
        var found = registry.command(plugin: plugin, name: name)
        if found == nil {
            if let failure = wakeIfIdle(plugin, name, principal) { return .failure(failure) }
            found = registry.command(plugin: plugin, name: name)
        }
        guard let command = found, access.isVisible(plugin, tenant: principal.tenant) else {
            // The same words for a plugin another tenant has as for none at all: the answer tells no one which
            // plugins other tenants run.
            let active = registry.snapshot.plugins[plugin] != nil && access.isVisible(plugin, tenant: principal.tenant)
            return .failure(unreachable(plugin, name, principal, declared: found != nil, visible: active))
        }
        if let refusal = refusal(plugin, name, permission: command.declaration.permission, principal) { return .failure(refusal) }
        do { return command.invoke(try command.check(arguments)) } catch { return .failure(error) }
    }

    /// Why `principal` may not call `plugin`'s command `name`, which needs `permission` (its declaration's), or nil
    /// when it may. Decided from the declaration alone, so also for a plugin not loaded yet (an idle lazy one).
    func refusal(_ plugin: String, _ name: String, permission: String, _ principal: Principal) -> CommandError? {
        var who: String { principal.isAnonymous ? "an anonymous caller" : "\"\(principal.id)\"" }
        if permission.isEmpty {
            return principal.roles.contains("admin") ? nil
                : CommandError(.forbidden, "\(plugin).\(name) is for admins only; \(who) is not one")
        }
        let parts = permission.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2 else {
            return CommandError(.forbidden, "\(plugin).\(name) needs permission \(permission), which \(who) does not hold")
        }
        let (decision, reason) = access.authorize(principal, action: parts[1], resource: parts[0], snapshot: registry.snapshot)
        guard decision == .allow else {
            return CommandError(.forbidden, "\(plugin).\(name) needs permission \(permission), which \(who) does not hold"
                                + (reason.map { " (\($0))" } ?? ""))
        }
        return nil
    }

    /// A plugin calling another plugin's command: declared under `calls:`, arguments as a JSON array, result as JSON.
    /// (The loader has checked the `calls:` declaration.)
    func call(caller: String, plugin: String, name: String, arguments json: String, principal: Principal) -> Result<String, CommandError> {
        guard let data = json.data(using: .utf8), let arguments = try? JSONDecoder().decode([CommandArgument].self, from: data) else {
            return .failure(CommandError(.badArgument, "arguments of \(plugin).\(name) are not a JSON array of numbers, true/false, strings or null"))
        }
        return call(plugin: plugin, name: name, arguments: arguments, principal: principal).map(\.json)
    }
}

/// A command as `keel commands` and the admin API list it.
public struct CommandInfo: Sendable, Codable, Hashable {
    public var plugin: String
    public var name: String
    public var signature: String
    public var description: String
    /// `key:action`, or "" (admins only).
    public var permission: String

    init(plugin: String, _ d: CommandDeclaration) {
        self.plugin = plugin
        name = d.name
        signature = "\(d.signature)"
        description = d.description
        permission = d.permission
    }
}

extension Kernel {
    /// Calls `plugin`'s command `name` on behalf of `principal`, on the calling thread (not on Swift's cooperative
    /// pool: it runs plugin code; the admin API runs it in the plugin's lane). [thread-safe]
    /// - Returns: the result, or a `CommandError` with a stable code: unknown-command, bad-argument (naming the
    ///   argument), forbidden, command-failed (the plugin's status and message), unavailable, result-too-large.
    public nonisolated func call(_ plugin: String, _ name: String, arguments: [CommandArgument],
                                 as principal: Principal) -> Result<CommandValue, CommandError> {
        CommandRunner(registry: registry, access: access, state: state, environment: environment)
            .call(plugin: plugin, name: name, arguments: arguments, principal: principal)
    }

    /// Whether `principal` may wake the idle lazy `plugin` to call its command `name` (the checks `call` makes
    /// first): nil when the plugin is not idle. Runs the auth chain, on the calling thread, like `call`. [thread-safe]
    public nonisolated func mayWakeForCall(_ plugin: String, _ name: String, as principal: Principal) -> Result<Void, CommandError>? {
        CommandRunner(registry: registry, access: access, environment: environment).mayWake(plugin, name, principal)
    }

    /// Wakes `plugin` for a command call `mayWakeForCall` allowed, without holding a thread while it loads (a caller
    /// on Swift's cooperative pool awaits this before `call`, which would otherwise wait for the activation on its
    /// thread). Nil when it is active now; the error to answer otherwise.
    public func wakeForCall(_ plugin: String, as principal: Principal) async -> CommandError? {
        guard isIdle(plugin) else { return nil }
        do { try wake(plugin) } catch where error.code == .notEnabled {
            return nil  // disabled or removed meanwhile: `call` answers as for no such plugin
        } catch { return CommandRunner.wakeFailed(plugin, error, principal) }
        return nil
    }

    /// The commands of every installed plugin (or of `plugin`), from their manifests (an active plugin whose
    /// plugin.yaml cannot be read now: its serving build's).
    public func commands(_ plugin: String? = nil) -> [CommandInfo] {
        bundles.compactMap { id, bundle in bundle.manifest ?? active[id]?.manifest }
            .filter { plugin == nil || $0.id == plugin }.sorted { $0.id < $1.id }
            .flatMap { m in m.commands.map { CommandInfo(plugin: m.id, $0) } }
    }

    /// Whether `principal` may call `plugin`'s command `name` (declared with `permission`) now: the plugin runs (or is
    /// idle, woken by a call), serves the caller's tenant, and the caller holds the permission, the checks `call`
    /// makes before the command runs. Runs
    /// the authorize hooks on the calling thread: plugin code, never on Swift's cooperative pool. [thread-safe]
    public nonisolated func mayCall(_ plugin: String, _ name: String, permission: String, as principal: Principal) -> Bool {
        (registry.command(plugin: plugin, name: name) != nil || isIdle(plugin)) && access.isVisible(plugin, tenant: principal.tenant)
            && CommandRunner(registry: registry, access: access, environment: environment).refusal(plugin, name, permission: permission, principal) == nil
    }

    /// The principal the operator's own tools act as (the CLI on this host): an admin.
    public static let operatorPrincipal = Principal(id: "operator", displayName: "Operator", roles: ["admin"], authenticatedBy: "keel")
}
