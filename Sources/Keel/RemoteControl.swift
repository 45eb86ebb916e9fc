// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState
import Synchronization

/// Lets another process (the `keel` CLI) enable and disable plugins in a running server through the state file:
/// the CLI queues a command, the server notices the commit (PRAGMA data_version, checked every `interval`), runs
/// the same kernel call the admin API runs, and writes the outcome back. Also keeps a live summary of the plugins
/// (settings key `live.plugins`) so `keel plugins list` shows what the server has active.
public enum RemoteControl {

    /// Server side: watches for commands until the task is cancelled, and keeps the live view current (every
    /// kernel event publishes it). Also refreshes `token` when the stored admin token changes.
    ///
    /// On a shared store (several hosts, `StateStore.isShared`) the live view is published only after a command this
    /// server ran: its settings row would be every host's, and publishing it on every change anywhere (each one a
    /// full `Kernel.plugins()` on the kernel's executor, and a write that woke every other host) kept the kernels
    /// of all hosts busy exactly when they had a change to apply.
    public static func serve(_ kernel: Kernel, token: AdminToken?, interval: Duration = .milliseconds(200)) async {
        // No version seen yet: the first pass takes what was queued before it started (expired commands are not run).
        var seen: Int64 = -1
        let shared = kernel.state.isShared
        if !shared { await publishLive(kernel) }
        let subscription = shared ? nil : await publishOnChange(kernel)
        defer {
            if let subscription {
                kernel.events.unsubscribe(subscription)
                Task { await kernel.setPublishesLiveView(false) }
            }
        }
        // Installs, upgrades and uninstalls run beside the queue, children of this group: `serve` returns only once
        // they have written their outcome, so whoever stops it (a server's stop, an embedder's `keel_close`) shuts
        // the kernel down and frees the state file after their last write, never before.
        let closed = ClosedGate()
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                // Every change of what is shown comes as an event (`publishOnChange`), a worker's restart too: nothing is
                // published while nothing changes.
                guard let version = try? kernel.state.dataVersion(), version != seen else { continue }
                token?.refresh()
                kernel.access.refresh()
                // Seen only once read: a read that failed (the database busy, a connection lost) is tried again at the
                // next tick, not left until some other change.
                guard let pending = try? kernel.state.pendingCommands() else { continue }
                seen = version
                for command in pending {
                    if Task.isCancelled { break }
                    // Claimed first: a command its client cancelled (or whose deadline passed) is never run.
                    guard (try? kernel.state.claimCommand(command.seq)) == true else { continue }
                    guard let queued = decode(command) else {
                        try? kernel.state.finishCommand(command.seq, failed: true, result: "unreadable command \"\(command.op)\"")
                        continue
                    }
                    let seq = command.seq
                    switch queued.command {
                    case .call:
                        // A command call runs beside the queue in a task nothing waits for: a plugin's command may take
                        // long or never return, and must hold neither an enable queued behind it nor the server's stop
                        // (plugin code cannot be cancelled). Its outcome is written only while this queue is served:
                        // once `serve` has returned, the state may be another kernel's (the kernel itself records
                        // nothing of a call that ends after its shutdown).
                        Task {
                            let (failed, result) = await run(queued, on: kernel)
                            closed.unlessClosed { try? kernel.state.finishCommand(seq, failed: failed, result: result) }
                        }
                        continue
                    case .install, .upgrade, .uninstall:
                        // Beside the queue too (a download may take as long as the repository's time-outs, and an
                        // uninstall waits for them), but waited for when the queue stops.
                        group.addTask {
                            let (failed, result) = await run(queued, on: kernel)
                            // What changed the plugin folder is in the live view before its caller hears back.
                            await publishLive(kernel)
                            try? kernel.state.finishCommand(seq, failed: failed, result: result)
                        }
                        continue
                    default: break
                    }
                    let (failed, result) = await run(queued, on: kernel)
                    // The live view first, so that the CLI that waits for this command reads the state it produced.
                    await publishLive(kernel)
                    try? kernel.state.finishCommand(seq, failed: failed, result: result)
                }
                if !shared { await publishLive(kernel) }
            }
        }
        closed.close()
    }

    /// Whether `serve` still runs: a command call's task that ends after it writes nothing. Thread-safe.
    private final class ClosedGate: Sendable {
        private let closed = Mutex(false)

        /// Runs `write` unless `close` ran, holding the gate: `close` returns only after a write under way is done.
        func unlessClosed(_ write: () -> Void) {
            closed.withLock { if !$0 { write() } }
        }

        func close() {
            closed.withLock { $0 = true }
        }
    }

    /// A queued command with the OS user of the CLI that queued it, for the audit trail (as that CLI reports it: any
    /// process that may write the state file may queue commands). A bare `KernelCommand` is read too.
    struct Queued: Codable, Sendable {
        var command: KernelCommand
        var user: String?
        /// The front end that queued it, for the audit trail: "cli" (the default) or "dev" (`keel dev`); any other
        /// value is taken as "cli" (the queue's writer cannot pose as the admin API or the console).
        var actor: String?
    }

    /// The command `stored` carries, nil when its body is not one.
    static func decode(_ stored: StateStore.Command) -> Queued? {
        let body = Data(stored.body.utf8)
        return (try? JSONDecoder().decode(Queued.self, from: body))
            ?? (try? JSONDecoder().decode(KernelCommand.self, from: body)).map({ Queued(command: $0) })
    }

    /// Executes `queued` as the CLI's user; returns whether it failed and what goes back to the CLI.
    static func run(_ queued: Queued, on kernel: Kernel) async -> (Bool, String) {
        do {
            let actor = queued.actor == "dev" ? "dev" : "cli"
            let result = try await kernel.execute(queued.command, actor: actor, principal: queued.user, origin: "local")
            // What the CLI prints goes back through the state file (a command call's output, an install's list, a
            // note such as "is up to date"), never an admin token: the file outlives the command.
            var carried = result
            carried.adminToken = nil
            guard carried != CommandResult(), let json = try? JSONEncoder().encode(carried) else { return (false, "ok") }
            return (false, String(decoding: json, as: UTF8.self))
        } catch {
            return (true, error.description)
        }
    }

    /// Keeps the live view current: every executed command and every change the kernel made on its own is
    /// published for other processes (`keel plugins list`) before the command's caller gets its answer (a command
    /// stores it in its own audit transaction, see `Kernel.execute`). Returns the subscription, for
    /// `KernelEvents.unsubscribe`.
    @discardableResult
    public static func publishOnChange(_ kernel: Kernel) async -> Int {
        await kernel.setPublishesLiveView(true)
        // A command stores the view with its audit row: only the changes made without one are published here.
        return kernel.events.subscribe(executed: false) { [weak kernel] _ in
            guard let kernel else { return }
            await publishLive(kernel)
        }
    }

    /// Stores what changed in the server's view of the plugins since it was last stored, for other processes to
    /// read (`keel plugins list`).
    public static func publishLive(_ kernel: Kernel) async {
        await kernel.publishLiveView()
    }

    /// Client side: the interfaces as the running server last published them.
    public static func liveServices(state: StateStore) throws -> [InterfaceInfo] {
        guard let text = try state.liveServicesJSON() else { return [] }
        return try decodeLive([InterfaceInfo].self, text, what: "interfaces", state: state)
    }

    /// Client side: the plugins as the running server last published them.
    public static func livePlugins(state: StateStore) throws -> [PluginInfo] {
        guard let text = try state.livePluginsJSON() else { return [] }
        return try decodeLive([PluginInfo].self, text, what: "plugins", state: state)
    }

    /// The server's published view, decoded; one line naming the state and what is wrong when it cannot be (a
    /// server of another Keel version wrote it), never Foundation's text.
    private static func decodeLive<T: Decodable>(_ type: T.Type, _ text: String, what: String, state: StateStore) throws(KernelError) -> T {
        do { return try JSONDecoder().decode(type, from: Data(text.utf8)) } catch {
            let detail: String
            switch error as? DecodingError {
            case let .keyNotFound(key, _)?: detail = "it has no \"\(key.stringValue)\""
            case let .typeMismatch(_, context)?, let .valueNotFound(_, context)?, let .dataCorrupted(context)?
                where !context.codingPath.isEmpty:
                detail = "a wrong value at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
            default: detail = "it is not JSON"
            }
            throw KernelError(.state, reason: "\(state.path): the running server's view of its \(what) cannot be read (\(detail)); "
                              + "is the server another Keel version? Restart it with this one")
        }
    }

    /// Client side: queues `command` for the server and waits for its outcome. When the server has not taken it
    /// within `timeout`, it is cancelled (atomically: either the cancel or the server's claim wins), so a command
    /// reported as failed never runs later. One the server took is waited for up to `timeout` more. `user` (the OS
    /// user of the CLI) goes with the command into the server's audit trail; `target`, the host id of the server it is
    /// for on a shared state (nil: whichever server takes it). `serverGone`, asked about once a second while the
    /// command waits, says the server stopped (its lock released): a server writes the outcome of every command it
    /// took before it lets go of its lock (a command call excepted: plugin code may never return, and a stop does not
    /// wait for it), so the client stops waiting then instead of at `timeout` (a command still queued is cancelled;
    /// one taken and left without an outcome is reported so).
    /// - Throws: `KernelError` with the server's reason when it failed, or saying that the server stopped, or
    ///   (`.unanswered`) that it was cancelled and nothing changed, or that the server took it and has not finished yet.
    @discardableResult
    public static func submit(_ command: RemoteCommand, state: StateStore, timeout: Duration = .seconds(10),
                              user: String? = nil, actor: String? = nil, target: String? = nil,
                              serverGone: (@Sendable () -> Bool)? = nil) async throws(KernelError) -> CommandResult {
        let subject = command.subject
        let seq: Int64
        do {
            let encoded = user == nil && actor == nil ? try JSONEncoder().encode(command)
                : try JSONEncoder().encode(Queued(command: command, user: user, actor: actor))
            let body = String(decoding: encoded, as: UTF8.self)
            let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
            seq = try state.submitCommand(op: command.name, pluginID: subject, body: body, timeout: seconds, target: target)
        } catch {
            throw KernelError(.state, pluginID: subject, reason: "\(error)")
        }
        var gone = false
        if let result = await outcome(seq, state: state, within: timeout, serverGone: serverGone, gone: &gone) { return try result.get() }
        let cancelled: Bool
        do { cancelled = try state.cancelCommand(seq) } catch { throw KernelError(.state, pluginID: subject, reason: error.description) }
        if cancelled {
            throw KernelError(gone ? .state : .unanswered, pluginID: subject, reason: gone
                ? "the server stopped before it took the command; it was cancelled and nothing changed"
                : "the running server did not take the command within \(timeout); it was cancelled and nothing changed (its /healthz says \"stalled\" when plugin code holds its lifecycle)")
        }
        // Taken although the server was seen gone: another server (a supervisor's restart) took it; wait for that one.
        if gone, let serverGone, !serverGone() { gone = false }
        if !gone, let result = await outcome(seq, state: state, within: timeout, serverGone: serverGone, gone: &gone) { return try result.get() }
        if gone {
            // Taken, and the server's lock released with no outcome written: it ended without finishing (killed, or
            // crashed); a last look, in case the outcome landed just now.
            if let result = finished(seq, state: state) { return try result.get() }
            throw KernelError(.state, pluginID: subject,
                              reason: "the server stopped while it ran the command, without recording its outcome; `keel plugins list` shows the state")
        }
        throw KernelError(.unanswered, pluginID: subject,
                          reason: "the running server started the command but did not finish it within \(timeout); `keel plugins list` shows its outcome "
                            + "(its /healthz says \"stalled\", naming the plugin and the call, when plugin code holds its lifecycle)")
    }

    /// Polls command `seq` until it is done, failed or cancelled (its outcome), or `timeout` passes, or `serverGone`
    /// says the server stopped with no outcome written (nil; `gone` set).
    static func outcome(_ seq: Int64, state: StateStore, within timeout: Duration, serverGone: (@Sendable () -> Bool)?,
                        gone: inout Bool) async -> Result<CommandResult, KernelError>? {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var polls = 0
        while clock.now < deadline {
            if let result = finished(seq, state: state) { return result }
            polls += 1
            // The lock is released after every outcome the server owed was written: read once more after seeing it go.
            if let serverGone, polls % 20 == 0, serverGone() {
                gone = true
                return finished(seq, state: state)
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// Command `seq`'s outcome when it has one: done, failed or cancelled.
    static func finished(_ seq: Int64, state: StateStore) -> Result<CommandResult, KernelError>? {
        guard let command = try? state.command(seq) else { return nil }
        switch command.state {
        case "done":
            let carried = command.result.hasPrefix("{") ? try? JSONDecoder().decode(CommandResult.self, from: Data(command.result.utf8)) : nil
            return .success(carried ?? CommandResult())
        case "failed": return .failure(KernelError(.loadFailed, pluginID: command.pluginID, reason: command.result))
        case "cancelled": return .failure(KernelError(.state, pluginID: command.pluginID, reason: "not run: \(command.result)"))
        default: return nil
        }
    }
}
