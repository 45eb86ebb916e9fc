// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import Testing

/// A real `keel serve` on 127.0.0.1 with a free port, a known admin token and its own plugin folder and state.
final class ServerProcess: Sendable {
    static let token = "keel_test_admin_token_0123456789"
    let process = Process()
    let output = LockedText()
    let errors = LockedText()
    let plugins: String
    let state: String
    let port: Int
    private let stopped = Mutex(false)

    var base: String { "http://127.0.0.1:\(port)" }

    /// - Parameter fileLimit: the server's descriptor limit (`ulimit -n`), when the test needs a low one.
    /// - Parameter directory: the server's working folder (relative `plugins` and `state` are below it).
    /// - Parameter executable: the keel binary to run (the build's, unless given).
    /// - Parameter terminal: runs the server on a terminal of its own, its controlling one (`script`), as from a shell:
    ///   its output and errors (and its workers') go to that terminal, and from there to `output`.
    init(plugins: String, state: String, extraArguments: [String] = [], environment: [String: String] = [:],
         fileLimit: Int? = nil, directory: String? = nil, terminal: Bool = false, executable: String? = nil) throws {
        self.plugins = plugins
        self.state = state
        let keel = executable ?? TestEnvironment.binPath + "/keel"
        let arguments = ["serve", "--port", "0", "--plugins", plugins, "--state", state] + extraArguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        if terminal {
            process.executableURL = URL(fileURLWithPath: Self.script)
            let command = ([keel] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
            process.arguments = ["-qfec", "exec " + command.joined(separator: " "), "/dev/null"]
        } else if let fileLimit {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -n \(fileLimit) && exec \"$0\" \"$@\"", keel] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: keel)
            process.arguments = arguments
        }
        process.environment = ProcessInfo.processInfo.environment.merging(["KEEL_ADMIN_TOKEN": Self.token]) { $1 }
            .merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let output = self.output, errors = self.errors
        try process.run()
        PipeDrain(out.fileHandleForReading, into: output)
        PipeDrain(err.fileHandleForReading, into: errors)
        let deadline = Date().addingTimeInterval(30)
        var found = 0
        while Date() < deadline && process.isRunning {
            if let range = output.value.range(of: #"listening on http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                found = Int(output.value[range].split(separator: ":").last ?? "") ?? 0
                break
            }
            usleep(20_000)
        }
        port = found
        guard port > 0 else {
            stop()
            throw TestFailure("keel serve did not start: \(output.value) \(errors.value)")
        }
    }

    /// util-linux `script`, which runs a command on a new terminal (`terminal:`).
    static let script = "/usr/bin/script"

    /// Whether `terminal:` can work here: `script` is installed and a pseudo-terminal can be opened.
    static let terminals: Bool = {
        guard FileManager.default.isExecutableFile(atPath: script) else { return false }
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        if master >= 0 { close(master) }
        return master >= 0
    }()

    /// Sends SIGTERM and waits; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        // A server that ended before the test stopped it (a crash) says so in the test's output, with its last
        // errors: a request that failed for that reason is otherwise only a reset connection.
        if !process.isRunning, !stopped.withLock({ $0 }) {
            print("ServerProcess: keel serve (\(base)) had ended before stop(), \(process.terminationReason == .uncaughtSignal ? "signal" : "status") \(process.terminationStatus); its errors:\n\(errors.value.suffix(4000))")
        }
        stopped.withLock { $0 = true }
        if process.isRunning { process.terminate() }
        let pid = process.processIdentifier
        var zombieSince: Date?
        /// Waits up to `seconds` for the end; the status when the server had to be reaped here (see below).
        func waitForEnd(_ seconds: Double) -> Int32? {
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning && Date() < deadline {
                // Foundation's watch of its children has been seen to miss one's end under load: the server a zombie,
                // `isRunning` true for ever and `waitUntilExit` spinning (a CI run hung there). A zombie Foundation
                // leaves for two seconds is reaped here.
                if Self.isZombie(pid) {
                    if let since = zombieSince, Date().timeIntervalSince(since) > 2, let status = Self.reap(pid) { return status }
                    zombieSince = zombieSince ?? Date()
                }
                usleep(20_000)
            }
            return nil
        }
        if let status = waitForEnd(30) { return status }
        if process.isRunning { kill(pid, SIGKILL) }
        if let status = waitForEnd(30) { return status }
        return process.isRunning ? -1 : process.terminationStatus
    }

    /// True when `pid` has ended and not been reaped (state `Z` in /proc).
    static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    /// Reaps ended child `pid`: its exit status, or its signal when a signal ended it (as `terminationStatus` says).
    static func reap(_ pid: Int32) -> Int32? {
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        return status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

    struct Reply {
        var status: Int
        var headers: [String: String]
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        var json: Any? { try? JSONSerialization.jsonObject(with: body) }
        var errorCode: String? { ((json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String }
    }

    /// One HTTP request; `admin` adds the admin token.
    func request(_ method: String, _ path: String, admin: Bool = false, headers: [String: String] = [:],
                 body: Data? = nil) async throws -> Reply {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        request.httpBody = body
        // Cookies are the test's business: nothing is stored or sent behind its back (servers share 127.0.0.1).
        request.httpShouldHandleCookies = false
        if admin { request.setValue("Bearer \(Self.token)", forHTTPHeaderField: "Authorization") }
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for (k, v) in http.allHeaderFields { fields[String(describing: k).lowercased()] = String(describing: v) }
        return Reply(status: http.statusCode, headers: fields, body: data)
    }
}

final class LockedText: Sendable {
    private let text = Mutex("")
    func append(_ s: String) { text.withLock { $0 += s } }
    var value: String { text.withLock { $0 } }
}

/// Reads a child's pipe on a thread of its own until end of file, appending to `text`. Not `readabilityHandler`:
/// its dispatch source, left armed on a pipe whose handle was then closed, crashed the whole test process in
/// libdispatch's event loop (a bad pointer in `_dispatch_event_loop_drain`, seen in CI).
final class PipeDrain: Sendable {
    private let done = DispatchSemaphore(value: 0)

    @discardableResult
    init(_ handle: FileHandle, into text: LockedText) {
        let done = self.done
        Thread.detachNewThread {
            // Plain read(2): FileHandle.read(upToCount:) waits until it has that many bytes.
            var buffer = [UInt8](repeating: 0, count: 65536)
            let fd = handle.fileDescriptor
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                text.append(String(decoding: buffer[..<n], as: UTF8.self))
            }
            done.signal()
        }
    }

    /// Waits up to `seconds` for the end of file (every writer, grandchildren included, closed the pipe); true when
    /// it came.
    @discardableResult
    func wait(seconds: Double = 10) -> Bool { done.wait(timeout: .now() + seconds) == .success }
}
