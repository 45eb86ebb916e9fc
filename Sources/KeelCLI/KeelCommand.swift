// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel

@main
struct KeelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel",
        abstract: "A microkernel plugin host: compiled extensions over a stable C ABI.",
        discussion: """
            Exit codes: 0 success; 1 the operation failed (the message says why); 64 bad usage.
            Defaults: --plugins $KEEL_PLUGINS_DIR or ./plugins; --state $KEEL_STATE or ./.keel/state.db.
            """,
        version: Kernel.version,
        subcommands: [Plugins.self, Tenants.self, Roles.self, Serve.self, Token.self, Repo.self, Search.self, Install.self,
                      Upgrade.self, Uninstall.self, Pack.self, Trust.self, Probe.self])
}

/// Options every command that touches a kernel takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("plugins"), help: "Plugin folder: one bundle (plugin.yaml + .so) per sub-folder.")
    var pluginsDirectory: String = KernelConfiguration.defaultPluginsDirectory

    @Option(name: .customLong("state"), help: "SQLite state file.")
    var stateFile: String = KernelConfiguration.defaultStateFile

    @Flag(name: .shortAndLong, help: "Print the kernel's and plugins' log lines on stderr.")
    var verbose = false

    /// A kernel for this command. One-shot commands report failures in their own output, so they log only with
    /// --verbose; a long-running server (`logAlways`) logs warnings and errors always, everything with --verbose.
    func makeKernel(logAlways: Bool = false, adjust: (inout KernelConfiguration) -> Void = { _ in }) throws -> Kernel {
        let verbose = self.verbose
        var configuration = KernelConfiguration(pluginsDirectory: pluginsDirectory, stateFile: stateFile) { record in
            if verbose || (logAlways && record.level >= .warn) { KernelConfiguration.standardErrorLog(record) }
        }
        // Every new build is tried in a child `keel probe` before this process loads it.
        configuration.probe = PluginProbe.currentExecutable.map { PluginProbe(executable: $0) }
        adjust(&configuration)
        do { return try Kernel(configuration: configuration) } catch { throw CLIError(error.description) }
    }

    /// The state file alone, for commands that must not load plugins.
    func openState() throws -> StateStore {
        do { return try StateStore(path: stateFile) } catch { throw CLIError(error.description) }
    }

    /// The running server's lock line, when `keel serve` owns this state file.
    var runningServer: String? { ServerLock.running(stateFile: stateFile) }
}

/// A failure reported as one line on stderr with exit code 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}

extension AsyncParsableCommand {
    /// Runs `body`, turning library errors into one line on stderr and exit code 1.
    func reporting(_ body: () async throws -> Void) async throws {
        do { try await body() } catch let error as CLIError {
            fail(error.description)
        } catch let error as KernelError {
            fail(error.description)
        } catch let error as StateError {
            fail(error.description)
        }
    }

    private func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("keel: error: \(message)\n".utf8))
        Self.exit(withError: ExitCode.failure)
    }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
