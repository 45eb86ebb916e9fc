// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The scaling section: how start-up time and memory grow with the number of installed plugins (10, 100, 1,000, 5,000),
// and whether HTTP throughput changes with 1, 10 and 100 plugins of 50 routes each. Every plugin is the scaling
// plugin (`--routes-template`: 50 routes, empty id, so one file serves every bundle; each load still gets a private
// copy). The instruction-count gate (Scripts/icount.sh) checks the route lookup's part of this deterministically.

import Foundation
import Hummingbird
import Keel
import KeelHTTP

@MainActor
func scalingBenchmarks() async throws {
    guard !options.routesTemplate.isEmpty else {
        print("scaling: skipped, no --routes-template (run it through Scripts/bench.sh)")
        return
    }
    /// `n` bundles of the scaling plugin in a fresh folder, recorded as enabled in a fresh state file.
    func installed(_ n: Int, _ name: String) async throws -> (plugins: String, state: String) {
        let plugins = options.work + "/scaling-\(name)", state = options.work + "/scaling-\(name).db"
        for i in 0..<n { try bundle(plugins, id: String(format: "s%05d", i), library: options.routesTemplate, capabilities: "[routes]") }
        let k = try kernel(plugins, state)
        await k.start()
        for i in 0..<n { try k.state.setEnabled(String(format: "s%05d", i), true, status: .installed) }
        await k.shutdown()
        return (plugins, state)
    }

    // 1. Start-up time and memory per plugin. Libraries stay mapped after a shutdown (never dlclosed), so each size
    //    is measured as what its own start added to the process.
    var previousPerPlugin: Double?
    var startPoints: [(x: Double, y: Double)] = [], memoryPoints: [(x: Double, y: Double)] = [], httpPoints: [(x: Double, y: Double)] = []
    for n in options.quick ? [10, 100] : [10, 100, 1_000, 5_000] {
        let (plugins, state) = try await installed(n, "load\(n)")
        let before = rss()
        let k = try kernel(plugins, state)
        let t = now()
        await k.start()
        let seconds = now() - t
        let after = rss()
        guard k.activePlugins.count == n else { fatalError("scaling: only \(k.activePlugins.count) of \(n) plugins active") }
        let perPlugin = seconds / Double(n)
        // Linear growth: the time per plugin at this size against the one before (≤ 1.5 allows for noise).
        let growth = previousPerPlugin.map { perPlugin / $0 }
        rows.append(Row(name: "scaling: start with \(n) plugins of 50 routes (per plugin)",
                        measured: String(format: "%.0f ms (%.0f µs)", seconds * 1000, perPlugin * 1e6),
                        baseline: String(format: "RSS +%.1f MiB (%.0f KiB each)", Double(after - before) / 1024, Double(after - before) / Double(n)),
                        ratio: growth, target: growth == nil ? "report" : "≤ 1.5", met: growth.map { $0 <= 1.5 }))
        previousPerPlugin = perPlugin
        startPoints.append((Double(n), perPlugin * 1e6))
        memoryPoints.append((Double(n), Double(after - before) / Double(n)))
        await k.shutdown()
    }

    // 2. HTTP throughput against the last route of the last plugin, with 10 and 100 plugins installed and active,
    // against 1. One 5-second run per size, one size after the other, moved by ±0.1 from run to run (0.88 for 10
    // plugins and 0.96 for 100 in the same run): each size is served beside the 1-plugin host and the two are
    // measured in ABBA pairs, as the http section does, and the median of the pairs' ratios is the figure.
    let (onePlugins, oneState) = try await installed(1, "http1")
    let one = try kernel(onePlugins, oneState)
    await one.start()
    let oneServer = try await BenchServer.start(one)
    let oneURL = oneServer.base + "/ext/s00000/items/42/v47"
    _ = wrk(oneURL, seconds: 1)
    let (rounds, seconds) = options.quick ? (2, 2) : (5, 3)
    var baseline: [Double] = []
    for n in options.quick ? [10] : [10, 100] {
        let (plugins, state) = try await installed(n, "http\(n)")
        let k = try kernel(plugins, state)
        await k.start()
        let server = try await BenchServer.start(k)
        let url = server.base + "/ext/" + String(format: "s%05d", n - 1) + "/items/42/v47"
        _ = wrk(url, seconds: 1)
        let pairs = abbaPairs(oneURL, url, rounds: rounds, seconds: seconds)
        let ratios = pairs.map { $0.b.rps / $0.a.rps }
        let ratio = median(ratios), rps = median(pairs.map(\.b.rps))
        baseline += pairs.map(\.a.rps)
        rows.append(Row(name: "scaling: HTTP, \(n) plugins × 50 routes vs 1 (\(rounds) ABBA pairs)", measured: String(format: "%.0f req/s", rps),
                        baseline: String(format: "%.0f req/s (%.2f–%.2f), p99 %.2f ms, %d failed", median(pairs.map(\.a.rps)),
                                         ratios.min() ?? 0, ratios.max() ?? 0, median(pairs.map(\.b.p99ms)),
                                         pairs.reduce(0) { $0 + $1.a.failed + $1.b.failed }),
                        ratio: ratio, target: "≥ 0.9", met: ratio >= 0.9))
        httpPoints.append((Double(n), rps))
        await server.stop()
        await k.shutdown()
    }
    httpPoints.insert((1, median(baseline)), at: 0)
    await oneServer.stop()
    await one.shutdown()
    if let dir = options.plot {
        let path = dir + "/scaling.svg"
        try Plot.write([PlotPanel(title: "start-up per plugin", unit: "µs", points: startPoints),
                        PlotPanel(title: "memory per plugin", unit: "KiB", points: memoryPoints),
                        PlotPanel(title: "HTTP, last route of the last plugin", unit: "req/s", points: httpPoints)],
                       caption: "plugins of 50 routes each (x: number of plugins, log scale); \(options.quick ? "quick" : "full") run, \(ProcessInfo.processInfo.activeProcessorCount) cores",
                       to: path)
        print("scaling: plot written to \(path)")
    }
}
