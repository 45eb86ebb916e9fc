// greeter — an example Keel plugin in Swift, over the same C ABI, through KeelPluginKit.
// It registers two routes, a menu entry and an authorize hook.

import KeelPluginKit

final class Greeter: KeelPlugin {
    static let id = "greeter"  // the version is plugin.yaml's: KeelPlugin.version defaults to ""

    init() {}

    func activate(_ host: PluginHost) throws {
        try host.route("GET", "/hello/:name") { request in
            .text("Hello, \(request.parameter("name") ?? "world")! (from Swift)\n")
        }
        // A page for the console: the menu entry below opens it inside the console.
        try host.route("GET", "/") { request in
            let who = request.caller.isAnonymous ? "stranger" : Self.escape(request.caller.displayName.isEmpty ? request.caller.id : request.caller.displayName)
            return .html("""
                <!doctype html><html><head><meta charset="utf-8"><title>Greeter</title></head>
                <body style="font-family: system-ui, sans-serif; padding: 1rem">
                <h1 id="greeting">Hello, \(who)!</h1>
                <p>This page is served by the <code>greeter</code> plugin, written in Swift, through Keel's C ABI.</p>
                </body></html>
                """)
        }
        try host.route("GET", "/whoami") { request in
            let c = request.caller
            return .json(#"{"id":"\#(c.id)","anonymous":\#(c.isAnonymous),"tenant":"\#(c.tenant)","roles":[\#(c.roles.map { "\"\($0)\"" }.joined(separator: ","))]}"#)
        }
        // Permission checks through the host's auth chain: the plugin declares greeter.greetings in plugin.yaml and
        // never keeps a permission model of its own.
        try host.route("GET", "/secret") { request in
            guard host.isAllowed(request.caller, action: "view", resource: "greeter.greetings") else {
                return .text("not for you, \(request.caller.isAnonymous ? "stranger" : request.caller.id)\n", status: 403)
            }
            return .text("the secret greeting is 'hullo'\n")
        }
        try host.menu(id: "greeter.hello", title: "Greeter", link: "/ext/greeter/", order: 20, icon: "smile")
        try host.menu(id: "greeter.secret", title: "Secret greeting", parent: "greeter.hello", link: "/ext/greeter/secret",
                      order: 1, permission: "greeter.greetings:view")
        // Nobody called "mallory" may do anything, whatever other hooks say.
        try host.authorizer("no-mallory") { query in query.caller.id == "mallory" ? .deny : .abstain }
        host.log(.info, "greeter activated")
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}

@_cdecl("keel_plugin_entry")
public func keelPluginEntry() -> UnsafeRawPointer? {
    PluginExport.descriptor(for: Greeter.self)
}
