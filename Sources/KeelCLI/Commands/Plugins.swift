// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel
import KeelManifest
import KeelStatePostgres
import KeelSystem

extension KeelCommand {
    struct Plugins: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List, inspect, enable and disable plugins.",
            discussion: "While `keel serve` runs on the same state file, enable/disable/list go through the server and take effect in it at once.",
            subcommands: [List.self, Inspect.self, Validate.self, Enable.self, Disable.self, Reload.self, History.self, Grant.self, Revoke.self, Config.self, Isolate.self, ProxyKey.self, Health.self])
    }
}

extension KeelCommand.Plugins {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every plugin with its state; active ones with what they registered.")

        @OptionGroup var options: GlobalOptions
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await reporting {
                let options = try self.options.readingState()
                let plugins: [PluginInfo]
                if try options.throughServer() != nil {
                    plugins = try RemoteControl.livePlugins(state: try options.openState())
                } else {
                    let kernel = try options.makeOneShotKernel()
                    await kernel.start()
                    plugins = try await kernel.plugins()
                    await kernel.shutdown()
                }
                if json { try printJSON(plugins); return }
                if plugins.isEmpty, !FileManager.default.fileExists(atPath: options.pluginsDirectory) {
                    print("no plugins found: the plugin folder \(options.pluginsDirectory) does not exist (--plugins or $KEEL_PLUGINS_DIR)")
                    return
                }
                print(Self.render(plugins), terminator: "")
                if options.runningServer == nil, plugins.contains(where: \.enabled) {
                    // On a shared state the hosts run elsewhere (or under another --host-dir): said so, not "no server".
                    print(PostgresURL.isPostgres(options.stateFile)
                          ? "(the shared state as stored, without a host's view: `keel hosts list` shows what each host runs, `--host-dir` a host's own)"
                          : "(no server runs on this state: nothing is loaded; routes and hooks show while `keel serve` runs)")
                }
            }
        }

        static func render(_ plugins: [PluginInfo]) -> String {
            guard !plugins.isEmpty else { return "no plugins found\n" }
            var out = ""
            for p in plugins {
                // A plugin whose plugin.yaml could not be read has no version: its id alone, not a gap.
                out += "\(p.version.isEmpty ? p.id : "\(p.id) \(p.version)")  \(Terminal.paint(p.status))\(p.activity.map { " (\($0))" } ?? "")\(p.enabled && p.status != .enabled ? " (wanted: enabled)" : "")"
                out += p.name.isEmpty ? "\n" : "  — \(p.name)\n"
                // Any status: an enabled plugin's is a reload that failed while the previous build serves on.
                if let reason = p.reason, !reason.isEmpty { out += "  reason: \(reason)\n" }
                if let signature = p.signature { out += "  signature: \(signature)\n" }
                if let signer = p.signer { out += "  pinned signer: \(signer)\n" }
                if let tenants = p.tenants { out += "  tenants: \(tenants.isEmpty ? "none" : tenants.joined(separator: ", "))\n" }
                if !p.capabilities.isEmpty {
                    let caps = p.capabilities.map { p.grants.contains($0) ? $0 : "\($0) (not granted)" }
                    out += "  capabilities: \(caps.joined(separator: ", "))\n"
                }
                if p.manifestOnly { out += "  library: none (manifest only)\n" }
                if p.isolation == "process" {
                    out += "  isolation: process" + (p.workerPID.map { ", worker pid \($0)" } ?? "")
                        + (p.workerRestarts.map { $0 > 0 ? ", \($0) restart(s) after crashes" : "" } ?? "") + "\n"
                }
                // The plugin's own text: its control characters written out, as every line of the CLI's.
                if !p.routes.isEmpty { out += "  routes: \(Printable.escapingControls(p.routes.joined(separator: ", ")))\n" }
                for proxy in p.proxies { out += "  proxy:  \(proxy)\n" }
                if !p.pages.isEmpty { out += "  pages:  \(p.pages.joined(separator: ", "))\n" }
                if !p.consoleFetch.isEmpty { out += "  console.fetch (with the viewer's rights): \(p.consoleFetch.joined(separator: ", "))\n" }
                if !p.menus.isEmpty { out += "  menus:  \(p.menus.joined(separator: ", "))\n" }
                let hooks = p.authenticators.map { "authenticate \($0)" } + p.authorizers.map { "authorize \($0)" }
                if !hooks.isEmpty { out += "  hooks:  \(hooks.joined(separator: ", "))\n" }
                for p in p.provides { out += "  provides: \(p)\n" }
                for c in p.consumes { out += "  consumes: \(c)\n" }
                // Its commands, each with its signature (`keel commands ID` adds their descriptions and permissions).
                if !p.commands.isEmpty { out += "  commands: \(p.commands.map { "\($0.name) \($0.signature)" }.joined(separator: ", "))\n" }
                for warning in p.warnings { out += "  \(warning)\n" }
            }
            return out
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Enable plugins: load and activate each now, and at every start from now on.",
            discussion: "Several ids are enabled one after another in the order given (a dependency before the plugins that need it); one that fails is said and the others are still enabled, and the exit status is 1 if any failed.")

        @OptionGroup var options: GlobalOptions
        @Argument(help: ArgumentHelp("The plugin ids.", valueName: "id"), completion: Completion.plugins) var ids: [String]
        @Option(help: "Enable them for this tenant only (others keep what they had).", completion: Completion.tenants) var tenant: String?

        func run() async throws {
            try await eachPlugin(ids) { id in try await enable(id) }
        }

        private func enable(_ id: String) async throws {
            let info: PluginInfo?, result: CommandResult
            do {
                (info, result) = try await withProgress("enabling \(id) (a new build is probed first, at most 10 s)") {
                    try await throughServerOrKernelResult(options, id: id, command: .enable(id: id, tenant: tenant))
                }
            } catch {
                // A build that failed to load stays wanted: said, with how it comes back and how to drop it.
                guard let record = (try? options.openState().plugin(id)) ?? nil, record.enabled, record.status == .failed else { throw error }
                throw CLIError(ErrorText.describe(error) + " (it stays wanted: enabled, to load once that is fixed; "
                               + "`keel plugins disable \(id)` drops it)")
            }
            // A --tenant that changed nothing (enabled for every tenant already) is said.
            defer { if let note = result.note { print("\(id): \(note)") } }
            guard let info else { return }
            let enabled = "enabled \(id) \(info.version)" + (tenant.map { " for tenant \($0)" } ?? "")
            if info.activity == "idle" {
                print("\(enabled): lazy, idle until first used (\(info.menus.count) menu entr\(info.menus.count == 1 ? "y" : "ies") shown)")
                return
            }
            // What else it brings, when it brings it (a provider or a commands-only plugin has no route).
            let more = (info.commands.isEmpty ? [] : ["\(info.commands.count) command(s)"])
                + (info.provides.isEmpty ? [] : ["provides " + info.provides.joined(separator: ", ")])
            print("\(enabled): \(info.routes.count) route(s), \(info.menus.count) menu entr\(info.menus.count == 1 ? "y" : "ies"), \(info.authenticators.count + info.authorizers.count) auth hook(s)"
                  + more.map { ", " + $0 }.joined())
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disable plugins: remove everything each registered and stop loading it.",
            discussion: "Several ids are disabled one after another in the order given (a plugin before those it needs, or use --cascade); one that fails is said and the others are still disabled, and the exit status is 1 if any failed.")

        @OptionGroup var options: GlobalOptions
        @Argument(help: ArgumentHelp("The plugin ids.", valueName: "id"), completion: Completion.plugins) var ids: [String]
        @Flag(help: "Also disable the enabled plugins that depend on them.") var cascade = false
        @Option(help: "Disable them for this tenant only.", completion: Completion.tenants) var tenant: String?

        func run() async throws {
            try await eachPlugin(ids) { id in
                let result = try await throughServerOrKernelResult(options, id: nil, command: .disable(id: id, tenant: tenant, cascade: cascade))
                // A disable that changed nothing is not said as one.
                if result.result.unchanged == true, let note = result.result.note { print("\(id): \(note)"); return }
                print("disabled \(id)" + (result.result.note.map { " (" + $0 + ")" } ?? ""))
            }
        }
    }
}

/// Runs `body` for each of `ids` in turn: a failure is said on its own line (`keel: error: ...`) and the next id is
/// still done; exits with status 1 at the end when any failed. One id behaves as a single command does.
func eachPlugin(_ ids: [String], _ body: (String) async throws -> Void) async throws {
    var failed = false
    for id in ids {
        do { try await body(id) } catch let error as ValidationError { throw error } catch {
            SystemFile.say("keel: error: \(ErrorText.describe(error))\n", to: 2)
            failed = true
        }
    }
    if failed { throw ExitCode.failure }
}

extension KeelCommand.Plugins {
    struct Reload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load the plugin's current build as a new generation and swap it in; the old one keeps serving if the new one fails.")

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String

        func run() async throws {
            try await reporting {
                let info = try await withProgress("reloading \(id) (a new build is probed first, at most 10 s)") {
                    try await throughServerOrKernel(options, id: id, command: .reload(id: id))
                }
                guard let info else { return }
                // A disabled plugin is not loaded by a reload (its next enable loads the current build): said as such,
                // not as "reloaded", with the reason it stopped (a quarantine, failed calls); one whose bundle cannot be
                // loaded at all is the kernel's failure, with the reason.
                guard info.enabled else {
                    let why = info.status == .failed ? info.reason.map { " (\($0))" } ?? "" : ""
                    print("\(id) is disabled\(why): nothing was loaded (`keel plugins enable \(id)` loads its current build)")
                    return
                }
                // No server took it: this command's own kernel tried the build, and no host runs anything new.
                guard options.runningServer != nil else {
                    let shared = PostgresURL.isPostgres(options.stateFile)
                    print("\(id) \(info.version): its current build loads and activates, but no server runs "
                          + (shared ? "in this --host-dir (a host of the shared state is reached with its --host-dir; each host also reloads a build copied into its plugin folder)"
                                    : "on this state: nothing was reloaded (the next `keel serve` loads it)"))
                    return
                }
                print("reloaded \(id) \(info.version): \(info.status.rawValue)")
            }
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the plugin's load history: generation, version, checksum, time and outcome.")

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await reporting {
                let options = try self.options.readingState()
                let state = try options.openState()
                guard try state.plugin(id) != nil else {
                    let near = Spelling.nearest(id, in: ((try? state.plugins()) ?? []).map(\.id)).map { " (did you mean \"\($0)\"?)" } ?? ""
                    throw CLIError("no plugin \"\(id)\" is known\(near)")
                }
                let loads = try state.loads(for: id)
                if json { try printJSON(loads); return }
                if loads.isEmpty {
                    // A plugin.yaml or a refusal that stopped it before any load: the record says why.
                    let record = try state.plugin(id)
                    print("\(id): never loaded" + (record?.status == .failed ? (record?.reason).map { ": " + $0 } ?? "" : ""))
                }
                // On a shared state each row names the host that wrote it.
                for l in loads {
                    let host = l.host.map { "  " + $0 } ?? ""
                    print(Printable.escapingControls("\(l.at)\(host)  g\(l.generation)  \(l.version)  \(l.checksum.prefix(12))  \(l.outcome)\(l.detail.isEmpty ? "" : "  " + l.detail)"))
                }
            }
        }
    }
}

extension KeelCommand.Plugins {
    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Grant capabilities a plugin asks for; the sensitive ones (\(Capability.allCases.filter(\.isSensitive).map(\.rawValue).joined(separator: ", "))) need this before they work.")

        /// Every capability there is, and the start of a foreign prefix: for the help and shell completion.
        static let names = Capability.allCases.map(\.rawValue) + ["route-prefix:/"]

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Argument(help: ArgumentHelp("Capabilities: \(Capability.allCases.map(\.rawValue).joined(separator: ", ")), route-prefix:/PATH."),
                  completion: .list(Grant.names)) var capabilities: [String]

        func run() async throws {
            let note = try await reporting { try await changeGrants(options, id, grant: capabilities, revoke: []) }
            print("granted \(capabilities.joined(separator: ", ")) to \(id)" + (note.map { ": " + $0 } ?? ""))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take granted capabilities away from a plugin.")

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Argument(help: "Capabilities to revoke.", completion: .list(Grant.names)) var capabilities: [String]

        func run() async throws {
            let note = try await reporting { try await changeGrants(options, id, grant: [], revoke: capabilities) }
            print("revoked \(capabilities.joined(separator: ", ")) from \(id)" + (note.map { ": " + $0 } ?? ""))
        }
    }
}

/// Grants and revokes through the running server when there is one, else through a kernel of our own.
/// - Returns: the kernel's note (the plugin stopped for the revoke, or started after the grant).
func changeGrants(_ options: GlobalOptions, _ id: String, grant: [String], revoke: [String]) async throws -> String? {
    try await throughServerOrKernelResult(options, id: nil, command: .grants(id: id, grant: grant, revoke: revoke)).result.note
}

/// Executes `command` through the running server (its command queue) when `keel serve` owns the state file, else on
/// a kernel of this process (started, then shut down whatever happens). Returns the plugin's info afterwards when
/// `id` is given: the server's live view, or the local kernel's.
func throughServerOrKernel(_ options: GlobalOptions, id: String?, command: KernelCommand,
                           timeout: Duration = .seconds(10)) async throws -> PluginInfo? {
    try await throughServerOrKernelResult(options, id: id, command: command, timeout: timeout).info
}

/// `throughServerOrKernel`, with the command's result (its note) too.
func throughServerOrKernelResult(_ options: GlobalOptions, id: String?, command: KernelCommand,
                                 timeout: Duration = .seconds(10)) async throws -> (info: PluginInfo?, result: CommandResult) {
    if try options.throughServer() != nil {
        let state = try options.openState()
        let result = try await options.submitToServer(command, timeout: timeout, state: state)
        guard let id else { return (nil, result) }
        guard let live = try RemoteControl.livePlugins(state: state).first(where: { $0.id == id }) else {
            throw CLIError("the server does not list \(id)")
        }
        return (live, result)
    }
    let kernel = try options.makeOneShotKernel()
    await kernel.start()
    do {
        let result = try await kernel.executeAsCLI(command)
        var info: PluginInfo?
        if let id { info = try await kernel.plugin(id) }
        await kernel.shutdown()
        return (info, result)
    } catch {
        await kernel.shutdown()
        throw error
    }
}

/// Executes a command that changes stored facts only (tenants, roles, bindings, repositories, trusted keys): through
/// the running server when there is one, so that it holds when the command returns (a revoke made beside the server
/// let calls through for about 250 ms after the CLI said it was done, until the server read the state again: found
/// on 2026-12-08); else on a kernel of this process that loads no plugin.
// Never inlined: inlined into a caller's closure, this call of a typed-throws async function crashed Swift 6.3.1's
// optimizer (signal 11 while splitting the caller's coroutine), so `swift build -c release` of `keel` failed.
@discardableResult @inline(never)
func executeStored(_ options: GlobalOptions, _ command: KernelCommand) async throws -> CommandResult {
    // Whatever --plugins names: these commands use no plugin folder.
    if options.runningServer != nil {
        return try await options.submitToServer(command, timeout: .seconds(10), state: try options.openState())
    }
    return try await options.makeKernel().executeAsCLI(command)
}

extension KeelCommand.Plugins {
    struct ProxyKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "proxy-key",
            abstract: "Print the key a plugin's proxied app checks the forwarded identity with (X-Keel-Signature).",
            discussion: "HMAC-SHA256 of the plugin id under this host's secret (kept in the state file); the same every time.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String

        func run() async throws {
            try await reporting { print(ProxyIdentity.key(for: id, secret: try options.openState().proxySecret())) }
        }
    }

    struct Config: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a plugin's configuration, or set it from a YAML file (checked against the bundle's schema).",
            discussion: "Setting it re-activates an active plugin so that the new configuration takes effect.")

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Argument(help: "A YAML file; without it, the stored configuration is printed.", completion: .file()) var file: String?
        @Flag(help: "Print the stored configuration as JSON: {\"id\": ID, \"config\": OBJECT or null}.") var json = false

        func run() async throws {
            try await reporting {
                let state = try options.openState()
                guard try state.plugin(id) != nil || PluginFolder.manifests(options.pluginsDirectory).contains(where: { $0.id == id }) else {
                    throw CLIError("no plugin \"\(id)\" in \(options.pluginsDirectory)")
                }
                guard let file else {
                    let stored = try state.config(id)
                    if json {
                        let object = try stored.map { try JSONSerialization.jsonObject(with: Data($0.json.utf8), options: .fragmentsAllowed) }
                        let data = try JSONSerialization.data(withJSONObject: ["id": id, "config": object ?? NSNull()],
                                                              options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                        print(String(decoding: data, as: UTF8.self))
                        return
                    }
                    guard let stored else { print("\(id) has no configuration"); return }
                    print(stored.yaml, terminator: stored.yaml.hasSuffix("\n") ? "" : "\n")
                    return
                }
                let yaml = try readText(file)
                let result = try await throughServerOrKernelResult(options, id: nil, command: .config(id: id, yaml: yaml, file: file)).result
                // A bundle without a schema takes any configuration: said, so that a schema left out of the bundle
                // (a build that does not copy it) is seen.
                let folder = (try? state.plugin(id))?.bundlePath ?? ""
                let unchecked = !folder.isEmpty && FileManager.default.fileExists(atPath: folder + "/" + ManifestLoader.fileName)
                    && !FileManager.default.fileExists(atPath: folder + "/" + PluginConfig.schemaFile)
                // An enabled plugin that had failed is started with it: how that went, as a grant says it.
                print("configured \(id)" + (result.note.map { ": " + $0 } ?? "")
                      + (unchecked ? " (its bundle has no \(PluginConfig.schemaFile), so nothing in it was checked)" : ""))
            }
        }
    }

    struct Isolate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a plugin in the host (in-process) or in a worker process of its own (process).",
            discussion: """
                In a worker, a crash in the plugin fails only the requests in flight in it (502 plugin-crashed); the \
                worker restarts, and a plugin whose worker keeps crashing is disabled. `manifest` goes back to what \
                plugin.yaml asks for (isolation:, in-process by default). An active plugin is reloaded into its new place.
                """)

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Argument(help: "in-process, process, or manifest.") var mode: String

        func validate() throws {
            guard mode == "manifest" || Isolation(rawValue: mode) != nil else {
                throw ValidationError("expected in-process, process or manifest, found \"\(mode)\"")
            }
        }

        func run() async throws {
            try await reporting {
                let isolation = Isolation(rawValue: mode)
                let info = try await throughServerOrKernel(options, id: id, command: .isolation(id: id, mode: isolation))
                // A plugin enabled but failed runs nowhere yet: said, with why, rather than "runs in a worker".
                let failed = info?.enabled == true && info?.status == .failed
                let runs = failed ? "will run, once it loads," : info?.enabled == true ? "runs" : "will run, once enabled,"
                defer { if failed, let reason = info?.reason { print("  (it failed: \(reason))") } }
                print(isolation.map { "\(id) \(runs) \($0 == .process ? "in a worker process" : "in the host process")" }
                      ?? "\(id) \(runs) where its manifest says (\(info?.isolation ?? "in-process"))")
            }
        }
    }
}
