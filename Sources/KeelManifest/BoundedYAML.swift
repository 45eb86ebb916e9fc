// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Yams

/// A bound on what YAML aliases can add. LibYAML composes a tree in which an alias shares its anchor's node, so a few
/// hundred bytes of anchors and aliases can stand for billions of values; anything that walks or converts that tree
/// (Yams's `Any` constructor, a `Decodable`, JSON) takes as long, and as much memory, as the values it stands for.
/// Text read from outside (a repository's index, a bundle's `config.schema.yaml`, an operator's configuration) is
/// checked with `fits` before it is walked. Stateless and thread-safe.
enum BoundedYAML {
    /// True when `node` holds at most `maxValues` values (scalars, lists and mappings), each alias counted as the
    /// values it repeats. Stops as soon as the count passes the bound, so it costs at most `maxValues` steps.
    /// Nesting is bounded by LibYAML (1,000 levels), so the recursion stays shallow.
    static func fits(_ node: Node, maxValues: Int) -> Bool {
        var left = maxValues
        return count(node, &left)
    }

    private static func count(_ node: Node, _ left: inout Int) -> Bool {
        left -= 1
        guard left >= 0 else { return false }
        switch node {
        case .scalar, .alias: return true
        case .sequence(let items): return items.allSatisfy { count($0, &left) }
        case .mapping(let pairs): return pairs.allSatisfy { count($0.key, &left) && count($0.value, &left) }
        }
    }
}
