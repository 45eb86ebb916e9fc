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

            /// How long a host has been silent, said when it is past a few heartbeats (every host reports every second):
            /// a host that was killed stays listed, with what it last ran, until it is forgotten after a day.
            static func silence(_ heartbeat: String, now: Date = Date()) -> String {
                let parse = ISO8601DateFormatter()
                parse.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                guard let at = parse.date(from: heartbeat) ?? ISO8601DateFormatter().date(from: heartbeat) else { return "" }
                let seconds = Int(now.timeIntervalSince(at))
                guard seconds >= 5 else { return "" }
                let age = seconds < 120 ? "\(seconds) s" : seconds < 7200 ? "\(seconds / 60) min" : "\(seconds / 3600) h"
                return " (silent for \(age): stopped without leaving, or cut off; what it ran then is shown)"
            }

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
                        print("\(h.id)  \(h.address.isEmpty ? "-" : h.address)  keel \(h.version)  heartbeat \(h.heartbeat)\(Self.silence(h.heartbeat))  [\(plugins)]")
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
