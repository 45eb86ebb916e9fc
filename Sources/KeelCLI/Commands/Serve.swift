// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Dispatch
import Foundation
import Keel

extension KeelCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start the kernel with the enabled plugins and keep it running until SIGINT or SIGTERM.")

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            try await reporting {
                let kernel = try options.makeKernel()
                await kernel.start()
                let active = await kernel.activePlugins
                print("keel \(Kernel.version): \(active.count) plugin(s) active [\(active.joined(separator: ", "))] from \(options.pluginsDirectory), state \(options.stateFile)")
                print("press Ctrl-C to stop")
                let signal = await Self.waitForSignal()
                print("keel: received \(signal), shutting down")
                await kernel.shutdown()
            }
        }

        /// Suspends until SIGINT or SIGTERM arrives; returns its name.
        static func waitForSignal() async -> String {
            await withCheckedContinuation { continuation in
                let once = OnceFlag()
                var sources: [DispatchSourceSignal] = []
                for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
                    Foundation.signal(number, SIG_IGN)
                    let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                    source.setEventHandler {
                        if once.claim() { continuation.resume(returning: name) }
                    }
                    source.resume()
                    sources.append(source)
                }
                Self.keepAlive.append(contentsOf: sources)
            }
        }

        nonisolated(unsafe) static var keepAlive: [DispatchSourceSignal] = []
    }
}

/// True exactly once, from any thread.
final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false
    func claim() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if claimed { return false }
        claimed = true
        return true
    }
}
