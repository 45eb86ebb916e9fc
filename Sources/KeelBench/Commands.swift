// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The commands section: a command call through Keel against a raw ffi_call with a prepared cif and against a direct
// call, in one run; and the admin API's command call against a plugin route doing the same work, over HTTP.

import CKeelBenchNative
import CKeelFFI
import Foundation
import Hummingbird
import Keel
import KeelHTTP

@MainActor
func commandsBenchmarks() async throws {
    let plugins = options.work + "/commands", state = options.work + "/commands.db"
    try bundle(plugins, id: "bench", library: options.pluginA, capabilities: "[routes]",
               extra: "commands:\n  - {name: add, symbol: keel_bench_add, signature: \"(i32, i32) -> i32\"}\n")
    let k = try kernel(plugins, state)
    await k.start()
    try await k.enable("bench")
    guard let command = k.registry.command(plugin: "bench", name: "add"),
          let handle = dlopen(options.pluginA, RTLD_NOW | RTLD_LOCAL), let symbol = dlsym(handle, "keel_bench_add") else {
        fatalError("no command bench.add")
    }
    let n = options.quick ? 200_000 : 2_000_000
    var sink: Int64 = 0

    // Direct: the linked-in copy of the same function.
    @inline(never) func direct(_ n: Int) -> Int64 {
        var s: Int64 = 0
        for i in 0..<n { s &+= Int64(keel_bench_add(Int32(truncatingIfNeeded: i), 1)) }
        return s
    }
    // Raw libffi: a cif prepared once, ffi_call into the plugin's copy.
    let kinds: [UInt8] = [UInt8(KEEL_FFI_I32), UInt8(KEEL_FFI_I32)]
    guard let cif = kinds.withUnsafeBufferPointer({ keel_ffi_prepare($0.baseAddress, 2, UInt8(KEEL_FFI_I32)) }) else { fatalError("ffi") }
    @inline(never) func raw(_ n: Int) -> Int64 {
        var s: Int64 = 0
        var a: Int32 = 0, b: Int32 = 1
        var result: (UInt64, UInt64) = (0, 0)
        withUnsafeMutablePointer(to: &a) { pa in
            withUnsafeMutablePointer(to: &b) { pb in
                var args: [UnsafeMutableRawPointer?] = [UnsafeMutableRawPointer(pa), UnsafeMutableRawPointer(pb)]
                args.withUnsafeMutableBufferPointer { argv in
                    withUnsafeMutableBytes(of: &result) { r in
                        for i in 0..<n {
                            pa.pointee = Int32(truncatingIfNeeded: i)
                            keel_ffi_invoke(cif, symbol, r.baseAddress, argv.baseAddress)
                            s &+= Int64(r.load(as: Int32.self))
                        }
                    }
                }
            }
        }
        return s
    }
    let values: [CommandValue] = [.int(2), .int(40)]
    @inline(never) func invoke(_ n: Int) -> Int64 {
        var s: Int64 = 0
        for _ in 0..<n { if case let .success(.int(v)) = command.invoke(values) { s &+= v } }
        return s
    }
    let arguments: [CommandArgument] = [.int(2), .int(40)]
    let principal = Kernel.operatorPrincipal
    @inline(never) func full(_ n: Int) -> Int64 {
        var s: Int64 = 0
        for _ in 0..<n { if case let .success(.int(v)) = k.call("bench", "add", arguments: arguments, as: principal) { s &+= v } }
        return s
    }
    var d: [Double] = [], r: [Double] = [], i: [Double] = [], f: [Double] = []
    for _ in 0..<(options.quick ? 2 : 5) {
        d.append(best(3) { sink &+= direct(n) })
        r.append(best(3) { sink &+= raw(n) })
        i.append(best(3) { sink &+= invoke(n) })
        f.append(best(3) { sink &+= full(n) })
    }
    if sink == 42 { print("") }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    func ns(_ t: Double) -> String { String(format: "%.1f ns", t / Double(n) * 1e9) }
    let (dd, rr, ii, ff) = (median(d), median(r), median(i), median(f))
    rows.append(Row(name: "command call through Keel (lookup, permission, checks) vs raw ffi_call", measured: ns(ff), baseline: ns(rr),
                    ratio: ff / rr, target: "≤ 1.5", met: ff / rr <= 1.5))
    rows.append(Row(name: "command invoke (checked values, guarded call) vs raw ffi_call", measured: ns(ii), baseline: ns(rr),
                    ratio: ii / rr, target: "report", met: nil))
    rows.append(Row(name: "raw ffi_call with a prepared cif vs direct call", measured: ns(rr), baseline: ns(dd),
                    ratio: rr / dd, target: "report", met: nil))

    // Over HTTP, both with the admin token and the same JSON body: the admin API's command call vs a plugin route that
    // reads the arguments from the body, adds and answers JSON.
    let server = try await BenchServer.start(k)
    let base = server.base
    let post = options.work + "/post.lua"
    try """
        wrk.method = "POST"
        wrk.body = '{"args": [2, 40]}'
        wrk.headers["Content-Type"] = "application/json"
        wrk.headers["Authorization"] = "Bearer bench"
        """.write(toFile: post, atomically: true, encoding: .utf8)
    let seconds = options.quick ? 2 : 5
    _ = wrk(base + "/api/v1/plugins/bench/commands/add", seconds: 1, script: post)
    var ratios: [Double] = [], api: [Double] = [], route: [Double] = []
    var failedRoute = 0
    for round in 0..<(options.quick ? 2 : 4) {
        let a: WRK, b: WRK
        if round % 2 == 0 {
            a = wrk(base + "/api/v1/plugins/bench/commands/add", seconds: seconds, script: post)
            b = wrk(base + "/ext/bench/add", seconds: seconds, script: post)
        } else {
            b = wrk(base + "/ext/bench/add", seconds: seconds, script: post)
            a = wrk(base + "/api/v1/plugins/bench/commands/add", seconds: seconds, script: post)
        }
        if a.failed > 0 { fatalError("command calls failed over HTTP") }
        failedRoute += b.failed
        ratios.append(a.rps / b.rps)
        api.append(a.rps)
        route.append(b.rps)
    }
    if failedRoute > 0 { fatalError("the POST route failed over HTTP") }
    let ratio = median(ratios)
    rows.append(Row(name: "HTTP: admin API command call vs plugin POST route (same work)", measured: String(format: "%.0f req/s", median(api)),
                    baseline: String(format: "%.0f req/s", median(route)), ratio: ratio, target: "≥ 0.91", met: ratio >= 1 / 1.1))
    await server.stop()
    await k.shutdown()
}
