// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import Keel
import KeelManifest
import KeelSystem
import Synchronization

/// The host `keel dev` reloads into: a running `keel serve` (through its command queue, as every CLI command
/// reaches it), or a kernel of this process (`keel dev --serve`). Either way the kernel executes the change; the
/// CLI never writes the state store itself.
protocol DevHost: Sendable {
    /// Executes `command` in the host's kernel. - Throws: `KernelError` with the kernel's reason.
    /// - Returns: the kernel's result (its note: a `refresh` that found the build serving already).
    func execute(_ command: KernelCommand) async throws -> CommandResult
    /// The host's current view of plugin `id`, nil when it does not know it.
    func plugin(_ id: String) async throws -> PluginInfo?
}

/// A `keel serve` on the same state file, reached through the command queue the CLI uses (`RemoteControl`).
struct RunningServerHost: DevHost {
    let state: StateStore
    let stateFile: String

    /// - Throws: `CLIError` at once when the server has stopped (rather than waiting out the queue's time-out).
    func execute(_ command: KernelCommand) async throws -> CommandResult {
        let line = try running()
        // A new build is probed in a child process first, which may take up to 10 s.
        return try await RemoteControl.submit(command, state: state, timeout: .seconds(15), user: Kernel.osUser, actor: "dev",
                                       target: ServerLock.host(inLine: line), serverGone: ServerLock.released(stateFile: stateFile))
    }

    /// - Throws: `CLIError` when the server has stopped: the live view it left behind is no longer served.
    func plugin(_ id: String) async throws -> PluginInfo? {
        _ = try running()
        return try RemoteControl.livePlugins(state: state).first { $0.id == id }
    }

    /// The running server's lock line. - Throws: `CLIError` when no server holds the state file's lock.
    private func running() throws -> String {
        guard let line = ServerLock.running(stateFile: stateFile) else {
            throw CLIError("the keel server on \(stateFile) has stopped; start it again (it loads the last build copied; the next save reloads into it)")
        }
        return line
    }
}

/// A kernel of this process (`keel dev --serve`).
struct InProcessHost: DevHost {
    let kernel: Kernel

    func execute(_ command: KernelCommand) async throws -> CommandResult { try await kernel.execute(command, actor: "dev") }

    func plugin(_ id: String) async throws -> PluginInfo? { try? await kernel.plugin(id) }
}

/// What one `DevLoop` cycle leaves to the next.
struct DevCycleOutcome: Sendable {
    /// When its build ended, nil when none ran. A save seen before then may be missing from what it built, while
    /// the build's outputs are newer than the saved file (make would then see nothing to do).
    var buildEnded: ContinuousClock.Instant?
    /// The plugin folder holds a bundle the host does not serve (its reload or enable failed, or the server was
    /// gone): the next cycle reloads even when its build changes nothing in the bundle.
    var unserved: Bool
    /// A save seen during a build that no later build has made: the next build rebuilds every target.
    var rebuildAll = false
}

/// One plugin project in `keel dev`'s loop: each burst of saves is built with the project's command, the bundle
/// is copied into the host's plugin folder and reloaded, and the time from the save to serving is printed.
/// Cycles run one at a time on the caller's task; saves during a cycle make one more cycle after it.
struct DevLoop: Sendable {
    /// The project folder (absolute), its plugin id, and where its build puts the bundle.
    var project: String
    var id: String
    var buildCommand: String
    var pluginsDirectory: String
    /// The host's state file (absolute).
    var stateFile: String
    var host: any DevHost

    /// The host's files, which a project may hold (`keel dev` run with the default `./plugins`): never sources.
    var hostFiles: [String] {
        let stateFolder = URL(fileURLWithPath: stateFile).deletingLastPathComponent().path
        return [pluginsDirectory, stateFolder + "/generations"] + ["", "-wal", "-shm", "-journal", ".lock", ".manifests", ".libraries", ".activating", ".crash"].map { stateFile + $0 }
    }

    /// `host.execute`, with `reload` for a `refresh` that a server of an earlier keel cannot read.
    private func execute(_ command: KernelCommand) async throws -> CommandResult {
        do { return try await host.execute(command) } catch {
            guard case let .refresh(id) = command, "\(error)".contains("unreadable command \"refresh\"") else { throw error }
            return try await host.execute(.reload(id: id))
        }
    }

    var bundle: String { project + "/bundle/" + id }
    var installed: String { pluginsDirectory + "/" + id }

    /// Prints one line of the loop's (`say`), with the plugin folder's copy of plugin.yaml named as the project's
    /// file the author edits (`projectPaths`).
    func tell(_ line: String) { say(Self.projectPaths(line, installed: installed, project: project)) }

    /// `text` with the copy of plugin.yaml in the plugin folder (`installed`), which the host read and names, written
    /// as the project's plugin.yaml, which the author edits and the build copies there unchanged.
    static func projectPaths(_ text: String, installed: String, project: String) -> String {
        let copy = installed + "/" + ManifestLoader.fileName
        return text.contains(copy) ? text.replacingOccurrences(of: copy, with: project + "/" + ManifestLoader.fileName) : text
    }

    /// Builds, installs and (re)loads once. `savedAt` is when the first save of the burst was seen (or the start);
    /// `changed` names the saved files; `previous` is what the last cycle left (nil for the first). Prints one
    /// outcome line; build errors are printed with the compiler's output.
    func cycle(savedAt: ContinuousClock.Instant, changed: [String], after previous: DevCycleOutcome? = nil) async -> DevCycleOutcome {
        let clock = ContinuousClock()
        // A save seen while the last build ran (or within 100 ms of its end, for the event's way from the file system):
        // make may find the outputs newer than it and build nothing, so every target is rebuilt (`make -B`, through
        // MAKEFLAGS, which reaches a make the command runs too).
        let force = (previous?.buildEnded.map { savedAt < $0 + .milliseconds(100) } ?? false) || previous?.rebuildAll == true
        if !changed.isEmpty {
            tell("building \(id) (\(Self.describe(changed)) changed\(force ? " during the last build: every target is rebuilt" : ""))")
        }
        // Left as it is by a cycle that builds nothing (below): what it owed the next build stays owed.
        var outcome = DevCycleOutcome(buildEnded: previous?.buildEnded, unserved: previous?.unserved ?? false, rebuildAll: force)
        // The id the project names now: another one would be copied over this plugin's folder and retire it.
        do {
            let named = try ManifestLoader().load(path: project + "/" + ManifestLoader.fileName).0.id
            if named != id {
                tell(Self.renamed(project + "/" + ManifestLoader.fileName, to: named, from: id))
                return outcome
            }
        } catch {
            tell("not built: \(CLIError(error).description); \(await meanwhile()); waiting for the next save")
            return outcome
        }
        let buildStart = clock.now
        let build = await BuildProcess.run(buildCommand, in: project, rebuildAll: force)
        outcome.buildEnded = clock.now
        outcome.rebuildAll = false
        let buildTime = clock.now - buildStart
        // Ended by keel dev's own stop (Ctrl-C): not a failed build.
        if build.status != 0 && BuildProcess.isStopping { return outcome }
        guard build.status == 0 else {
            let text = build.output.hasSuffix("\n") || build.output.isEmpty ? build.output : build.output + "\n"
            SystemFile.say(text)
            tell("build failed (`\(buildCommand)` exited with \(build.status) after \(Self.ms(buildTime)) ms); "
                + "\(await meanwhile()); waiting for the next save")
            return outcome
        }
        let reloadStart = clock.now
        var reloading = false
        do {
            let manifest = bundle + "/" + ManifestLoader.fileName
            guard FileManager.default.fileExists(atPath: manifest) else {
                throw CLIError("\(bundle): `\(buildCommand)` made no bundle with a plugin.yaml here")
            }
            let built: String, library: String?
            do {
                let loaded = try ManifestLoader().load(path: manifest).0
                (built, library) = (loaded.id, loaded.library)
            } catch { throw CLIError(error) }
            guard built == id else { throw CLIError(Self.renamed(manifest, to: built, from: id)) }
            let copied = try BundleCopy.update(from: bundle, to: installed)
            let before = try await host.plugin(id)
            let active = before?.status == .enabled && before?.enabled == true
            if copied.isEmpty && active && !outcome.unserved {
                tell("\(id): the build changed nothing in the bundle (build \(Self.ms(buildTime)) ms); still serving")
                return outcome
            }
            outcome.unserved = true
            // `refresh` when only the library or plugin.yaml changed: the server's folder watcher may have loaded this
            // copy already, and then nothing more is loaded. Any other file (assets/, config.schema.yaml) is read at
            // activation but not compared by `refresh`: `reload`.
            let onlyBuild = copied.allSatisfy { $0 == ManifestLoader.fileName || $0 == library }
            reloading = active
            let command: KernelCommand = active ? (onlyBuild ? .refresh(id: id) : .reload(id: id)) : .enable(id: id, tenant: nil)
            let result = try await execute(command)
            let after = try await host.plugin(id)
            let reloadTime = clock.now - reloadStart
            if let after, after.status != .enabled {
                tell("\(id) is \(after.status.rawValue): \(after.reason ?? "no reason given"); waiting for the next save")
                return outcome
            }
            outcome.unserved = false
            // A refresh with a note loaded nothing: the host serves this build already (a failed reload's build put back).
            if case .refresh = command, result.unchanged == true, let note = result.note {
                tell("\(id): \(note) (build \(Self.ms(buildTime)) ms); still serving")
                return outcome
            }
            tell("\(active ? "reloaded" : "enabled") \(id) \(after?.version ?? "") in \(Self.ms(clock.now - savedAt)) ms "
                + "(build \(Self.ms(buildTime)) ms, reload \(Self.ms(reloadTime)) ms)")
            // What its author should know of the activation (a registration refused, a route likely mistaken).
            if let note = result.note { tell("\(id): \(note)") }
        } catch let error as CLIError {
            tell("not reloaded: \(error.description); waiting for the next save")
        } catch {
            tell("\(reloading ? "reload failed" : "\(id) did not start"): \(ErrorText.describe(error)); \(await meanwhile()); "
                + "waiting for the next save")
        }
        return outcome
    }

    /// What the host serves of the plugin while a build or a reload did not go through: its last good build, or
    /// nothing yet (a first build that never loaded).
    func meanwhile() async -> String {
        if let info = try? await host.plugin(id), info.status == .enabled, info.enabled {
            return "the host keeps serving the last good build"
        }
        return "nothing of \(id) is served yet"
    }

    /// The line for a project whose plugin.yaml names another plugin than the one `keel dev` follows.
    static func renamed(_ file: String, to named: String, from id: String) -> String {
        "not reloaded: \(file) names the plugin \"\(named)\", not \"\(id)\", which keel dev follows (nothing was copied: "
            + "the host keeps serving \(id)'s last good build); put the id back, or stop keel dev and start it again for "
            + "\"\(named)\" (its build must then make bundle/\(named)/); waiting for the next save"
    }

    static func ms(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    static func describe(_ changed: [String]) -> String {
        changed.count <= 3 ? changed.joined(separator: ", ") : changed.prefix(3).joined(separator: ", ") + " and \(changed.count - 3) more"
    }
}

/// The saves not built yet, merged across bursts: the moment of the first one and the paths. Thread-safe.
final class PendingSaves: Sendable {
    private let saves = Mutex<(pending: (at: ContinuousClock.Instant, changed: [String])?, closed: Bool)>((nil, false))

    /// Notes a save; ignored once closed.
    func add(at: ContinuousClock.Instant, _ changed: [String]) {
        saves.withLock { s in
            guard !s.closed else { return }
            let known = s.pending?.changed ?? []
            s.pending = (s.pending?.at ?? at, known + changed.filter { !known.contains($0) })
        }
    }

    /// The pending saves, which are then no longer pending; nil when there are none, or once closed.
    func take() -> (at: ContinuousClock.Instant, changed: [String])? {
        saves.withLock { s in
            defer { s.pending = nil }
            return s.closed ? nil : s.pending
        }
    }

    /// Drops the saves not taken yet; no save is taken after this (keel dev is stopping).
    func close() {
        saves.withLock { $0 = (nil, true) }
    }

    var isClosed: Bool { saves.withLock { $0.closed } }
}

/// The project's build command, run through `/bin/sh -c` in the project folder, with standard output and error
/// in one stream (the compiler's messages in the order it wrote them). The build runs in a process group of its own,
/// with every signal unblocked and at its default action (this process ignores SIGINT and blocks others on its
/// threads, which a child would otherwise inherit), so `stop()` ends it and everything it started.
enum BuildProcess {
    private static let running = Atomic<Int32>(0) // the build's process group, 0 when none runs
    /// Set by `stop()`: a build spawned after it (or whose group was not stored yet when it ran) is ended at once.
    private static let stopping = Atomic<Bool>(false)

    /// Runs `command` in `folder`; with `rebuildAll`, every make it runs rebuilds every target (`-B` added to
    /// MAKEFLAGS), whatever the files' times say.
    static func run(_ command: String, in folder: String, rebuildAll: Bool = false) async -> (status: Int32, output: String) {
        let environment: [String]? = rebuildAll ? {
            var variables = ProcessInfo.processInfo.environment
            variables["MAKEFLAGS"] = BuildProcess.rebuildingAll(variables["MAKEFLAGS"])
            return variables.map { "\($0.key)=\($0.value)" }
        }() : nil
        return await withCheckedContinuation { (done: CheckedContinuation<(status: Int32, output: String), Never>) in
            // Its own thread: reading the pipe to its end and waiting for the exit both block.
            Thread.detachNewThread { done.resume(returning: spawn(command, in: folder, environment: environment)) }
        }
    }

    /// `makeflags` with `-B` among its options: before ` -- `, after which make reads variable definitions only
    /// (`make dev CONFIG=debug` running `keel dev` passes `-- CONFIG=debug`).
    static func rebuildingAll(_ makeflags: String?) -> String {
        guard let makeflags, !makeflags.isEmpty else { return "-B" }
        if makeflags.hasPrefix("-- ") { return "-B " + makeflags }
        guard let variables = makeflags.range(of: " -- ") else { return makeflags + " -B" }
        return makeflags[..<variables.lowerBound] + " -B" + makeflags[variables.lowerBound...]
    }

    /// True once `stop()` was called: `keel dev` is stopping, and a build it ends says nothing of itself.
    static var isStopping: Bool { stopping.load(ordering: .sequentiallyConsistent) }

    /// Sends SIGTERM to the running build's process group (make and its compilers), if one runs.
    static func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        let group = running.load(ordering: .sequentiallyConsistent)
        if group > 0 { killpg(group, SIGTERM) }
    }

    private static func spawn(_ command: String, in folder: String, environment: [String]?) -> (status: Int32, output: String) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return (127, "cannot run the build: \(ErrorText.plain(errno: errno))") }
        // Not inherited by other children of this process (a probe started meanwhile would hold the pipe open).
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        // In the project folder: the shell changes there, then runs the command as `sh -c` would.
        let words = ["/bin/sh", "-c", "cd -- \"$1\" && eval \"$2\"", "keel-dev-build", folder, command]
        let pid: pid_t
        do {
            pid = try ChildProcess.spawn("/bin/sh", arguments: words, environment: environment,
                                         standard: [.null, .descriptor(fds[1]), .descriptor(fds[1])], ownGroup: true)
        } catch {
            close(fds[0])
            close(fds[1])
            return (127, "cannot run /bin/sh -c \(command) in \(folder): \(ErrorText.plain(errno: error.code))")
        }
        close(fds[1])
        running.store(pid, ordering: .sequentiallyConsistent)
        // A stop between the spawn and the line above found no group to end: this build is ended here instead (the
        // build's own processes, started meanwhile, outlived `keel dev` on a loaded machine).
        if stopping.load(ordering: .sequentiallyConsistent) { killpg(pid, SIGTERM) }
        var output = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n > 0 { output += buffer[0..<n] } else if n < 0 && errno == EINTR { continue } else { break }
        }
        close(fds[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        running.store(0, ordering: .releasing)
        // Exited: the code; ended by a signal: 128 + the signal, as a shell reports it.
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, String(decoding: output, as: UTF8.self))
    }
}

/// Copies a built bundle into the plugin folder so that the host never sees half a file: each file that differs
/// is written under a hidden temporary name beside its target and renamed over it (a library the host has mapped
/// is replaced, never truncated).
enum BundleCopy {
    /// Copies the files of `source` that differ from `target`'s; returns their paths relative to the bundle.
    /// - Throws: `CLIError` naming the file and the reason.
    static func update(from source: String, to target: String) throws -> [String] {
        try makeFolder(target)
        var copied: [String] = []
        let files = (FileManager.default.enumerator(atPath: source)?.allObjects as? [String] ?? []).sorted()
        for relative in files {
            let from = source + "/" + relative, to = target + "/" + relative
            guard let type = fileType(from) else { continue }
            if type == S_IFDIR { try makeFolder(to); continue }
            guard type == S_IFREG else { continue }
            let data = try readFile(from)
            if FileManager.default.contents(atPath: to) == data { continue }
            let url = URL(fileURLWithPath: to)
            let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).dev-\(getpid())").path
            do { try data.write(to: URL(fileURLWithPath: temporary)) } catch { throw CLIError("\(temporary): \(ErrorText.describe(error))") }
            var info = stat()
            if stat(from, &info) == 0 { chmod(temporary, info.st_mode & 0o777) }
            guard rename(temporary, to) == 0 else {
                let reason = ErrorText.plain(errno: errno)
                unlink(temporary)
                throw CLIError("\(to): \(reason)")
            }
            copied.append(relative)
        }
        return copied
    }
}
