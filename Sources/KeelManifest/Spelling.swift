// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Near misses in names people type (plugin ids, plugin.yaml keys, command words), for "did you mean" hints. Pure.
public enum Spelling {
    /// The Levenshtein distance between `a` and `b` by Unicode scalars, or `limit + 1` once it is certainly over
    /// `limit` (a name of a very different length is not compared).
    public static func distance(_ a: String, _ b: String, limit: Int = .max) -> Int {
        let x = Array(a.unicodeScalars), y = Array(b.unicodeScalars)
        guard limit == .max || abs(x.count - y.count) <= limit else { return limit + 1 }
        if x.isEmpty || y.isEmpty { return max(x.count, y.count) }
        var previous = Array(0...y.count)
        for i in 1...x.count {
            var current = [i] + Array(repeating: 0, count: y.count)
            for j in 1...y.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[y.count]
    }

    /// The one of `names` that `word` most likely meant: the same but for case, else the nearest at most two edits
    /// away (and fewer edits than `word` has characters), the first in order on a tie; nil when none is that near.
    public static func nearest(_ word: String, in names: [String]) -> String? {
        if let same = names.first(where: { $0 != word && $0.lowercased() == word.lowercased() }) { return same }
        let scored = names.filter { $0 != word }.map { ($0, distance(word, $0, limit: 2)) }.filter { $0.1 <= 2 && $0.1 < word.count }
        return scored.min { $0.1 < $1.1 }?.0  // `min` keeps the first of equals
    }
}
