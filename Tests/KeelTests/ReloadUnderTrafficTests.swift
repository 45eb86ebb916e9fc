// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import Testing

/// Counts what the traffic saw.
final class TrafficTally: Sendable {
    private let state = Mutex<(ok: Int, failed: Int, foreign: Int, a: Int, b: Int, failures: [String])>((0, 0, 0, 0, 0, []))
    func record(status: Int, body: String) {
        state.withLock { s in
            if status != 200 { s.failed += 1; if s.failures.count < 5 { s.failures.append("\(status) \(body.prefix(120))") }; return }
            s.ok += 1
            if body.contains("tag=A") { s.a += 1 } else if body.contains("tag=B") { s.b += 1 } else { s.foreign += 1 }
        }
    }
    func error(_ e: any Error) { state.withLock { s in s.failed += 1; if s.failures.count < 5 { s.failures.append("\(e)") } } }
    var value: (ok: Int, failed: Int, foreign: Int, a: Int, b: Int, failures: [String]) { state.withLock { $0 } }
}

final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}

@Suite("reload under traffic", .serialized, .scheduled)
struct ReloadUnderTrafficTests {
    static func rss(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    @Test("50 reloads alternating two builds under concurrent requests: no failed request, every answer from one build")
    func fiftyReloads() async throws {
        let f = KernelFixture()
        let a = try TestEnvironment.buildFixture("trafficA", ["PLUGIN_ID=\"flip\"", "TAG=\"A\""])
        let b = try TestEnvironment.buildFixture("trafficB", ["PLUGIN_ID=\"flip\"", "TAG=\"B\""])
        let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "flip",
                                                    manifest: TestEnvironment.manifest(id: "flip", library: "libflip.so"),
                                                    library: a, libraryName: "libflip.so")
        #expect(try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "enable", "flip", "--plugins", f.plugins, "--state", f.state]).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let pid = server.process.processIdentifier

        // Warm up both builds once so that the memory figure measures steady-state growth per reload.
        for lib in [b, a] {
            try install(lib, into: bundle, as: "libflip.so")
            #expect(try await server.request("POST", "/api/v1/plugins/flip/reload", admin: true).status == 200)
        }
        let rssBefore = Self.rss(pid)

        let tally = TrafficTally()
        let stop = StopFlag()
        let url = URL(string: server.base + "/ext/flip/ping")!
        let clients = (0..<4).map { _ in
            Task.detached {
                let session = URLSession(configuration: .ephemeral)
                while !stop.isSet {
                    do {
                        let (data, response) = try await session.data(from: url)
                        tally.record(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: String(decoding: data, as: UTF8.self))
                    } catch { tally.error(error) }
                }
            }
        }

        var latencies: [Double] = []
        let reloads = 50
        for i in 0..<reloads {
            let (lib, tag) = i % 2 == 0 ? (b, "tag=B") : (a, "tag=A")
            try install(lib, into: bundle, as: "libflip.so")
            let start = Date()
            let reply = try await server.request("POST", "/api/v1/plugins/flip/reload", admin: true)
            #expect(reply.status == 200, "\(reply.text)")
            while try await !server.request("GET", "/ext/flip/ping").text.contains(tag) {
                if Date().timeIntervalSince(start) > 10 { Issue.record("reload \(i) never took over"); break }
            }
            latencies.append(Date().timeIntervalSince(start) * 1000)
        }
        stop.set()
        for c in clients { await c.value }
        try await Task.sleep(for: .milliseconds(300))
        let rssAfter = Self.rss(pid)

        let t = tally.value
        #expect(t.failed == 0, "failures: \(t.failures)")
        #expect(t.foreign == 0)
        #expect(t.a > 0 && t.b > 0)
        #expect(t.ok > reloads)
        #expect(server.process.isRunning)
        let history = try await server.request("GET", "/api/v1/plugins/flip/history", admin: true)
        let outcomes = ((history.json as? [[String: Any]]) ?? []).compactMap { $0["outcome"] as? String }
        #expect(outcomes.filter { $0 == "activated" }.count == reloads + 4) // CLI enable, server start, two warm-ups

        latencies.sort()
        let p50 = latencies[latencies.count / 2], p99 = latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))]
        let figures = String(format: "reload figures: %d reloads, %d requests (%d A, %d B), %d failed; swap latency p50 %.1f ms, p99 %.1f ms; RSS %d → %d KiB (%.1f KiB per reload)",
                             reloads, t.ok + t.failed, t.a, t.b, t.failed, p50, p99, rssBefore, rssAfter,
                             Double(rssAfter - rssBefore) / Double(reloads))
        print(figures)
        try figures.write(toFile: TestEnvironment.scratch + "/reload-figures.txt", atomically: true, encoding: .utf8)
    }
}
