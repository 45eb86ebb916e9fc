// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState

/// Lets another process (the `keel` CLI) enable and disable plugins in a running server through the state file:
/// the CLI queues a command, the server notices the commit (PRAGMA data_version, checked every `interval`), runs
/// the same kernel call the admin API runs, and writes the outcome back. Also keeps a live summary of the plugins
/// (settings key `live.plugins`) so `keel plugins list` shows what the server has active.
public enum RemoteControl {
    static let liveKey = "live.plugins"

    /// Server side: watches for commands until the task is cancelled. Also refreshes `token` when the stored
    /// admin token changes. Call `publishLive` after any change made in-process too.
    public static func serve(_ kernel: Kernel, token: AdminToken?, interval: Duration = .milliseconds(200)) async {
        // No version seen yet: the first pass takes what was queued before it started (expired commands are not run).
        var seen: Int64 = -1
        var published = await publishLive(kernel)
        var ticks = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            ticks += 1
            // Changes made inside the server (a watcher reload, an automatic disable) show up within ~2 s.
            if ticks % 10 == 0 { published = await publishLive(kernel, unlessEqualTo: published) }
            guard let version = try? kernel.state.dataVersion(), version != seen else { continue }
            seen = version
            token?.refresh()
            kernel.access.refresh()
            for command in (try? kernel.state.pendingCommands()) ?? [] {
                // Claimed first: a command its client cancelled (or whose deadline passed) is never run.
                guard (try? kernel.state.claimCommand(command.seq)) == true else { continue }
                let (failed, result) = await run(command, on: kernel)
                // The live view first, so that the CLI that waits for this command reads the state it produced.
                published = await publishLive(kernel, unlessEqualTo: published)
                try? kernel.state.finishCommand(command.seq, failed: failed, result: result)
            }
            published = await publishLive(kernel, unlessEqualTo: published)
        }
    }

    static func run(_ stored: StateStore.Command, on kernel: Kernel) async -> (Bool, String) {
        guard let command = try? JSONDecoder().decode(RemoteCommand.self, from: Data(stored.body.utf8)) else {
            return (true, "unreadable command \"\(stored.op)\"")
        }
        do {
            switch command {
            case let .enable(id, tenant): try await kernel.enable(id, tenant: tenant)
            case let .disable(id, tenant, cascade): try await kernel.disable(id, tenant: tenant, cascade: cascade)
            case let .reload(id): try await kernel.reload(id)
            case .rescan: await kernel.rescan()
            case let .upgrade(id, version, allowUnsigned):
                let store = ExtensionStore(state: kernel.state, pluginsDirectory: kernel.configuration.pluginsDirectory)
                try await kernel.upgrade(id, to: version, store: store, allowUnsigned: allowUnsigned)
            case let .config(id, yaml): try await kernel.setConfig(id, yaml: yaml, file: "configuration of \(id)")
            case let .uninstall(id, cascade, keepData): try await kernel.uninstall(id, cascade: cascade, keepData: keepData)
            case let .deleteTenant(name, cascade): try await kernel.deleteTenant(name, cascade: cascade)
            case let .grants(id, grant, revoke): try await kernel.setGrants(id, grant: grant, revoke: revoke)
            }
            return (false, "ok")
        } catch {
            return (true, error.description)
        }
    }

    /// Stores the server's current view of every plugin for other processes to read (unless it is `previous`).
    /// Returns what is stored.
    @discardableResult
    public static func publishLive(_ kernel: Kernel, unlessEqualTo previous: String? = nil) async -> String? {
        guard let plugins = try? await kernel.plugins(), let data = try? JSONEncoder().encode(plugins) else { return previous }
        let text = String(decoding: data, as: UTF8.self)
        if text != previous { try? kernel.state.setLivePluginsJSON(text) }
        return text
    }

    /// Client side: the plugins as the running server last published them.
    public static func livePlugins(state: StateStore) throws -> [PluginInfo] {
        guard let text = try state.livePluginsJSON() else { return [] }
        return try JSONDecoder().decode([PluginInfo].self, from: Data(text.utf8))
    }

    /// Client side: queues `command` for the server and waits for its outcome. When the server has not taken it
    /// within `timeout`, it is cancelled (atomically: either the cancel or the server's claim wins), so a command
    /// reported as failed never runs later. One the server took is waited for up to `timeout` more.
    /// - Throws: `KernelError` with the server's reason when it failed, or saying it was cancelled and nothing
    ///   changed, or that the server took it and has not finished yet.
    public static func submit(_ command: RemoteCommand, state: StateStore, timeout: Duration = .seconds(10)) async throws(KernelError) {
        let subject = command.subject
        let seq: Int64
        do {
            let body = String(decoding: try JSONEncoder().encode(command), as: UTF8.self)
            let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
            seq = try state.submitCommand(op: command.name, pluginID: subject, body: body, timeout: seconds)
        } catch {
            throw KernelError(.state, pluginID: subject, reason: "\(error)")
        }
        if let result = await outcome(seq, state: state, within: timeout) { return try result.get() }
        let cancelled: Bool
        do { cancelled = try state.cancelCommand(seq) } catch { throw KernelError(.state, pluginID: subject, reason: error.description) }
        if cancelled {
            throw KernelError(.state, pluginID: subject,
                              reason: "the running server did not take the command within \(timeout); it was cancelled and nothing changed")
        }
        if let result = await outcome(seq, state: state, within: timeout) { return try result.get() }
        throw KernelError(.state, pluginID: subject,
                          reason: "the running server started the command but did not finish it within \(timeout); `keel plugins list` shows its outcome")
    }

    /// Polls command `seq` until it is done, failed or cancelled, or `timeout` passes (nil).
    static func outcome(_ seq: Int64, state: StateStore, within timeout: Duration) async -> Result<Void, KernelError>? {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            if let command = try? state.command(seq) {
                switch command.state {
                case "done": return .success(())
                case "failed": return .failure(KernelError(.loadFailed, pluginID: command.pluginID, reason: command.result))
                case "cancelled": return .failure(KernelError(.state, pluginID: command.pluginID, reason: "not run: \(command.result)"))
                default: break
                }
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }
}

/// A change the CLI asks the running server to make, stored as JSON in the state file's command queue.
public enum RemoteCommand: Codable, Sendable, Hashable {
    case enable(id: String, tenant: String?)
    case disable(id: String, tenant: String?, cascade: Bool)
    case reload(id: String)
    case rescan
    case upgrade(id: String, version: String?, allowUnsigned: Bool)
    case config(id: String, yaml: String)
    case uninstall(id: String, cascade: Bool, keepData: Bool)
    case deleteTenant(name: String, cascade: Bool)
    case grants(id: String, grant: [String], revoke: [String])

    /// A short name for logs and the queue's `op` column.
    var name: String {
        switch self {
        case .enable: "enable"
        case .disable: "disable"
        case .reload: "reload"
        case .rescan: "rescan"
        case .upgrade: "upgrade"
        case .config: "config"
        case .uninstall: "uninstall"
        case .deleteTenant: "delete-tenant"
        case .grants: "grants"
        }
    }

    /// The plugin (or tenant) it is about.
    var subject: String {
        switch self {
        case let .enable(id, _), let .disable(id, _, _), let .reload(id), let .upgrade(id, _, _), let .config(id, _),
             let .uninstall(id, _, _), let .grants(id, _, _): id
        case let .deleteTenant(name, _): name
        case .rescan: ""
        }
    }
}
