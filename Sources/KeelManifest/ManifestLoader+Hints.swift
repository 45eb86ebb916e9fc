// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Hints for a plugin author's typos in plugin.yaml.
extension NodeReader {
    /// For a missing required key: the unknown key beside it that looks like a misspelling of it (at most two edits
    /// away), as `" (is \"verison\" on line 3 a misspelling of it?)"`; empty when there is none.
    func misspelling(of key: String, prefix: String) -> String {
        guard let near = unknownKeys.first(where: { $0.path == prefix && Spelling.distance($0.key, key, limit: 2) <= 2 }) else {
            return ""
        }
        let line = near.line.map { " on line \($0)" } ?? ""
        return " (is \"\(prefix)\(near.key)\"\(line) a misspelling of it?)"
    }
}
