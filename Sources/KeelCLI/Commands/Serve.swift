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
                let signals = SignalWaiter(signals: [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")])
                let kernel = try options.makeKernel(logAlways: true)
                await kernel.start()
                let active = await kernel.activePlugins
                say("keel \(Kernel.version): \(active.count) plugin(s) active [\(active.joined(separator: ", "))] from \(options.pluginsDirectory), state \(options.stateFile)")
                say("press Ctrl-C to stop")
                let signal = await signals.wait()
                say("keel: received \(signal), shutting down")
                await kernel.shutdown()
            }
        }

    }
}

/// Writes a line to stdout at once (no buffering: a supervisor reading a pipe sees it immediately).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Catches the given signals from the moment it is made (so one that arrives early is not lost) and hands the
/// first one to `wait()`. A second signal, once the first was handled, forces exit.
final class SignalWaiter: @unchecked Sendable {
    private let lock = NSLock()
    private var received: String?
    private var continuation: CheckedContinuation<String, Never>?
    private var sources: [DispatchSourceSignal] = []

    init(signals: [(Int32, String)]) {
        for (number, name) in signals {
            Foundation.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.deliver(name) }
            source.resume()
            sources.append(source)
        }
    }

    private func deliver(_ name: String) {
        lock.lock()
        if received != nil {
            lock.unlock()
            FileHandle.standardError.write(Data("keel: second \(name), exiting now\n".utf8))
            exit(130)
        }
        received = name
        let waiting = continuation
        continuation = nil
        lock.unlock()
        waiting?.resume(returning: name)
    }

    /// Suspends until a signal arrives; returns its name.
    func wait() async -> String {
        await withCheckedContinuation { c in
            lock.lock()
            if let received {
                lock.unlock()
                c.resume(returning: received)
            } else {
                continuation = c
                lock.unlock()
            }
        }
    }
}
