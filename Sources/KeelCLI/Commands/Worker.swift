// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import KeelIsolation

extension KeelCommand {
    /// The child-process side of a plugin with `isolation: process` (see `WorkerSupervisor`): serves one plugin over
    /// the socket on its standard input until the host ends it. Started by the host; not for people.
    struct Worker: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run one plugin for a host, over the socket on standard input (used by the host; not for people).",
            shouldDisplay: false)

        func run() async throws {
            WorkerMain.run(socket: 0)
        }
    }
}
