// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Hummingbird
import Keel
import Logging

/// Where and how the HTTP server listens.
public struct ServerConfiguration: Sendable {
    /// The documented default port.
    public static let defaultPort = 8470
    public var host: String
    /// 0 picks a free port; `KeelServer.run` reports the one it got.
    public var port: Int
    /// Largest request body a plugin route accepts (bytes); larger gets 413.
    public var maxBodySize: Int

    public init(host: String = "127.0.0.1", port: Int = ServerConfiguration.defaultPort, maxBodySize: Int = 1 << 20) {
        self.host = host
        self.port = port
        self.maxBodySize = maxBodySize
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

    /// Serves until SIGINT or SIGTERM (graceful: requests in flight finish) or until the task is cancelled.
    /// Also runs `RemoteControl` so the CLI can enable and disable plugins while it runs.
    /// - Parameter onRunning: called once with the bound port.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let log = kernel.configuration.log
        let gatekeeper = Gatekeeper(kernel: kernel, token: token, log: log)
        let router = Router(context: KeelRequestContext.self)
        AdminAPI(kernel: kernel, gatekeeper: gatekeeper).register(on: router)
        Console.register(on: router)
        builtinRoutes(router)
        let responder = KeelResponder(router: router.buildResponder(),
                                      plugins: PluginDispatcher(gatekeeper: gatekeeper, maxBodySize: configuration.maxBodySize))
        var logger = Logger(label: "keel.http")
        logger.logLevel = .warning
        let app = Application(
            responder: responder,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "keel"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        let kernel = self.kernel, token = self.token
        let remote = Task { await RemoteControl.serve(kernel, token: token) }
        defer { remote.cancel() }
        try await app.runService()
    }
}
