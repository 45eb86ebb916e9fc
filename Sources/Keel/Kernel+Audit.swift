// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelState

/// The audit trail (`StateStore.recordAudit`): every executed command and every admin call the auth chain refused.
/// Rows never hold a command's arguments (configuration, keys, tokens, call arguments), and neither does the log line
/// of a command whose failure reason might quote them (`KernelCommand.mayQuoteArguments`). An install's or upgrade's
/// row says what it did to the plugin's pinned signer, or why the signer was refused (names and key fingerprints:
/// public facts, never secrets).
extension Kernel {
    /// Stores one audit row; a store that cannot take it is logged (the command's outcome stands either way).
    /// `records` (the command's deferred state writes, which never throw) are written in the same transaction; if
    /// the row cannot be stored, they are written without it.
    nonisolated func audit(_ entry: StateStore.AuditEntry, with records: [() -> Void] = []) {
        do {
            if records.isEmpty {
                try state.recordAudit(entry)
            } else {
                try state.transaction {
                    for record in records { record() }
                    try state.recordAudit(entry)
                }
            }
        } catch {
            for record in records { record() }
            log(.warn, nil, "audit row for \(entry.command) \(entry.target) not stored: \(error)")
        }
    }

    /// Records a lifecycle change the host made of its own accord, which no command asked for: a plugin disabled
    /// automatically, quarantined after it took the host down, let out of quarantine by a new build, reloaded because
    /// its files changed. Actor `keel`, from `local`; `detail` says why (cut and escaped as a log line). [any thread]
    nonisolated func auditHostAction(_ command: String, _ id: String, outcome: String = "ok", detail: String) {
        audit(StateStore.AuditEntry(actor: "keel", origin: "local", command: command, target: id, outcome: outcome,
                                    detail: TextLimits.logLine(detail)))
    }

    /// Writes the log line and audit row of a command call made on the caller's own thread, not through `execute`
    /// (the C embedding API's `keel_command`), as `execute(.call ...)` writes them: the call's name, never its
    /// arguments, and the error code only when it failed. [any thread]
    public nonisolated func recordCall(plugin: String, command name: String, actor: String, failed: Bool) {
        let command = KernelCommand.call(plugin: plugin, command: name, arguments: [])
        let code = failed ? KernelError.Code.command.description : "ok"
        log(failed ? .warn : .info, plugin, "\(actor): \(command.name) \(command.subject): \(failed ? "failed (\(code))" : "ok")")
        audit(StateStore.AuditEntry(actor: actor, principal: nil, origin: nil, command: command.name, target: command.subject,
                                    outcome: code, detail: nil))
    }

    /// Records an admin call the auth chain refused (a deny from an authorize hook, a missing permission): the row
    /// names the call (`METHOD /path`), the caller and `reason` (which hook or which permission); the outcome is
    /// `forbidden`. `reason` must not carry request data beyond the path.
    /// At most `RefusalBudget.perMinute` refusals a minute get a row each (see `RefusalBudget`).
    public nonisolated func auditRefusal(actor: String, principal: String?, origin: String?, call: String, reason: String) {
        let anonymous = principal.map(\.isEmpty) ?? true
        let (record, leftOut) = refusalBudget.admit(at: Int64(Date().timeIntervalSince1970), anonymous: anonymous)
        if leftOut > 0 {
            audit(StateStore.AuditEntry(actor: "keel", command: "refusals-left-out", target: "", outcome: "forbidden",
                                        detail: "\(leftOut) more refused call(s) of \(anonymous ? "anonymous" : "identified") callers than the audit trail "
                                            + "records one by one (\(refusalBudget.perMinute) a minute, \(refusalBudget.perDay / 2) rows a day); the log has each"))
        }
        guard record else { return }
        // The call names the client's path (up to the HTTP layer's limit, 80 KiB): cut, so that 10,000 refusals keep
        // a bounded trail.
        audit(StateStore.AuditEntry(actor: actor.prefix(utf8Bytes: Self.auditFieldBytes),
                                    principal: principal?.prefix(utf8Bytes: Self.auditFieldBytes), origin: origin,
                                    command: TextLimits.cut(call, to: Self.auditFieldBytes), target: "",
                                    outcome: "forbidden", detail: TextLimits.logLine(reason)))
    }

    /// Bytes of UTF-8 kept of a refused call's path and its caller's names in the audit trail.
    static let auditFieldBytes = 512

    /// The audit rows at or after `since` (ISO 8601 UTC; nil: all kept), oldest first, at most the newest `limit`.
    /// - Throws: `KernelError.Code.state` when the store cannot be read.
    public nonisolated func auditTrail(since: String? = nil, limit: Int = StateStore.auditCapacity) throws(KernelError) -> [StateStore.AuditEntry] {
        do { return try state.audit(since: since, limit: limit) } catch { throw KernelError(.state, reason: error.description) }
    }
}

extension KernelCommand {
    /// True for the commands whose records written after plugin code ran are held back and written together with
    /// the audit row (`Kernel.execute`): those whose flow writes nothing else after them (checked one by one).
    var foldsRecords: Bool {
        switch self {
        case .enable, .disable: true
        default: false
        }
    }

    /// The audit row's detail for this command's `outcome`: for an install or upgrade, what it did to the plugin's
    /// pinned signer (`CommandResult.note`), or the signer refusal (`signer-mismatch`); for a key no longer trusted,
    /// its fingerprint and the plugins pinned to it; for a key trusted, the plugin ids it may sign; for a choice of
    /// provider, the plugin chosen (or that the choice was cleared) and the tenant; nil for everything else.
    func auditDetail(_ outcome: Result<CommandResult, KernelError>) -> String? {
        switch (self, outcome) {
        case (.install, .success(let result)), (.upgrade, .success(let result)), (.untrustKey, .success(let result)),
             (.trustKey, .success(let result)): result.note
        case (.install, .failure(let error)), (.upgrade, .failure(let error)): error.code == .signerMismatch ? error.reason : nil
        // A choice and its clearing share a command: the row says which, and for whom; a refused one says it was asked
        // for, not made ("chose" read as if the refused choice had been made).
        case let (.useProvider(_, plugin, tenant), .success):
            (plugin.map { "chose \($0)" } ?? "cleared the choice") + (tenant.map { " for tenant \($0)" } ?? " host-wide")
        case let (.useProvider(_, plugin, tenant), .failure):
            (plugin.map { "asked to choose \($0)" } ?? "asked to clear the choice") + (tenant.map { " for tenant \($0)" } ?? " host-wide")
        // Who got or lost which access (names and permission items, never secrets): a grant and a revoke, or a member
        // added and removed, read alike before 2026-12-08. Cut to a log line's length (a principal may be long).
        // A change that changed nothing (a grant to the built-in admin, a revoke of what the role never had) is
        // recorded as asked for, with why, not as made.
        case let (.setRolePermission(_, permission, granted), .success(result)):
            TextLimits.logLine(Self.changeDetail(granted ? "grant" : "revoke", granted ? "granted" : "revoked", permission, note: result.note))
        case let (.setMember(_, principal, role, member), .success(result)):
            TextLimits.logLine(Self.changeDetail(member ? "add" : "remove", member ? "added" : "removed", principal + " as " + role, note: result.note))
        case let (.deleteTenant, .success(result)), let (.deleteRole, .success(result)): result.note.map { TextLimits.logLine($0) }
        // A refusal whose reason is built from names only (tenants, roles, principals, plugin ids, capabilities: no
        // path, no argument value) is kept with its code, so that `keel audit` says why ("directory" alone does not).
        case let (_, .failure(error)) where !mayQuoteArguments && Self.namesOnlyCodes.contains(error.code):
            TextLimits.logLine(error.reason)
        default: nil
        }
    }

    /// "granted X", or "asked to grant X: <why nothing changed>" when the note says nothing changed; another note
    /// (a wildcard that still allows a revoked item) follows the change.
    static func changeDetail(_ verb: String, _ done: String, _ what: String, note: String?) -> String {
        guard let note else { return "\(done) \(what)" }
        return note.contains("nothing changed") ? "asked to \(verb) \(what): \(note)" : "\(done) \(what); \(note)"
    }

    /// The error codes whose reasons name only what the command names (tenants, roles, principals, plugin ids,
    /// capabilities, interfaces): their reasons go into the audit row. (Not `unknownPlugin`: its reason may name a
    /// bundle folder.)
    static let namesOnlyCodes: Set<KernelError.Code> = [.directory, .notFound, .badRequest, .badGrant, .dependency, .notEnabled]

    /// True when a failure reason may quote the command's arguments (a configuration value in a schema or YAML
    /// error, a command argument, a repository location with credentials): its log line and audit row then carry
    /// the error code only.
    public var mayQuoteArguments: Bool {
        switch self {
        case .config, .call, .addRepository, .trustKey: true
        default: false
        }
    }
}
