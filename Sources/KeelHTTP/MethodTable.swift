// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import Synchronization

/// The methods the host's own routes take for a path, from the router's table (`Router.routes`), so that a path
/// asked with a method it does not take is answered 405 with `Allow`, not 404. Filled once, after every route is
/// added (`fill`); read on the "not found" path only. Thread-safe (a `Mutex`).
final class MethodTable: Sendable {
    private let routes = Mutex<[(segments: [Substring], method: String)]>([])

    /// Takes the router's routes: each path pattern's segments (`:id` or `{id}` and `*` match one segment, `**` the
    /// rest) with its method.
    func fill<Context>(from router: Router<Context>) {
        let table = router.routes.map { route in
            (segments: "\(route.path)".split(separator: "/", omittingEmptySubsequences: true), method: route.method.rawValue)
        }
        routes.withLock { $0 = table }
    }

    /// The methods some route takes for `path` (canonical, without the query), sorted, with HEAD where GET is.
    func methods(for path: String) -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        var found = Set(routes.withLock { table in table.filter { Self.matches($0.segments, parts) }.map(\.method) })
        if found.contains("GET") { found.insert("HEAD") }
        return found.sorted()
    }

    /// Whether a route of the host takes `method` for `path` (as routed: HEAD only where a HEAD route is).
    func serves(_ method: String, path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        return routes.withLock { table in table.contains { $0.method == method && Self.matches($0.segments, parts) } }
    }

    static func matches(_ pattern: [Substring], _ parts: [Substring]) -> Bool {
        for (i, segment) in pattern.enumerated() {
            if segment == "**" { return parts.count > i }
            guard i < parts.count else { return false }
            let wild = segment == "*" || segment.hasPrefix(":") || (segment.hasPrefix("{") && segment.hasSuffix("}"))
            if !wild && segment != parts[i] { return false }
        }
        return pattern.count == parts.count
    }
}
