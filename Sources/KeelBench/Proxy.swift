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
//
// Where nginx is installed (`/usr/sbin/nginx`), the same comparison runs through it too, on Keel's core with one
// worker and kept-alive upstream connections, in the same rounds: a mature proxy's ratio on this machine, as a
// reference for what the layout allows.

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
        let nginx = try startNginx(upstreamPort: upstreamPort, core: "0")
        defer {
            if let nginx {
                kill(nginx.process.processIdentifier, SIGKILL)
                nginx.process.waitUntilExit()
            }
        }
        let direct = "http://127.0.0.1:\(upstreamPort)/ping", proxied = server.base + "/ext/app/app/ping"
        let viaNginx = nginx.map { "http://127.0.0.1:\($0.port)/ping" }
        let seconds = options.quick ? 2 : 5
        // CPU time per request of Keel (this process), the upstream and nginx during each run: what each costs,
        // whatever share of a core the machine's other load leaves it.
        var cpu: [String: (keel: Double, upstream: Double, nginx: Double, requests: Double)] = [:]
        func run(_ url: String, _ s: Int) -> WRK {
            let before = (cpuSeconds(getpid()), cpuSeconds(child.processIdentifier), nginx.map { cpuSeconds($0.process.processIdentifier) } ?? 0)
            let result = wrk(url, seconds: s, cores: wrkCores)
            let after = (cpuSeconds(getpid()), cpuSeconds(child.processIdentifier), nginx.map { cpuSeconds($0.process.processIdentifier) } ?? 0)
            var sum = cpu[url, default: (0, 0, 0, 0)]
            sum.keel += after.0 - before.0
            sum.upstream += after.1 - before.1
            sum.nginx += after.2 - before.2
            sum.requests += result.rps * Double(s)
            cpu[url] = sum
            return result
        }
        _ = run(direct, 1)
        _ = run(proxied, 1)
        if let viaNginx { _ = run(viaNginx, 1) }
        // Each round: direct, Keel, nginx; every other round in the reverse order.
        var pairs: [(direct: WRK, proxied: WRK, nginx: WRK?)] = []
        for round in 0..<(options.quick ? 2 : 4) {
            if round % 2 == 0 {
                let d = run(direct, seconds), p = run(proxied, seconds)
                pairs.append((d, p, viaNginx.map { run($0, seconds) }))
            } else {
                let n = viaNginx.map { run($0, seconds) }, p = run(proxied, seconds)
                pairs.append((run(direct, seconds), p, n))
            }
        }
        if pairs.contains(where: { $0.direct.failed > 0 || $0.proxied.failed > 0 || ($0.nginx?.failed ?? 0) > 0 }) {
            fatalError("proxied requests failed")
        }
        let ratios = pairs.map { $0.proxied.rps / $0.direct.rps }
        let ratio = median(ratios)
        rows.append(Row(name: "proxy throughput vs direct (\(label))", measured: String(format: "%.0f req/s", median(pairs.map(\.proxied.rps))),
                        baseline: String(format: "%.0f req/s (%.2f–%.2f)", median(pairs.map(\.direct.rps)), ratios.min() ?? 0, ratios.max() ?? 0),
                        ratio: ratio, target: "≥ 0.8", met: ratio >= 0.8))
        rows.append(Row(name: "proxy p99 latency vs direct (\(label))", measured: String(format: "%.2f ms", median(pairs.map(\.proxied.p99ms))),
                        baseline: String(format: "%.2f ms", median(pairs.map(\.direct.p99ms))),
                        ratio: median(pairs.map { $0.proxied.p99ms / $0.direct.p99ms }), target: "report", met: nil))
        if let p = cpu[proxied], let d = cpu[direct], p.requests > 0, d.requests > 0 {
            let keel = p.keel / p.requests * 1e6, upstream = d.upstream / d.requests * 1e6
            rows.append(Row(name: "proxy CPU per request: Keel vs the upstream (\(label))", measured: String(format: "%.1f µs", keel),
                            baseline: String(format: "%.1f µs", upstream), ratio: keel / upstream, target: "report", met: nil))
            if let viaNginx, let n = cpu[viaNginx], n.requests > 0 {
                let proxy = n.nginx / n.requests * 1e6
                rows.append(Row(name: "reference: nginx CPU per request vs the upstream (\(label))", measured: String(format: "%.1f µs", proxy),
                                baseline: String(format: "%.1f µs", upstream), ratio: proxy / upstream, target: "report", met: nil))
            }
        }
        let viaNginxRuns = pairs.compactMap { pair in pair.nginx.map { (direct: pair.direct, nginx: $0) } }
        if !viaNginxRuns.isEmpty {
            let nginxRatios = viaNginxRuns.map { $0.nginx.rps / $0.direct.rps }
            rows.append(Row(name: "reference: nginx proxy throughput vs direct (\(label))",
                            measured: String(format: "%.0f req/s", median(viaNginxRuns.map(\.nginx.rps))),
                            baseline: String(format: "%.0f req/s (%.2f–%.2f)", median(viaNginxRuns.map(\.direct.rps)),
                                             nginxRatios.min() ?? 0, nginxRatios.max() ?? 0),
                            ratio: median(nginxRatios), target: "report", met: nil))
        }
        await server.stop()
        await k.shutdown()
    }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// nginx as a reverse proxy to the upstream, one worker on `core`, 64 kept-alive upstream connections, no access
/// log; nil when nginx is not installed.
func startNginx(upstreamPort: Int, core: String) throws -> (process: Process, port: Int)? {
    let binary = "/usr/sbin/nginx"
    guard FileManager.default.isExecutableFile(atPath: binary) else {
        print("proxy: the nginx reference rows skipped (no \(binary); apt-get install nginx)")
        return nil
    }
    let prefix = options.work + "/nginx"
    try? FileManager.default.removeItem(atPath: prefix)
    try FileManager.default.createDirectory(atPath: prefix + "/logs", withIntermediateDirectories: true)
    let port = try freePort()
    try """
        daemon off;
        master_process off;
        worker_processes 1;
        pid \(prefix)/nginx.pid;
        error_log \(prefix)/logs/error.log error;
        events { worker_connections 1024; }
        http {
            access_log off;
            client_body_temp_path \(prefix)/body;
            proxy_temp_path \(prefix)/proxy;
            fastcgi_temp_path \(prefix)/fastcgi;
            uwsgi_temp_path \(prefix)/uwsgi;
            scgi_temp_path \(prefix)/scgi;
            upstream app { server 127.0.0.1:\(upstreamPort); keepalive 64; }
            server {
                listen 127.0.0.1:\(port);
                location / {
                    proxy_pass http://app;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                }
            }
        }

        """.write(toFile: prefix + "/nginx.conf", atomically: true, encoding: .utf8)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
    process.arguments = ["-c", core, binary, "-p", prefix, "-c", prefix + "/nginx.conf"]
    process.standardError = FileHandle.nullDevice
    try process.run()
    // Listening once a connection is accepted.
    for _ in 0..<200 {
        if canConnect(port: port) { return (process, port) }
        usleep(20_000)
    }
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    return nil
}

/// A TCP port of 127.0.0.1 free just now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw CocoaError(.fileWriteUnknown) }
    return Int(UInt16(bigEndian: address.sin_port))
}

func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// User and system CPU time of process `pid` so far, in seconds (0 when it cannot be read).
func cpuSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let end = stat.lastIndex(of: ")") else { return 0 }
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
