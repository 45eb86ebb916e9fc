// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The fixed work of the instruction-count gate (Scripts/icount.sh). Run under
// `valgrind --tool=callgrind --dump-before=keel_bench_icount_mark`, every `keel_bench_icount_mark` call closes one
// phase, so each measured loop lands in a dump of its own and set-up, threads started before it and teardown do not.
// Instruction counts do not depend on the machine's load, which is why this, and not a timing, gates CI.

import CKeelBenchNative
import Foundation
import Keel
import KeelLoader

/// Runs each phase `n` times against a kernel with the bench plugin and the authorize hooks enabled, then route
/// lookups among 1 and among 100 plugins of 50 routes each (`routes`: the scaling plugin, built with an empty id so
/// that one file serves every bundle). Prints one line, `icount-phases: NAME...`, naming the dumps in order (dump 1 is
/// the set-up before the first mark; a phase named `-` is set-up the gate ignores); the counts come from the dumps.
func runInstructionCounts(n: Int, httpN: Int, work: String, plugin: String, authz: [String], routes: String) async throws {
    let plugins = work + "/plugins", state = work + "/state.db"
    try bundle(plugins, id: "bench", library: plugin)
    for (i, lib) in authz.enumerated() { try bundle(plugins, id: "authz\(i + 1)", library: lib) }
    let k = try kernel(plugins, state)
    await k.start()
    try await k.enable("bench")
    for i in authz.indices { try await k.enable("authz\(i + 1)") }
    let scaled = 100
    for i in 0..<scaled { try bundle(plugins, id: String(format: "r%03d", i), library: routes, capabilities: "[routes]") }
    await k.rescan()
    let snapshot = k.registry.snapshot
    guard let match = snapshot.route(method: "GET", path: "/ext/bench/ping") else { fatalError("keel-bench: no route /ext/bench/ping") }
    let request = PluginRequest(method: "GET", path: "/ext/bench/ping", routePath: match.routePath,
                                headers: [("host", "127.0.0.1"), ("user-agent", "bench"), ("accept", "*/*")])
    var sink = 0
    // One untimed round first, so that lazily built tables and caches are not counted in the first phase.
    for _ in 0..<100 { if case let .success(r) = match.route.handler.handle(request) { sink &+= r.body.count } }

    keel_bench_icount_mark("handler")
    for _ in 0..<n { if case let .success(r) = match.route.handler.handle(request) { sink &+= r.body.count } }
    keel_bench_icount_mark("lookup")
    for _ in 0..<n { if let m = snapshot.route(method: "GET", path: "/ext/bench/ping") { sink &+= m.routePath.utf8.count } }
    keel_bench_icount_mark("lookup-miss")
    for _ in 0..<n { if snapshot.route(method: "GET", path: "/ext/bench/nothing/here") == nil { sink &+= 1 } }
    keel_bench_icount_mark("authorize")
    for _ in 0..<n {
        let (decision, _) = snapshot.authorize(.anonymous, action: "GET", resource: "/ext/bench/ping", request: request)
        if decision == .deny { sink &+= 1 }
    }
    // Route lookup must not grow with the number of plugins: the last route of one plugin with 50 routes, then of the
    // last of 100 such plugins.
    keel_bench_icount_mark("-")
    try await k.enable("r000")
    let one = k.registry.snapshot
    keel_bench_icount_mark("lookup-50-routes")
    for _ in 0..<n { if let m = one.route(method: "GET", path: "/ext/r000/items/42/v47") { sink &+= m.routePath.utf8.count } }
    keel_bench_icount_mark("-")
    for i in 1..<scaled { try await k.enable(String(format: "r%03d", i)) }
    let many = k.registry.snapshot
    guard many.route(method: "GET", path: "/ext/r099/items/42/v47") != nil else { fatalError("keel-bench: no route in r099") }
    keel_bench_icount_mark("lookup-5000-routes")
    for _ in 0..<n { if let m = many.route(method: "GET", path: "/ext/r099/items/42/v47") { sink &+= m.routePath.utf8.count } }
    // HTTP, on a kernel of its own with the bench plugin only (the server's periodic live view costs in proportion
    // to the plugins installed): the built-in route, the plugin route, then with the authorize hooks.
    keel_bench_icount_mark("-")
    await k.shutdown()
    let httpPlugins = work + "/http-plugins"
    try bundle(httpPlugins, id: "bench", library: plugin)
    for (i, lib) in authz.enumerated() { try bundle(httpPlugins, id: "authz\(i + 1)", library: lib) }
    let served = try kernel(httpPlugins, work + "/http-state.db")
    await served.start()
    try await served.enable("bench")
    let http = try await runHTTPCounts(served, n: httpN, authz: authz.indices.map { "authz\($0 + 1)" })
    print("icount-phases: handler lookup lookup-miss authorize - lookup-50-routes - lookup-5000-routes - " + http.joined(separator: " "))
    if sink == 42 { print("") }
    await served.shutdown()
}

/// A bundle folder `dir/id` with a plugin.yaml and a copy of `library`.
private func bundle(_ dir: String, id: String, library: String, capabilities: String = "[routes, authorize]") throws {
    let folder = dir + "/" + id
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try "id: \(id)\nname: \(id)\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib.so\ncapabilities: \(capabilities)\n"
        .write(toFile: folder + "/plugin.yaml", atomically: true, encoding: .utf8)
    try? FileManager.default.removeItem(atPath: folder + "/lib.so")
    try FileManager.default.copyItem(atPath: library, toPath: folder + "/lib.so")
}

private func kernel(_ plugins: String, _ state: String) throws -> Kernel {
    var c = KernelConfiguration(pluginsDirectory: plugins, stateFile: state, log: KernelConfiguration.silentLog)
    c.trustedCapabilities = [.routes, .menus, .authorize]
    return try Kernel(configuration: c)
}
