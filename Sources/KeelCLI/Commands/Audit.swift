// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel
import KeelSystem

extension KeelCommand {
    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the audit trail: who changed what, from where, when, with what outcome.",
            discussion: """
                One row per command executed through the CLI, the admin API or the console, and per admin call the \
                auth chain refused (with the hook or the missing permission). Never a configuration value or a key. \
                The state file keeps the last \(StateStore.auditCapacity) rows.
                """)

        @OptionGroup var options: GlobalOptions
        @Option(help: "Only rows since then: a duration back from now (90s, 15m, 2h, 7d) or an ISO 8601 time or date.")
        var since: String?
        @Flag(help: "Print JSON instead of text.") var json = false

        func validate() throws {
            if let since, StateStore.auditTime(since) == nil {
                throw ValidationError("--since \"\(since)\" is neither a duration (15m, 2h, 7d) nor an ISO 8601 time")
            }
        }

        func run() async throws {
            try await reporting {
                let options = try self.options.readingState()
                let rows = try options.openState().audit(since: since.flatMap { StateStore.auditTime($0) },
                                                         limit: StateStore.auditCapacity)
                if json { try printJSON(rows); return }
                for r in rows { print(Self.line(r)) }
            }
        }

        /// `2026-11-29T09:40:01.123Z  cli alice@local  enable hello  ok`; on a shared state, the host that executed it
        /// after the caller: `admin-api admin@127.0.0.1 on host-a  enable hello  ok`.
        static func line(_ r: StateStore.AuditEntry) -> String {
            // A caller from somewhere who named no principal is said to be anonymous: `admin-api@127.0.0.1` read as a
            // principal called admin-api.
            let principal = r.principal ?? (r.origin != nil ? "(anonymous)" : nil)
            let who = r.actor + (principal.map { " " + $0 } ?? "") + (r.origin.map { "@" + $0 } ?? "")
                + (r.host.map { " on " + $0 } ?? "")
            let what = r.target.isEmpty ? r.command : "\(r.command) \(r.target)"
            // Escaped (`Printable`): no value in a row, whoever wrote it, can break the line or move the terminal's cursor.
            return Printable.escapingControls("\(r.at)  \(who)  \(what)  \(r.outcome)" + (r.detail.map { "  (\($0))" } ?? ""))
        }
    }
}

extension Kernel {
    /// `execute` on behalf of the `keel` CLI: audited as "cli", by the OS user, from "local".
    @discardableResult
    func executeAsCLI(_ command: KernelCommand) async throws(KernelError) -> CommandResult {
        try await execute(command, actor: "cli", principal: Self.osUser, origin: "local")
    }

    /// The name of the user this process runs as (nil when the system does not know it).
    static var osUser: String? {
        guard let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name else { return nil }
        return String(cString: name)
    }
}
