// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import KeelState

/// What the operator asks of a plugin's pinned signer for one install or upgrade (`--signer NAME`, `--no-signer`;
/// the admin API's `"signer"` field: a name, or "" for none).
public enum SignerChange: Codable, Sendable, Hashable {
    /// Move the plugin to the key trusted under this name: the new package must be signed by that key, which the
    /// plugin is then pinned to.
    case key(String)
    /// Forget the plugin's pin: the package is taken as a first install takes it (an unsigned one still needs
    /// `allowUnsigned`; a signed one pins its key).
    case forget
}

/// An install or upgrade refused because the package is not signed by the key the plugin is pinned to, or not by the
/// key the operator named. Nothing was fetched, installed or stored. `description` is the one line for the operator:
/// the plugin, the pinned (or named) key and the package's key, with the command that moves the plugin deliberately.
public struct SignerMismatch: Error, Sendable, CustomStringConvertible {
    public var pluginID: String
    public var description: String
}

/// Signer pinning: a plugin installed from a signed package stays with the key that signed it.
///
/// Decided from the index and the state before anything is fetched (`checkSigner`), enforced again when the archive
/// is verified (its signature is checked against the key decided here and no other), and recorded with the
/// signature status once the new bundle is in place (`recordSignature`). Like Android's signature continuity: a
/// different key, even one the operator trusts, cannot replace a plugin by publishing a higher version of it.
/// Blocking (state reads); thread-safe.
extension ExtensionStore {
    /// What `checkSigner` decided for one offer.
    public struct SignerCheck: Sendable {
        /// The key the plugin was pinned to before, if any.
        public var pinned: StateStore.PinnedSigner?
        /// The trusted key the offer names as its signer; nil when it is unsigned or its signer is not trusted. The
        /// archive's signature is verified against this key, and the plugin is pinned to it once installed.
        public var offered: StateStore.PinnedSigner?
        /// What the install does to the pin, for the audit trail and the log ("…pinned to acme (key …)"); nil when it
        /// stays as it was.
        public var note: String?
    }

    /// Checks `offer` against the key its plugin is pinned to, or against the key `change` names.
    /// - Parameter command: `install` or `upgrade`, for the command the refusal suggests.
    /// - Throws: `SignerMismatch` when the package's key is not the pinned one (or not the one named; unsigned and
    ///   untrusted packages included); `StoreError` when `change` names a key that is not trusted; `StateError`.
    /// - Parameter allowUnsigned: whether the operator takes this package without a trusted signature; when false, a
    ///   package signed by a trusted key whose scope (`keel trust add --only`) leaves the plugin out is refused here,
    ///   before anything is fetched or recorded, as a `SignerMismatch` (nil: not decided here; the download's check
    ///   refuses it).
    public func checkSigner(_ offer: Offer, change: SignerChange?, command: String, allowUnsigned: Bool? = nil) throws -> SignerCheck {
        // Only the keys trusted to sign this id: one whose scope leaves it out counts as not trusted here.
        let id = offer.id, keySet = try state.trustedKeySet(), trusted = keySet.keys(for: id), pinned = try state.pinnedSigner(id)
        var offered: StateStore.PinnedSigner?
        if offer.entry.signature != nil, let name = offer.entry.signer, let key = trusted[name], Self.publicKey(key) != nil {
            offered = StateStore.PinnedSigner(name: name, publicKey: key)
        }
        let package = "\(id) \(offer.entry.version) " + (offered.map { "is signed by \(Self.describe($0))" } ?? Self.untrustedText(offer, keySet))
        func mismatch(_ text: String) -> SignerMismatch { SignerMismatch(pluginID: id, description: text) }
        // A trusted key outside its scope: said as such, not as an unknown key (`keel trust add --only` widens it).
        let outOfScope = offered == nil && offer.entry.signature != nil ? offer.entry.signer.flatMap { keySet.outOfScope($0, for: id) } : nil
        let widen = offer.entry.signer.map { "keel trust add \(Self.escaped($0)) KEY --only ... sets what it may sign" } ?? ""
        // The signature is over the archive's SHA-256, which the index gives: one that the key trusted under its
        // signer's name did not make is refused now, whatever is asked (as the download's check would refuse it),
        // rather than taken for that key's (a name given a new key, or a forged package).
        // Checked against the key trusted under the signer's name whatever that key's scope: a forged signature
        // under a trusted name is refused as such, never taken for an out-of-scope (untrusted) one.
        let claimed = offered ?? (offer.entry.signature == nil ? nil : offer.entry.signer.flatMap { name in
            keySet.keys[name].flatMap { Self.publicKey($0) == nil ? nil : StateStore.PinnedSigner(name: name, publicKey: $0) }
        })
        if let claimed, !Self.signatureVerifies(offer, publicKey: claimed.publicKey) {
            throw mismatch("\"\(id)\" \(offer.entry.version): bad signature by \"\(Self.escaped(claimed.name))\": not made by the key trusted "
                           + "under that name (key \(Self.fingerprint(claimed.publicKey))); refused, with --allow-unsigned too")
        }
        switch change {
        case let .key(name)?:
            guard let key = trusted[name], Self.publicKey(key) != nil else {
                if let only = keySet.outOfScope(name, for: id) {
                    throw mismatch("--signer \(Self.escaped(name)): that key may sign \(TrustScope.describe(only)) only, not \"\(id)\"; refused "
                                   + "(keel trust add \(Self.escaped(name)) KEY --only ... sets what it may sign)")
                }
                throw StoreError("--signer \(name): no trusted key has that name (keel trust list)")
            }
            let wanted = StateStore.PinnedSigner(name: name, publicKey: key)
            guard let offered, Self.sameKey(offered, wanted) else {
                throw mismatch("\(package), not by \(Self.describe(wanted)) as --signer asks; refused")
            }
            let note: String? = if let pinned {
                Self.sameKey(pinned, offered) ? nil : "signer of \"\(id)\" moved by the operator from \(Self.describe(pinned)) to \(Self.describe(offered))"
            } else { "\"\(id)\" pinned to signer \(Self.describe(offered)) by the operator" }
            return SignerCheck(pinned: pinned, offered: offered, note: note)
        case .forget?:
            if allowUnsigned == false, outOfScope != nil {
                throw mismatch("\(package); refused (\(widen); keel \(command) \(id) --no-signer --allow-unsigned takes it unpinned)")
            }
            let note = pinned.map { "signer \(Self.describe($0)) of \"\(id)\" unpinned by the operator" + (offered.map { "; now pinned to \(Self.describe($0))" } ?? "") }
                ?? offered.map { "\"\(id)\" pinned to signer \(Self.describe($0))" }
            return SignerCheck(pinned: pinned, offered: offered, note: note)
        case nil:
            guard let pinned else {
                if allowUnsigned == false, outOfScope != nil {
                    throw mismatch("\(package); refused (\(widen); keel \(command) \(id) --allow-unsigned takes it unpinned)")
                }
                return SignerCheck(pinned: nil, offered: offered, note: offered.map { "\"\(id)\" pinned to signer \(Self.describe($0))" })
            }
            guard let offered, Self.sameKey(offered, pinned) else {
                // A package signed under the pinned key's own name, now untrusted: the key was removed (`keel trust
                // remove`), and trusting it again is not the way out.
                let untrustedPin = offered == nil && offer.entry.signature != nil && offer.entry.signer == pinned.name
                    && trusted[pinned.name] == nil
                let how = offered.map { "keel \(command) \(id) --signer \($0.name) moves it to that key" }
                    ?? (offer.entry.signature == nil ? "keel \(command) \(id) --no-signer --allow-unsigned leaves it for an unsigned package"
                        : outOfScope != nil ? widen
                        : untrustedPin ? "its key is no longer trusted; a package signed by another trusted key moves it: keel \(command) \(id) --signer NAME"
                        : "trust that key, then keel \(command) \(id) --signer NAME moves it")
                throw mismatch("\"\(id)\" is pinned to signer \(Self.describe(pinned)); \(package); refused (\(how))")
            }
            return SignerCheck(pinned: pinned, offered: offered, note: nil)
        }
    }

    /// Checks, just before the new bundle goes into place, that the plugin's pin is still `check.pinned` (or already
    /// the key this install records): the check was made before the download, and another host of a shared state
    /// (or another process) may have moved, set or forgotten the pin meanwhile; recording this install's pin over it
    /// would undo that (an operator's move away from a compromised key, or another host's first install pinning
    /// another key). Two hosts installing the same package both pass.
    /// - Throws: `SignerMismatch` when it changed; `StateError`.
    package func confirmPin(_ offer: Offer, _ check: SignerCheck) throws {
        // The key it is to be pinned to must still be trusted for this id: untrusted, or its scope narrowed
        // (`keel trust add --only`), while the package was fetched, it signs nothing here any more.
        if let offered = check.offered,
           !(try state.trustedKeySet().keys(for: offer.id)).values.contains(where: { Self.sameKey(StateStore.PinnedSigner(name: offered.name, publicKey: $0), offered) }) {
            throw SignerMismatch(pluginID: offer.id, description: "key \"\(offered.name)\" may no longer sign \"\(offer.id)\": its trust "
                                 + "changed while \(offer.id) \(offer.entry.version) was fetched; refused")
        }
        let now = try state.pinnedSigner(offer.id)
        func same(_ a: StateStore.PinnedSigner?, _ b: StateStore.PinnedSigner?) -> Bool {
            switch (a, b) {
            case (nil, nil): true
            case let (a?, b?): Self.sameKey(a, b)
            default: false
            }
        }
        guard !same(now, check.pinned), !same(now, check.offered) else { return }
        let was = check.pinned.map(Self.describe) ?? "none", shown = now.map(Self.describe) ?? "none"
        throw SignerMismatch(pluginID: offer.id, description: "the pinned signer of \"\(offer.id)\" changed while "
                             + "\(offer.id) \(offer.entry.version) was fetched (now \(shown), was \(was)); refused")
    }

    /// Records what an install or upgrade left in place, in one transaction: the signature status of the library at
    /// `library` and the plugin's pin (`check.offered`, or none). A store that cannot take them keeps what it had
    /// (an old pin then stays: the safe side).
    package func recordSignature(_ offer: Offer, library: String, check: SignerCheck) {
        let record = signatureRecord(offer, library: library, signer: check.offered)
        try? state.transaction {
            try state.setSignatureRecord(offer.id, record)
            try state.setPinnedSigner(offer.id, check.offered)
        }
    }

    /// Records, before a first install moves its bundle into the plugin folder, what `recordSignature` records: the
    /// signature status of the library at `library` (still in the work folder: the same bytes) and the plugin's pin,
    /// in one transaction that must succeed. A bundle that reached the plugin folder without its pin (a crash between
    /// the move and the records, or a store that refused them) could be upgraded by any trusted key at the next
    /// `upgrade`, which would pin that key.
    /// - Returns: what puts the records back as they were, for a move that fails after this.
    /// - Throws: the store's error; nothing is changed then.
    package func recordSignatureBeforeMove(_ offer: Offer, library: String, check: SignerCheck) throws -> @Sendable () -> Void {
        let id = offer.id, state = self.state, pinned = check.pinned
        let previous = try state.signatureRecord(id)
        let record = signatureRecord(offer, library: library, signer: check.offered)
        try state.transaction {
            try state.setSignatureRecord(id, record)
            try state.setPinnedSigner(id, check.offered)
        }
        return {
            try? state.transaction {
                try state.setSignatureRecord(id, previous)
                try state.setPinnedSigner(id, pinned)
            }
        }
    }

    /// A signer name as the repository's index gives it, for a message: the index is the repository's, so the name
    /// may hold anything. All but printable ASCII comes out escaped (`a\nb`, `\u{2028}`, `\u{430}cme` for a Cyrillic
    /// look-alike), and so do quotes and backslashes, so the message stays one line in the log, the audit trail and
    /// the terminal, and shows what the name is. A key's name (`acme`) is as it is.
    static func escaped(_ name: String) -> String {
        var text = ""
        for scalar in name.unicodeScalars { text += scalar.escaped(asASCII: true) }
        return text
    }

    /// A repository index's text (a signer's name, a description) for a catalog: control, format and non-ASCII
    /// characters escaped as `escaped` does, so a hostile index cannot redraw a line or fake a mark beside it.
    public static func displayName(_ text: String) -> String {
        text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7f } ? text : escaped(text)
    }

    /// A key as people see it: `acme (key 3f2a9c81d4e0b7a2)`, the name it was trusted under and `fingerprint`.
    public static func describe(_ signer: StateStore.PinnedSigner) -> String {
        "\(signer.name) (key \(fingerprint(signer.publicKey)))"
    }

    /// The first 16 hex digits of the SHA-256 of the raw key (`keel trust list` shows the same); the text itself
    /// when it is not base64.
    public static func fingerprint(_ publicKey: String) -> String {
        guard let raw = Data(base64Encoded: publicKey) else { return publicKey }
        return String(Hex.lowercase(SHA256.hash(data: raw)).prefix(16))
    }

    /// The ed25519 key in `base64`, or nil when it is not one.
    static func publicKey(_ base64: String) -> Curve25519.Signing.PublicKey? {
        Data(base64Encoded: base64).flatMap { try? Curve25519.Signing.PublicKey(rawRepresentation: $0) }
    }

    /// True when `offer`'s signature is one `publicKey` made of the archive's SHA-256 as the index gives it (the
    /// download checks the archive against that digest).
    static func signatureVerifies(_ offer: Offer, publicKey: String) -> Bool {
        guard let signature = offer.entry.signature.flatMap({ Data(base64Encoded: $0) }), let key = Self.publicKey(publicKey),
              let digest = Hex.bytes(offer.entry.sha256) else { return false }
        return key.isValidSignature(signature, for: Data(digest))
    }

    /// Whether a catalog shows `offer` as signed: it carries a signature and names its signer (an install takes a
    /// signature with no signer for none), and not one that fails against the key trusted under that name (a forged
    /// or broken one, which every install refuses). One by a signer not trusted here shows as signed.
    public static func showsSigned(_ offer: Offer, trusted: [String: String]) -> Bool {
        guard offer.entry.signature != nil, let name = offer.entry.signer else { return false }
        guard let key = trusted[name] else { return true }
        return signatureVerifies(offer, publicKey: key)
    }

    /// How an offer no trusted key signed stands: `is not signed`, `is signed by "NAME", which is not a trusted key`,
    /// or, for a key whose scope leaves the plugin out, `..., which may sign acme-* only`.
    static func untrustedText(_ offer: Offer, _ keys: TrustedKeySet = TrustedKeySet()) -> String {
        guard let name = offer.entry.signer, offer.entry.signature != nil else { return "is not signed" }
        if let only = keys.outOfScope(name, for: offer.id) {
            return "is signed by \"\(escaped(name))\", which this host trusts to sign \(TrustScope.describe(only)) only"
        }
        return "is signed by \"\(escaped(name))\", which is not a trusted key"
    }

    /// Refuses an install plan for `id` that would bring in a dependency no trusted key signed (`checks`: what
    /// `checkSigner` decided for each offer of `plan`, in order). `--allow-unsigned` is the operator's word on the
    /// package they named, not on what it pulls in unseen: such a dependency is installed on its own first, with its
    /// own confirmation. Checked from the index before anything is fetched, so a refused plan installs nothing.
    /// - Throws: `StoreError` naming the first such dependency and the two ways on.
    public static func refuseUntrustedDependencies(of id: String, plan: [Offer], checks: [SignerCheck]) throws {
        for (offer, check) in zip(plan, checks) where offer.id != id && check.offered == nil {
            // The trust command is suggested only for a name that is one plain word: an index's signer name could
            // otherwise put shell text into a line an operator copies.
            let signer = offer.entry.signature == nil ? nil : offer.entry.signer.flatMap { name in
                name.utf8.allSatisfy { b in b < 128 && (isalnum(Int32(b)) != 0 || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")) }
                    && !name.isEmpty ? name : nil
            }
            throw StoreError("\"\(offer.id)\" \(offer.entry.version), which \"\(id)\" needs, \(untrustedText(offer)); nothing installed "
                             + "(--allow-unsigned covers \"\(id)\" alone: install \(offer.id) first, with --allow-unsigned if you accept it"
                             + (signer.map { ", or trust its signer with keel trust add \($0) KEY" } ?? "") + ")")
        }
    }

    /// Whether `offer`'s signature was made by the key trusted here under its signer's name: an install takes it
    /// without `allowUnsigned`. (`showsSigned` and not this: signed by a name no key is trusted under, which an install
    /// takes only as it takes an unsigned package.)
    public static func signedByTrustedKey(_ offer: Offer, trusted: [String: String]) -> Bool {
        guard offer.entry.signature != nil, let name = offer.entry.signer, let key = trusted[name] else { return false }
        return signatureVerifies(offer, publicKey: key)
    }

    /// Whether `offer` is signed by `pinned`'s key as far as this host can verify: the key trusted under its signer's
    /// name is that key and its signature verifies. An upgrade to it then needs no `--signer`; any other offer is
    /// refused for a pinned plugin (`checkSigner`).
    public static func signedByPinnedKey(_ offer: Offer, trusted: [String: String], pinned: StateStore.PinnedSigner) -> Bool {
        guard signedByTrustedKey(offer, trusted: trusted), let name = offer.entry.signer, let key = trusted[name] else { return false }
        return sameKey(StateStore.PinnedSigner(name: name, publicKey: key), pinned)
    }

    /// How the catalog's text list marks `offer`: "" when its signature is the trusted key's, ` signed by "NAME" (not
    /// trusted here)` for a signer no key is trusted under (an install takes it only as unsigned), " unsigned"
    /// without a signature or a signer (an install takes either for none), " bad signature" when it fails against
    /// the key trusted under its signer's name.
    public static func catalogMark(_ offer: Offer, keys: TrustedKeySet) -> String {
        if let name = offer.entry.signer, offer.entry.signature != nil, let only = keys.outOfScope(name, for: offer.id) {
            return showsSigned(offer, trusted: keys.keys)
                ? " signed by \"\(escaped(name))\" (trusted here to sign \(TrustScope.describe(only)) only)" : " bad signature"
        }
        return catalogMark(offer, trusted: keys.keys(for: offer.id))
    }

    /// `catalogMark(_:keys:)` against keys already narrowed to the offer's plugin id.
    public static func catalogMark(_ offer: Offer, trusted: [String: String]) -> String {
        if signedByTrustedKey(offer, trusted: trusted) { return "" }
        if showsSigned(offer, trusted: trusted), let name = offer.entry.signer { return " signed by \"\(escaped(name))\" (not trusted here)" }
        return offer.entry.signature == nil || offer.entry.signer == nil ? " unsigned" : " bad signature"
    }

    /// True when both are the same key (compared as bytes, whatever their names).
    static func sameKey(_ a: StateStore.PinnedSigner, _ b: StateStore.PinnedSigner) -> Bool {
        guard let x = Data(base64Encoded: a.publicKey), let y = Data(base64Encoded: b.publicKey) else { return false }
        return x == y
    }
}
