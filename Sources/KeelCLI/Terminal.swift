// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Dispatch
import Foundation
import Synchronization
import Glibc
import Keel
import KeelSystem

/// What the terminal gets beyond the plain output: a progress line on stderr during long waits, and colour for
/// plugin states. Both only when the stream is a terminal, so pipes, files and CI logs get exactly the plain text;
/// colour never when `NO_COLOR` is set.
enum Terminal {
    static let progressShown = isatty(STDERR_FILENO) == 1
    static let colourShown = isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil

    /// `status` coloured by what it means (green running, red failed, yellow stopped or busy), when colour is on.
    static func paint(_ status: PluginStatus) -> String {
        guard colourShown else { return status.rawValue }
        let code: String
        switch status {
        case .enabled: code = "32"
        case .failed, .missing, .installFailed, .upgradeFailed: code = "31"
        case .disabled, .installing, .upgrading, .uninstalling: code = "33"
        default: return status.rawValue
        }
        return "\u{1B}[\(code)m\(status.rawValue)\u{1B}[0m"
    }
}

/// Runs `body`, showing `label` with a spinner and the seconds waited on stderr while it runs (terminal only), and
/// clearing the line afterwards. `body` may block its thread: the spinner runs on its own queue.
func withProgress<T>(_ label: String, _ body: () async throws -> T) async rethrows -> T {
    guard Terminal.progressShown else { return try await body() }
    let ticker = ProgressTicker(label)
    defer { ticker.stop() }
    return try await body()
}

/// The spinner behind `withProgress`. Its state (`frame`, `stopped`) is behind a `Mutex`, touched from the timer's
/// queue and from `stop()`. `@unchecked Sendable` only for `timer`: a Dispatch source is thread-safe, but its Swift
/// protocol is not marked Sendable.
private final class ProgressTicker: @unchecked Sendable {
    private static let frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]
    private let label: String
    private let start = Date()
    private let timer = DispatchSource.makeTimerSource(queue: .global())
    private let drawn = Mutex((frame: 0, stopped: false))

    init(_ label: String) {
        self.label = label
        draw()
        timer.schedule(deadline: .now() + .milliseconds(100), repeating: .milliseconds(100))
        timer.setEventHandler { [weak self] in self?.draw() }
        timer.resume()
    }

    private func draw() {
        drawn.withLock { d in
            guard !d.stopped else { return }
            let seconds = Int(Date().timeIntervalSince(start))
            let line = "\r\u{1B}[K\(Self.frames[d.frame % Self.frames.count]) \(label)\(seconds > 0 ? " (\(seconds) s)" : "")"
            d.frame += 1
            SystemFile.say(line, to: 2)
        }
    }

    func stop() {
        timer.cancel()
        drawn.withLock { d in
            guard !d.stopped else { return }
            d.stopped = true
            SystemFile.say("\r\u{1B}[K", to: 2)
        }
    }
}
