// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Keel

extension KeelCommand {
    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage the admin token.", subcommands: [Reset.self])

        struct Reset: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Make a new admin token and print it once; the old one stops working (a running server within 0.2 s).")

            @OptionGroup var options: GlobalOptions

            func run() async throws {
                try await reporting {
                    let result = try await options.makeKernel().executeAsCLI(.resetAdminToken)
                    print(result.adminToken ?? "")
                }
            }
        }
    }
}
