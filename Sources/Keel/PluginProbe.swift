// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import KeelSystem
import Synchronization

/// Tries a library in a child process before the host ever loads it.
///
/// The child is the `keel` executable in its hidden `probe` mode: it does the dlopen, the entry lookup, the ABI check
/// and a trial activation against a private registry, and prints the result as JSON. A library whose constructor
/// crashes, exits or never returns, or whose activate does, takes down only the child; the host records the signal,
/// exit code or time-out as the plugin's failure and never loads it. The child runs with `KEEL_PROBE=1` in its
/// environment and without core dumps. Thread-safe; blocks the caller while the child runs.
public struct PluginProbe: Sendable {
    /// The `keel` executable to run as `keel probe`: `OwnExecutable.execPath` for a host that is itself `keel`.
    public var executable: String
    /// How long the child may take (seconds) before it is killed and the library is reported as hanging.
    public var timeout: Double

    public init(executable: String, timeout: Double = 10) {
        self.executable = executable
        self.timeout = timeout
    }

    /// What the child found.
    public enum Outcome: Sendable {
        case passed(InspectReport)
        /// `byPluginCode`: the plugin's own code failed while loading or activating (it crashed, exited, hung or
        /// flooded its output), as it will again for the same build; false for a refusal about the manifest or the
        /// ABI, or a probe that could not run.
        case failed(String, byPluginCode: Bool = false)
    }

    /// Probes `library` (checked against the manifest at `manifestPath`, when given). `shownPath` names the file in
    /// messages. With `descriptor` (an open descriptor of the library, such as a memory copy's), the child opens
    /// that instead of `library`: it gets it as `ChildProcess.passedDescriptor`, since another process's
    /// `/proc/<pid>/fd` can be closed to it (a host that is not dumpable, run by a user without `CAP_SYS_PTRACE`).
    /// `config`: the configuration (JSON) the trial activation is given, as the real one will be (a plugin that
    /// refuses to start without its configuration would otherwise fail its probe for good); the child reads it from
    /// its standard input, an in-memory file, so it is in neither its arguments nor its environment.
    public func run(library: String, descriptor: Int32? = nil, manifestPath: String?, shownPath: String, config: String = "") -> Outcome {
        let opened = descriptor.map { _ in "/proc/self/fd/\(ChildProcess.passedDescriptor)" } ?? library
        var arguments = [OwnExecutable.shown(executable), "probe", "--library", opened, "--shown-path", shownPath]
        if let manifestPath { arguments += ["--manifest", manifestPath] }
        var input = ChildProcess.Descriptor.null
        if !config.isEmpty {
            let fd = SystemFile.memoryFile(name: "keel-probe-config", holding: config)
            guard fd >= 0 else { return .failed("\(shownPath): cannot start the probe: its configuration could not be written (\(SystemFile.lastError))") }
            input = .descriptor(fd)
            arguments.append("--config-stdin")
        }
        // The child has its own copy of the descriptor; this one goes however the start ends.
        defer { if case let .descriptor(fd) = input { close(fd) } }
        // No Swift crash backtracer in the child: a crash is expected there and is reported by the parent. None of the
        // host's settings or secrets either (the admin token, the state database's password): plugin code runs there
        // before the host decided to load it, as a worker's does (`ChildEnvironment`).
        let environment = ChildEnvironment.scrubbed(ProcessInfo.processInfo.environment)
            .merging(["KEEL_PROBE": "1", "SWIFT_BACKTRACE": "enable=no"]) { $1 }
            .map { "\($0.key)=\($0.value)" }
        guard let outPipe = SystemFile.pipe() else { return .failed("\(shownPath): cannot start the probe: no pipe (\(String(cString: strerror(errno))))") }
        guard let errPipe = SystemFile.pipe() else {
            close(outPipe.read); close(outPipe.write)
            return .failed("\(shownPath): cannot start the probe: no pipe (\(String(cString: strerror(errno))))")
        }
        let out = [outPipe.read, outPipe.write], err = [errPipe.read, errPipe.write]
        // In a process group of its own (not Foundation's `Process`: it takes a child for running while anything
        // the child started holds a descriptor it inherited, so a plugin that starts a helper process in its
        // constructor held the kernel's thread for that helper's life).
        let pid: pid_t
        do {
            pid = try ChildProcess.spawn(executable, arguments: arguments, environment: environment,
                                         standard: [input, .descriptor(out[1]), .descriptor(err[1])],
                                         passing: descriptor, ownGroup: true)
        } catch {
            for fd in out + err { close(fd) }
            return .failed("\(shownPath): cannot start the probe (\(OwnExecutable.shown(executable))): \(error)")
        }
        close(out[1])
        close(err[1])
        let collected = CollectedOutput()
        // Each pipe is read on a thread of its own until end of file, or until told to stop: a process the plugin
        // started may hold a pipe open for ever. What is kept of each is bounded (`CollectedOutput`); the rest is
        // read and dropped, so a plugin that floods its output cannot fill the host.
        let drained = DispatchGroup()
        let stop = Atomic<Bool>(false)
        for (fd, isOut) in [(out[0], true), (err[0], false)] {
            drained.enter()
            Thread.detachNewThread {
                var buffer = [UInt8](repeating: 0, count: 65536)
                while !stop.load(ordering: .relaxed) {
                    var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    let polled = poll(&ready, 1, 100)
                    if polled < 0 && errno == EINTR { continue }
                    guard polled > 0 else { if polled < 0 { break } else { continue } }
                    let n = read(fd, &buffer, buffer.count)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { break }
                    if isOut { collected.append(stdout: buffer[..<n]) } else { collected.append(stderr: buffer[..<n]) }
                }
                close(fd)
                drained.leave()
            }
        }
        // The whole group goes at the end, the child with whatever the plugin started there.
        let ending = ChildProcess.waitKillingGroup(pid, timeout: timeout)
        let hung = ending.timedOut
        // A process that left the group may hold the pipes open: what arrived within a second is enough.
        if drained.wait(timeout: .now() + 1) == .timedOut { stop.store(true, ordering: .relaxed) }
        let (stdout, _) = collected.value
        if collected.outputCut {
            return .failed("\(shownPath): the probe's answer was over \(CollectedOutput.outputLimit >> 20) MiB (the plugin wrote to its file descriptors?); the host did not load it", byPluginCode: true)
        }
        if hung {
            return .failed("\(shownPath): hung: no answer within \(Int(timeout)) s while loading or activating (a constructor or activate that never returns?)", byPluginCode: true)
        }
        let signal = ending.signal, exitCode = ending.exitCode
        if signal != 0 {
            return .failed("\(shownPath): crashed with \(Self.signalName(signal)) (signal \(signal)) while loading or activating; the host did not load it", byPluginCode: true)
        }
        let answer = try? JSONDecoder().decode(ProbeAnswer.self, from: stdout)
        switch (exitCode, answer) {
        case (0, let a?) where a.report != nil: return .passed(a.report!)
        case (_, let a?) where a.error != nil: return .failed(a.error!)
        default:
            return .failed("\(shownPath): exited with code \(exitCode) while loading or activating (does it call exit?); the host did not load it", byPluginCode: true)
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

/// A probe's output as it arrives: its answer (stdout) up to `outputLimit`, and the first 64 KiB of its stderr.
/// Thread-safe.
final class CollectedOutput: Sendable {
    /// The largest answer kept; past it the answer is dropped and `outputCut` set.
    static let outputLimit = 1 << 20
    private let collected = Mutex((out: Data(), err: Data(), cut: false))
    func append(stdout d: ArraySlice<UInt8>) {
        collected.withLock {
            if $0.out.count + d.count > Self.outputLimit { ($0.out, $0.cut) = (Data(), true) }
            if !$0.cut { $0.out.append(contentsOf: d) }
        }
    }
    func append(stderr d: ArraySlice<UInt8>) { collected.withLock { if $0.err.count < 65536 { $0.err.append(contentsOf: d) } } }
    var value: (Data, Data) { collected.withLock { ($0.out, $0.err) } }
    var outputCut: Bool { collected.withLock { $0.cut } }
}
