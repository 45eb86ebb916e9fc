// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The proxy section: wrk against a fast upstream directly and through Keel's proxy (`/ext/app/app/...`, a
// manifest-only bundle), in one run, in alternating pairs, as a ratio.
//
// The upstream is this binary in a child process (`keel-bench --upstream`): a SwiftNIO HTTP/1.1 server on one event
// loop that answers every request with a fixed 6-byte body and keeps connections alive, with no routing or logging,
// so that per request it costs less than the proxy in front of it and its own speed does not set both numbers.
// Cores are split so that the numbers mean something: Keel's threads on core 0, the upstream and wrk on cores of
// their own where there are enough. With 2 cores the upstream must share one: it is measured both ways, sharing
// Keel's core (the proxy's whole CPU cost is paid out of the upstream's core: the harder case) and sharing wrk's.

import Foundation
import Keel
import KeelHTTP
import NIOCore
import NIOHTTP1
import NIOPosix

/// `keel-bench --upstream PORTFILE`: serves until killed; writes its port to PORTFILE once listening.
func runUpstream(portFile: String) throws -> Never {
    final class Answer: ChannelInboundHandler, @unchecked Sendable {
        // @unchecked: one instance per channel, used on that channel's event loop only.
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        var keepAlive = true

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case let .head(head): keepAlive = head.isKeepAlive
            case .body: break
            case .end:
                var headers = HTTPHeaders([("Content-Length", "6"), ("Content-Type", "text/plain")])
                if !keepAlive { headers.add(name: "Connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "hello\n")))), promise: nil)
                let keep = keepAlive
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in
                    if !keep { channel.close(promise: nil) }
                }
            }
        }
    }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel = try ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 1024)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                try channel.pipeline.syncOperations.addHandler(Answer())
            }
        }
        .bind(host: "127.0.0.1", port: 0).wait()
    try "\(channel.localAddress?.port ?? 0)".write(toFile: portFile, atomically: true, encoding: .utf8)
    try channel.closeFuture.wait()
    exit(0)
}

@MainActor
func proxyBenchmarks() async throws {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    guard let executable = Bundle.main.executablePath ?? CommandLine.arguments.first else { fatalError("no executable path") }
    /// (label, upstream core, wrk cores)
    let layouts: [(String, String, [String])] = cores >= 3
        ? [("upstream and wrk on cores of their own", "1", ["/usr/bin/taskset", "-c", "2-\(cores - 1)"])]
        : cores == 2
        ? [("upstream shares Keel's core", "0", ["/usr/bin/taskset", "-c", "1"]),
           ("upstream shares wrk's core", "1", ["/usr/bin/taskset", "-c", "1"])]
        : [("one core for all", "0", [])]

    let plugins = options.work + "/proxy", state = options.work + "/proxy.db"
    for (label, upstreamCore, wrkCores) in layouts {
        let portFile = options.work + "/upstream.port"
        try? FileManager.default.removeItem(atPath: portFile)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
        child.arguments = ["-c", upstreamCore, executable, "--upstream", portFile]
        try child.run()
        defer {
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
        }
        var upstreamPort = 0
        for _ in 0..<200 where upstreamPort == 0 {
            upstreamPort = Int((try? String(contentsOfFile: portFile, encoding: .utf8)) ?? "") ?? 0
            if upstreamPort == 0 { try await Task.sleep(for: .milliseconds(20)) }
        }
        guard upstreamPort > 0 else { fatalError("the upstream did not start") }

        try? FileManager.default.removeItem(atPath: plugins)
        try? FileManager.default.removeItem(atPath: state)
        try FileManager.default.createDirectory(atPath: plugins + "/app", withIntermediateDirectories: true)
        try """
            id: app
            name: Proxied app
            version: 1.0.0
            abi: "1.0"
            proxy:
              - {prefix: /app, upstream: "http://127.0.0.1:\(upstreamPort)"}

            """.write(toFile: plugins + "/app/plugin.yaml", atomically: true, encoding: .utf8)
        let k = try kernel(plugins, state)
        await k.start()
        try await k.enable("app")
        let server = try await BenchServer.start(k)
        let direct = "http://127.0.0.1:\(upstreamPort)/ping", proxied = server.base + "/ext/app/app/ping"
        let seconds = options.quick ? 2 : 5
        func run(_ url: String, _ s: Int) -> WRK { wrk(url, seconds: s, cores: wrkCores) }
        _ = run(direct, 1)
        _ = run(proxied, 1)
        var pairs: [(direct: WRK, proxied: WRK)] = []
        for round in 0..<(options.quick ? 2 : 4) {
            if round % 2 == 0 {
                let d = run(direct, seconds)
                pairs.append((d, run(proxied, seconds)))
            } else {
                let p = run(proxied, seconds)
                pairs.append((run(direct, seconds), p))
            }
        }
        if pairs.contains(where: { $0.direct.failed > 0 || $0.proxied.failed > 0 }) { fatalError("proxied requests failed") }
        func median(_ xs: [Double]) -> Double {
            let s = xs.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        let ratios = pairs.map { $0.proxied.rps / $0.direct.rps }
        let ratio = median(ratios)
        rows.append(Row(name: "proxy throughput vs direct (\(label))", measured: String(format: "%.0f req/s", median(pairs.map(\.proxied.rps))),
                        baseline: String(format: "%.0f req/s (%.2f–%.2f)", median(pairs.map(\.direct.rps)), ratios.min() ?? 0, ratios.max() ?? 0),
                        ratio: ratio, target: "≥ 0.8", met: ratio >= 0.8))
        rows.append(Row(name: "proxy p99 latency vs direct (\(label))", measured: String(format: "%.2f ms", median(pairs.map(\.proxied.p99ms))),
                        baseline: String(format: "%.2f ms", median(pairs.map(\.direct.p99ms))),
                        ratio: median(pairs.map { $0.proxied.p99ms / $0.direct.p99ms }), target: "report", met: nil))
        await server.stop()
        await k.shutdown()
    }
}
