// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Hummingbird
import HummingbirdCore
import NIOCore
import Keel
import Logging
import ServiceLifecycle

/// Where and how the HTTP server listens, and how long and how many clients it waits for.
public struct ServerConfiguration: Sendable {
    /// The documented default port.
    public static let defaultPort = 8470
    public var host: String
    /// 0 picks a free port; `KeelServer.run` reports the one it got.
    public var port: Int
    /// Largest request body a plugin route accepts (bytes); larger gets 413.
    public var maxBodySize: Int
    /// A connection with no request in progress (including one still sending its request headers) is closed after
    /// this long.
    public var idleTimeout: Duration
    /// A request body must arrive whole within this long; a slower one gets 408 and its connection is closed.
    public var bodyTimeout: Duration
    /// Open connections at most. Over it, the longest-idle connection is closed to make room, or the new one when
    /// none is idle. The default stays below the process's descriptor limit.
    public var maxConnections: Int
    /// Names a request's `Host` may give besides the loopback ones (`HostCheck`): a server listening on a loopback
    /// address refuses any other (DNS rebinding); one listening elsewhere checks only once some are given.
    public var allowedHosts: [String] = []
    /// Threads that run plugin code (hooks and handlers); never Swift's cooperative pool.
    public var pluginThreads: Int
    /// Of those, how many one plugin may occupy at once; its further calls wait without holding a thread.
    public var threadsPerPlugin: Int
    /// Calls to one plugin that may wait for a thread; beyond them the host answers 503 (`busy`) and counts it.
    public var pluginQueueLimit: Int
    /// A plugin call (hook or handler) that takes longer than this sends its plugin's later calls to the plugin
    /// threads for a while instead of running them inline (`PluginLanes`).
    public var slowPluginCall: Duration = .milliseconds(5)
    /// Whether `GET /metrics` is served and requests are measured (ServerMetrics.swift).
    public var metrics = true
    /// Besides the admin token, the token that may read `GET /metrics` (`KEEL_METRICS_TOKEN`); nil: admin only.
    public var metricsToken: String?
    /// How often plugins' health checks ("keel.health/1") run; nil: never.
    public var healthInterval: Duration? = .seconds(30)
    /// How long one health check may take before it is reported unhealthy and counted as an overrun.
    public var healthBudget: Duration = .seconds(1)
    /// Whether a stalled lifecycle (`Kernel.lifecycleStall`) ends the process (status 70) after writing the stall
    /// record that makes the next start quarantine the plugin (`StallWatch`); otherwise it is logged, `/healthz` and
    /// the admin API answer 503 while it lasts, and stopping the server records it. Default: false.
    public var exitsOnStall = false
    /// Whether SIGINT and SIGTERM stop the server gracefully (`keel serve`). An embedder that owns the process's
    /// signals sets it false and stops the server by cancelling the task that runs it.
    public var stopsOnSignals = true
    /// Whether the HTTP server's own log lines (Hummingbird's: why a connection ended, a parse error) go to the
    /// kernel's log sink as records, not to the process's swift-log backend: for an embedder whose log is a callback.
    public var logsThroughKernel = false
    /// Whether the server takes the commands the `keel` CLI queues in the state (`RemoteControl.serve`) while it runs.
    /// An embedder that takes them for the kernel's whole life (the C API, from `keel_open`) sets it false.
    public var servesCommandQueue = true

    public init(host: String = "127.0.0.1", port: Int = ServerConfiguration.defaultPort, maxBodySize: Int = 1 << 20,
                idleTimeout: Duration = .seconds(30), bodyTimeout: Duration = .seconds(30),
                maxConnections: Int = ServerConfiguration.defaultMaxConnections, pluginThreads: Int = 32,
                threadsPerPlugin: Int = 8, pluginQueueLimit: Int = 1024) {
        self.pluginThreads = pluginThreads
        self.threadsPerPlugin = threadsPerPlugin
        self.pluginQueueLimit = pluginQueueLimit
        self.host = host
        self.port = port
        self.maxBodySize = maxBodySize
        self.idleTimeout = idleTimeout
        self.bodyTimeout = bodyTimeout
        self.maxConnections = maxConnections
    }

    /// 1,024, or less where the descriptor limit is low: a third of the limit less 64 (for the state file, plugin
    /// libraries and the listening socket), since a proxied request or WebSocket also holds a descriptor to its
    /// upstream, and the upstream pool keeps up to 256 idle ones; at least 16. (`keel serve` raises the soft limit to
    /// the hard one first, `SystemFile.raiseDescriptorLimit`.)
    public static var defaultMaxConnections: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < rlim_t(Int32.max) else { return 1024 }
        return max(16, min(1024, (Int(limit.rlim_cur) - 64) / 3))
    }
}

/// Keel's HTTP server: plugin routes under `/ext/`, the admin API under `/api/v1/`, `/healthz`, and the web console
/// at `/`. Built on Hummingbird 2.
///
/// ```swift
/// let server = KeelServer(kernel: kernel, token: AdminToken(state: kernel.state), configuration: .init(port: 0))
/// try await server.run { port in print("listening on \(port)") }   // until SIGINT/SIGTERM or task cancellation
/// ```
/// `run` finishes requests in flight before it returns; the caller then shuts the kernel down.
public struct KeelServer: Sendable {
    /// How long a stopping server waits for its connections (requests in flight, proxied WebSockets) before it cuts them.
    static let shutdownGrace: Duration = .seconds(10)

    public let kernel: Kernel
    public let token: AdminToken
    public let configuration: ServerConfiguration
    /// Adds the embedder's own built-in routes (outside `/ext/` and `/api/`) before the router is frozen.
    public let builtinRoutes: @Sendable (Router<KeelRequestContext>) -> Void

    public init(kernel: Kernel, token: AdminToken, configuration: ServerConfiguration = ServerConfiguration(),
                builtinRoutes: @escaping @Sendable (Router<KeelRequestContext>) -> Void = { _ in }) {
        self.kernel = kernel
        self.token = token
        self.configuration = configuration
        self.builtinRoutes = builtinRoutes
    }

    /// Serves until SIGINT or SIGTERM or until the task is cancelled (each graceful: requests in flight finish; what
    /// is still open 10 s later is cut).
    /// Also runs `RemoteControl` so the CLI can enable and disable plugins while it runs.
    /// - Parameter onRunning: called once with the bound port.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let log = kernel.logSink
        let lanes = PluginLanes(threads: configuration.pluginThreads, perLane: configuration.threadsPerPlugin,
                                queueLimit: configuration.pluginQueueLimit, slowCall: configuration.slowPluginCall)
        let metrics = configuration.metrics ? ServerMetrics(handlerBudget: kernel.configuration.budgets.handler, limits: kernel.configuration.limits) : nil
        if let metrics {
            kernel.metrics.attach { metrics.record($0) }
            kernel.state.observeCommits { metrics.stateCommitted($0) }
        }
        defer {
            if metrics != nil {
                kernel.metrics.attach(nil)
                kernel.state.observeCommits(nil)
            }
        }
        let health = configuration.healthInterval.map {
            HealthMonitor(interval: $0, budget: configuration.healthBudget, metrics: metrics, log: log)
        }
        let gatekeeper = Gatekeeper(kernel: kernel, token: token, pages: PageSessions(), lanes: lanes, log: log,
                                    metrics: metrics, health: health)
        let router = Router(context: KeelRequestContext.self)
        // Middleware applies to the routes added after it (and to "not found", where plugin paths land): plugin
        // dispatch goes first.
        let proxy = PluginProxy(gatekeeper: gatekeeper, maxBodySize: configuration.maxBodySize, bodyTimeout: configuration.bodyTimeout)
        let hosts = HostCheck(listenHost: configuration.host, allowedHosts: configuration.allowedHosts)
        let webSockets = WebSocketProxy(proxy: proxy, idleTimeout: configuration.idleTimeout, hosts: hosts)
        let methods = MethodTable()
        router.add(middleware: PluginRoutesMiddleware(plugins: PluginDispatcher(
            gatekeeper: gatekeeper, maxBodySize: configuration.maxBodySize, bodyTimeout: configuration.bodyTimeout, proxy: proxy),
            methods: methods))
        AdminAPI(kernel: kernel, gatekeeper: gatekeeper, bodies: RequestBodyReader(timeout: configuration.bodyTimeout)).register(on: router)
        // A client that reads none of its answers for as long is closed (`ConnectionLimiter.stallTimeout`).
        let limiter = ConnectionLimiter(limit: configuration.maxConnections, stallTimeout: TimeAmount(configuration.idleTimeout),
                                        bodyTimeout: TimeAmount(configuration.bodyTimeout), maxBody: configuration.maxBodySize)
        ServerMetrics.register(on: router, metrics: metrics, gatekeeper: gatekeeper, metricsToken: configuration.metricsToken,
                               connections: { limiter.count })
        Console.register(on: router)
        PageBridge.register(on: router)
        builtinRoutes(router)
        methods.fill(from: router)
        let responder = KeelResponder(router: router.buildResponder(),
                                      plugins: router.middlewares.constructResponder(finalResponder: UnroutedResponder()), hosts: hosts,
                                      methods: methods)
        let sink = kernel.logSink
        var logger = configuration.logsThroughKernel
            ? Logger(label: "keel.http") { label in StructuredLog.handler(label: label, sink: sink) }
            : Logger(label: "keel.http")
        // KEEL_HTTP_LOG=debug|trace: why connections end (a debugging aid; the default logs warnings only).
        logger.logLevel = ProcessInfo.processInfo.environment["KEEL_HTTP_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        // An answer sent before its request's body arrived whole closes the connection once what the client still sends
        // is read (for at most --body-timeout): `LingeringClose`.
        let bodyTimeout = TimeAmount(configuration.bodyTimeout)
        let http1 = HTTP1Channel.Configuration(additionalChannelHandlers: [limiter.handler(lingerTime: bodyTimeout)],
                                               idleTimeout: TimeAmount(configuration.idleTimeout))
        let app = Application(
            responder: responder,
            server: HTTPServerBuilder { responder in
                KeelHTTPChannel(responder: responder, http1: http1, limiter: limiter, webSockets: webSockets)
            },
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "keel"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        let kernel = self.kernel, token = self.token
        let remote = configuration.servesCommandQueue ? Task { await RemoteControl.serve(kernel, token: token) } : nil
        defer { remote?.cancel() }
        let checking = health.map { monitor in Task { await monitor.run(kernel) } }
        defer { checking?.cancel() }
        let stalls = StallWatch(kernel: kernel, exits: configuration.exitsOnStall, log: log)
        let watchingStalls = Task { await stalls.run() }
        defer { watchingStalls.cancel() }
        // Cancelling the task that runs this is a graceful stop, as a signal is: requests in flight finish, and the
        // server ends without the error lines a cancelled listener logs.
        // A connection that outlives 10 s of the stop (a proxied WebSocket) is then cut.
        //
        // The group ends once its connections have. A request whose plugin call never returns where it runs inline
        // (on one of Swift's own threads, which no cancellation interrupts) never ends: 5 s after the group gave up
        // waiting for its connections, the server stops waiting for it.
        let ended = FirstOf<Result<Void, any Error>?>()
        let watch = ServiceGroupConfiguration.ServiceConfiguration(service: ShutdownWatch {
            Task {
                try? await Task.sleep(for: KeelServer.shutdownGrace + .seconds(5))
                ended.resume(nil)
            }
        }, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore)
        var lifecycle = ServiceGroupConfiguration(
            services: [.init(service: app), watch], gracefulShutdownSignals: configuration.stopsOnSignals ? [.sigterm, .sigint] : [],
            logger: logger)
        lifecycle.maximumGracefulShutdownDuration = KeelServer.shutdownGrace
        let group = ServiceGroup(configuration: lifecycle)
        // The group runs in a task of its own, which the caller's cancellation does not reach: that cancellation
        // triggers the group's graceful shutdown instead.
        Task {
            do { try await group.run(); ended.resume(.success(())) } catch { ended.resume(.failure(error)) }
        }
        let outcome = await withTaskCancellationHandler {
            await withCheckedContinuation { ended.set($0) }
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
        if outcome == nil {
            log(LogRecord(level: .warn, pluginID: nil,
                          message: "requests still waiting for plugin code that does not return; the server stops without them"))
        }
        await stop()
        if case let .failure(error)? = outcome { throw error }

        func stop() async {
            checking?.cancel()
            health?.stop()
            // The command queue's installs, upgrades and uninstalls write their outcome before the caller shuts the
            // kernel down (`RemoteControl.serve` waits for them; a download is bounded by its repository's time-outs).
            remote?.cancel()
            if let remote {
                // Not a command stuck in plugin code that stalls the lifecycle (a reload whose `activate` never
                // returns): the caller then records the stall and exits (`StallWatch.exitIfStalled`), as a stop of a
                // host stalled through the admin API does; waiting here would hold the stop for ever.
                let first = FirstOf<Void>()
                Task { await remote.value; first.resume(()) }
                let stalled = Task {
                    while !Task.isCancelled && !first.isFinished {
                        if kernel.lifecycleStall != nil { first.resume(()); return }
                        try? await Task.sleep(for: .milliseconds(200))
                    }
                }
                await withCheckedContinuation { first.set($0) }
                stalled.cancel()
            }
            await proxy.shutdown()
            // Past the grace period, with requests stuck in plugin code, the threads are not waited for at all.
            if await !lanes.shutdown(within: outcome == nil ? .milliseconds(100) : .seconds(5)) {
                log(LogRecord(level: .warn, pluginID: nil, message: "plugin calls still running as the server stops; shutting down without them"))
            }
        }
    }
}

/// A service of the server's group that only tells when the group's graceful shutdown begins (a signal, or the
/// caller's cancellation), then ends.
private struct ShutdownWatch: Service {
    let onShutdown: @Sendable () -> Void
    func run() async throws {
        try? await gracefulShutdown()
        onShutdown()
    }
}
