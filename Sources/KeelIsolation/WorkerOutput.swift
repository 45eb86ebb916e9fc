// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import KeelLoader
import KeelSystem
import Synchronization

/// What a worker writes to its standard output and standard error: a pipe whose other end only the host holds, read
/// by a thread of its own and logged line by line as the plugin's (warn, `output: ...`).
///
/// A worker never gets the host's own standard output or error: through them (a log file, a terminal) it could
/// truncate or overwrite the host's log, or write lines that look like the host's. Lines are cut to 4 KiB of UTF-8,
/// and held to the worker log budget (`LogBudget`, a budget of their own); the rest are dropped and counted. Past
/// its budget the reader pauses (100 ms), so a worker that floods its output waits on the pipe and costs the host
/// next to nothing; nothing in the host waits on it.
enum WorkerOutput {
    /// The longest line logged; a longer one is cut (the rest, up to its line break, dropped).
    static let lineBytes = 4096

    /// Set when the worker is reaped. Thread-safe.
    final class Stop: Sendable {
        private let flag = Atomic<Bool>(false)
        func set() { flag.store(true, ordering: .relaxed) }
        var isSet: Bool { flag.load(ordering: .relaxed) }
    }

    /// Reads `fd` (the read end) on a new thread, logging each line through `log`, until its end, or until `stop`
    /// is set and nothing has arrived for 100 ms (or a second has passed since): a process the worker started (and that left its process group, so
    /// the host's kill missed it) may hold the pipe open for ever, which kept this thread and the descriptor for its
    /// life. Closes `fd`.
    static func drain(_ fd: Int32, name: String, until stop: Stop, log: @escaping @Sendable (Int, String) -> Void) {
        let thread = Thread {
            var budget = LogBudget(now: WorkerConnection.monotonic())
            var line: [UInt8] = [], cut = false, over = false
            func emit() {
                if let dropped = budget.tick(now: WorkerConnection.monotonic()) { log(LogLevel.warn.rawValue, dropped) }
                defer { line.removeAll(keepingCapacity: true); cut = false }
                guard !line.isEmpty || cut else { return }
                guard budget.admit(now: WorkerConnection.monotonic()) else { over = true; return }
                log(LogLevel.warn.rawValue, "output: " + String(decoding: line, as: UTF8.self).prefix(utf8Bytes: lineBytes) + (cut ? "…" : ""))
            }
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            var stopBy: Double?  // once `stop` is set, a second more at most, however busy the pipe
            while true {
                if stop.isSet {
                    let now = WorkerConnection.monotonic()
                    if let by = stopBy { if now > by { break } } else { stopBy = now + 1 }
                }
                var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let polled = poll(&ready, 1, 100)
                if polled < 0, errno == EINTR { continue }
                if polled == 0 { if stop.isSet { break } else { continue } }
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { break }
                for byte in buffer[0..<n] {
                    if byte == UInt8(ascii: "\n") { emit() } else if line.count < lineBytes { line.append(byte) } else { cut = true }
                }
                // Over its budget: read no more for a while, so that the pipe fills and the worker waits on its own
                // writes, instead of this thread reading (and dropping) as fast as a plugin can write.
                if over {
                    usleep(100_000)
                    over = false
                }
            }
            if !line.isEmpty { emit() }
            if let dropped = budget.tick(now: WorkerConnection.monotonic(), force: true) { log(LogLevel.warn.rawValue, dropped) }
            close(fd)
        }
        thread.name = name
        thread.stackSize = 256 << 10
        thread.start()
    }
}
