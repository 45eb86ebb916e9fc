// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// The alternatives section: what a user choosing a plugin system would compare Keel with, in the same run. A trivial
// call into a Wasm plugin through Extism (libextism from the `extism-sys` wheel, found by Scripts/bench.sh) against
// the same trivial call into a Keel plugin, and a Keel handler call (request and response marshalled across the C ABI)
// against an Extism call carrying the same bytes in and out. The raw-libffi comparison is the commands section's.
// Skipped, with a message saying why, when libextism is not there.

import Foundation
import Keel

/// A Wasm module, encoded by hand so that the suite needs no Wasm toolchain: `(func (export "add") (result i32)
/// i32.const 0)`. Extism calls an export `() -> i32` with the call's input and output kept by the host.
private let trivialWasm: [UInt8] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,              // magic, version 1
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f,                    // type section: () -> i32
    0x03, 0x02, 0x01, 0x00,                                      // function section: one function of type 0
    0x07, 0x07, 0x01, 0x03, 0x61, 0x64, 0x64, 0x00, 0x00,        // export "add" = function 0
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x00, 0x0b,              // code: i32.const 0; end
]

private typealias ExtismPluginNew = @convention(c) (UnsafePointer<UInt8>, UInt64, OpaquePointer?, UInt64, Bool,
                                                     UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> OpaquePointer?
private typealias ExtismPluginCall = @convention(c) (OpaquePointer, UnsafePointer<CChar>, UnsafePointer<UInt8>?, UInt64) -> Int32
private typealias ExtismPluginOutputLength = @convention(c) (OpaquePointer) -> UInt64

@MainActor
func alternativesBenchmarks() async throws {
    guard !options.extism.isEmpty else {
        print("alternatives: skipped, libextism not found (python3 -m pip install extism-sys, then run Scripts/bench.sh again)")
        return
    }
    guard let lib = dlopen(options.extism, RTLD_NOW | RTLD_LOCAL),
          let newSym = dlsym(lib, "extism_plugin_new"), let callSym = dlsym(lib, "extism_plugin_call"),
          let lengthSym = dlsym(lib, "extism_plugin_output_length") else {
        print("alternatives: skipped, \(options.extism) is not a usable libextism: \(String(cString: dlerror()))")
        return
    }
    let pluginNew = unsafeBitCast(newSym, to: ExtismPluginNew.self)
    let pluginCall = unsafeBitCast(callSym, to: ExtismPluginCall.self)
    let outputLength = unsafeBitCast(lengthSym, to: ExtismPluginOutputLength.self)
    var error: UnsafeMutablePointer<CChar>?
    guard let wasm = trivialWasm.withUnsafeBufferPointer({ pluginNew($0.baseAddress!, UInt64($0.count), nil, 0, false, &error) }) else {
        print("alternatives: skipped, Extism refused the module: \(error.map { String(cString: $0) } ?? "no reason")")
        return
    }

    // Keel's side: the bench plugin's trivial function and its /ping handler.
    let plugins = options.work + "/alternatives", state = options.work + "/alternatives.db"
    try bundle(plugins, id: "bench", library: options.pluginA)
    let k = try kernel(plugins, state)
    await k.start()
    try await k.enable("bench")
    guard let match = k.registry.snapshot.route(method: "GET", path: "/ext/bench/ping"),
          let handle = dlopen(options.pluginA, RTLD_NOW | RTLD_LOCAL), let addSym = dlsym(handle, "keel_bench_add") else {
        fatalError("alternatives: the bench plugin has no /ping route or keel_bench_add")
    }
    let add = unsafeBitCast(addSym, to: (@convention(c) (Int32, Int32) -> Int32).self)
    let request = PluginRequest(method: "GET", path: "/ext/bench/ping", routePath: "/ping")
    let input = Array("GET /ext/bench/ping".utf8)

    let n = options.quick ? 20_000 : 500_000
    var sink = 0
    let extismEmpty = best(3) { for _ in 0..<n { sink &+= Int(pluginCall(wasm, "add", nil, 0)) } }
    let extismBytes = best(3) {
        input.withUnsafeBufferPointer { buffer in
            for _ in 0..<n { sink &+= Int(pluginCall(wasm, "add", buffer.baseAddress, UInt64(buffer.count))) &+ Int(outputLength(wasm)) }
        }
    }
    let keelTrivial = best(3) { for i in 0..<n { sink &+= Int(add(Int32(truncatingIfNeeded: i), 1)) } }
    let keelHandler = best(3) { for _ in 0..<n { if case let .success(r) = match.route.handler.handle(request) { sink &+= r.body.count } } }
    if sink == 42 { print("") }
    func ns(_ t: Double) -> String { t / Double(n) * 1e9 < 10 ? String(format: "%.2f ns", t / Double(n) * 1e9) : String(format: "%.0f ns", t / Double(n) * 1e9) }
    rows.append(Row(name: "trivial call: Extism (Wasm) vs Keel plugin (C ABI)", measured: ns(extismEmpty), baseline: ns(keelTrivial) + " (Keel)",
                    ratio: extismEmpty / keelTrivial, target: "report", met: nil))
    rows.append(Row(name: "call with request bytes in and out: Extism vs Keel handler", measured: ns(extismBytes), baseline: ns(keelHandler) + " (Keel)",
                    ratio: extismBytes / keelHandler, target: "report", met: nil))
    await k.shutdown()
}
