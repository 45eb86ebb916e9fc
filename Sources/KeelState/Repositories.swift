// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

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
                if let n = row["name"]?.text, let k = row["public_key"]?.text { keys[n] = TrustScope.key(stored: k) }
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

    /// Trusts `publicKey` under `name`, for the plugin ids `only` covers (`TrustScope`; nil: any plugin id). A name
    /// keeps its key: refused when the name holds another key (compared as stored text; the kernel compares the bytes
    /// first), also when another writer (a second host on a shared store) got there first, as the insert and the check
    /// are one statement's conflict rule and one read in a transaction. The same key again with `only` given sets its
    /// scope to `only`; without, leaves it as it was.
    public func trustKey(name: String, publicKey: String, only: [String]?) throws(StateError) -> ChangeResult {
        try change { db throws(StateError) in
            guard Self.isName(name) else { return "\"\(name)\" is not a valid key name" }
            if let only, let problem = TrustScope.problem(only) { return problem }
            // A key has one name (compared as bytes, in this transaction: two hosts of a shared state cannot both
            // pass): under a second name, with a scope of its own, a repository naming that signer would pick it.
            if let bytes = Data(base64Encoded: publicKey) {
                for row in try db.query("SELECT name, public_key FROM trusted_keys WHERE name <> ?", [.text(name)]) {
                    guard let other = row["name"]?.text, let held = row["public_key"]?.text,
                          Data(base64Encoded: TrustScope.key(stored: held)) == bytes else { continue }
                    return "this key is already trusted as \"\(other)\"; a key has one name"
                }
            }
            let scope: StateValue = only.map { .text(TrustScope.stored($0)) } ?? .null
            // A scoped key is stored so that a host of an earlier keel (on a shared state, or still running beside a
            // newer CLI), which does not read scopes, reads no key at all: it fails closed, never taking the key as
            // unscoped.
            let stored = only == nil ? publicKey : TrustScope.scopedKeyPrefix + publicKey
            try db.query("INSERT INTO trusted_keys (name, public_key, added_at, only_ids) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                         [.text(name), .text(stored), .text(Self.now()), scope])
            let held = try db.query("SELECT public_key FROM trusted_keys WHERE name = ?", [.text(name)]).first?["public_key"]?.text
            guard held.map(TrustScope.key(stored:)) == publicKey else { return "\"\(name)\" is already trusted with another key" }
            if only != nil {
                try db.query("UPDATE trusted_keys SET only_ids = ?, public_key = ? WHERE name = ?", [scope, .text(stored), .text(name)])
            }
            return nil
        }
    }

    /// The trusted keys with the plugin ids each may sign: one read, for checks of several plugins.
    public func trustedKeySet() throws(StateError) -> TrustedKeySet {
        try locked { db throws(StateError) in
            var set = TrustedKeySet()
            for row in try db.query("SELECT name, public_key, only_ids FROM trusted_keys") {
                guard let n = row["name"]?.text, let k = row["public_key"]?.text else { continue }
                set.keys[n] = TrustScope.key(stored: k)
                if let only = row["only_ids"]?.text { set.scopes[n] = TrustScope.read(only) }
            }
            return set
        }
    }
}

/// Trusted keys (base64 raw ed25519 public keys, by name) and the plugin ids each may sign. A package signed by a key
/// whose scope does not cover its plugin id is taken as signed by a key this host does not trust (Debian's
/// `Signed-By`: a vendor's key vouches for the vendor's plugins, not for a first-party id no host has pinned yet).
public struct TrustedKeySet: Sendable, Equatable {
    public var keys: [String: String] = [:]
    /// The patterns of the keys that have a scope; a key absent here signs any plugin id.
    public var scopes: [String: [String]] = [:]

    public init(keys: [String: String] = [:], scopes: [String: [String]] = [:]) {
        self.keys = keys
        self.scopes = scopes
    }

    /// The keys trusted to sign `pluginID`, by name.
    public func keys(for pluginID: String) -> [String: String] {
        scopes.isEmpty ? keys : keys.filter { scopes[$0.key].map { TrustScope.covers($0, pluginID) } ?? true }
    }

    /// When `name` is a trusted key whose scope does not cover `pluginID`: its patterns, for the refusal.
    public func outOfScope(_ name: String, for pluginID: String) -> [String]? {
        guard keys[name] != nil, let only = scopes[name], !TrustScope.covers(only, pluginID) else { return nil }
        return only
    }
}

/// The plugin ids a trusted key may sign: each pattern is a plugin id, or a prefix of ids ending in `*`
/// (`acme-*`, `acme.*`). Stored as one text, the patterns joined by commas.
public enum TrustScope {
    /// Why `patterns` is no scope (none given, or one that is no pattern; control characters escaped), or nil.
    public static func problem(_ patterns: [String]) -> String? {
        if patterns.isEmpty { return "no plugin id given: a key that may sign none would sign nothing (leave --only out for any id)" }
        guard let bad = patterns.first(where: { !isPattern($0) }) else { return nil }
        let shown = bad.unicodeScalars.map { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) ? "\\u{\(String($0.value, radix: 16))}" : String($0) }.joined()
        return "\"\(shown)\" is not a plugin id or a prefix of ids ending in * (acme-*)"
    }

    /// True when `pattern` is an id (`a-z0-9`, then also `-_.`, at most 64; not the host's own `keel`) or such a
    /// prefix followed by `*`.
    public static func isPattern(_ pattern: String) -> Bool {
        guard pattern != "keel" else { return false }
        let body = pattern.hasSuffix("*") ? pattern.dropLast() : Substring(pattern)
        let b = Array(body.utf8)
        guard (1...64).contains(b.count), let first = b.first, (first >= 97 && first <= 122) || (first >= 48 && first <= 57) else { return false }
        return b.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 || $0 == 46 }
    }

    /// Whether one of `patterns` covers `pluginID`.
    public static func covers(_ patterns: [String], _ pluginID: String) -> Bool {
        patterns.contains { $0.hasSuffix("*") ? pluginID.hasPrefix($0.dropLast()) : pluginID == $0 }
    }

    /// The patterns as the list shows them: "acme-*, billing".
    public static func describe(_ patterns: [String]) -> String { patterns.joined(separator: ", ") }

    static func stored(_ patterns: [String]) -> String { patterns.joined(separator: ",") }

    /// What a scoped key's `public_key` starts with in the state: not base64, so an earlier keel reads no key.
    static let scopedKeyPrefix = "scoped:"
    /// The key as stored, without that prefix.
    static func key(stored: String) -> String {
        stored.hasPrefix(scopedKeyPrefix) ? String(stored.dropFirst(scopedKeyPrefix.count)) : stored
    }
    static func read(_ text: String) -> [String] { text.split(separator: ",").map(String.init) }
}
