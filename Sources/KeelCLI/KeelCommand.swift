// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel
import KeelHTTP
import KeelStatePostgres
import KeelSystem
import Synchronization

@main
struct KeelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel",
        abstract: "A microkernel plugin host: compiled extensions over a stable C ABI.",
        discussion: """
            Exit codes: 0 success; 1 the operation failed (the message says why); 64 bad usage.
            Defaults: --plugins $KEEL_PLUGINS_DIR or ./plugins; --state $KEEL_STATE or ./.keel/state.db.
            -v, --plugins and --state may stand before or after the subcommand.
            Shell completion (commands, plugin ids, tenants, roles): keel --generate-completion-script bash|zsh|fish.
            """,
        version: Kernel.version,
        subcommands: [Plugins.self, Services.self, Call.self, Commands.self, Tenants.self, Roles.self, Hosts.self, Serve.self, Dev.self, Token.self, Audit.self, Logs.self, Repo.self, Search.self, Install.self,
                      Upgrade.self, Uninstall.self, Pack.self, Trust.self, SDK.self, New.self, Probe.self, Worker.self, ValidateRun.self])

    /// Parses (global options may stand before or after the subcommand), runs, and reports every failure in one
    /// style: `keel: error: ...` on stderr, exit 64 with the usage for bad usage, exit 1 for a failed operation.
    static func main() async {
        // Still on the main thread, whose name `ps` shows: a child started from /proc/self/exe (`OwnExecutable`), which
        // the kernel calls `exe`, names itself (a confined worker too, which may write no file).
        if CommandLine.arguments.count > 1, let name = ["worker": "keel-worker", "probe": "keel-probe",
                                                        "validate-run": "keel-validate"][CommandLine.arguments[1]] {
            OwnExecutable.nameProcess(name)
        }
        // Swift's `CommandLine.arguments` and `ProcessInfo`'s environment replace bytes that are not UTF-8 with U+FFFD:
        // a command's argument, a path or an id would reach Keel changed, without a word. Such an argument, or a
        // KEEL_* variable, is refused as bad usage instead.
        if let problem = Self.nonUTF8Input() {
            SystemFile.say("keel: error: \(problem); Keel reads its arguments and KEEL_* variables as UTF-8\n", to: 2)
            Foundation.exit(ExitCode.validationFailure.rawValue)
        }
        // Out of the environment plugin code can read, before any thread starts (`HeldSecrets`).
        HeldSecrets.take()
        let arguments = GlobalArguments.normalize(Array(CommandLine.arguments.dropFirst()))
        // Copied: a secret on the command line is blanked where other processes read it (`SecretArguments`). A worker
        // and the validation child (plugin code) hold no token; `serve` closes itself once it starts workers.
        let hidden = SecretArguments.hide()
        if let first = arguments.first, !["worker", "validate-run", "serve"].contains(first) {
            SecretArguments.closeIfHoldingToken(onCommandLine: hidden)
        }
        var command: ParsableCommand
        do { command = try await asyncParseAsRoot(arguments) } catch {
            if let unknown = UnknownCommand.message(for: arguments) ?? UnknownCommand.negativeValue(in: arguments) {
                SystemFile.say("keel: error: \(unknown)\n", to: 2)
                Foundation.exit(ExitCode.validationFailure.rawValue)
            }
            reportUsage(error)
        }
        // The commands the README names as making a new state say nothing when they do (`noteNewState`).
        GlobalOptions.makesStateByDesign.store(command is Plugins.Enable || command is Serve || command is Dev, ordering: .relaxed)
        do {
            if var asyncCommand = command as? AsyncParsableCommand { try await asyncCommand.run() } else { try command.run() }
            // After the command's own output, and only when it succeeded: a failure stays one line.
            if let note = GlobalOptions.newStateNote.withLock({ $0 }) { SystemFile.say(note, to: 2) }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch let error as ValidationError {
            reportUsage(error)
        } catch let clean as CleanExit {
            exit(withError: clean)
        } catch where String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            reportUsage(error)  // e.g. `keel help plugins list`, whose run() asks for the help screen
        } catch {
            failAndExit(ErrorText.describe(error))
        }
    }

    /// The first argument after the program's name, or KEEL_* environment variable, whose bytes are not UTF-8, said
    /// as "argument 4 (after --plugins) is not UTF-8 text (its byte 2 is 0xE9)"; read from the process's own `argv`
    /// and `environ`, before anything blanks a part of them. Never quotes the text (it could be a secret).
    static func nonUTF8Input() -> String? {
        /// The offset and value of the first byte of `raw` that is not UTF-8.
        func firstBad(_ raw: UnsafePointer<CChar>) -> (offset: Int, byte: UInt8)? {
            let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(raw).assumingMemoryBound(to: UInt8.self), count: strlen(raw))
            var parser = Unicode.UTF8.ForwardParser(), iterator = bytes.makeIterator(), offset = 0
            while true {
                switch parser.parseScalar(from: &iterator) {
                case let .valid(scalar): offset += scalar.count
                case .emptyInput: return nil
                case .error: return (offset, bytes[offset])
                }
            }
        }
        func said(_ bad: (offset: Int, byte: UInt8)) -> String {
            "is not UTF-8 text (its byte \(bad.offset + 1) is 0x\(String(bad.byte, radix: 16, uppercase: true)))"
        }
        for index in 1..<max(1, Int(CommandLine.argc)) {
            guard let raw = CommandLine.unsafeArgv[index], let bad = firstBad(raw) else { continue }
            // The option it follows, or is the value of (--name=value), helps find it; any other neighbour could be a
            // secret. The option's name is read up to its '=' (before any bad byte).
            let text = String(cString: raw)
            let before = index > 1 ? CommandLine.arguments[index - 1] : ""
            let option = before.prefix { $0 != "=" }
            let which = text.hasPrefix("--") && text.contains("=") ? " (the value of \(text.prefix { $0 != "=" }))"
                : option.hasPrefix("-") && option.utf8.allSatisfy({ $0 < 128 }) ? " (after \(option))" : ""
            return "argument \(index)\(which) \(said(bad))"
        }
        var entry = environ
        while let raw = entry.pointee {
            defer { entry += 1 }
            guard strncmp(raw, "KEEL_", 5) == 0, let bad = firstBad(raw) else { continue }
            let name = String(decoding: UnsafeBufferPointer(start: UnsafeRawPointer(raw).assumingMemoryBound(to: UInt8.self),
                                                            count: strcspn(raw, "=")), as: UTF8.self)
            let equals = strcspn(raw, "=")
            return bad.offset > equals
                ? "the environment variable \(name) \(said((bad.offset - equals - 1, bad.byte)))"
                : "the name of an environment variable starting KEEL_ \(said(bad))"
        }
        return nil
    }

    /// A parse or validation error: help, version and completion requests go to the parser's own output (exit 0);
    /// anything else is `keel: error: <message>` with the usage hint, exit 64.
    private static func reportUsage(_ error: any Error) -> Never {
        let code = exitCode(for: error)
        guard code != .success else { exit(withError: error) }
        var text = fullMessage(for: error)
        if text.hasPrefix("Error: ") { text.removeFirst("Error: ".count) }
        SystemFile.say("keel: error: " + text + (text.hasSuffix("\n") ? "" : "\n"), to: 2)
        Foundation.exit(code.rawValue)
    }
}

/// Writes `keel: error: <message>` to stderr and exits with 1.
func failAndExit(_ message: String) -> Never {
    SystemFile.say("keel: error: \(message)\n", to: 2)
    exit(1)
}

/// Global options (`-v`, `--plugins`, `--state`) may be written before the subcommand (`keel -v plugins list`): they
/// are moved to just after the subcommand path, where every command's `GlobalOptions` parses them.
enum GlobalArguments {
    static func normalize(_ arguments: [String]) -> [String] {
        // Completion requests carry their own argument layout.
        if arguments.contains(where: { $0.hasPrefix("---") || $0.hasPrefix("--generate-completion") }) { return arguments }
        var path: [String] = [], globals: [String] = [], i = 0
        var command: ParsableCommand.Type = KeelCommand.self
        while i < arguments.count {
            let a = arguments[i]
            if a == "-v" || a == "--verbose" || a.hasPrefix("--plugins=") || a.hasPrefix("--state=") {
                globals.append(a)
                i += 1
            } else if (a == "--plugins" || a == "--state") && i + 1 < arguments.count {
                globals += [a, arguments[i + 1]]
                i += 2
            } else if let sub = command.configuration.subcommands.first(where: { $0._commandName == a }) {
                path.append(a)
                command = sub
                i += 1
            } else {
                break
            }
        }
        var rest = Array(arguments[i...])
        // `keel call` passes its arguments through untouched (a "-5" is a number, not an option), so its global
        // options, and its own --json and --tenant, are picked out of them here, up to a "--".
        if command == KeelCommand.Call.self {
            var kept: [String] = [], j = 0
            while j < rest.count {
                let a = rest[j]
                if a == "--" { kept += rest[(j + 1)...]; break }
                if a == "-v" || a == "--verbose" || a.hasPrefix("--plugins=") || a.hasPrefix("--state=") || a == "--json"
                    || a.hasPrefix("--tenant=") {
                    globals.append(a)
                    j += 1
                } else if (a == "--plugins" || a == "--state" || a == "--tenant") && j + 1 < rest.count {
                    globals += [a, rest[j + 1]]
                    j += 2
                } else {
                    kept.append(a)
                    j += 1
                }
            }
            rest = kept
        }
        return path + globals + rest
    }
}

/// Options every command that touches a kernel takes.
struct GlobalOptions: ParsableArguments {
    /// `--state` as it may be shown: a `postgres://` URL without its password.
    var shownStateFile: String { (try? PostgresURL(stateFile))?.redacted ?? PostgresURL.redact(stateFile) }

    @Option(name: .customLong("plugins"), help: "Plugin folder: one bundle (plugin.yaml + .so) per sub-folder (default $KEEL_PLUGINS_DIR, else ./plugins).")
    var pluginsOption: String?

    /// The plugin folder: `--plugins`, else `$KEEL_PLUGINS_DIR`, else the folder of the server running on this state
    /// (its lock file names it), else `plugins`. A command run beside a server, from any folder, thus acts on the
    /// server's plugins (an install unpacks where the server looks; `keel dev` copies there).
    var pluginsDirectory: String {
        givenPluginsDirectory ?? (stateFile == StateStore.inMemory ? nil : ServerLock.servedFolder(stateFile: localStateFile))
            ?? KernelConfiguration.defaultPluginsDirectory
    }

    /// The plugin folder when the user named one (`--plugins` or `$KEEL_PLUGINS_DIR`), nil for the default.
    var givenPluginsDirectory: String? {
        pluginsOption ?? ProcessInfo.processInfo.environment["KEEL_PLUGINS_DIR"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `pluginsDirectory` as an absolute path without `.` or `..`, as a server names it in its lock file.
    var absolutePluginsDirectory: String { URL(fileURLWithPath: absolute(pluginsDirectory)).standardizedFileURL.path }

    @Option(name: .customLong("state"), help: "SQLite state file, or postgres://user@host:port/database: a state several hosts share (password in PGPASSWORD).")
    var stateFile: String = KernelConfiguration.defaultStateFile

    @Option(name: .customLong("host-dir"), help: "With a postgres:// --state: this host's own files (server lock, library copies).")
    var hostDirectory: String = ProcessInfo.processInfo.environment["KEEL_HOST_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? ".keel/host"

    @Flag(name: .shortAndLong, help: "Print the kernel's and plugins' log lines on stderr.")
    var verbose = false

    /// A kernel for this command. One-shot commands report failures in their own output, so they log only with
    /// --verbose; a long-running server (`logAlways`) logs warnings and errors always, everything with --verbose.
    /// The records that pass go to stderr through the structured log, in `logFormat`.
    func makeKernel(logAlways: Bool = false, logFormat: LogFormat = .text,
                    adjust: (inout KernelConfiguration) -> Void = { _ in }) throws -> Kernel {
        try requirePluginsFolderNotFile()
        // A server says so in its log (`Serve`), in the format asked for.
        if !logAlways, !PostgresURL.isPostgres(stateFile) { noteNewState() }
        let verbose = self.verbose, output = StructuredLog.sink(format: logFormat)
        var configuration = KernelConfiguration(pluginsDirectory: pluginsDirectory, stateFile: localStateFile) { record in
            if verbose || (logAlways && record.level >= .warn) { output(record) }
        }
        if PostgresURL.isPostgres(stateFile) {
            let url = stateFile
            configuration.openState = { () throws(StateError) in try Self.openPostgres(url) }
        }
        // Every new build is tried in a child `keel probe` before this process loads it. Probes and workers are
        // this very build (`OwnExecutable`), even after the keel file was replaced while the server runs.
        let own = OwnExecutable.path.map { _ in OwnExecutable.execPath }
        configuration.probe = own.map { PluginProbe(executable: $0) }
        configuration.workerExecutable = own
        adjust(&configuration)
        let kernel = try Kernel(configuration: configuration)
        // This process is no host of the shared state (a server makes itself one, `observe(as:)`): what its own kernel
        // finds in its plugin folder, or its trial activations, is recorded for no host.
        if PostgresURL.isPostgres(stateFile) { kernel.state.observeForNoHost() }
        return kernel
    }

    /// A file given as the plugin folder is a typo, never a host without plugins: stopped here, not with a scan error
    /// only --verbose shows.
    /// - Throws: `CLIError` naming the file.
    func requirePluginsFolderNotFile() throws {
        var st = stat()
        if stat(pluginsDirectory, &st) == 0, st.st_mode & S_IFMT != S_IFDIR {
            throw CLIError("\(pluginsDirectory): is a file, not a plugin folder (check --plugins)")
        }
    }

    /// A kernel that runs one command while no server owns the state: it starts every enabled plugin idle and
    /// activates only what the command needs (`KernelConfiguration.startsIdle`), so a `keel plugins list` runs no
    /// plugin code and a `disable` loads nothing.
    func makeOneShotKernel() throws -> Kernel {
        try makeKernel { $0.startsIdle = true }
    }

    /// The state store alone, for commands that must not load plugins: the SQLite file, or the PostgreSQL database
    /// `--state` names by URL.
    func openState() throws -> StateStore {
        if PostgresURL.isPostgres(stateFile) { return try Self.openPostgres(stateFile) }
        noteNewState()
        return try StateStore(path: stateFile)
    }

    /// The shared state at `url`; when the database held no Keel state (its tables were made now), a command the
    /// README does not name as making one says so (`newStateNote`): a URL naming the wrong database, `postgres` for
    /// `keel`, would otherwise get a new state's tables without a word.
    static func openPostgres(_ url: String) throws(StateError) -> StateStore {
        let store = try PostgresStore.open(url)
        if PostgresStore.madeNewState(store), !makesStateByDesign.load(ordering: .relaxed) {
            let shown = (try? PostgresURL(url))?.redacted ?? url
            let schema = (try? PostgresURL(url))?.schema.map { "schema \($0)" } ?? "its default schema"
            newStateNote.withLock {
                $0 = "keel: note: \(shown) held no Keel state: its tables were made now, in \(schema) (check --state or " +
                    "$KEEL_STATE if you meant another database)\n"
            }
        }
        return store
    }

    /// True while the command running is one the README names as making a new state (`plugins enable`, `serve`, `dev`).
    static let makesStateByDesign = Atomic<Bool>(false)
    /// The note `noteNewState` leaves for `KeelCommand.main` to print once the command succeeded.
    static let newStateNote = Mutex<String?>(nil)

    /// Says on stderr, once the command succeeded, that `--state` (or `$KEEL_STATE`) named no file and a new state was
    /// made there: a mistyped name
    /// on a command that writes (`services use`, `grant`, ...) would otherwise change a fresh state without a word, the
    /// real one untouched. Not for the default `.keel/state.db` (a checkout's first command), a state in memory or a
    /// PostgreSQL URL.
    func noteNewState() {
        guard !Self.makesStateByDesign.load(ordering: .relaxed), stateFile != ".keel/state.db", stateFile != StateStore.inMemory,
              !stateFile.isEmpty, SystemFile.urlLikeProblem(stateFile) == nil,
              !FileManager.default.fileExists(atPath: stateFile) else { return }
        Self.newStateNote.withLock {
            $0 = "keel: note: \(stateFile) did not exist: a new state was made there (check --state or $KEEL_STATE if you meant another)\n"
        }
    }

    /// For commands that only read (`plugins list`, `tenants list`, `audit`, ...): these options as the command should
    /// use them. A `--state` (or `$KEEL_STATE`) SQLite file that does not exist is never created by a read:
    /// - in a folder that does not exist either, it is a typo far more often than a new host: refused;
    /// - in a folder that exists, the command shows what a new host would (a state in memory) and says on stderr that
    ///   the file does not exist and nothing was made, so a mistyped name is seen. A folder this user cannot write
    ///   is left to the state's own error (no state could be made there).
    /// The default `.keel/state.db` is made as before (a fresh checkout's first `keel plugins list`).
    /// - Throws: `CLIError` naming the path.
    func readingState() throws -> GlobalOptions {
        guard !PostgresURL.isPostgres(stateFile), stateFile != ".keel/state.db", stateFile != StateStore.inMemory,
              !FileManager.default.fileExists(atPath: stateFile) else { return self }
        // A URL (`postgres:/db`, `sqlite:///x.db`) is said as one, as the commands that write say it.
        if let problem = SystemFile.urlLikeProblem(stateFile) { throw CLIError("\(stateFile): \(problem)") }
        let folder = (stateFile as NSString).deletingLastPathComponent
        if !folder.isEmpty, !FileManager.default.fileExists(atPath: folder) {
            throw CLIError("\(stateFile): no state file here, and its folder \(folder) does not exist (check --state or " +
                           "$KEEL_STATE; `keel plugins enable` or `keel serve` makes a new state)")
        }
        guard access(folder.isEmpty ? "." : folder, W_OK) == 0 else { return self }
        try requirePluginsFolderNotFile()
        SystemFile.say("keel: note: \(stateFile) does not exist: shown as a new host would be, and " +
                                             "nothing was created (check --state or $KEEL_STATE; `keel plugins enable` or " +
                                             "`keel serve` makes a new state)\n", to: 2)
        var options = self
        options.stateFile = StateStore.inMemory
        return options
    }

    /// The file this host's own files (lock, library copies) are named after: the state file itself, or, with a
    /// shared PostgreSQL state, one in `--host-dir`.
    var localStateFile: String {
        PostgresURL.isPostgres(stateFile) ? (hostDirectory as NSString).appendingPathComponent("host") : stateFile
    }

    /// The running server's lock line, when `keel serve` owns this state file (this host's, for a shared state).
    var runningServer: String? {
        stateFile == StateStore.inMemory ? nil : ServerLock.running(stateFile: localStateFile)
    }

    /// `runningServer`, for a command that goes through the server (its command queue or live view). The server
    /// acts on its own plugin folder: a `--plugins` (or `$KEEL_PLUGINS_DIR`) naming another folder is refused before
    /// anything is sent, since the command would neither see it nor change it. A server that names no folder (an
    /// earlier keel's) is not compared.
    /// - Throws: `CLIError` naming both folders.
    func throughServer() throws -> String? {
        guard let line = runningServer else { return nil }
        if let given = givenPluginsDirectory, let served = ServerLock.servedFolder(stateFile: localStateFile),
           !Self.sameFolder(absolutePluginsDirectory, served) {
            throw CLIError("--plugins \(given): the keel server on \(shownStateFile) (\(line)) serves the plugin folder "
                           + "\(served), and this command goes through it; leave --plugins out (and $KEEL_PLUGINS_DIR), give "
                           + "that folder, or stop the server to use \(given)")
        }
        return line
    }

    /// True when both absolute paths name one folder: the same text, or the same folder on disk (through a link).
    static func sameFolder(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        var sa = stat(), sb = stat()
        return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    /// Queues `command` for the running server (`RemoteControl.submit`, as this OS user, for this host's server).
    /// When the server did not take it or did not finish it in time, the error says what the server's lifecycle is
    /// busy with, as its `/healthz` tells (a stall, or a plugin call running for a second or more).
    @discardableResult
    func submitToServer(_ command: KernelCommand, timeout: Duration, actor: String? = nil, state: StateStore? = nil) async throws -> CommandResult {
        do {
            return try await RemoteControl.submit(command, state: try state ?? openState(), timeout: timeout, user: Kernel.osUser, actor: actor,
                                                  target: queueTarget, serverGone: serverGone)
        } catch let error as KernelError where error.code == .unanswered {
            guard let line = runningServer, let busy = await ServerHealth.lifecycle(lockLine: line) else { throw error }
            throw CLIError(error.reason + "; the server says: " + busy)
        }
    }

    /// For `RemoteControl.submit`: true once the server that was running has let go of its lock (it stopped).
    var serverGone: @Sendable () -> Bool { ServerLock.released(stateFile: localStateFile) }

    /// Whom a command queued for the running server is for: on a shared state, that server's host id as its lock line
    /// names it, so that no other host of the state takes it (a reload or a command call runs in the server beside
    /// this CLI); nil for a state file, which one server owns, and for a server that names no host id (`keel dev
    /// --serve`, which takes only commands for any server).
    var queueTarget: String? { runningServer.flatMap(ServerLock.host(inLine:)) }
}

/// A failure reported as one line on stderr with exit code 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    /// True when a running server refused the admin token (401): retrying with the same token cannot help.
    var refusedToken = false
    init(_ message: String) { description = message }
    /// Any error in the words `keel: error:` uses (see `ErrorText`).
    init(_ error: any Error) { description = ErrorText.describe(error) }
}

extension AsyncParsableCommand {
    /// Runs `body`; any error becomes one line on stderr (`ErrorText`) and exit code 1. Usage errors
    /// (`ValidationError`) and exit requests pass through to `KeelCommand.main`.
    @discardableResult
    func reporting<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as ValidationError {
            throw error
        } catch let error as ExitCode {
            throw error
        } catch {
            failAndExit(ErrorText.describe(error))
        }
    }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let text = String(decoding: try encoder.encode(value), as: UTF8.self)
    // Foundation on Linux writes an empty list or object pretty-printed with a blank line inside ("[\n\n]").
    print(text == "[\n\n]" ? "[]" : text == "{\n\n}" ? "{}" : text)
}
