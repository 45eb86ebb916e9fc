// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The suite's harness for HTTP sections: wrk runs, the cores they keep to, alternating pairs, a served kernel.

import CKeelBenchNative
import Foundation
import Hummingbird
import Keel
import KeelHTTP
import Synchronization

struct WRK {
    var rps: Double
    var p99ms: Double
    var failed: Int
}

/// On a machine with more than one core, the server's threads keep to the first core and wrk to the others, so that
/// the two do not take turns on one core (which swings results between runs more than anything measured).
let loadCores: [String] = {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    guard cores > 1, FileManager.default.isExecutableFile(atPath: "/usr/bin/taskset") else { return [] }
    return ["/usr/bin/taskset", "-c", "1-\(cores - 1)"]
}()

/// Keeps every thread of this process, and the threads they start, on core 0 (see `loadCores`).
func pinServerThreads() {
    guard !loadCores.isEmpty, let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return }
    for task in tasks.compactMap({ Int32($0) }) { _ = keel_bench_pin_thread(task, 0) }
}

/// `cores`: the taskset prefix for wrk (default `loadCores`).
func wrk(_ url: String, seconds: Int, script: String? = nil, cores: [String]? = nil) -> WRK {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = (cores ?? loadCores) + ["wrk", "-t1", "-c32", "-d\(seconds)s", "--latency"] + (script.map { ["-s", $0] } ?? []) + [url]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = Pipe()
    try? p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    func number(after label: String) -> Double? {
        guard let line = text.split(separator: "\n").first(where: { $0.contains(label) }) else { return nil }
        let token = line.split(separator: " ").last.map(String.init) ?? ""
        if token.hasSuffix("ms") { return Double(token.dropLast(2)) }
        if token.hasSuffix("us") { return Double(token.dropLast(2)).map { $0 / 1000 } }
        if token.hasSuffix("s") { return Double(token.dropLast(1)).map { $0 * 1000 } }
        return Double(token)
    }
    var failed = 0
    if let line = text.split(separator: "\n").first(where: { $0.contains("Non-2xx") }) {
        failed += Int(line.split(separator: " ").last ?? "") ?? 0
    }
    if let line = text.split(separator: "\n").first(where: { $0.contains("Socket errors") }) {
        failed += line.split(separator: ",").compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +)
    }
    let p99 = text.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("99%") }
        .flatMap { line -> Double? in
            let t = String(line.split(separator: " ").last ?? "")
            if t.hasSuffix("ms") { return Double(t.dropLast(2)) }
            if t.hasSuffix("us") { return Double(t.dropLast(2)).map { $0 / 1000 } }
            if t.hasSuffix("s") { return Double(t.dropLast(1)).map { $0 * 1000 } }
            return nil
        } ?? .nan
    return WRK(rps: number(after: "Requests/sec") ?? 0, p99ms: p99, failed: failed)
}

/// `rounds` runs of wrk against `a` and `b` in alternating pairs (ABBA order, so that a drift in the machine's load
/// weighs on both alike).
func abbaPairs(_ a: String, _ b: String, rounds: Int, seconds: Int) -> [(a: WRK, b: WRK)] {
    (0..<rounds).map { round in
        if round % 2 == 0 {
            let x = wrk(a, seconds: seconds)
            return (x, wrk(b, seconds: seconds))
        }
        let y = wrk(b, seconds: seconds)
        return (wrk(a, seconds: seconds), y)
    }
}

/// `k` served on a free port of 127.0.0.1 (admin token "bench"), with the process's threads pinned (`loadCores`).
struct BenchServer {
    let base: String
    let task: Task<Void, Error>

    static func start(_ k: Kernel, configuration: ServerConfiguration = ServerConfiguration(port: 0),
                      builtinRoutes: @escaping @Sendable (Router<KeelRequestContext>) -> Void = { _ in }) async throws -> BenchServer {
        let token = AdminToken(state: k.state, environment: ["KEEL_ADMIN_TOKEN": "bench"])
        let server = KeelServer(kernel: k, token: token, configuration: configuration, builtinRoutes: builtinRoutes)
        let portBox = PortBox()
        let task = Task { try await server.run { port in portBox.set(port) } }
        while portBox.value == 0 { try await Task.sleep(for: .milliseconds(20)) }
        pinServerThreads()
        return BenchServer(base: "http://127.0.0.1:\(portBox.value)", task: task)
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}

final class PortBox: Sendable {
    private let port = Mutex(0)
    func set(_ p: Int) { port.withLock { $0 = p } }
    var value: Int { port.withLock { $0 } }
}

