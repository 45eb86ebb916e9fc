// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelState

extension Kernel {
    /// Executes one user command, whichever front end built it: the one entry point for changes made on behalf of
    /// someone. Writes the audit line and the audit row (who, from where, what, outcome; never a command's
    /// arguments, which may hold secrets, see Kernel+Audit.swift) and emits `.executed` to the subscribers of
    /// `events` once the change is stored, whether it succeeded or not.
    /// - Parameters:
    ///   - actor: who asked, for the audit and the event ("admin-api", "cli", "console", ...).
    ///   - principal: the caller's principal id, when known ("admin", the OS user of the CLI).
    ///   - origin: where the call came from: a remote address, "local", or nil.
    /// - Throws: `KernelError` naming the plugin (or tenant, role, repository) and the reason; the state then is as
    ///   the failed operation documents (most change nothing).
    @discardableResult
    public func execute(_ given: KernelCommand, actor: String = "embedder", principal: String? = nil,
                        origin: String? = nil) async throws(KernelError) -> CommandResult {
        let command = completingInterface(given)
        // The command's records and its audit row reach the disk with one sync at the end (see `settling`); for
        // enable and disable, the records written after the plugin's code ran (`write`) share the audit row's
        // transaction, and so does the live view when a server keeps it (`RemoteControl.publishOnChange`).
        // A command call runs the plugin's code on a thread of its own, not the kernel's: a slow command would hold
        // every lifecycle change and lazy wake behind it. The kernel is free meanwhile (a call that finds its plugin
        // idle wakes it through the kernel, as a request does).
        // Installs and upgrades likewise download, verify and probe off the kernel's thread (one such change at a
        // time; see Kernel+Install.swift).
        // After `shutdown` nothing runs: a command queued or sent while the host closes (an embedder's
        // `keel_close`, a server stopping) must not activate a plugin after it returned.
        try requireRunning(command.name)
        var called: Result<CommandResult, KernelError>?
        switch command {
        case let .call(plugin, name, arguments, tenant):
            var principal = Kernel.operatorPrincipal
            if let tenant, tenant != Principal.defaultTenant, !access.directory.tenants.contains(tenant) {
                called = .failure(KernelError.directory("no tenant \"\(tenant)\"", pluginID: plugin))
            } else {
                if let tenant { principal.tenant = tenant }
                called = await Self.offKernel { [self, principal] in
                    call(plugin, name, arguments: arguments.map(CommandArgument.text), as: principal)
                        .map { CommandResult(output: $0.json) }
                        .mapError { KernelError(.command, pluginID: plugin, reason: $0.message) }
                }
            }
        case let .install(id, version, allowUnsigned, signer):
            do throws(KernelError) {
                let (installed, notes) = try await installNoting(id, version: version, store: extensions,
                                                                 allowUnsigned: allowUnsigned, signer: signer)
                called = .success(CommandResult(installed: installed, note: notes.isEmpty ? nil : notes.joined(separator: "; ")))
            } catch { called = .failure(error) }
        case let .upgrade(id, version, allowUnsigned, signer):
            do throws(KernelError) {
                let note = try await upgrade(id, to: version, store: extensions, allowUnsigned: allowUnsigned, signer: signer)
                called = .success(CommandResult(note: note))
            } catch { called = .failure(error) }
        case .uninstall:
            // Not while an install or upgrade is on its way (it would refuse: see `uninstall`).
            await waitForExtensionChanges()
        default: break
        }
        // The host shut down while this awaited (a command call in plugin code, a download): nothing of it is recorded,
        // since the state may be another kernel's by now (an embedder's `keel_close` frees it after `shutdown`).
        guard !isShutDown else {
            throw KernelError(.state, pluginID: command.pluginID, reason: "the host shut down while \(command.name) ran; its outcome was not recorded")
        }
        let (outcome, failure, said) = state.settling { () -> (Result<CommandResult, KernelError>, String?, String) in
            let outcome: Result<CommandResult, KernelError>
            let folds = deferredWrites == nil && command.foldsRecords
            if folds { deferredWrites = [] }
            if let called { outcome = called } else {
                loggedDuringCommand = []
                do throws(KernelError) { outcome = .success(try perform(command)) } catch { outcome = .failure(error) }
            }
            let logged = loggedDuringCommand ?? []
            loggedDuringCommand = nil
            var records = folds ? deferredWrites ?? [] : []
            if folds { deferredWrites = nil }
            // The live view other processes read, in the same transaction (no write and no hop of its own).
            noteForLiveView(command)
            if liveViewPublishers > 0 {
                // Run a second time only when the transaction of the first was rolled back (`audit`), and the parts it
                // wrote with it: then every part is written again.
                var runs = 0
                records.append { [self] in
                    if runs > 0 { liveViewStale = true }
                    runs += 1
                    publishLiveView(onlyTouched: true)
                }
            }
            let failure: String?
            if case let .failure(error) = outcome { failure = error.reason } else { failure = nil }
            var code = "ok"
            if case let .failure(error) = outcome { code = error.code.description }
            let what = command.subject.isEmpty ? command.name : "\(command.name) \(command.subject)"
            let said = failure.map { command.mayQuoteArguments ? "failed (\(code))" : $0 } ?? "ok"
            // A reason logged while the command ran (an activation's failure) is not said a second time.
            let line = failure.map { logged.contains(LoggedFailure(pluginID: command.pluginID, reason: $0)) ? "failed (\(code)), as logged above" : said } ?? said
            log(failure == nil ? .info : .warn, command.pluginID, "\(actor): \(what): \(line)")
            // The target as the caller gave it, cut as every caller-chosen field is (a refused 5,000-byte role name was
            // stored whole until 2026-12-08).
            audit(StateStore.AuditEntry(actor: actor, principal: principal, origin: origin, command: command.name,
                                        target: TextLimits.cut(command.subject, to: Self.auditFieldBytes), outcome: code,
                                        detail: command.auditDetail(outcome)),
                  with: records)
            return (outcome, failure, said)
        }
        announcedChanges = changeCount
        checkGuardsRunning()
        let event = KernelEvent.executed(command, actor: actor, failure: failure == nil ? nil : said)
        if events.emitNow(event) { await events.emitLater(event) }
        var result = try outcome.get()
        if command != given { result.subject = command.subject }
        return result
    }

    /// `execute`, then the info of plugin `id` as the command left it, as JSON (sorted keys, slashes as they are),
    /// in one visit to the kernel: the admin API's answer to a command on a plugin, with a `"note"` key added last
    /// when the command has one to say ("is up to date", "also disabled, as they need it: ..."). The live view's text
    /// of the plugin is reused when it is current (one encoding per command, not two).
    /// - Throws: as `execute`; `KernelError.Code.unknownPlugin` when `id` is not known afterwards.
    public func execute(_ command: KernelCommand, actor: String, principal: String?, origin: String?,
                        describing id: String) async throws(KernelError) -> String {
        let result = try await execute(command, actor: actor, principal: principal, origin: origin)
        let json = try pluginJSON(id)
        guard let note = result.note, json.hasSuffix("}"), json.count > 2,
              let said = try? JSONEncoder().encode(note) else { return json }
        return json.dropLast() + ",\"note\":" + String(decoding: said, as: UTF8.self) + "}"
    }

    /// The kernel operation behind each command.
    private func perform(_ command: KernelCommand) throws(KernelError) -> CommandResult {
        switch command {
        case let .enable(id, tenant): if let note = try enable(id, tenant: tenant) { return CommandResult(note: note) }
        case let .disable(id, tenant, cascade):
            // Host-wide, a plugin neither wanted nor running nor failed: said, not passed off as a change. (A failed one,
            // quarantined or disabled automatically, changes: its failure is cleared, and a guard's reopens the host.)
            let record = (try? state.plugin(id)) ?? nil
            // For a tenant it does not serve: nothing to take away (it said "disabled" before 2026-12-08).
            if let tenant, access.directory.tenants.contains(tenant), let serving = access.directory.pluginTenants[id], !serving.contains(tenant) {
                var result = CommandResult(note: "it is not enabled for tenant \(tenant) (it serves \(serving.sorted().joined(separator: ", ")) only); nothing changed")
                result.unchanged = true
                return result
            }
            let wasEnabled = tenant != nil || active[id] != nil || idle.contains(id) || record?.enabled == true || record?.status == .failed
            let also = try disable(id, tenant: tenant, cascade: cascade)
            if !also.isEmpty {
                return CommandResult(note: "also disabled\(tenant.map { " for tenant \($0)" } ?? ""), as they need it: " + also.joined(separator: ", "))
            }
            if !wasEnabled {
                var result = CommandResult(note: "it was not enabled; nothing changed")
                result.unchanged = true
                return result
            }
        case let .reload(id):
            // A reload the operator asked for that failed: its caller (the CLI's one line, keel_errmsg) is told the
            // previous build serves on, when it does (a grant's reload that fails stops the plugin instead).
            let before = active[id]?.generation
            do throws(KernelError) { try reload(id, cause: "reload asked for") } catch {
                guard let before, active[id]?.generation == before else { throw error }
                let told = KernelError(error.code, pluginID: id, reason: error.reason + " (generation \(before) keeps serving)")
                loggedDuringCommand?.insert(LoggedFailure(pluginID: id, reason: told.reason))
                throw told
            }
            // What the new generation's author should know (a registration refused, a route likely mistaken).
            if let note = authorNote(id) { return CommandResult(note: note) }
        case let .refresh(id):
            if let note = try refresh(id) {
                var result = CommandResult(note: note)
                result.unchanged = true
                return result
            }
            if let note = authorNote(id) { return CommandResult(note: note) }
        case .rescan: rescan()
        case let .grants(id, grant, revoke):
            if let note = try setGrants(id, grant: grant, revoke: revoke) { return CommandResult(note: note) }
        case let .config(id, yaml, file):
            if let note = try setConfig(id, yaml: yaml, file: file ?? "configuration of \(id)") { return CommandResult(note: note) }
        case let .isolation(id, mode): try setIsolation(id, mode)
        case let .uninstall(id, cascade, keepData):
            let also = try uninstall(id, cascade: cascade, keepData: keepData)
            if !also.isEmpty { return CommandResult(note: "also disabled, as they need it: " + also.joined(separator: ", ")) }
        case let .createTenant(name): try createTenant(name)
        case let .deleteTenant(name, cascade):
            let disabled = try deleteTenant(name, cascade: cascade)
            if !disabled.isEmpty { return CommandResult(note: "also disabled, as they served tenant \(name) only: " + disabled.joined(separator: ", ")) }
        case let .setMember(tenant, principal, role, member):
            return CommandResult(note: try setMember(tenant: tenant, principal: principal, role: role, member: member))
        case let .createRole(name): try createRole(name)
        case let .deleteRole(name):
            let bound = try deleteRole(name)
            if !bound.isEmpty { return CommandResult(note: "its binding(s) went with it: " + bound.joined(separator: ", ")) }
        case let .setRolePermission(role, permission, granted):
            return CommandResult(note: try setRolePermission(role, permission, granted: granted))
        case let .addRepository(name, location, priority):
            let note: String?
            do { note = try ExtensionStore.checkLocation(location) } catch {
                throw KernelError(.bundle, reason: "repository \"\(name)\": \(error)")
            }
            try stored { () throws(StateError) in try state.addRepository(StateStore.Repository(name: name, location: location, priority: priority)) }
            return CommandResult(note: note)
        case let .removeRepository(name): try stored { () throws(StateError) in try state.removeRepository(name) }
        case let .trustKey(name, publicKey, only):
            // A name keeps its key: replacing it in place would move every plugin pinned to the name's old key to a
            // refusal naming the new one, and make the old key's packages look signed by the new key.
            // The name's key, if it has one: the same key (in any base64 spelling) is a note, another a conflict. The
            // store refuses another key too, for one another host trusted since this read.
            func held() throws(KernelError) -> CommandResult? {
                guard let key = (try? state.trustedKeys())?[name] else { return nil }
                guard Data(base64Encoded: key) == Data(base64Encoded: publicKey) else {
                    throw KernelError(.conflict, reason: "\"\(name)\" is already trusted with another key (key "
                                      + "\(ExtensionStore.fingerprint(key))); remove it first (keel trust remove \(name)) or trust this one under another name")
                }
                return CommandResult(note: "already trusted")
            }
            // The same key again with a scope sets the scope; without one it changes nothing.
            let scoped = only.map { "may sign \(TrustScope.describe($0)) only" }
            if only == nil, let same = try held() { return same }
            // A key has one name: under a second name, with a scope of its own, a repository naming that signer
            // would choose the wider scope.
            let bytes = Data(base64Encoded: publicKey)
            // Said here with its fix and as a conflict; the store refuses it too, in its transaction.
            if let other = (try? state.trustedKeys())?.first(where: { $0.key != name && Data(base64Encoded: $0.value) == bytes })?.key {
                throw KernelError(.conflict, reason: "this key is already trusted as \"\(other)\" (key \(ExtensionStore.fingerprint(publicKey))); "
                                  + "a key has one name (keel trust add \(other) KEY --only ... sets what it may sign)")
            }
            let result: StateStore.ChangeResult
            do { result = try state.trustKey(name: name, publicKey: publicKey, only: only) } catch { throw KernelError(.state, reason: error.description) }
            guard case let .refused(reason) = result else { return CommandResult(note: scoped) }
            if only == nil, let same = try held() { return same }
            _ = try held()  // another key under the name: that conflict, said as such
            throw KernelError.directory(reason)
        case let .untrustKey(name):
            // The plugins pinned to the key, by the key's bytes (a pin keeps the name it was trusted under then).
            let key: String?, signers: [String: StateStore.PinnedSigner]
            do { (key, signers) = (try state.trustedKeys()[name], try state.pinnedSigners()) } catch {
                throw KernelError(.state, reason: error.description)
            }
            try stored { () throws(StateError) in try state.untrustKey(name) }
            guard let key else { return CommandResult() }
            let bytes = Data(base64Encoded: key)
            let pinned = signers.filter { bytes != nil && Data(base64Encoded: $0.value.publicKey) == bytes }.keys.sorted()
            // The key itself goes in the note (and so in the audit row): a name can be given another key later.
            return CommandResult(note: "key \(ExtensionStore.fingerprint(key))" + (pinned.isEmpty ? "" :
                "; pinned to it: \(pinned.joined(separator: ", ")), which keep serving; an upgrade of one is refused until a "
                + "package signed by another trusted key moves it (keel upgrade ID --signer NAME)"))
        case let .useProvider(interface, plugin, tenant): return CommandResult(note: try useProvider(interface, plugin: plugin, tenant: tenant))
        case .call, .install, .upgrade:
            // Run by `execute` before this, off the kernel's thread.
            throw KernelError(.command, pluginID: command.pluginID, reason: "internal error: \(command.name) reached the kernel's thread")
        case .resetAdminToken:
            do { return CommandResult(adminToken: try AdminToken(state: state, environment: [:]).reset()) } catch {
                throw KernelError(.state, reason: error.description)
            }
        }
        return CommandResult()
    }

    /// Refuses a command, or what would load or activate plugin code, once `shutdown` ran: nothing would
    /// deactivate it again.
    /// - Throws: `KernelError.Code.state` naming `what` ("enable hello").
    func requireRunning(_ what: String) throws(KernelError) {
        guard !isShutDown else { throw KernelError(.state, reason: "the host is shut down; \(what) did not run") }
    }

    /// Runs `body` (plugin code) on a new thread with a full-size stack, as the kernel's lifecycle thread has, and
    /// returns its result: never on the kernel's thread nor on Swift's cooperative pool, which it could block.
    public nonisolated static func offKernel<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (done: CheckedContinuation<T, Never>) in
            let thread = Thread { done.resume(returning: body()) }
            thread.stackSize = LifecycleExecutor.pluginStackSize
            thread.start()
        }
    }

    /// A change made by the state store alone; a refusal becomes a `.directory` error with the store's reason.
    private func stored(_ change: () throws(StateError) -> StateStore.ChangeResult) throws(KernelError) {
        let result: StateStore.ChangeResult
        do { result = try change() } catch { throw KernelError(.state, reason: error.description) }
        if case let .refused(reason) = result { throw KernelError.directory(reason) }
    }

    /// The repositories and the plugin folder, for install, upgrade and the catalog.
    public nonisolated var extensions: ExtensionStore {
        ExtensionStore(state: state, pluginsDirectory: configuration.pluginsDirectory)
    }
}
