// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The isolation section: the same plugin route served in-process and from a worker process (`isolation: process`),
// by one server, in alternating pairs (ABBA), as ratios of throughput and p99; the worker's start time (enable with
// isolation, against enable in-process), its memory (the worker's RSS) and the CPU per request of host and worker.
//
// The worker is this binary in its `worker` mode (see main.swift), which runs the same `WorkerMain` as `keel worker`.

import Foundation
import Keel

@MainActor
func isolationBenchmarks() async throws {
    guard let executable = Bundle.main.executablePath ?? CommandLine.arguments.first else { fatalError("no executable path") }
    // The bench plugin's library names itself "bench": one kernel runs it in-process, a second one in a worker.
    func host(_ name: String, isolation: String) async throws -> Kernel {
        let plugins = options.work + "/isolation-" + name, state = options.work + "/isolation-\(name).db"
        try bundle(plugins, id: "bench", library: options.pluginA, extra: "isolation: \(isolation)\n")
        var c = KernelConfiguration(pluginsDirectory: plugins, stateFile: state, log: KernelConfiguration.silentLog)
        c.trustedCapabilities = [.routes, .menus, .authorize]
        c.workerExecutable = executable
        let k = try Kernel(configuration: c)
        await k.start()
        return k
    }
    let inProcessHost = try await host("in", isolation: "in-process"), workerHost = try await host("worker", isolation: "process")

    // Start: enable (load and activate) in-process vs in a worker, median of a few.
    var inProcess: [Double] = [], inWorker: [Double] = []
    for _ in 0..<(options.quick ? 3 : 9) {
        var t = now()
        try await inProcessHost.enable("bench")
        inProcess.append((now() - t) * 1000)
        t = now()
        try await workerHost.enable("bench")
        inWorker.append((now() - t) * 1000)
        try await inProcessHost.disable("bench")
        try await workerHost.disable("bench")
    }
    let startIn = inProcess.sorted()[inProcess.count / 2], startWorker = inWorker.sorted()[inWorker.count / 2]
    rows.append(Row(name: "worker start: enable with isolation: process vs in-process", measured: String(format: "%.1f ms", startWorker),
                    baseline: String(format: "%.1f ms", startIn), ratio: startWorker / startIn, target: "report", met: nil))

    try await inProcessHost.enable("bench")
    try await workerHost.enable("bench")
    if let pid = try await workerHost.plugin("bench").workerPID, let rss = residentKiB(pid) {
        rows.append(Row(name: "worker memory (RSS of one worker process)", measured: String(format: "%.1f MiB", Double(rss) / 1024),
                        baseline: "", ratio: nil, target: "report", met: nil))
    }
    let inServer = try await BenchServer.start(inProcessHost), workerServer = try await BenchServer.start(workerHost)
    let inURL = inServer.base + "/ext/bench/ping", workerURL = workerServer.base + "/ext/bench/ping"
    let (rounds, seconds) = options.quick ? (2, 2) : (5, 5)
    _ = wrk(inURL, seconds: 1)
    _ = wrk(workerURL, seconds: 1)
    let pairs = abbaPairs(inURL, workerURL, rounds: rounds, seconds: seconds)
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    let rps = median(pairs.map { $0.b.rps / $0.a.rps }), p99 = median(pairs.map { $0.b.p99ms / $0.a.p99ms })
    rows.append(Row(name: "HTTP throughput, plugin route in a worker vs in-process", measured: String(format: "%.0f req/s", median(pairs.map(\.b.rps))),
                    baseline: String(format: "%.0f req/s", median(pairs.map(\.a.rps))), ratio: rps, target: "≥ 0.6", met: rps >= 0.6))
    rows.append(Row(name: "HTTP p99 latency, plugin route in a worker vs in-process", measured: String(format: "%.2f ms", median(pairs.map(\.b.p99ms))),
                    baseline: String(format: "%.2f ms", median(pairs.map(\.a.p99ms))), ratio: p99, target: "≤ 2", met: p99 <= 2))
    // CPU per request (user + system): this process, and for the worker route the worker process too; less noisy
    // on a shared machine than the rates above.
    let workerPID = try await workerHost.plugin("bench").workerPID
    func cpuPerRequest(_ url: String, worker: Int32?) -> (host: Double, worker: Double) {
        let hostBefore = processCPUSeconds(), workerBefore = worker.flatMap(childCPUSeconds) ?? 0
        let run = wrk(url, seconds: seconds)
        let requests = max(run.rps * Double(seconds), 1)
        let hostUsed = processCPUSeconds() - hostBefore, workerUsed = (worker.flatMap(childCPUSeconds) ?? 0) - workerBefore
        return (hostUsed / requests * 1e6, workerUsed / requests * 1e6)
    }
    let cpuIn = cpuPerRequest(inURL, worker: nil), cpuWorker = cpuPerRequest(workerURL, worker: workerPID)
    let cpuTotal = cpuWorker.host + cpuWorker.worker
    rows.append(Row(name: "CPU per request, worker route (host + worker) vs in-process",
                    measured: String(format: "%.1f+%.1f µs", cpuWorker.host, cpuWorker.worker),
                    baseline: String(format: "%.1f µs", cpuIn.host), ratio: cpuTotal / cpuIn.host, target: "report", met: nil))
    await inServer.stop()
    await workerServer.stop()
    await inProcessHost.shutdown()
    await workerHost.shutdown()
}

/// The resident set of process `pid` in KiB (VmRSS), or nil.
func residentKiB(_ pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
    return Int(line.split(separator: " ").dropFirst().first ?? "")
}

/// CPU time (user + system) this process used so far, in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// CPU time (user + system) process `pid` used so far, in seconds (from /proc/pid/stat), or nil.
func childCPUSeconds(_ pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    // After the command's closing parenthesis: state is field 3, utime 14 and stime 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
