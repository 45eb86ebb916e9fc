// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Glibc
import Keel
import KeelManifest

extension KeelCommand {
    /// The child-process side of `PluginProbe`: loads one library, checks it, activates it against a private
    /// registry and prints a `ProbeAnswer` as JSON. Exit 0: it passed; 3: it was refused (the JSON says why). Any
    /// other end (a signal, another exit code, no end) is the library's doing and is reported by the parent.
    struct Probe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Try a plugin library in this process and report as JSON (used by the host; not for people).",
            shouldDisplay: false)

        @OptionGroup var options: GlobalOptions
        @Option(help: "The shared object to load.") var library: String
        @Option(help: "The bundle's plugin.yaml to check it against.") var manifest: String?
        @Option(name: .customLong("shown-path"), help: "The path to name in messages.") var shownPath: String?
        @Flag(name: .customLong("config-stdin"), help: "Read the configuration (JSON) for the trial activation from standard input.")
        var configOnStdin = false

        func run() async throws {
            var noCore = rlimit(rlim_cur: 0, rlim_max: 0)
            setrlimit(Int32(RLIMIT_CORE.rawValue), &noCore)
            // The answer goes out on the original stdout; what the plugin writes to its stdout (a debug `printf` in
            // activate, flushed at exit) goes to stderr, where the host keeps the first 64 KiB, and cannot spoil it.
            let answerFD = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3)  // not inherited by what the plugin starts
            guard answerFD >= 0, dup2(STDERR_FILENO, STDOUT_FILENO) >= 0 else { throw ExitCode(4) }
            // Plugin code (constructors, activate) runs here: give it a full-size stack, as the host's lifecycle
            // thread has, not the small one of a concurrency worker.
            let library = library, manifest = manifest, shownPath = shownPath
            let config = configOnStdin ? try readConfigFromStdin() : ""
            let (code, output) = await withCheckedContinuation { (done: CheckedContinuation<(Int32, Data), Never>) in
                let thread = Thread { done.resume(returning: Self.inspect(library: library, manifest: manifest, shownPath: shownPath, config: config)) }
                thread.stackSize = 16 << 20
                thread.start()
            }
            FileHandle(fileDescriptor: answerFD, closeOnDealloc: false).write(output)
            fflush(nil)  // the plugin's buffered output, to stderr
            if code != 0 { throw ExitCode(code) }
        }

        static func inspect(library: String, manifest: String?, shownPath: String?, config: String) -> (Int32, Data) {
            let answer: ProbeAnswer
            do {
                var parsed: Manifest?
                var warnings: [ManifestWarning] = []
                if let manifest {
                    do { (parsed, warnings) = try ManifestLoader().load(path: manifest) } catch {
                        throw KernelError(.bundle, reason: error.description)
                    }
                }
                let report = try Inspector.inspect(library: library, manifest: parsed, manifestPath: manifest ?? "",
                                                   warnings: warnings, shownPath: shownPath, config: config)
                answer = ProbeAnswer(report: report)
            } catch let error as KernelError {
                return (3, (try? JSONEncoder().encode(ProbeAnswer(error: error.description))) ?? Data())
            } catch {
                return (3, (try? JSONEncoder().encode(ProbeAnswer(error: ErrorText.describe(error)))) ?? Data())
            }
            return (0, (try? JSONEncoder().encode(answer)) ?? Data())
        }
    }
}

/// The configuration (JSON) a parent handed a child `keel probe` or `validate-run` on its standard input, whole (the
/// parent's, which is trusted: YAML aliases may make it far larger than the 1 MiB of YAML it came from). Exit 4 when
/// it cannot be read.
func readConfigFromStdin() throws -> String {
    guard let bytes = try? FileHandle.standardInput.readToEnd() ?? Data() else { throw ExitCode(4) }
    return String(decoding: bytes, as: UTF8.self)
}
