// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The operations section: enable/disable through the admin API (HTTP, admin token, a real plugin activated and
// deactivated each time, the audit row, the live view) against raw durable commits to a state file on the same
// disk, and the same commands through `Kernel.execute` without HTTP, to tell the two costs apart.

import Foundation
import Keel
import KeelState
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@MainActor
func operationsBenchmarks() async throws {
    guard let library = options.authz.first else {
        print("operations: skipped (no --authz plugin given)")
        return
    }
    let plugins = options.work + "/ops", state = options.work + "/ops.db"
    try bundle(plugins, id: "authz1", library: library)
    let k = try kernel(plugins, state)
    await k.start()
    let server = try await BenchServer.start(k)
    let session = URLSession(configuration: .ephemeral)
    let ops = options.quick ? 40 : 300

    func viaAPI() async throws -> Double {
        let base = server.base
        return try await onClientThread {
            let connection = try LeanHTTPConnection(base: base)
            let t0 = now()
            for i in 0..<ops {
                let status = try connection.request("POST", "/api/v1/plugins/authz1/" + (i % 2 == 0 ? "enable" : "disable"),
                                                    headers: ["Authorization": "Bearer bench"])
                guard status == 200 else { throw LeanHTTPError(description: "state op answered \(status)") }
            }
            return Double(ops) / (now() - t0)
        }
    }
    func diag() async throws {
        let base = server.base
        let t0 = now()
        for _ in 0..<ops {
            var r = URLRequest(url: URL(string: base + "/api/v1/plugins/authz1")!)
            r.setValue("Bearer bench", forHTTPHeaderField: "Authorization")
            _ = try await session.data(for: r)
        }
        print("DIAG urlsession GET info", (now() - t0) / Double(ops) * 1e6, "us")
        let t1 = now()
        for _ in 0..<ops {
            let r = URLRequest(url: URL(string: base + "/healthz")!)
            _ = try await session.data(for: r)
        }
        print("DIAG urlsession GET healthz", (now() - t1) / Double(ops) * 1e6, "us")
        try await onClientThread {
            let connection = try LeanHTTPConnection(base: base)
            let t0 = now()
            for _ in 0..<ops { _ = try connection.request("GET", "/api/v1/plugins/authz1", headers: ["Authorization": "Bearer bench"]) }
            print("DIAG lean GET info", (now() - t0) / Double(ops) * 1e6, "us")
            let t1 = now()
            for _ in 0..<ops { _ = try connection.request("GET", "/healthz") }
            print("DIAG lean GET healthz", (now() - t1) / Double(ops) * 1e6, "us")
        }
        let t2 = now()
        for _ in 0..<ops { _ = try await k.plugin("authz1") }
        print("DIAG kernel.plugin", (now() - t2) / Double(ops) * 1e6, "us")
    }
    func viaKernel() async throws -> Double {
        let t0 = now()
        for i in 0..<ops {
            try await k.execute(i % 2 == 0 ? .enable(id: "authz1", tenant: nil) : .disable(id: "authz1", tenant: nil, cascade: false))
        }
        return Double(ops) / (now() - t0)
    }
    let raw = try StateStore(path: options.work + "/raw.db")
    func rawCommits() throws -> Double {
        let t0 = now()
        for i in 0..<ops { try raw.setLivePluginsJSON("\(i)") }
        return Double(ops) / (now() - t0)
    }
    // Interleaved, twice each, so that a change in the machine's load weighs on all alike; the better of the two.
    if let mode = ProcessInfo.processInfo.environment["OPS_PROFILE"] {
        var r = 0.0
        let commits = Mutex(0)
        k.state.observeCommits { _ in commits.withLock { $0 += 1 } }
        for _ in 0..<5 { r = mode == "kernel" ? try await viaKernel() : mode == "raw" ? try rawCommits() : try await viaAPI() }
        print("PROFILE", mode, r, "commits", commits.withLock { $0 })
        return
    }
    _ = try await viaAPI()
    try await diag()
    var api: [Double] = [], direct: [Double] = [], commits: [Double] = []
    for _ in 0..<2 {
        commits.append(try rawCommits())
        api.append(try await viaAPI())
        direct.append(try await viaKernel())
        commits.append(try rawCommits())
    }
    let (apiRate, kernelRate, rawRate) = (api.max() ?? 0, direct.max() ?? 0, commits.max() ?? 1)
    rows.append(Row(name: "state: enable/disable via admin API vs raw commits", measured: String(format: "%.0f ops/s", apiRate),
                    baseline: String(format: "%.0f commits/s", rawRate), ratio: apiRate / rawRate, target: "≥ 0.3",
                    met: apiRate / rawRate >= 0.3))
    rows.append(Row(name: "state: enable/disable via Kernel.execute vs raw commits", measured: String(format: "%.0f ops/s", kernelRate),
                    baseline: String(format: "%.0f commits/s", rawRate), ratio: kernelRate / rawRate, target: "report", met: nil))
    await server.stop()
    await k.shutdown()
}
