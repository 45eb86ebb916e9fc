// {{id}} — a Keel plugin in Swift, over the C ABI (module CKeel: the SDK's headers). `make` builds bundle/{{id}}/
// (plugin.yaml + lib{{ident}}.so); `swift test` runs Tests/PluginTests.
//
// GET /ext/{{id}}/hello/:name answers "hello, <name>, from {{id}}". Nothing thrown crosses into the host.

import CKeel

/// The answer of GET /hello/:name.
public func greeting(name: String) -> String {
    "hello, \(name), from {{id}}\n"
}

/// A Swift string from a keel_str borrowed for the call (invalid UTF-8 repaired).
func string(_ s: keel_str) -> String {
    guard let ptr = s.ptr, s.len > 0 else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: ptr, count: s.len), as: UTF8.self)
}

/// A keel_str pointing at a static string (valid for the life of the library).
func staticStr(_ s: StaticString) -> keel_str {
    keel_str(ptr: UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self), len: s.utf8CodeUnitCount)
}

/// GET /hello/:name. Runs on the host's request threads, possibly concurrently: it keeps no state.
let hello: keel_http_handler_fn = { _, request, response in
    guard let request, let response else { return KEEL_ERR_INVALID_ARGUMENT }
    var name = "world"
    let r = request.pointee
    for i in 0..<r.params_len where string(r.params[i].name) == "name" { name = string(r.params[i].value) }
    let body = greeting(name: name)
    var status = response.pointee.add_header(response, staticStr("content-type"), staticStr("text/plain; charset=utf-8"))
    guard status == KEEL_OK else { return status }
    status = body.utf8CString.withUnsafeBufferPointer { bytes in
        response.pointee.write(response, bytes.baseAddress, bytes.count - 1)
    }
    return status
}

let activate: @convention(c) (UnsafePointer<keel_host>?, OpaquePointer?) -> keel_status = { host, ctx in
    guard let host, let service = host.pointee.get_service(ctx, staticStr("keel.http/1")) else {
        host?.pointee.set_error(ctx, staticStr("{{id}} needs keel.http/1"))
        return KEEL_ERR_UNSUPPORTED
    }
    let http = service.assumingMemoryBound(to: keel_host_http.self)
    var route = keel_route(struct_size: UInt32(MemoryLayout<keel_route>.size), method: staticStr("GET"),
                           path: staticStr("/hello/:name"), handler: hello, user_data: nil)
    return http.pointee.register_route(ctx, &route)
}

/// The descriptor, built once and never freed or changed (the host reads it in place). The id and the version are
/// left empty: the host takes plugin.yaml's, the one place they are written.
nonisolated(unsafe) let descriptor: UnsafeMutablePointer<keel_plugin> = {
    let d = UnsafeMutablePointer<keel_plugin>.allocate(capacity: 1)
    d.initialize(to: keel_plugin(
        struct_size: UInt32(MemoryLayout<keel_plugin>.size),
        abi_version: keel_version(major: UInt32(KEEL_ABI_VERSION_MAJOR), minor: UInt32(KEEL_ABI_VERSION_MINOR),
                                  patch: UInt32(KEEL_ABI_VERSION_PATCH)),
        id: keel_str(ptr: nil, len: 0), version: keel_str(ptr: nil, len: 0), flags: 0,
        activate: activate, deactivate: nil, get_extension: nil))
    return d
}()

/// The one exported symbol: the host calls it once per loaded copy of the library.
@_cdecl("keel_plugin_entry")
public func keelPluginEntry() -> UnsafeRawPointer {
    UnsafeRawPointer(descriptor)
}
