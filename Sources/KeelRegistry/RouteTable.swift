// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader

/// A plugin's routes compiled once, at publish, for matching request paths byte by byte.
///
/// A lookup splits the path into byte ranges and compares literal segments with `memcmp`-style loops:
/// no `Substring` and no string is made until a route has matched. (Matching with `[Substring]` and
/// `String` comparisons cost about 6,700 instructions for a plugin with two routes and 39,000 for one with fifty;
/// `Scripts/icount.sh` keeps the figures.) Immutable; shared by snapshots.
struct RouteTable: Sendable {
    enum Segment: Sendable {
        case literal([UInt8])
        case parameter(String)
        case rest
    }

    struct Entry: Sendable {
        /// The route as the plugin registered it.
        let route: RouteRegistration
        let pluginID: String
        let segments: [Segment]
        let anyMethod: Bool
    }

    private(set) var entries: [Entry] = []

    init(pluginID: String, routes: some Sequence<RouteRegistration>) {
        entries = routes.map { route in
            Entry(route: route, pluginID: pluginID, segments: route.pattern.segments.map { s -> Segment in
                switch s {
                case let .literal(text): return .literal(Array(text.utf8))
                case let .parameter(name): return .parameter(name)
                case .rest: return .rest
                }
            }, anyMethod: route.method == "*")
        }
    }

    init(entries: [Entry]) { self.entries = entries }

    /// The most specific entry serving `method` whose pattern matches `path` (byte ranges into `bytes`).
    /// Literal segments beat parameters, which beat `*`, segment by segment; then an exact method beats `*`; on a tie
    /// the first seen wins.
    func best(method: String, _ bytes: UnsafeBufferPointer<UInt8>, _ path: UnsafeBufferPointer<PathSegment>) -> Entry? {
        var best: Entry?
        for entry in entries {
            guard entry.anyMethod || entry.route.method == method || (method == "HEAD" && entry.route.method == "GET"),
                  Self.matches(entry.segments, bytes, path) else { continue }
            if let b = best, !Snapshot.precedes(b.route.pattern.specificity, !b.anyMethod,
                                                 entry.route.pattern.specificity, !entry.anyMethod) { continue }
            best = entry
        }
        return best
    }

    static func matches(_ pattern: [Segment], _ bytes: UnsafeBufferPointer<UInt8>, _ path: UnsafeBufferPointer<PathSegment>) -> Bool {
        for (i, segment) in pattern.enumerated() {
            switch segment {
            case .rest: return true
            case .parameter: guard i < path.count else { return false }
            case let .literal(literal):
                guard i < path.count else { return false }
                let s = path[i]
                guard s.count == literal.count else { return false }
                var k = 0
                while k < literal.count {
                    if bytes[s.start + k] != literal[k] { return false }
                    k += 1
                }
            }
        }
        return path.count == pattern.count
    }
}

/// One non-empty segment of a request path: a byte range of its UTF-8.
struct PathSegment {
    var start: Int
    var end: Int
    var count: Int { end - start }
}

extension Snapshot {
    /// Finds the route for `method` and the full request `path` (`/ext/<id>/...`, or a granted foreign prefix).
    /// Literal segments beat parameters, which beat `*`; an exact method beats `*`.
    public func route(method: String, path: String) -> RouteMatch? {
        var contiguous = path
        return contiguous.withUTF8 { bytes in
            // One small allocation for the segments' ranges; nothing else until a route matched.
            var segments: [PathSegment] = []
            segments.reserveCapacity(8)
            var start = 0
            for i in 0..<bytes.count where bytes[i] == UInt8(ascii: "/") {
                if start != i { segments.append(PathSegment(start: start, end: i)) }
                start = i + 1
            }
            if start != bytes.count { segments.append(PathSegment(start: start, end: bytes.count)) }
            return segments.withUnsafeBufferPointer { lookup(method: method, path: path, bytes, $0) }
        }
    }

    private func lookup(method: String, path: String, _ bytes: UnsafeBufferPointer<UInt8>,
                        _ segments: UnsafeBufferPointer<PathSegment>) -> RouteMatch? {
        if segments.count >= 2, segments[0].count == 3, bytes[segments[0].start] == UInt8(ascii: "e"),
           bytes[segments[0].start + 1] == UInt8(ascii: "x"), bytes[segments[0].start + 2] == UInt8(ascii: "t") {
            let id = String(decoding: UnsafeBufferPointer(rebasing: bytes[segments[1].start..<segments[1].end]), as: UTF8.self)
            guard let table = routeTables[id] else { return nil }
            let rest = UnsafeBufferPointer(rebasing: segments[2...])
            guard let entry = table.best(method: method, bytes, rest) else { return nil }
            return Self.match(entry, bytes, rest, routePath: nil)
        }
        guard !absoluteRoutes.entries.isEmpty, let entry = absoluteRoutes.best(method: method, bytes, segments) else { return nil }
        return Self.match(entry, bytes, segments, routePath: path)
    }

    /// The match of `entry` against `path`: its route path (the segments joined, when not given) and parameters.
    private static func match(_ entry: RouteTable.Entry, _ bytes: UnsafeBufferPointer<UInt8>,
                              _ path: UnsafeBufferPointer<PathSegment>, routePath: String?) -> RouteMatch {
        var parameters: [(name: String, value: String)] = []
        for (i, segment) in entry.segments.enumerated() {
            switch segment {
            case .literal: break
            case let .parameter(name): parameters.append((name: name, value: text(bytes, path[i].start, path[i].end)))
            case .rest:
                parameters.append((name: "*", value: joined(bytes, UnsafeBufferPointer(rebasing: path[min(i, path.count)...]))))
            }
        }
        return RouteMatch(pluginID: entry.pluginID, route: entry.route,
                          routePath: routePath ?? "/" + joined(bytes, path), parameters: parameters)
    }

    private static func text(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
    }

    /// The segments joined with `/`: one slice of the path when they are separated by single slashes (the usual
    /// case, since paths arrive canonical), else rebuilt.
    private static func joined(_ bytes: UnsafeBufferPointer<UInt8>, _ segments: UnsafeBufferPointer<PathSegment>) -> String {
        guard let first = segments.first, let last = segments.last else { return "" }
        var single = true
        for i in segments.indices.dropFirst() where segments[i].start != segments[i - 1].end + 1 { single = false; break }
        if single { return text(bytes, first.start, last.end) }
        return segments.map { text(bytes, $0.start, $0.end) }.joined(separator: "/")
    }
}
