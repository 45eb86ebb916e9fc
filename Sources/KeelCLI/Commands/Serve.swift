// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Dispatch
import Foundation
import Keel
import KeelSystem
import KeelHTTP
import KeelStatePostgres
import Synchronization
import NIOCore

extension KeelCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve plugin routes, the admin API and the console over HTTP until SIGINT or SIGTERM.",
            discussion: """
                Plugin routes are under /ext/<plugin-id>/, the admin API under /api/v1/ (admin token required), the \
                console at /. On first start an admin token is made and printed once; `keel token reset` makes a new \
                one, and $KEEL_ADMIN_TOKEN supplies one instead. SIGINT/SIGTERM stop accepting, finish requests in \
                flight, deactivate plugins in reverse order and close the database; a second signal exits at once.
                """)

        @OptionGroup var options: GlobalOptions
        @Option(help: "Address to listen on.") var host = "127.0.0.1"
        @Option(help: "Port to listen on; 0 picks a free one (printed).") var port = ServerConfiguration.defaultPort
        @Option(name: .customLong("max-body"), help: "Largest request body for plugin routes, in bytes (413 above).")
        var maxBody = 1 << 20
        @Option(name: .customLong("max-routes"), help: "Routes one plugin may register.") var maxRoutes = RegistrationLimits.default.routes
        @Option(name: .customLong("max-menus"), help: "Menu entries one plugin may register.") var maxMenus = RegistrationLimits.default.menus
        @Option(name: .customLong("max-hooks"), help: "Auth hooks one plugin may register.") var maxHooks = RegistrationLimits.default.hooks
        @Option(name: .customLong("hook-budget-ms"), help: "Milliseconds an auth hook may take before it counts as deny.")
        var hookBudget = Int(CallBudgets.default.hook * 1000)
        @Option(name: .customLong("handler-budget-ms"), help: "Milliseconds a route handler may take before it is logged and counted as a budget overrun.")
        var handlerBudget = Int(CallBudgets.default.handler * 1000)
        @Option(name: .customLong("idle-timeout"), help: "Seconds a connection may stay idle, or take to send its request headers, before it is closed.")
        var idleTimeout = 30.0
        @Option(name: .customLong("body-timeout"), help: "Seconds a request body may take to arrive (408 and the connection closed after).")
        var bodyTimeout = 30.0
        @Option(name: .customLong("max-connections"), help: "Open connections at most; over it the longest-idle one is closed to make room (default 1024, or a third of the descriptor limit less 64 when that is less).")
        var maxConnections: Int?
        @Option(name: .customLong("allowed-host"), help: "A name clients reach this server by, besides localhost and the loopback addresses (repeat it for several). Listening on a loopback address, other names in Host are refused (421 host-not-allowed: DNS rebinding); listening elsewhere, names are checked once one is given.")
        var allowedHosts: [String] = []
        @Option(name: .customLong("plugin-threads"), help: "Threads that run plugin code (hooks and handlers).")
        var pluginThreads = 32
        @Option(name: .customLong("threads-per-plugin"), help: "Of those, how many one plugin may occupy at once.")
        var threadsPerPlugin = 8
        @Option(name: .customLong("plugin-queue"), help: "Calls to one plugin that may wait for a thread; more get 503 (busy).")
        var pluginQueue = 1024
        @Option(name: .customLong("lazy-idle-timeout"), help: "Seconds a lazy plugin may go unused before it is unloaded, for every lazy plugin whose library is unload-safe or reactivatable (in place of its idle-timeout:); 0 keeps them loaded once used.")
        var lazyIdleTimeout: Double?
        @Option(name: .customLong("max-stale-copies"), help: "Copies of stopped plugins' libraries that may stay mapped (a library that is not unload-safe is never unmapped, and each enable or reload of one maps a new copy); past it such a plugin is refused another copy until the host restarts.")
        var maxStaleCopies = StaleCopyLimits.default.copies
        @Option(name: .customLong("max-stale-copy-mib"), help: "The same limit on those copies' sizes, in MiB (1024, or an eighth of the machine's memory when that is less: the default shown is this machine's).")
        var maxStaleCopyMiB = StaleCopyLimits.default.bytes >> 20
        @Option(name: .customLong("worker-call-timeout"), help: "Seconds a call into a plugin in a worker process may take; past it the worker is killed (504).")
        var workerCallTimeout = IsolationPolicy.default.callTimeout
        @Option(name: .customLong("worker-crash-limit"), help: "Crashes of a plugin's worker within the crash window, or in a row each within the window of the worker's start with no call answered, after which the plugin is disabled as failed (one with auth hooks stays, denying: fail closed).")
        var workerCrashLimit = IsolationPolicy.default.crashLimit
        @Option(name: .customLong("worker-crash-window"), help: "Seconds within which --worker-crash-limit crashes give a plugin's worker up.")
        var workerCrashWindow = IsolationPolicy.default.crashWindow
        @Option(name: .customLong("worker-memory-mb"), help: "Address-space limit of each worker process in MiB (RLIMIT_AS); 0 for none.")
        var workerMemoryMB = 0
        @Option(name: .customLong("worker-cpu-seconds"), help: "CPU time limit of each worker process in seconds (RLIMIT_CPU); 0 for none.")
        var workerCPUSeconds = 0
        @Option(name: .customLong("worker-threads"), help: "Threads a worker process may have at once (each takes one of the machine's process ids), with the processes it starts and their threads where the host can give each worker a pids cgroup (the kernel then refuses the rest); a worker over it is killed, as a crash. 256 by default (8 per core above 32 cores); 0 for none, else at least 96 (a worker's runtime alone has about 22 idle, 70 busy).")
        var workerThreads = IsolationPolicy.default.threadLimit
        @Option(name: .customLong("stall-limit"), help: "Seconds plugin code on the kernel's lifecycle thread (a library's load, activate, deactivate, a service listener, get_extension) may run before the host counts as stalled: /healthz and the admin API answer 503 lifecycle-stalled, and a stop records it so that the next start quarantines the plugin.")
        var stallLimit = 30.0
        @Flag(name: .customLong("exit-on-stall"), help: "End the host (exit status 70) once it is stalled, recording the stall, so that a supervisor restarts it with the plugin quarantined.")
        var exitOnStall = false
        @Flag(name: .customLong("safe-mode"), help: "Start with no plugin active (to recover from a plugin that breaks the host).")
        var safeMode = false
        @Flag(inversion: .prefixedNo, help: "Watch the plugin folder and load, reload and retire bundles as they change.")
        var watch = true

        @Flag(inversion: .prefixedNo, help: "Measure requests and serve GET /metrics (admin token or $KEEL_METRICS_TOKEN).")
        var metrics = true
        @Option(name: .customLong("health-interval"), help: "Seconds between runs of the plugins' own health checks (keel.health/1); 0 runs none.")
        var healthInterval = 30.0
        @Option(name: .customLong("health-budget-ms"), help: "Milliseconds a health check may take before it counts as unhealthy (an overrun).")
        var healthBudget = 1000
        @Option(name: .customLong("log-format"), help: "How the log on stderr is written: text, or json (one object per line, with plugin, generation and request_id).")
        var logFormat = LogFormat.text

        /// The server's settings from the options; the metrics token from $KEEL_METRICS_TOKEN.
        var serverConfiguration: ServerConfiguration {
            var c = ServerConfiguration(host: host, port: port, maxBodySize: maxBody,
                                        idleTimeout: .milliseconds(Int64(idleTimeout * 1000)),
                                        bodyTimeout: .milliseconds(Int64(bodyTimeout * 1000)),
                                        maxConnections: maxConnections ?? ServerConfiguration.defaultMaxConnections, pluginThreads: pluginThreads,
                                        threadsPerPlugin: threadsPerPlugin, pluginQueueLimit: pluginQueue)
            c.metrics = metrics
            c.allowedHosts = allowedHosts
            c.exitsOnStall = exitOnStall
            c.healthInterval = healthInterval > 0 ? .milliseconds(Int64(healthInterval * 1000)) : nil
            c.healthBudget = .milliseconds(healthBudget)
            c.metricsToken = HeldSecrets.environment["KEEL_METRICS_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return c
        }

        func validate() throws {
            guard (0...65535).contains(port) else {
                throw ValidationError("--port \(port) is not a port: use 0...65535 (0 picks a free one)")
            }
            guard idleTimeout > 0, bodyTimeout > 0, idleTimeout < 86_400, bodyTimeout < 86_400 else {
                throw ValidationError("--idle-timeout and --body-timeout take seconds between 0 and 86400")
            }
            if let t = lazyIdleTimeout, !(0...604_800).contains(t) {
                throw ValidationError("--lazy-idle-timeout takes seconds between 0 and 604800 (7 days)")
            }
            guard (1...86_400_000).contains(hookBudget), (1...86_400_000).contains(handlerBudget) else {
                throw ValidationError("--hook-budget-ms and --handler-budget-ms take 1 to 86400000 (a day)")
            }
            guard (0...86_400).contains(healthInterval), (1...600_000).contains(healthBudget) else {
                throw ValidationError("--health-interval takes seconds between 0 and 86400, --health-budget-ms 1 to 600000")
            }
            guard workerCallTimeout > 0, workerCallTimeout <= 3600, workerMemoryMB >= 0, workerCPUSeconds >= 0, workerThreads == 0 || workerThreads >= IsolationPolicy.minimumThreadLimit, workerCrashLimit >= 1,
                  workerCrashWindow > 0, workerCrashWindow <= 86_400 else {
                throw ValidationError("--worker-call-timeout takes seconds between 0 and 3600; --worker-memory-mb and --worker-cpu-seconds at least 0; --worker-threads 0 (none) or at least \(IsolationPolicy.minimumThreadLimit); --worker-crash-limit at least 1; --worker-crash-window seconds between 0 and 86400")
            }
            guard stallLimit >= 1, stallLimit <= 86_400 else {
                throw ValidationError("--stall-limit takes seconds between 1 and 86400")
            }
            guard (maxConnections ?? 1) > 0 else { throw ValidationError("--max-connections must be at least 1") }
            guard maxStaleCopies >= 0, (0...(1 << 40)).contains(maxStaleCopyMiB) else {
                throw ValidationError("--max-stale-copies and --max-stale-copy-mib take 0 or more (0: a plugin is never loaded a second time in one run)")
            }
            guard pluginThreads > 0, threadsPerPlugin > 0, pluginQueue >= 0 else {
                throw ValidationError("--plugin-threads and --threads-per-plugin must be at least 1, --plugin-queue at least 0")
            }
        }

        /// `make()`, removing the lock file the server made when the state cannot be opened after all (another
        /// program's database, not a state): nothing is left beside a file Keel refused.
        static func abandoning<T>(_ lock: ServerLock, _ make: () throws -> T) throws -> T {
            do { return try make() } catch {
                lock.abandon()
                throw error
            }
        }

        func run() async throws {
            try await reporting {
                // A reader of its output that went away (`keel serve | head -1`) must not end the server: writes then
                // fail with EPIPE, which `SystemFile.say` ignores (NIO ignores SIGPIPE too, but only once it made a socket).
                signal(SIGPIPE, SIG_IGN)
                // Before anything opens a descriptor, and before the default connection limit is read from it.
                SystemFile.raiseDescriptorLimit()
                SystemFile.returnLargeBlocks()
                let sharedURL = PostgresURL.isPostgres(options.stateFile)
                // A shared state that cannot be reached (a wrong URL, no such database) is said before this host's
                // folder is made for its lock: a failed start leaves nothing behind.
                if sharedURL { _ = try options.openState() }
                // On a shared state the lock names this host's id, for the CLI's queued commands (`queueTarget`).
                let lock: ServerLock
                do {
                    lock = try ServerLock(stateFile: options.localStateFile, info: "starting",
                                          host: sharedURL ? SharedStateLoop.hostID(pid: getpid()) : nil,
                                          pluginsFolder: options.absolutePluginsDirectory)
                } catch let error as KernelError where sharedURL {
                    // The lock's file is named after a file in --host-dir that the operator never named: the folder is.
                    throw CLIError(error.reason.replacingOccurrences(of: options.localStateFile + ":", with: "--host-dir \(options.hostDirectory):"))
                }
                try Self.abandoning(lock) { try Self.requirePortFree(host: self.host, port: self.port) }
                let signals = SecondSignalExit()
                // Process 1 of its pid namespace (a container without an init): every process orphaned there becomes the
                // host's child, and the host reaps only those it started, so a worker's leftovers would stay zombies.
                if getpid() == 1 {
                    SystemFile.say("keel: warning: keel serve runs as process 1 of its pid namespace: processes orphaned "
                        + "there (what a plugin's worker started) become its children and are never reaped; run it under an init "
                        + "(docker run --init, tini)\n", to: 2)
                }
                if logFormat == .json { StructuredLog.bootstrap(.json) }
                // A state file named that is not there is made; said in the log (a typo starts a host with nothing).
                let newState = !PostgresURL.isPostgres(options.stateFile) && options.stateFile != ".keel/state.db"
                    && options.stateFile != StateStore.inMemory && !FileManager.default.fileExists(atPath: options.stateFile)
                let kernel = try Self.abandoning(lock) { try options.makeKernel(logAlways: true, logFormat: logFormat) { configuration in
                    configuration.limits = RegistrationLimits(routes: maxRoutes, menus: maxMenus, hooks: maxHooks)
                    configuration.budgets.hook = Double(hookBudget) / 1000
                    configuration.budgets.handler = Double(handlerBudget) / 1000
                    configuration.recordsCrashes = true
                    configuration.stallLimit = stallLimit
                    configuration.lazyIdleTimeout = lazyIdleTimeout
                    configuration.staleCopies = StaleCopyLimits(copies: maxStaleCopies, bytes: maxStaleCopyMiB << 20)
                    configuration.isolation.callTimeout = workerCallTimeout
                    configuration.isolation.crashLimit = workerCrashLimit
                    configuration.isolation.crashWindow = workerCrashWindow
                    configuration.isolation.memoryLimitBytes = workerMemoryMB << 20
                    configuration.isolation.cpuSeconds = workerCPUSeconds
                    configuration.isolation.threadLimit = workerThreads
                } }
                // (Not on a shared state: a new host's folder is filled from the repositories, see SharedStateLoop.)
                if !kernel.state.isShared {
                    try Self.requirePluginFolder(options.pluginsDirectory, state: kernel.state, stateFile: options.shownStateFile)
                }
                // Several hosts on one PostgreSQL state: this one records its own status of each plugin from the start.
                let shared = kernel.state.isShared ? SharedStateLoop(kernel: kernel) : nil
                // Plugin code that hangs while the enabled plugins load is watched as it is later (the server's own
                // watch starts with it): logged, and with --exit-on-stall or a stop asked for, recorded and ended.
                let startWatch = Task {
                    await StallWatch(kernel: kernel, exits: exitOnStall, log: kernel.logSink, stopping: { signals.first != nil }).run()
                }
                await withProgress("starting: loading the enabled plugins (new builds are probed first)") {
                    await kernel.start(safeMode: safeMode)
                }
                startWatch.cancel()
                if watch && !safeMode { try await kernel.watch() }
                // Apply what the other hosts change, report in the hosts table.
                try shared?.start()
                // Once it started (a start that fails stays one line).
                if newState {
                    kernel.logSink(LogRecord(level: .warn, pluginID: nil, message: "\(options.stateFile) did not exist: a new state was made "
                                             + "there (check --state or $KEEL_STATE if you meant another)"))
                }
                let token = AdminToken(state: kernel.state)
                let fresh = try token.ensure()
                if let fresh { say("admin token (shown once; `keel token reset` makes a new one): \(fresh)") }
                let server = KeelServer(kernel: kernel, token: token,
                                        configuration: serverConfiguration)
                let active = kernel.activePlugins
                let host = self.host
                let login = fresh != nil ? "log in with the admin token above"
                    : HeldSecrets.environment["KEEL_ADMIN_TOKEN"].map { _ in "log in with $KEEL_ADMIN_TOKEN" }
                    ?? (PostgresURL.isPostgres(options.stateFile)
                        ? "log in with the admin token printed by the first host that started on this state (`keel token reset` prints a new one)"
                        : "log in with the admin token printed at the first start (`keel token reset` prints a new one)")
                do {
                    try await server.run { port in
                        let url = Self.url(host: host, port: port)
                        lock.update(url)
                        shared?.listening(at: url)
                        say("keel \(Kernel.version) listening on \(url) with \(active.count) plugin(s) active [\(active.joined(separator: ", "))]")
                        say("console: \(url)/ (\(login))")
                        say("press Ctrl-C to stop")
                    }
                } catch {
                    await kernel.shutdown()
                    // The token printed above was stored: it is the one to use, and no other is shown at the next start.
                    let kept = fresh == nil ? "" : " (the admin token printed above is kept: log in with it once the server runs)"
                    if let error = error as? IOError, error.errnoCode == EADDRINUSE {
                        throw CLIError(Self.portInUse(host: host, port: port).description + kept)
                    }
                    throw CLIError("cannot serve on \(host):\(port): \(ErrorText.describe(error))" + kept)
                }
                // The server and `signals` both hear a signal, on different threads: the server may stop before
                // `signals` has noted which one it was (waited for up to 0.1 s, so the line names it).
                var received = signals.first
                for _ in 0..<50 where received == nil {
                    try? await Task.sleep(for: .milliseconds(2))
                    received = signals.first
                }
                say("keel: received \(received ?? "a stop request"), shutting down")
                shared?.stop()
                // Shutting down would wait for a stalled call for ever: record it for the next start and exit instead,
                // whether it stalls now or while the plugins are deactivated.
                StallWatch.exitIfStalled(kernel, say: say)
                let watching = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(500))
                        StallWatch.exitIfStalled(kernel, say: say)
                    }
                }
                await kernel.shutdown()
                watching.cancel()
                _ = lock
            }
        }
    }
}

extension LogFormat: ExpressibleByArgument {}

extension KeelCommand.Serve {
    /// The server's address as a URL: an IPv6 address in brackets (`http://[::1]:8470`).
    static func url(host: String, port: Int) -> String {
        "http://" + (host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host) + ":\(port)"
    }

    static func portInUse(host: String, port: Int) -> CLIError {
        CLIError("port \(port) on \(host) is in use; pass --port N (or --port 0 for a free one)")
    }

    /// Refuses a plugin folder that does not exist when the state wants plugins enabled: most likely a typo in
    /// `--plugins` (or `$KEEL_PLUGINS_DIR`), which would otherwise start a server with none of them, make the misspelt
    /// folder, and record every enabled plugin `missing`. A new state, or one with nothing enabled, starts as before
    /// (the folder is made). - Throws: `CLIError` naming the folder, the plugins and where they were found.
    static func requirePluginFolder(_ folder: String, state: StateStore, stateFile: String) throws {
        guard !FileManager.default.fileExists(atPath: folder) else { return }
        guard let wanted = try? state.plugins().filter(\.enabled), let first = wanted.first else { return }
        let names = wanted.prefix(5).map(\.id).joined(separator: ", ") + (wanted.count > 5 ? ", ..." : "")
        let from = (first.bundlePath as NSString).deletingLastPathComponent
        throw CLIError("\(folder): no such plugin folder, but the state \(stateFile) has \(wanted.count) plugin(s) enabled (\(names))"
                       + (from.isEmpty || from == folder ? "" : ", last found in \(from)")
                       + "; pass --plugins with their folder, or make this one (mkdir) to serve without them")
    }

    /// Fails before any plugin loads or a token is made when the server could not listen on `host:port`: a name
    /// that does not resolve, an address not of this machine, a port in use or below 1024 without the right to it.
    /// `host` is resolved as the server (SwiftNIO) resolves it (getaddrinfo without hints, its first answer) and a
    /// stream socket bound there and closed; it sets SO_REUSEADDR as the server does, so a port in TIME_WAIT counts
    /// as free. Port 0 checks the address alone. - Throws: `CLIError` naming the address and the reason.
    static func requirePortFree(host: String, port: Int) throws {
        switch ListenCheck.problem(host: host, port: port) {
        case nil: return
        case let .unresolved(reason):
            throw CLIError("cannot serve on \(host):\(port): --host \(host) is not an address or a name this machine resolves (\(reason))")
        case .inUse: throw portInUse(host: host, port: port)
        case .notLocal: throw CLIError("cannot serve on \(host):\(port): \(host) is not an address of this machine (pass --host with one of its addresses, e.g. 127.0.0.1 or 0.0.0.0)")
        case .privileged: throw CLIError("cannot serve on \(host):\(port): a port below 1024 needs root or CAP_NET_BIND_SERVICE; pass --port 1024 or above")
        case let .other(reason): throw CLIError("cannot serve on \(host):\(port): \(reason)")
        }
    }
}

/// Writes a line to stdout at once (no buffering: a supervisor reading a pipe sees it immediately).
func say(_ line: String) {
    SystemFile.say(line + "\n")
}

/// Notes the first SIGINT/SIGTERM (the server's own handler stops gracefully) and exits at once on a second one.
/// `@unchecked Sendable` only for `sources`, which `init` fills and nothing changes afterwards (they are kept to keep
/// the signal sources alive); the signal received is behind a `Mutex`.
final class SecondSignalExit: @unchecked Sendable {
    private let received = Mutex<String?>(nil)
    private var sources: [DispatchSourceSignal] = []

    init() {
        for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.note(name) }
            source.resume()
            sources.append(source)
        }
    }

    var first: String? { received.withLock { $0 } }

    private func note(_ name: String) {
        received.withLock { received in
            if received != nil {
                SystemFile.say("keel: second \(name), exiting now\n", to: 2)
                exit(130)
            }
            received = name
        }
    }
}
