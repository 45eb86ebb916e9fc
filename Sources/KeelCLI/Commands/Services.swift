// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel
import KeelManifest

extension KeelCommand {
    struct Services: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Interfaces plugins provide to each other, and which provider serves each.",
            discussion: """
                Several plugins may provide one interface (e.g. gitops.sync/1 from argo-sync and flux-sync). Without a \
                choice, the provider with the highest ranking in its plugin.yaml serves, then the one enabled first. \
                A running server switches at once: new calls go to the new provider, calls already running finish.
                """,
            subcommands: [List.self, Use.self, Clear.self])
    }
}

extension KeelCommand.Services {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every interface: its providers, which one serves (host-wide and per tenant) and why, its consumers.")
        @OptionGroup var options: GlobalOptions
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await reporting {
                let options = try self.options.readingState()
                let services: [InterfaceInfo]
                if try options.throughServer() != nil {
                    services = try RemoteControl.liveServices(state: try options.openState())
                } else {
                    let kernel = try options.makeOneShotKernel()
                    await kernel.start()
                    services = await kernel.services()
                    await kernel.shutdown()
                }
                if json { try printJSON(services) } else { print(Self.render(services), terminator: "") }
            }
        }

        /// Why a provider serves no table, as a phrase after its name: "is not running (disabled)", or "is running, but
        /// it registered no table for it". `stopped` is nil from a host before 2026-12-07.
        static func stopped(_ stopped: String?) -> String {
            guard let stopped else { return "is not running (disabled, failed or not enabled)" }
            return stopped.hasPrefix("running") ? "is " + stopped : "is not running (\(stopped))"
        }

        static func render(_ services: [InterfaceInfo]) -> String {
            guard !services.isEmpty else { return "no plugin provides or consumes an interface\n" }
            var out = ""
            for s in services {
                out += "\(s.interface)\n"
                for serving in s.serving {
                    let scope = serving.tenant.isEmpty ? "serving" : "tenant \(serving.tenant)"
                    let who = serving.provider.map { "\($0) (\(serving.reason))" } ?? "none (\(serving.reason))"
                    var line = "  \(scope): \(who)"
                    if let choice = serving.choice, choice != serving.provider {
                        // Why the choice does not serve: not installed, not running (disabled, failed, idle), or
                        // running but not for every tenant of this scope.
                        switch s.providers.first(where: { $0.plugin == choice }) {
                        case nil: line += "; chosen \(choice) is not installed"
                        case let p? where p.idle: line += "; chosen \(choice) is idle (loaded by its first use)"
                        case let p? where !p.active: line += "; chosen \(choice) " + Self.stopped(p.stopped)
                        default: line += "; chosen \(choice) is not enabled " + (serving.tenant.isEmpty ? "for every tenant" : "for \(serving.tenant)")
                        }
                    }
                    out += line + "\n"
                }
                for p in s.providers {
                    var line = "  provider \(p.plugin)"
                    if !p.pluginVersion.isEmpty { line += " \(p.pluginVersion)" }
                    line += "  implements \(p.version), ranking \(p.ranking), "
                    line += p.active ? "active (generation \(p.generation ?? 0), \(p.leases) lease\(p.leases == 1 ? "" : "s") held)"
                        : p.idle ? "enabled, idle (loaded by its first use)" : Self.stopped(p.stopped).replacingOccurrences(of: "is ", with: "", options: .anchored)
                    out += line + "\n"
                }
                if s.providers.isEmpty { out += "  provider: none installed\n" }
                for c in s.consumers {
                    out += "  consumer \(c.plugin)  \(c.versions) \(c.optional ? "optional" : "required"), \(c.active ? "active" : "not active")\n"
                }
            }
            return out
        }
    }

    struct Use: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Choose the plugin that serves an interface, host-wide or for one tenant.",
            discussion: "Stored in the state file; a running server switches at once.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The interface, as name/major: gitops.sync/1.") var interface: String
        @Argument(help: "A plugin that provides it (or \"keel\" when the host does).", completion: Completion.plugins) var plugin: String
        @Option(help: "Only for this tenant.", completion: Completion.tenants) var tenant: String?

        func validate() throws {
            try Self.validateInterface(interface)
            // `keel services use flux-sync gitops.sync/1`: the two swapped.
            guard plugin == "keel" || Manifest.isValidID(plugin) else {
                throw ValidationError("\"\(plugin)\" is not a plugin id (the interface comes first: keel services use INTERFACE PLUGIN)")
            }
        }

        /// Bad usage (exit 64) for text that is no interface id (`gitops.sync/1`) nor a bare interface name (`gitops.sync`).
        static func validateInterface(_ interface: String) throws {
            guard InterfaceID(interface) != nil || InterfaceID.isValidName(interface) else {
                throw ValidationError("\"\(interface)\" is not an interface id like gitops.sync/1")
            }
        }

        func run() async throws {
            try await reporting {
                let result = try await throughServerOrKernelResult(options, id: nil, command: .useProvider(interface: interface, plugin: plugin, tenant: tenant)).result
                // A choice that cannot serve yet is stored all the same; the note says why and what serves meanwhile.
                print("\(result.subject ?? interface)\(tenant.map { " for tenant \($0)" } ?? ""): " + (result.note ?? "served by \(plugin)"))
            }
        }
    }

    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forget the choice of provider for an interface: the highest ranking serves again.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The interface, as name/major: gitops.sync/1.") var interface: String
        @Option(help: "Only this tenant's choice.", completion: Completion.tenants) var tenant: String?

        func validate() throws { try Use.validateInterface(interface) }

        func run() async throws {
            try await reporting {
                let result = try await throughServerOrKernelResult(options, id: nil, command: .useProvider(interface: interface, plugin: nil, tenant: tenant)).result
                print("\(result.subject ?? interface)\(tenant.map { " for tenant \($0)" } ?? ""): no choice; the ranking rule decides")
            }
        }
    }
}
