// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Keel
import KeelSystem

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
                let (base, token) = try Self.runningServer(options, token: token, what: "the logs are kept by the running server")
                var after: Int64 = 0
                let from = since.flatMap { StateStore.auditTime($0) } ?? ""
                repeat {
                    let lines = try await Self.fetch(base: base, id: id, after: after, token: token)
                    for l in lines where l.at >= from { print(Printable.escapingControls("\(l.at)  \(l.level)  \(l.message)")) }
                    // Each batch now: into a pipe stdout is block-buffered, and `keel logs -f | grep` would show nothing.
                    fflush(nil)  // every output stream: naming `stdout` is not concurrency-safe in Swift 6
                    after = lines.last?.seq ?? after
                    if follow { try await Task.sleep(for: .milliseconds(500)) }
                } while follow
            }
        }

        /// The running server's address and the admin token, for commands that ask it over HTTP.
        /// - Throws: `CLIError` saying what is missing (`what` tells why the server is needed).
        static func runningServer(_ options: GlobalOptions, token: String?, what: String) throws -> (base: String, token: String) {
            guard let line = options.runningServer else {
                throw CLIError("no keel serve runs on \(options.shownStateFile); \(what)")
            }
            guard let base = line.split(separator: " ").last.map(String.init), base.hasPrefix("http://") else {
                throw CLIError("the server on \(options.shownStateFile) is still starting; try again")
            }
            guard let token = token ?? HeldSecrets.environment["KEEL_ADMIN_TOKEN"], !token.isEmpty else {
                throw CLIError("this command needs the admin token: pass --token or set KEEL_ADMIN_TOKEN")
            }
            return (base, token)
        }

        struct Body: Decodable { var lines: [PluginLogs.Line] }

        static func fetch(base: String, id: String, after: Int64, token: String) async throws -> [PluginLogs.Line] {
            let data = try await get(base: base, path: "plugins/\(id)/logs?after=\(after)", id: id, token: token)
            do { return try JSONDecoder().decode(Body.self, from: data).lines } catch {
                throw CLIError("the server at \(base) sent an unreadable answer")
            }
        }

        /// `GET /api/v1/<path>` of the running server with the admin token; the body of a 200.
        /// - Throws: `CLIError` for an unreachable server, a refused token, an unknown plugin `id` or another status.
        static func get(base: String, path: String, id: String, token: String) async throws -> Data {
            guard Manifest.isValidID(id), let url = URL(string: "\(base)/api/v1/\(path)") else {
                throw CLIError("\"\(id)\" is not a plugin id")
            }
            var request = URLRequest(url: url)
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
            let data: Data, response: URLResponse
            do { (data, response) = try await URLSession.shared.data(for: request) } catch {
                throw CLIError("cannot reach the server at \(base): \(ErrorText.describe(error))")
            }
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            switch status {
            case 200: return data
            case 401:
                var refused = CLIError("the server at \(base) refused the admin token")
                refused.refusedToken = true
                throw refused
            case 404:
                // The server's own words, which name the plugin it likely meant.
                let said = ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])
                    .flatMap { ($0["error"] as? [String: Any])?["message"] as? String }
                throw CLIError(said ?? "no plugin \"\(id)\" is known")
            default: throw CLIError("the server at \(base) answered \(status)")
            }
        }
    }
}

extension KeelCommand.Plugins {
    struct Health: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a plugin's health from the running server: its state, its last minute of requests and its own check.",
            discussion: """
                Asks the running `keel serve` of this state file (GET /api/v1/plugins/<id>/health) with the admin token \
                ($KEEL_ADMIN_TOKEN or --token). The check is the plugin's own (keel.health/1), run every \
                --health-interval seconds; "none" when the plugin offers none. Exits 1 when the check says unhealthy.
                """)

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Option(help: "The admin token (default $KEEL_ADMIN_TOKEN).") var token: String?
        @Flag(help: "Print the server's JSON.") var json = false

        func run() async throws {
            try await reporting {
                let (base, token) = try KeelCommand.Logs.runningServer(options, token: token, what: "health is measured by the running server")
                let data = try await KeelCommand.Logs.get(base: base, path: "plugins/\(id)/health", id: id, token: token)
                guard let h = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                    throw CLIError("the server at \(base) sent an unreadable answer")
                }
                if json {
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    print("\(id): \(h["state"] as? String ?? "?")" + ((h["generation"] as? Int).map { ", generation \($0)" } ?? ""))
                    if let requests = h["requests"] as? Int, h["measured"] as? Bool == true {
                        let rate = (h["errorRate"] as? Double).map { String(format: "%.1f %%", $0 * 100) } ?? "-"
                        let p99 = (h["p99Milliseconds"] as? Double).map { String(format: "%.1f ms", $0) } ?? "-"
                        print("last minute: \(requests) request(s), errors \(rate), p99 \(p99)")
                    }
                    if let check = h["check"] as? [String: Any] {
                        let healthy = check["healthy"] as? Bool == true
                        print("check: " + (healthy ? "healthy" : "unhealthy: \(check["message"] as? String ?? "")")
                              + " (at \(check["at"] as? String ?? "?"), overruns \(check["overruns"] as? Int ?? 0))")
                    } else {
                        print("check: none (the plugin offers none, or it has not run yet)")
                    }
                }
                if let check = h["check"] as? [String: Any], check["healthy"] as? Bool == false { throw ExitCode(1) }
            }
        }
    }
}
