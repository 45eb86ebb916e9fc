// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Keel

extension KeelCommand {
    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a plugin's recent log lines (its own and the host's about it) from the running server.",
            discussion: """
                The lines are kept by the running `keel serve` of this state file, in memory (the last 1,000 per \
                plugin); this command asks it over HTTP with the admin token ($KEEL_ADMIN_TOKEN or --token). \
                -f keeps printing new lines until Ctrl-C.
                """)

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Flag(name: .shortAndLong, help: "Follow: keep printing new lines.") var follow = false
        @Option(help: "The admin token (default $KEEL_ADMIN_TOKEN).") var token: String?
        @Option(help: "Only lines since then: a duration back from now (90s, 15m, 2h) or an ISO 8601 time.") var since: String?

        func validate() throws {
            if let since, StateStore.auditTime(since) == nil {
                throw ValidationError("--since \"\(since)\" is neither a duration (15m, 2h, 7d) nor an ISO 8601 time")
            }
        }

        func run() async throws {
            try await reporting {
                guard let line = options.runningServer else {
                    throw CLIError("no keel serve runs on \(options.stateFile); the logs are kept by the running server")
                }
                guard let base = line.split(separator: " ").last.map(String.init), base.hasPrefix("http://") else {
                    throw CLIError("the server on \(options.stateFile) is still starting; try again")
                }
                guard let token = token ?? ProcessInfo.processInfo.environment["KEEL_ADMIN_TOKEN"], !token.isEmpty else {
                    throw CLIError("keel logs needs the admin token: pass --token or set KEEL_ADMIN_TOKEN")
                }
                var after: Int64 = 0
                let from = since.flatMap { StateStore.auditTime($0) } ?? ""
                repeat {
                    let lines = try await Self.fetch(base: base, id: id, after: after, token: token)
                    for l in lines where l.at >= from { print("\(l.at)  \(l.level)  \(l.message)") }
                    after = lines.last?.seq ?? after
                    if follow { try await Task.sleep(for: .milliseconds(500)) }
                } while follow
            }
        }

        struct Body: Decodable { var lines: [PluginLogs.Line] }

        static func fetch(base: String, id: String, after: Int64, token: String) async throws -> [PluginLogs.Line] {
            guard let url = URL(string: "\(base)/api/v1/plugins/\(id)/logs?after=\(after)") else {
                throw CLIError("\"\(id)\" is not a plugin id")
            }
            var request = URLRequest(url: url)
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
            let data: Data, response: URLResponse
            do { (data, response) = try await URLSession.shared.data(for: request) } catch {
                throw CLIError("cannot reach the server at \(base): \(error.localizedDescription)")
            }
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            switch status {
            case 200: break
            case 401: throw CLIError("the server at \(base) refused the admin token")
            case 404: throw CLIError("no plugin \"\(id)\" is known")
            default: throw CLIError("the server at \(base) answered \(status)")
            }
            do { return try JSONDecoder().decode(Body.self, from: data).lines } catch {
                throw CLIError("the server at \(base) sent an unreadable answer")
            }
        }
    }
}
