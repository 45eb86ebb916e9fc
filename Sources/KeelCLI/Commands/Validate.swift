// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Glibc
import Keel
import KeelManifest
import KeelSystem

extension KeelCommand.Plugins {
    /// `keel plugins validate PATH`: the conformance run of `Validator`, in a child `keel validate-run`, so that a
    /// plugin that crashes or hangs fails the run with a reason instead of taking the command down.
    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the conformance checks on a built bundle folder and print each one; exit 1 if any fails.",
            discussion: """
                In a child process: loads the library, checks it agrees with plugin.yaml and exports no C symbol beyond \
                keel_plugin_entry and its commands and states a sane descriptor struct_size, activates and deactivates it \(Validator.rounds) times (leaving no thread \
                running) and checks the host refused no struct_size it passed, checks each service table it provides \
                against the functions: plugin.yaml declares and that every declared command is exported and answers its \
                probe call, sends \
                \(Validator.threads) threads of concurrent requests to every route, reloads it \(Validator.reloads) times while \
                they run (no call may fail), asks it for an unknown extension, and \
                activates it without capabilities. A crash or a hang fails the run, naming the check. No state is touched.
                """)

        @Argument(help: "The bundle folder (plugin.yaml and its library).", completion: .directory) var path: String
        @Option(help: "Seconds the whole run may take.") var timeout: Double = 120
        @Option(help: "A configuration (YAML) for every activation, checked against the bundle's config.schema.yaml, as `keel plugins config` gives it to the host.",
                completion: .file()) var config: String?

        func run() async throws {
            try await reporting {
                try requireFolder(path, hint: "pass a bundle folder, such as bundle/ID of a `keel new` project")
                try refuseProjectForBundle(path, command: "plugins validate")
                guard OwnExecutable.path != nil else { throw CLIError("cannot find the keel executable to run the checks in (is /proc mounted?)") }
                // The manifest's id names the plugin in a configuration's errors; a manifest that does not load is the
                // first check's to report.
                let id = (try? ManifestLoader().load(path: path + "/" + ManifestLoader.fileName))?.0.id ?? (path as NSString).lastPathComponent
                let settings = try trialConfiguration(folder: path, id: id, file: config)
                let (checks, end) = try Self.runChild(OwnExecutable.execPath, bundle: path, config: settings, timeout: timeout)
                var failed = 0
                for check in checks {
                    if !check.passed { failed += 1 }
                    print("\(check.passed ? "ok  " : "FAIL") \(check.name): \(check.detail)")
                }
                if let end {
                    failed += 1
                    print("FAIL \(end)")
                }
                if failed > 0 {
                    print("\(path): \(failed) check(s) failed"
                          + (config == nil && checks.contains { $0.name == Validator.Check.cycles.name && !$0.passed } ? KeelCommand.Plugins.Inspect.noConfigHint : ""))
                    throw ExitCode(1)
                }
                print("\(path): all \(checks.count) checks passed")
            }
        }

        /// Runs `keel validate-run` and returns the checks it printed, and what went wrong with the child when it
        /// did not finish normally (a signal, a hang, an exit code).
        /// `config`: the configuration (JSON) every activation gets, handed over on the child's standard input.
        static func runChild(_ keel: String, bundle: String, config: String, timeout: Double) throws -> ([ValidationCheck], String?) {
            let environment = ProcessInfo.processInfo.environment.merging(["SWIFT_BACKTRACE": "enable=no"]) { $1 }
                .map { "\($0.key)=\($0.value)" }
            let output = TemporaryOutput()
            // In a process group of its own, killed whole at the end: a process the plugin starts does not outlive
            // the run (with Foundation's `Process`, one that kept an inherited descriptor made the run look alive).
            var arguments = [OwnExecutable.shown(keel), "validate-run", "--bundle", bundle], input = ChildProcess.Descriptor.null
            if !config.isEmpty {
                let fd = SystemFile.memoryFile(name: "keel-validate-config", holding: config)
                guard fd >= 0 else { throw CLIError("cannot hand the configuration to validate-run: \(SystemFile.lastError)") }
                input = .descriptor(fd)
                arguments.append("--config-stdin")
            }
            defer { if case let .descriptor(fd) = input { close(fd) } }
            let pid: pid_t
            do {
                pid = try ChildProcess.spawn(keel, arguments: arguments, environment: environment,
                                             standard: [input, .descriptor(output.handle.fileDescriptor), .null], ownGroup: true)
            } catch { throw CLIError("cannot start \(OwnExecutable.shown(keel)) validate-run: \(error)") }
            let ending = ChildProcess.waitKillingGroup(pid, timeout: timeout)
            let lines = output.text.split(separator: "\n")
            let checks = lines.compactMap { try? JSONDecoder().decode(ValidationCheck.self, from: Data($0.utf8)) }
            // The check that was running: the one after the last reported.
            let next = Validator.Check.after(checks.last?.name).map { "during \"\($0.name)\"" }
                ?? "after \"\(checks.last?.name ?? "start")\""
            if ending.timedOut { return (checks, "the run did not finish within \(Int(timeout)) s (hung \(next))") }
            if ending.signal != 0 { return (checks, "the plugin crashed the validating process with signal \(ending.signal) \(next)") }
            if ending.exitCode != 0 { return (checks, "the validating process exited with code \(ending.exitCode) \(next)") }
            return (checks, nil)
        }
    }
}

/// A child's standard output through an unlinked temporary file: no pipe to fill up while the parent waits.
private final class TemporaryOutput {
    let handle: FileHandle
    private let fd: Int32

    init() {
        var template = Array((NSTemporaryDirectory() + "/keel-validate-XXXXXX").utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd >= 0 { template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) } }
        handle = FileHandle(fileDescriptor: fd >= 0 ? fd : open("/dev/null", O_WRONLY), closeOnDealloc: true)
    }

    var text: String {
        guard fd >= 0, lseek(fd, 0, SEEK_SET) == 0 else { return "" }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { break }
            data.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: data, as: UTF8.self)
    }
}

extension KeelCommand {
    /// The child side of `keel plugins validate`: runs `Validator` and prints each check as one JSON line as soon as
    /// it is known. Exit 0 whatever the checks found (the parent judges); any other end is the plugin's doing.
    struct ValidateRun: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "validate-run",
            abstract: "Run the conformance checks in this process (used by `keel plugins validate`; not for people).",
            shouldDisplay: false)

        @Option(help: "The bundle folder.") var bundle: String
        @Flag(name: .customLong("config-stdin"), help: "Read the configuration (JSON) for every activation from standard input.")
        var configOnStdin = false

        func run() async throws {
            var noCore = rlimit(rlim_cur: 0, rlim_max: 0)
            setrlimit(Int32(RLIMIT_CORE.rawValue), &noCore)
            let bundle = bundle
            let config = configOnStdin ? try readConfigFromStdin() : ""
            // Plugin code runs here: give it a full-size stack, as the host's lifecycle thread has.
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread {
                    Validator.run(bundle: bundle, config: config) { check in
                        if let line = try? JSONEncoder().encode(check) { SystemFile.say(String(decoding: line, as: UTF8.self) + "\n") }
                    }
                    done.resume()
                }
                thread.stackSize = 16 << 20
                thread.start()
            }
        }
    }
}
