// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import Synchronization

/// Tries a library in a child process before the host ever loads it.
///
/// The child is the `keel` executable in its hidden `probe` mode: it does the dlopen, the entry lookup, the ABI check
/// and a trial activation against a private registry, and prints the result as JSON. A library whose constructor
/// crashes, exits or never returns, or whose activate does, takes down only the child; the host records the signal,
/// exit code or time-out as the plugin's failure and never loads it. The child runs with `KEEL_PROBE=1` in its
/// environment and without core dumps. Thread-safe; blocks the caller while the child runs.
public struct PluginProbe: Sendable {
    /// The `keel` executable to run as `keel probe`.
    public var executable: String
    /// How long the child may take (seconds) before it is killed and the library is reported as hanging.
    public var timeout: Double

    public init(executable: String, timeout: Double = 10) {
        self.executable = executable
        self.timeout = timeout
    }

    /// The path of the running executable (for a host that is itself `keel`).
    public static var currentExecutable: String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// What the child found.
    public enum Outcome: Sendable {
        case passed(InspectReport)
        case failed(String)
    }

    /// Probes `library` (checked against the manifest at `manifestPath`, when given). `shownPath` names the file in
    /// messages.
    public func run(library: String, manifestPath: String?, shownPath: String) -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        var arguments = ["probe", "--library", library, "--shown-path", shownPath]
        if let manifestPath { arguments += ["--manifest", manifestPath] }
        process.arguments = arguments
        // No Swift crash backtracer in the child: a crash is expected there and is reported by the parent.
        process.environment = ProcessInfo.processInfo.environment.merging(["KEEL_PROBE": "1", "SWIFT_BACKTRACE": "enable=no"]) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        let collected = CollectedOutput()
        do { try process.run() } catch {
            return .failed("\(shownPath): cannot start the probe (\(executable)): \(error.localizedDescription)")
        }
        // Each pipe is read on a thread of its own until end of file (not with `readabilityHandler`, whose dispatch
        // source, armed on a pipe whose handle is then closed, can crash the process in libdispatch).
        let drained = DispatchGroup()
        for (handle, isOut) in [(out.fileHandleForReading, true), (err.fileHandleForReading, false)] {
            drained.enter()
            Thread.detachNewThread {
                // Plain read(2): FileHandle.read(upToCount:) waits until it has that many bytes.
                var buffer = [UInt8](repeating: 0, count: 65536)
                let fd = handle.fileDescriptor
                while true {
                    let n = read(fd, &buffer, buffer.count)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { break }
                    let data = Data(buffer[..<n])
                    if isOut { collected.append(stdout: data) } else { collected.append(stderr: data) }
                }
                drained.leave()
            }
        }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        let hung = process.isRunning
        if hung { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        // A grandchild the plugin started may hold the pipes open: what arrived within a second is enough.
        _ = drained.wait(timeout: .now() + 1)
        let (stdout, _) = collected.value

        if hung {
            return .failed("\(shownPath): hung: no answer within \(Int(timeout)) s while loading or activating (a constructor or activate that never returns?)")
        }
        if process.terminationReason == .uncaughtSignal {
            let signal = process.terminationStatus
            return .failed("\(shownPath): crashed with \(Self.signalName(signal)) (signal \(signal)) while loading or activating; the host did not load it")
        }
        let answer = try? JSONDecoder().decode(ProbeAnswer.self, from: stdout)
        switch (process.terminationStatus, answer) {
        case (0, let a?) where a.report != nil: return .passed(a.report!)
        case (_, let a?) where a.error != nil: return .failed(a.error!)
        default:
            return .failed("\(shownPath): exited with code \(process.terminationStatus) while loading or activating (does it call exit?); the host did not load it")
        }
    }

    static func signalName(_ s: Int32) -> String {
        switch s {
        case SIGSEGV: return "SIGSEGV"
        case SIGBUS: return "SIGBUS"
        case SIGABRT: return "SIGABRT"
        case SIGILL: return "SIGILL"
        case SIGFPE: return "SIGFPE"
        case SIGKILL: return "SIGKILL"
        case SIGTRAP: return "SIGTRAP"
        default: return "signal \(s)"
        }
    }
}

/// What `keel probe` prints: a report, or an error line.
public struct ProbeAnswer: Codable, Sendable {
    public var report: InspectReport?
    public var error: String?

    public init(report: InspectReport? = nil, error: String? = nil) {
        self.report = report
        self.error = error
    }
}

final class CollectedOutput: Sendable {
    private let collected = Mutex((out: Data(), err: Data()))
    func append(stdout d: Data) { collected.withLock { $0.out.append(d) } }
    func append(stderr d: Data) { collected.withLock { if $0.err.count < 65536 { $0.err.append(d) } } }
    var value: (Data, Data) { collected.withLock { ($0.out, $0.err) } }
}
