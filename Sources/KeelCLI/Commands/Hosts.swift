// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel

extension KeelCommand {
    struct Hosts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The hosts that share a PostgreSQL state: heartbeat, address and the plugins each runs.",
            subcommands: [List.self])

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the hosts sharing the state (--state postgres://...).")
            @OptionGroup var options: GlobalOptions
            @Flag(help: "Print JSON: [{id, address, version, startedAt, heartbeat, plugins: {id: generation}, observed: {id: {status, reason, generation, changedAt}}}].")
            var json = false
            static let problems: Set<String> = ["failed", "install-failed", "upgrade-failed", "missing"]

            func run() async throws {
                try await reporting {
                    let state = try options.openState()
                    guard state.isShared else {
                        throw CLIError("\(options.stateFile): a SQLite state has one host; hosts are listed for a postgres:// --state")
                    }
                    let hosts = try state.hosts()
                    if json { try printJSON(hosts); return }
                    if hosts.isEmpty { print("no host has reported") }
                    for h in hosts {
                        let plugins = h.plugins.sorted(by: { $0.key < $1.key }).map { "\($0.key)@\($0.value)" }.joined(separator: " ")
                        print("\(h.id)  \(h.address.isEmpty ? "-" : h.address)  keel \(h.version)  heartbeat \(h.heartbeat)  [\(plugins)]")
                        // What failed on this host, with the reason.
                        for (plugin, seen) in h.observed.sorted(by: { $0.key < $1.key }) where Self.problems.contains(seen.status) {
                            print("  \(plugin): \(seen.status)" + (seen.reason.map { ": \($0)" } ?? ""))
                        }
                    }
                }
            }
        }
    }
}
