// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Hints for a plugin author's typos in plugin.yaml.
extension NodeReader {
    /// For a missing required key: the unknown key beside it that looks like a misspelling of it (at most two edits
    /// away), as `" (is \"verison\" on line 3 a misspelling of it?)"`; empty when there is none.
    func misspelling(of key: String, prefix: String) -> String {
        guard let near = unknownKeys.first(where: { $0.path == prefix && Self.editDistance($0.key, key, limit: 2) <= 2 }) else {
            return ""
        }
        let line = near.line.map { " on line \($0)" } ?? ""
        return " (is \"\(prefix)\(near.key)\"\(line) a misspelling of it?)"
    }

    /// The Levenshtein distance between `a` and `b` by Unicode scalars, or `limit + 1` once it is certainly over
    /// `limit` (keys are short; a key of a very different length is not compared).
    static func editDistance(_ a: String, _ b: String, limit: Int) -> Int {
        let x = Array(a.unicodeScalars), y = Array(b.unicodeScalars)
        guard abs(x.count - y.count) <= limit else { return limit + 1 }
        var previous = Array(0...y.count)
        for i in 1...max(1, x.count) where !x.isEmpty {
            var current = [i] + Array(repeating: 0, count: y.count)
            for j in 1...max(1, y.count) where !y.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[y.count]
    }
}
