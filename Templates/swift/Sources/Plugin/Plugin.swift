// {{id}} — a Keel plugin in Swift, on KeelPluginKit (the SDK's Swift package: routes, menus, auth hooks, the
// configuration, services between plugins; nothing thrown crosses into the host). `make` builds bundle/{{id}}/
// (plugin.yaml + lib{{ident}}.so); `swift test` runs Tests/PluginTests.
//
// GET /ext/{{id}}/hello/:name answers "hello, <name>, from {{id}}".

import KeelPluginKit

/// The answer of GET /hello/:name.
public func greeting(name: String) -> String {
    "hello, \(name), from {{id}}\n"
}

/// GET /hello/:name. A plain function, so that the tests can call it with a `Request` of their own.
func hello(_ request: Request) throws -> Response {
    .text(greeting(name: request.parameter("name") ?? "world"))
}

/// The plugin. The host makes an instance for every activation; handlers run on the host's request threads,
/// possibly concurrently. Its id and version are plugin.yaml's (KeelPlugin's `id` and `version` default to "").
final class HelloPlugin: KeelPlugin {
    init() {}

    func activate(_ host: PluginHost) throws {
        try host.route("GET", "/hello/:name", hello)
    }
}

/// The one exported symbol: the host calls it once per loaded copy of the library.
@_cdecl("keel_plugin_entry")
public func keelPluginEntry() -> UnsafeRawPointer? {
    PluginExport.descriptor(for: HelloPlugin.self)
}
