// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Dispatch
import Foundation
import Keel
import KeelHTTP
import KeelManifest
import KeelStatePostgres
import KeelSystem
import NIOCore
import Synchronization

extension KeelCommand {
    /// `keel dev [DIR]`: the plugin author's loop. Watches the project's sources, rebuilds on each save, copies the
    /// bundle into the host's plugin folder and reloads it, and prints the time from the save to serving.
    struct Dev: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rebuild and hot-reload a plugin project on every save (the author's edit-build-reload loop).",
            discussion: """
                DIR is a plugin project (`keel new`: a Makefile and plugin.yaml). On each save under DIR (build \
                outputs and hidden folders aside) it runs the build command, copies bundle/ID/ into the plugin folder \
                (--plugins) and reloads it in the host: a running `keel serve` on the same state file (--state), \
                through its command queue, or with --serve a server of this process. Each cycle prints the time from \
                the save to serving; a failed build prints the compiler's output and the host keeps serving the last \
                good build. The plugin's log lines are shown: with --serve from this process, from a running server with \
                the admin token ($KEEL_ADMIN_TOKEN or --token). Ctrl-C stops.
                """)

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin project folder (default: the current folder).", completion: .directory) var dir = "."
        @Option(help: "The build command, run with /bin/sh -c in DIR; it must produce bundle/ID/.") var build = "make"
        @Flag(help: "When no server runs on the state file, serve in this process (on --host and --port).") var serve = false
        @Option(help: "With --serve: the address to listen on.") var host = "127.0.0.1"
        @Option(help: "With --serve: the port; 0 picks a free one (printed).") var port = ServerConfiguration.defaultPort
        @Option(help: "With a running server: the admin token, to show the plugin's log lines here (default $KEEL_ADMIN_TOKEN).") var token: String?

        func validate() throws {
            guard (0...65535).contains(port) else { throw ValidationError("--port \(port) is not a port: use 0...65535 (0 picks a free one)") }
        }

        func run() async throws {
            try await reporting {
                let project = URL(fileURLWithPath: absolute(dir)).standardizedFileURL.path
                try requireFolder(project, hint: "pass the folder of a plugin project, e.g. one `keel new` made")
                let manifestPath = project + "/" + ManifestLoader.fileName
                guard FileManager.default.fileExists(atPath: manifestPath) else {
                    throw CLIError("\(project): no plugin.yaml; `keel dev` runs in a plugin project (`keel new ID --lang c` makes one)")
                }
                if build == "make" && !["Makefile", "makefile", "GNUmakefile"].contains(where: { FileManager.default.fileExists(atPath: project + "/" + $0) }) {
                    throw CLIError("\(project): no Makefile; pass --build with the command that builds bundle/ID/")
                }
                let id: String
                do { id = try ManifestLoader().load(path: manifestPath).0.id } catch { throw CLIError(error) }
                let plugins = URL(fileURLWithPath: absolute(options.pluginsDirectory)).standardizedFileURL.path
                // This host's own file: the SQLite state, or with a postgres:// --state the one in --host-dir.
                let stateFile = URL(fileURLWithPath: absolute(options.localStateFile)).standardizedFileURL.path
                if let server = try options.throughServer() {
                    let loop = DevLoop(project: project, id: id, buildCommand: build, pluginsDirectory: plugins,
                                       stateFile: stateFile, host: RunningServerHost(state: try options.openState(), stateFile: options.localStateFile))
                    say("keel dev: \(id) in \(project) → \(plugins)/\(id); every save rebuilds it and the running server (\(server)) reloads it"
                        + (serve ? "; --serve is not needed" : ""))
                    let signals = StopSignal()
                    let logs = Self.followLogs(id: id, server: server, stateFile: options.localStateFile,
                                               token: token ?? HeldSecrets.environment[AdminToken.environmentVariable],
                                               verbose: options.verbose)
                    try await Self.watchUntilStopped(loop, followers: logs.map { [$0] } ?? []) { await signals.stopped() }
                } else if serve {
                    try await serveAndWatch(id: id, project: project, plugins: plugins, stateFile: stateFile)
                } else {
                    throw CLIError("no keel server runs on \(options.shownStateFile): start `keel serve` with the same --plugins and --state, or pass --serve to serve in this process")
                }
            }
        }

        /// Prints plugin `id`'s log lines as the running server keeps them (`GET /api/v1/plugins/ID/logs?after=`, polled
        /// every 500 ms like `keel logs -f`), from a second before now on. Needs the admin token; without one it says
        /// where the lines are and returns nil. A failed poll (the plugin not known yet, the server restarting) is
        /// retried quietly; a server started again on the state file (`stateFile`'s lock names it, on the same port
        /// or another) is followed from its first line, since its line numbers start again; a refused token is said
        /// once and ends the following. Runs until the task is cancelled.
        /// Debug lines only with `verbose` (-v).
        static func followLogs(id: String, server: String, stateFile: String, token: String?, verbose: Bool = false) -> Task<Void, Never>? {
            func address(_ line: String) -> String? {
                line.split(separator: " ").last.map(String.init).flatMap { $0.hasPrefix("http://") ? $0 : nil }
            }
            guard var base = address(server) else { return nil }
            guard let token, !token.isEmpty else {
                say("\(id)'s log lines: pass --token or set KEEL_ADMIN_TOKEN to see them here (the server prints the warnings and errors among them; `keel serve -v` all)")
                return nil
            }
            var from = StateStore.auditTime("1s") ?? ""
            return Task {
                var after: Int64 = 0, running = server
                while !Task.isCancelled {
                    // Another server process (its lock line names its pid and address): its lines, from its start.
                    if let now = ServerLock.running(stateFile: stateFile), now != running, let next = address(now) {
                        (running, base, after, from) = (now, next, 0, "")
                    }
                    do {
                        let lines = try await Logs.fetch(base: base, id: id, after: after, token: token)
                        for l in lines where l.at >= from && (verbose || l.level != "debug") { say("\(id): \(l.level)  \(l.message)") }
                        after = lines.last?.seq ?? after
                    } catch let error as CLIError where error.refusedToken {
                        // The same token will not be taken later: say so once, instead of showing nothing.
                        say("\(id)'s log lines: \(error.description); pass the right one with --token or KEEL_ADMIN_TOKEN")
                        return
                    } catch {}
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }

        /// Builds once, then rebuilds on each burst of saves until `stopped` returns (Ctrl-C); a build running then is
        /// ended. Watching starts before the first build, so a save during it is not lost. "keel dev: stopped" is the last
        /// line: the cycle under way says how it ended first (up to 5 s; a reload the host is executing finishes there
        /// anyway), and `followers` (the log lines' poll) are cancelled and waited for (up to 2 s) before it.
        static func watchUntilStopped(_ loop: DevLoop, followers: [Task<Void, Never>] = [], until stopped: () async -> Void) async throws {
            let (bursts, feed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
            let pending = PendingSaves()
            let watcher = try SourceWatcher(root: loop.project, excluding: loop.hostFiles) { at, changed in
                pending.add(at: at, changed)
                feed.yield()
            }
            let work = Task {
                var last = await loop.cycle(savedAt: ContinuousClock.now, changed: [])
                say("watching \(loop.project) (Ctrl-C to stop)")
                for await _ in bursts {
                    // Stopping: a burst taken just before the stop is not built either.
                    guard let burst = pending.take(), !pending.isClosed else { continue }
                    last = await loop.cycle(savedAt: burst.at, changed: burst.changed, after: last)
                }
            }
            await stopped()
            watcher.stop()
            pending.close() // saves not built yet are dropped: the cycle under way is the last
            feed.finish()
            BuildProcess.stop()
            await Self.wait(for: work, atMost: .seconds(5))
            work.cancel()
            for follower in followers { follower.cancel() }
            for follower in followers { await Self.wait(for: follower, atMost: .seconds(2)) }
            say("keel dev: stopped")
        }

        /// Returns when `task` has ended or `limit` has passed, whichever is first; `task` is not cancelled.
        static func wait(for task: Task<Void, Never>, atMost limit: Duration) async {
            let (ended, end) = AsyncStream.makeStream(of: Never.self)
            let waiter = Task { await task.value; end.finish() }
            let timer = Task { try? await Task.sleep(for: limit); end.finish() }
            for await _ in ended {}
            waiter.cancel()
            timer.cancel()
        }

        /// `--serve`: a kernel and an HTTP server of this process (as `keel serve` makes them, without the plugin
        /// folder watcher: this loop reloads), serving until SIGINT or SIGTERM; the dev loop reloads into it.
        private func serveAndWatch(id: String, project: String, plugins: String, stateFile: String) async throws {
            // Signals are taken first: a Ctrl-C before the server listens must not end the process half-way.
            let signals = StopSignal()
            let lock = try ServerLock(stateFile: options.localStateFile, info: "starting (keel dev --serve)", pluginsFolder: plugins)
            try KeelCommand.Serve.abandoning(lock) { try KeelCommand.Serve.requirePortFree(host: self.host, port: self.port) }
            let onlyID = id, verbose = options.verbose, installedCopy = plugins + "/" + id, projectFolder = project
            // The plugin's own log lines always; the kernel's and other plugins' warnings and errors; all with -v.
            let kernel = try KeelCommand.Serve.abandoning(lock) { try options.makeKernel { configuration in
                // As `keel serve`: a plugin that crashes the process is named in one line and recorded (quarantined at
                // the next start, let out by its next build), not a Swift backtrace of every thread.
                configuration.recordsCrashes = true
                configuration.log = { record in
                    // (Its debug lines, the kernel's notes for itself, only with -v, as a running server's.) The line
                    // the kernel logs for each of the loop's own commands (`dev: reload ID: ...`) is said by the loop's
                    // outcome line already: only with -v.
                    if !verbose, record.message.hasPrefix("dev: "),
                       ["enable", "reload", "refresh"].contains(where: { record.message.hasPrefix("dev: \($0) \(onlyID): ") }) { return }
                    guard verbose || (record.pluginID == onlyID && record.level >= .info) || record.level >= .warn else { return }
                    // A warning about the plugin folder's copy of plugin.yaml names the project's file, which the author edits.
                    var shown = record
                    shown.message = DevLoop.projectPaths(record.message, installed: installedCopy, project: projectFolder)
                    KernelConfiguration.standardErrorLog(shown)
                }
            } }
            await kernel.start()
            let token = AdminToken(state: kernel.state)
            if let fresh = try token.ensure() { say("admin token (shown once; `keel token reset` makes a new one): \(fresh)") }
            let server = KeelServer(kernel: kernel, token: token, configuration: ServerConfiguration(host: host, port: port))
            let loop = DevLoop(project: project, id: id, buildCommand: build, pluginsDirectory: plugins, stateFile: stateFile,
                               host: InProcessHost(kernel: kernel))
            let host = self.host
            let served = Task {
                defer { signals.stop() } // a server that ends by itself (its port taken) ends the loop too
                do {
                    try await server.run { port in
                        lock.update(KeelCommand.Serve.url(host: host, port: port))
                        say("keel dev: serving on \(KeelCommand.Serve.url(host: host, port: port)) (in this process; state \(kernel.state.path))")
                    }
                    return nil as String?
                } catch let error as IOError where error.errnoCode == EADDRINUSE {
                    return KeelCommand.Serve.portInUse(host: host, port: port).description
                } catch {
                    return "cannot serve on \(host):\(port): \(ErrorText.describe(error))"
                }
            }
            try await Self.watchUntilStopped(loop) { await signals.stopped() }
            // The server stops gracefully on SIGINT/SIGTERM by itself, and on cancellation when the signal came
            // before it listened.
            served.cancel()
            _ = await served.value
            // As `keel serve`: shutting down would wait for a stalled call for ever (a reload queued from another
            // terminal whose activate never returns): the stall is recorded and the process exits instead.
            StallWatch.exitIfStalled(kernel, say: say)
            await kernel.shutdown()
            _ = lock
            if let message = await served.value { throw CLIError(message) }
        }
    }
}

/// SIGINT and SIGTERM, noted instead of ending the process, for `keel dev` to stop cleanly; `stopped()` returns once
/// one arrived (or `stop()` was called). `@unchecked Sendable` only for `sources`, which `init` fills and nothing changes afterwards (kept to
/// keep the signal sources alive); the waiters are behind a `Mutex`.
final class StopSignal: @unchecked Sendable {
    private let state = Mutex<(signalled: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    private var sources: [DispatchSourceSignal] = []

    init() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.stop() }
            source.resume()
            sources.append(source)
        }
    }

    /// Ends the wait as a signal would.
    func stop() {
        let waiters = state.withLock { s in
            s.signalled = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// Returns when SIGINT or SIGTERM has arrived.
    func stopped() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s in
                if !s.signalled { s.waiters.append(c) }
                return s.signalled
            }
            if now { c.resume() }
        }
    }
}
