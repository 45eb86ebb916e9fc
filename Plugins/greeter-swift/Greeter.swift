// greeter — an example Keel plugin in Swift, over the same C ABI, through KeelPluginKit.
// It registers two routes, a menu entry and an authorize hook.

import KeelPluginKit

final class Greeter: KeelPlugin {
    static let id = "greeter"
    static let version = "1.0.0"

    init() {}

    func activate(_ host: PluginHost) throws {
        try host.route("GET", "/hello/:name") { request in
            .text("Hello, \(request.parameter("name") ?? "world")! (from Swift)\n")
        }
        try host.route("GET", "/whoami") { request in
            let c = request.caller
            return .json(#"{"id":"\#(c.id)","anonymous":\#(c.isAnonymous),"tenant":"\#(c.tenant)","roles":[\#(c.roles.map { "\"\($0)\"" }.joined(separator: ","))]}"#)
        }
        try host.menu(id: "greeter.hello", title: "Greeter", link: "/ext/greeter/hello/world", order: 20, icon: "smile")
        // Nobody called "mallory" may do anything, whatever other hooks say.
        try host.authorizer("no-mallory") { query in query.caller.id == "mallory" ? .deny : .abstain }
        host.log(.info, "greeter activated")
    }
}

@_cdecl("keel_plugin_entry")
public func keelPluginEntry() -> UnsafeRawPointer? {
    PluginExport.descriptor(for: Greeter.self)
}
