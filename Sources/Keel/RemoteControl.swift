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
        var seen = (try? kernel.state.dataVersion()) ?? 0
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
                let (failed, result) = await run(command, on: kernel)
                // The live view first, so that the CLI that waits for this command reads the state it produced.
                published = await publishLive(kernel, unlessEqualTo: published)
                try? kernel.state.finishCommand(command.seq, failed: failed, result: result)
            }
            published = await publishLive(kernel, unlessEqualTo: published)
        }
    }

    static func run(_ command: StateStore.Command, on kernel: Kernel) async -> (Bool, String) {
        do {
            switch command.op {
            case "enable": try await kernel.enable(command.pluginID)
            case "disable": try await kernel.disable(command.pluginID, cascade: command.cascade)
            case "reload": try await kernel.reload(command.pluginID)
            case let op where op.hasPrefix("enable-tenant "):
                try await kernel.enable(command.pluginID, tenant: String(op.dropFirst("enable-tenant ".count)))
            case let op where op.hasPrefix("disable-tenant "):
                try await kernel.disable(command.pluginID, tenant: String(op.dropFirst("disable-tenant ".count)), cascade: command.cascade)
            case "rescan": await kernel.rescan()
            case let op where op.hasPrefix("upgrade "):
                let words = op.split(separator: " ").map(String.init)
                let store = ExtensionStore(state: kernel.state, pluginsDirectory: kernel.configuration.pluginsDirectory)
                try await kernel.upgrade(command.pluginID, to: words.count > 1 && words[1] != "-" ? words[1] : nil, store: store,
                                         allowUnsigned: words.count > 2 && words[2] == "unsigned")
            case let op where op.hasPrefix("config\n"):
                try await kernel.setConfig(command.pluginID, yaml: String(op.dropFirst("config\n".count)), file: "configuration of \(command.pluginID)")
            case let op where op.hasPrefix("uninstall "):
                let words = op.split(separator: " ")
                try await kernel.uninstall(command.pluginID, cascade: words.contains("cascade"), keepData: words.contains("keep"))
            case "delete-tenant": try await kernel.deleteTenant(command.pluginID, cascade: command.cascade)
            case let op where op.hasPrefix("grants "):
                let words = op.split(separator: " ").dropFirst()
                try await kernel.setGrants(command.pluginID, grant: words.filter { $0.hasPrefix("+") }.map { String($0.dropFirst()) },
                                           revoke: words.filter { $0.hasPrefix("-") }.map { String($0.dropFirst()) })
            default: return (true, "unknown command \"\(command.op)\"")
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
        if text != previous { try? kernel.state.setSetting(liveKey, text) }
        return text
    }

    /// Client side: the plugins as the running server last published them.
    public static func livePlugins(state: StateStore) throws -> [PluginInfo] {
        guard let text = try state.setting(liveKey) else { return [] }
        return try JSONDecoder().decode([PluginInfo].self, from: Data(text.utf8))
    }

    /// Client side: queues `op` for the server and waits for its outcome.
    /// - Throws: `KernelError` with the server's reason when it failed, or when it did not answer within `timeout`.
    public static func submit(_ op: String, pluginID: String, cascade: Bool = false, state: StateStore,
                              timeout: Duration = .seconds(10)) async throws(KernelError) {
        let seq: Int64
        do { seq = try state.submitCommand(op: op, pluginID: pluginID, cascade: cascade) } catch {
            throw KernelError(.state, pluginID: pluginID, reason: error.description)
        }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            if let command = try? state.command(seq), command.state != "pending" {
                if command.state == "failed" { throw KernelError(.loadFailed, pluginID: pluginID, reason: command.result) }
                return
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        throw KernelError(.state, pluginID: pluginID, reason: "the running server did not answer within \(timeout)")
    }
}
