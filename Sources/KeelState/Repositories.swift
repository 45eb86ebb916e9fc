// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The repositories plugins are installed from, and the ed25519 keys trusted to sign them.
///
/// Thread-safe and blocking, like every `StateStore` call. Each change is one transaction, refused as a whole
/// (`ChangeResult.refused`) on a bad or clashing name; throws `StateError` only when SQLite fails.
extension StateStore {
    public struct Repository: Sendable, Hashable, Codable {
        public var name: String
        public var location: String
        public var priority: Int

        public init(name: String, location: String, priority: Int) {
            self.name = name
            self.location = location
            self.priority = priority
        }
    }

    /// Every repository, highest priority first, then by name.
    public func repositories() throws(StateError) -> [Repository] {
        try locked { db throws(StateError) in
            try db.query("SELECT name, location, priority FROM repositories ORDER BY priority DESC, name").compactMap {
                guard let n = $0["name"]?.text, let l = $0["location"]?.text else { return nil }
                return Repository(name: n, location: l, priority: Int($0["priority"]?.int ?? 0))
            }
        }
    }

    public func addRepository(_ r: Repository) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(r.name) else { return "\"\(r.name)\" is not a valid repository name" }
            guard try db.query("SELECT 1 AS x FROM repositories WHERE name = ?", [.text(r.name)]).isEmpty else {
                return "repository \"\(r.name)\" already exists"
            }
            try db.query("INSERT INTO repositories (name, location, priority, added_at) VALUES (?, ?, ?, ?)",
                         [.text(r.name), .text(r.location), .int(Int64(r.priority)), .text(Self.now())])
            return nil
        }
    }

    public func removeRepository(_ name: String) throws(StateError) -> ChangeResult {
        try removeNamed("repositories", name, unknown: "unknown repository \"\(name)\"")
    }

    /// Deletes the row named `name` of `table` (a fixed table name of this file, never input); refused with
    /// `unknown` when there is none.
    private func removeNamed(_ table: String, _ name: String, unknown: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard !(try db.query("SELECT 1 AS x FROM \(table) WHERE name = ?", [.text(name)]).isEmpty) else { return unknown }
            try db.query("DELETE FROM \(table) WHERE name = ?", [.text(name)])
            return nil
        }
    }

    /// Trusted ed25519 public keys (base64 raw representation), by name.
    public func trustedKeys() throws(StateError) -> [String: String] {
        try locked { db throws(StateError) in
            var keys: [String: String] = [:]
            for row in try db.query("SELECT name, public_key FROM trusted_keys") {
                if let n = row["name"]?.text, let k = row["public_key"]?.text { keys[n] = k }
            }
            return keys
        }
    }

    /// Stops trusting the key named `name`. The plugins pinned to it keep their pin (it holds the key itself): an
    /// upgrade signed by it is then refused as signed by a key that is not trusted, until the operator moves the
    /// plugin to another key (`--signer`). Refused when no key has that name.
    public func untrustKey(_ name: String) throws(StateError) -> ChangeResult {
        try removeNamed("trusted_keys", name, unknown: "unknown trusted key \"\(name)\" (keel trust list names them)")
    }

    /// Trusts `publicKey` under `name`. A name keeps its key: refused when the name holds another key (compared as
    /// stored text; the kernel compares the bytes first), also when another writer (a second host on a shared store)
    /// got there first, as the insert and the check are one statement's conflict rule and one read in a transaction.
    public func trustKey(name: String, publicKey: String) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(name) else { return "\"\(name)\" is not a valid key name" }
            try db.query("INSERT INTO trusted_keys (name, public_key, added_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                         [.text(name), .text(publicKey), .text(Self.now())])
            let held = try db.query("SELECT public_key FROM trusted_keys WHERE name = ?", [.text(name)]).first?["public_key"]?.text
            return held == publicKey ? nil : "\"\(name)\" is already trusted with another key"
        }
    }
}
