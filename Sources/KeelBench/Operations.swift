// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The operations section: enable/disable through the admin API (HTTP, admin token, a real plugin activated and
// deactivated each time, the audit row, the live view) against raw durable commits to a state file on the same
// disk, and the same commands through `Kernel.execute` without HTTP, to tell the two costs apart. The requests are
// made one after another on one keep-alive connection by a lean client (LeanHTTP.swift): URLSession, which this
// section used before, cost more per request than the server's whole admin call.

import Foundation
import Keel
import KeelState

@MainActor
func operationsBenchmarks() async throws {
    guard let library = options.authz.first else {
        print("operations: skipped (no --authz plugin given)")
        return
    }
    let plugins = options.work + "/ops", state = options.work + "/ops.db"
    try bundle(plugins, id: "authz1", library: library)
    let reactivatable = !options.reactivatable.isEmpty
    if reactivatable {
        try bundle(plugins, id: "authzre", library: options.reactivatable)
        // A library read within two seconds of its last change is not kept for the next enable (it could change
        // again unseen; see `FileStamp.isSettled`): an installed plugin is older than that.
        try await Task.sleep(for: .milliseconds(2100))
    }
    let k = try kernel(plugins, state)
    await k.start()
    let server = try await BenchServer.start(k)
    let ops = options.quick ? 40 : 300

    /// `ops` admin API requests, one after another on one kept-alive connection: `request(i)` is the method and path
    /// of the i-th. Returns requests per second.
    func throughAPI(_ request: @escaping @Sendable (Int) -> (method: String, path: String)) async throws -> Double {
        let base = server.base
        return try await onClientThread {
            let connection = try LeanHTTPConnection(base: base)
            let t0 = now()
            for i in 0..<ops {
                let (method, path) = request(i)
                let status = try connection.request(method, path, headers: ["Authorization": "Bearer bench"])
                guard status == 200 else { throw LeanHTTPError(description: "\(method) \(path) answered \(status)") }
            }
            return Double(ops) / (now() - t0)
        }
    }
    func viaAPI(_ id: String = "authz1") async throws -> Double {
        try await throughAPI { i in ("POST", "/api/v1/plugins/\(id)/" + (i % 2 == 0 ? "enable" : "disable")) }
    }
    // The floor under the admin API's figure: a read of the same plugin through it (HTTP, the admin token, the
    // plugin's JSON), with no command.
    func readsViaAPI() async throws -> Double { try await throughAPI { _ in ("GET", "/api/v1/plugins/authz1") } }
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
    _ = try await viaAPI()
    if reactivatable { _ = try await viaAPI("authzre") }
    var api: [Double] = [], direct: [Double] = [], commits: [Double] = [], reads: [Double] = [], kept: [Double] = []
    for _ in 0..<2 {
        commits.append(try rawCommits())
        api.append(try await viaAPI())
        if reactivatable { kept.append(try await viaAPI("authzre")) }
        direct.append(try await viaKernel())
        reads.append(try await readsViaAPI())
        commits.append(try rawCommits())
    }
    let (apiRate, kernelRate, rawRate) = (api.max() ?? 0, direct.max() ?? 0, commits.max() ?? 1)
    rows.append(Row(name: "state: enable/disable via admin API vs raw commits", measured: String(format: "%.0f ops/s", apiRate),
                    baseline: String(format: "%.0f commits/s", rawRate), ratio: apiRate / rawRate, target: "≥ 0.3",
                    met: apiRate / rawRate >= 0.3))
    rows.append(Row(name: "state: enable/disable via Kernel.execute vs raw commits", measured: String(format: "%.0f ops/s", kernelRate),
                    baseline: String(format: "%.0f commits/s", rawRate), ratio: kernelRate / rawRate, target: "report", met: nil))
    if let keptRate = kept.max() {
        rows.append(Row(name: "the same, a plugin declaring KEEL_PLUGIN_FLAG_REACTIVATABLE (its copy kept between enables)",
                        measured: String(format: "%.0f ops/s", keptRate), baseline: String(format: "%.0f commits/s", rawRate),
                        ratio: keptRate / rawRate, target: "report", met: nil))
    } else {
        print("operations: the reactivatable plugin's row skipped (no --reactivatable plugin given)")
    }
    let readRate = reads.max() ?? 0
    rows.append(Row(name: "admin API: a read of the same plugin (HTTP, token, its JSON; no command)",
                    measured: String(format: "%.0f reads/s", readRate), baseline: String(format: "%.0f µs each", 1e6 / readRate),
                    ratio: nil, target: "report", met: nil))
    await server.stop()
    await k.shutdown()
    try await operationsAmongMany(library, commits: rawRate, ops: ops)
}

/// The same commands on a host with 1,000 more plugins installed (lazy, never used): what a command costs must not
/// grow with the plugins it does not touch. Needs the load template (`--load-template`).
@MainActor
func operationsAmongMany(_ library: String, commits rawRate: Double, ops: Int) async throws {
    guard !options.loadTemplate.isEmpty else {
        print("operations among 1,000 plugins: skipped (no --load-template given)")
        return
    }
    let plugins = options.work + "/ops-many", state = options.work + "/ops-many.db"
    _ = try generatePlugins(1000, into: plugins, extra: "activation: lazy\n")
    try bundle(plugins, id: "authz1", library: library)
    let k = try kernel(plugins, state)
    await k.start()
    let server = try await BenchServer.start(k)  // as above: a running server keeps the CLI's live view
    func viaKernel() async throws -> Double {
        let t0 = now()
        for i in 0..<ops {
            try await k.execute(i % 2 == 0 ? .enable(id: "authz1", tenant: nil) : .disable(id: "authz1", tenant: nil, cascade: false))
        }
        return Double(ops) / (now() - t0)
    }
    _ = try await viaKernel()
    let rate = max(try await viaKernel(), try await viaKernel())
    rows.append(Row(name: "state: the same via Kernel.execute, 1,000 other plugins installed", measured: String(format: "%.0f ops/s", rate),
                    baseline: String(format: "%.0f commits/s", rawRate), ratio: rate / rawRate, target: "report", met: nil))
    await server.stop()
    await k.shutdown()
}
