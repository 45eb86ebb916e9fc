// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel

extension KeelCommand {
    struct Call: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Call a plugin's command with arguments checked against its signature, and print the result.",
            discussion: """
                Arguments are read as the signature's types: `keel call calc add 2 40` prints 42. Strings are taken as \
                written; bytes are base64. With a running server the call runs there (through its queue); else a \
                kernel of this process loads the plugins first. The operator calls as an admin, in the default tenant or --tenant. \
                --json prints the result as JSON (a string quoted). Options may follow the arguments (`keel call calc add \
                2 40 --json`); an argument that is itself an option's name goes after "--".
                """)
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var plugin: String
        @Argument(help: "The command name (keel commands lists them).") var command: String
        @Option(help: "Call as the operator acting in this tenant (a plugin enabled for some tenants only serves theirs).",
                completion: Completion.tenants) var tenant: String?
        @Flag(help: "Print the result as JSON (a string result quoted).") var json = false
        @Argument(parsing: .captureForPassthrough, help: "The arguments (after \"--\", taken as written).") var arguments: [String] = []

        func run() async throws {
            try await reporting {
                let call = KernelCommand.call(plugin: plugin, command: command, arguments: arguments, tenant: tenant)
                let result: CommandResult
                if try options.throughServer() != nil {
                    // A server of an earlier keel would run the call in the default tenant: refused before it is sent.
                    if tenant != nil, !ServerLock.takes("call-tenant", stateFile: options.localStateFile) {
                        throw CLIError("--tenant: the keel server running on \(options.shownStateFile) is of an earlier keel, which would "
                                       + "run the call in the default tenant; restart it with this keel to call in a tenant")
                    }
                    result = try await options.submitToServer(call, timeout: .seconds(30))
                } else {
                    let kernel = try options.makeOneShotKernel()
                    await kernel.start()
                    do { result = try await kernel.executeAsCLI(call) } catch {
                        await kernel.shutdown()
                        throw error
                    }
                    await kernel.shutdown()
                }
                print(json ? result.output ?? "null" : Self.text(result.output ?? "null"))
            }
        }

        /// A JSON string result prints as its text; anything else as JSON.
        static func text(_ json: String) -> String {
            guard json.hasPrefix("\""), let data = json.data(using: .utf8),
                  let s = try? JSONDecoder().decode(String.self, from: data) else { return json }
            return s
        }
    }

    struct Commands: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List plugins' commands with their signatures and descriptions.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Only this plugin's.", completion: Completion.plugins) var plugin: String?
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await reporting {
                let options = try self.options.readingState()
                let kernel = try options.makeKernel()
                await kernel.rescan()
                let commands = await kernel.commands(plugin)
                // A plugin named that does not exist is a typo, not a plugin without commands.
                if let plugin, commands.isEmpty {
                    do { _ = try await kernel.plugin(plugin) } catch { throw CLIError(error) }
                }
                if json { try printJSON(commands); return }
                if commands.isEmpty { print(plugin.map { "plugin \($0) declares no command" } ?? "no plugin declares a command") }
                // A plugin that is not enabled, or failed, has no command to call now: said beside each (they were
                // listed as if callable).
                let records = Dictionary(((try? kernel.state.plugins()) ?? []).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
                func standing(_ id: String) -> String {
                    guard let r = records[id] else { return "  (not enabled)" }
                    if r.status == .failed { return "  (failed: see keel plugins list)" }
                    return r.enabled ? "" : "  (not enabled)"
                }
                for c in commands {
                    print("\(c.plugin) \(c.name) \(c.signature)\(c.permission.isEmpty ? "  [admins]" : "  [\(c.permission)]")\(standing(c.plugin))")
                    if !c.description.isEmpty { print("  \(c.description)") }
                }
            }
        }
    }
}
