// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The key each plugin installed from a signed package is pinned to (table `plugin_signers`).
///
/// An install or upgrade from a repository records the trusted key that signed the package; a later upgrade (or a
/// reinstall after `uninstall --keep-data`) must be signed by the same key unless the operator moves the plugin to
/// another one (`keel upgrade ID --signer NAME`). The key is stored itself (base64 of the raw 32 bytes, as
/// `trusted_keys` holds it), not the name it was trusted under: a name can be given a new key, the pin cannot.
/// A pin outlives `uninstall --keep-data` (the kept configuration was given to that signer's code) and goes with a
/// full uninstall (`forgetPlugin(everything: true)`).
///
/// Thread-safe and blocking, like every `StateStore` call; each write is one transaction with its history event;
/// throws `StateError` when the store fails.
extension StateStore {
    /// The key a plugin is pinned to.
    public struct PinnedSigner: Sendable, Hashable, Codable {
        /// The name the key was trusted under when it was pinned (for people; the key is what counts).
        public var name: String
        /// The ed25519 public key, base64 of its raw 32 bytes.
        public var publicKey: String
        /// When it was pinned (ISO 8601 UTC); "" for a value not stored yet.
        public var pinnedAt: String

        public init(name: String, publicKey: String, pinnedAt: String = "") {
            self.name = name
            self.publicKey = publicKey
            self.pinnedAt = pinnedAt
        }
    }

    /// The key `id` is pinned to, or nil when none is (never installed from a signed package, or forgotten).
    public func pinnedSigner(_ id: String) throws(StateError) -> PinnedSigner? {
        try locked { db throws(StateError) in
            try db.query("SELECT signer, public_key, pinned_at FROM plugin_signers WHERE plugin_id = ?", [.text(id)])
                .first.flatMap(Self.pinnedSigner)
        }
    }

    /// Every pin, by plugin id, in one read.
    public func pinnedSigners() throws(StateError) -> [String: PinnedSigner] {
        try locked { db throws(StateError) in
            var pins: [String: PinnedSigner] = [:]
            for row in try db.query("SELECT plugin_id, signer, public_key, pinned_at FROM plugin_signers") {
                if let id = row["plugin_id"]?.text, let pin = Self.pinnedSigner(row) { pins[id] = pin }
            }
            return pins
        }
    }

    /// Pins `id` to `signer` (its `pinnedAt` is the store's time), or with nil forgets its pin; a change of key is
    /// recorded in the plugin's history (`signer` event: the name, never the key).
    public func setPinnedSigner(_ id: String, _ signer: PinnedSigner?) throws(StateError) {
        try locked { db throws(StateError) in
            try db.transaction { () throws(StateError) in
                let before = try db.query("SELECT signer, public_key, pinned_at FROM plugin_signers WHERE plugin_id = ?", [.text(id)])
                    .first.flatMap(Self.pinnedSigner)
                guard let signer else {
                    guard let before else { return }
                    try db.query("DELETE FROM plugin_signers WHERE plugin_id = ?", [.text(id)])
                    try Self.event(db, id, "signer", "unpinned (was \(before.name))")
                    return
                }
                try db.query("""
                    INSERT INTO plugin_signers (plugin_id, signer, public_key, pinned_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (plugin_id) DO UPDATE SET signer = excluded.signer, public_key = excluded.public_key,
                                                          pinned_at = excluded.pinned_at
                    """, [.text(id), .text(signer.name), .text(signer.publicKey), .text(Self.now())])
                if before?.publicKey != signer.publicKey {
                    try Self.event(db, id, "signer", before.map { "pinned to \(signer.name) (was \($0.name))" } ?? "pinned to \(signer.name)")
                }
            }
        }
    }

    static func pinnedSigner(_ row: [String: StateValue]) -> PinnedSigner? {
        guard let name = row["signer"]?.text, let key = row["public_key"]?.text else { return nil }
        return PinnedSigner(name: name, publicKey: key, pinnedAt: row["pinned_at"]?.text ?? "")
    }
}
