// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The services section: a call through a service lease against the same call through a plain function pointer, what
// acquiring a lease per call adds, and switching the provider under HTTP load.

import Foundation
import Hummingbird
import Keel
import KeelHTTP

@MainActor
func servicesBenchmarks() async throws {
    let plugins = options.work + "/services", state = options.work + "/services.db"
    let provides = "provides: [{interface: bench.add/1}]\n"
    try bundle(plugins, id: "prova", library: options.providerA, capabilities: "[routes]", extra: provides)
    try bundle(plugins, id: "provb", library: options.providerB, capabilities: "[routes]", extra: provides)
    try bundle(plugins, id: "user", library: options.consumer, capabilities: "[routes]", extra: "consumes: [{interface: bench.add/1}]\n")
    let k = try kernel(plugins, state)
    await k.start()
    for id in ["prova", "provb", "user"] { try await k.enable(id) }

    // 1. Calls, measured inside the consumer (C), in one run: through the lease's table vs a plain pointer.
    guard let loop = k.registry.snapshot.route(method: "GET", path: "/ext/user/loop") else { fatalError("no /loop") }
    let n = options.quick ? 2_000_000 : 20_000_000
    var lease: [Double] = [], plain: [Double] = [], acquire: [Double] = []
    for _ in 0..<(options.quick ? 3 : 7) {
        let request = PluginRequest(method: "GET", path: "/ext/user/loop", routePath: "/loop", query: "\(n)")
        guard case let .success(r) = loop.route.handler.handle(request) else { fatalError("loop failed") }
        var values: [String: Double] = [:]
        for part in r.bodyText.split(separator: " ") {
            let kv = part.split(separator: "=")
            if kv.count == 2 { values[String(kv[0])] = Double(kv[1]) }
        }
        lease.append(values["lease"] ?? .nan)
        plain.append(values["plain"] ?? .nan)
        acquire.append(values["acquire"] ?? .nan)
    }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    let (l, p, a) = (median(lease), median(plain), median(acquire))
    rows.append(Row(name: "service call through a lease vs plain function pointer", measured: String(format: "%.2f ns", l),
                    baseline: String(format: "%.2f ns", p), ratio: l / p, target: "≤ 1.2", met: l / p <= 1.2))
    rows.append(Row(name: "service acquire + call + release vs plain call", measured: String(format: "%.0f ns", a),
                    baseline: String(format: "%.2f ns", p), ratio: a / p, target: "report", met: nil))

    // 1b. The same calls when the provider runs in a worker process (`isolation: process`, its table declared under
    // `functions:`): each call through the lease is a round trip to the worker.
    do {
        guard let executable = Bundle.main.executablePath else { fatalError("no executable path") }
        let remotePlugins = options.work + "/services-worker"
        try bundle(remotePlugins, id: "prova", library: options.providerA, capabilities: "[routes]",
                   extra: "provides: [{interface: bench.add/1, functions: [{name: add, signature: \"(i32, i32) -> i32\"}]}]\nisolation: process\n")
        try bundle(remotePlugins, id: "user", library: options.consumer, capabilities: "[routes]", extra: "consumes: [{interface: bench.add/1}]\n")
        var c = KernelConfiguration(pluginsDirectory: remotePlugins, stateFile: remotePlugins + ".db", log: KernelConfiguration.silentLog)
        c.workerExecutable = executable
        let remote = try Kernel(configuration: c)
        await remote.start()
        for id in ["prova", "user"] { try await remote.enable(id) }
        guard let remoteLoop = remote.registry.snapshot.route(method: "GET", path: "/ext/user/loop") else { fatalError("no /loop") }
        let calls = options.quick ? 2_000 : 20_000
        var perCall: [Double] = []
        for _ in 0..<3 {
            let request = PluginRequest(method: "GET", path: "/ext/user/loop", routePath: "/loop", query: "\(calls)")
            guard case let .success(r) = remoteLoop.route.handler.handle(request) else { fatalError("loop failed") }
            let lease = r.bodyText.split(separator: " ").first { $0.hasPrefix("lease=") }.flatMap { Double($0.dropFirst(6)) }
            perCall.append(lease ?? .nan)
        }
        let w = median(perCall)
        rows.append(Row(name: "service call into a provider in a worker vs in-process (through a lease)",
                        measured: String(format: "%.1f µs", w / 1000), baseline: String(format: "%.2f ns", l), ratio: w / l,
                        target: "report", met: nil))
        await remote.shutdown()
    }

    // 2. Switching the provider while wrk calls the consumer (acquire, call, release per request).
    let server = try await BenchServer.start(k)
    let url = server.base + "/ext/user/call"
    _ = wrk(url, seconds: 1)
    func switches(_ count: Int) async throws -> [Double] {
        var times: [Double] = []
        for i in 0..<count {
            let t = now()
            try await k.execute(.useProvider(interface: "bench.add/1", plugin: i % 2 == 0 ? "provb" : "prova", tenant: nil))
            times.append((now() - t) * 1000)
            try await Task.sleep(for: .milliseconds(20))
        }
        return times.sorted()
    }
    let count = options.quick ? 20 : 100
    let idle = try await switches(count)
    let load = Task.detached { wrk(url, seconds: options.quick ? 3 : 8) }
    try await Task.sleep(for: .milliseconds(300))
    let busy = try await switches(count)
    let traffic = await load.value
    let (i50, b50, b99) = (idle[idle.count / 2], busy[busy.count / 2], busy[min(busy.count - 1, Int(Double(busy.count) * 0.99))])
    rows.append(Row(name: "provider switch latency under load (p50 / p99)", measured: String(format: "%.2f / %.2f ms", b50, b99),
                    baseline: String(format: "%.2f ms idle p50", i50), ratio: b50 / i50, target: "report", met: nil))
    rows.append(Row(name: "failed requests during provider switches", measured: "\(traffic.failed)",
                    baseline: String(format: "%.0f req/s served", traffic.rps), ratio: nil, target: "0", met: traffic.failed == 0))
    await server.stop()
    await k.shutdown()
}
