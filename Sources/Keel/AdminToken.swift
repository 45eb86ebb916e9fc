// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import KeelState
import KeelSystem
import Synchronization

/// The built-in admin credential. Only its SHA-256 is stored (settings key `admin.token.sha256`); the token itself
/// is shown once, when it is made. `KEEL_ADMIN_TOKEN` in the environment supplies the token instead, and then
/// nothing is stored, until a reset: `keel token reset` revokes whatever token is in force, this one too, and the
/// token it prints is the one from then on. The digest is cached in memory; `refresh()` re-reads it (after another
/// process reset it). Thread-safe.
public final class AdminToken: Sendable {
    public static let environmentVariable = "KEEL_ADMIN_TOKEN"
    let state: StateStore
    /// The token from the environment, when set: it overrides the stored hash while that hash is the one stored when
    /// this process started (`storedAtStart`). Set once more by `adoptEnvironment`, before a server starts.
    var fromEnvironment: String? { environmentToken.withLock { $0 } }
    private let environmentToken: Mutex<String?>
    /// The stored digest when this process read it first; a different one later means a reset, which revokes the
    /// environment's token.
    private let storedAtStart: String??
    private let cached = Mutex<String?>(nil)

    public init(state: StateStore, environment: [String: String] = HeldSecrets.environment) {
        self.state = state
        environmentToken = Mutex(environment[Self.environmentVariable].flatMap { $0.isEmpty ? nil : $0 })
        storedAtStart = try? state.adminTokenDigest()
        refresh()
    }

    /// Takes `$KEEL_ADMIN_TOKEN` as it is now when no token is in force (a state in memory stores none, and the
    /// variable may have been set after this object was made: an embedder sets it before `keel_serve`). The one
    /// object goes on being refreshed by whoever refreshed it, so a later reset still revokes it.
    public func adoptEnvironment(_ environment: [String: String] = HeldSecrets.environment) {
        guard digest == nil, let token = environment[Self.environmentVariable], !token.isEmpty else { return }
        environmentToken.withLock { $0 = token }
        refresh()
    }

    /// Re-reads the stored digest. A store that cannot be read keeps the token in force.
    public func refresh() {
        guard let stored = try? state.adminTokenDigest() else {
            if cached.withLock({ $0 }) == nil, let fromEnvironment { cached.withLock { $0 = Self.hash(fromEnvironment) } }
            return
        }
        let digest = fromEnvironment.flatMap { token in stored == storedAtStart ?? stored ? Self.hash(token) : nil } ?? stored
        cached.withLock { $0 = digest }
    }

    /// Makes a token on first use. Returns the new token (to print once), or nil when one already exists or the
    /// environment supplies it.
    public func ensure() throws(StateError) -> String? {
        guard fromEnvironment == nil, try state.adminTokenDigest() == nil else { return nil }
        // Kept only when no other process stored one meanwhile (two hosts of a shared state starting at once): a
        // token shown that another replaced at once would never work.
        let token = Self.newToken()
        let kept = try state.setAdminTokenDigestIfNone(Self.hash(token))
        refresh()
        return kept ? token : nil
    }

    /// Replaces the stored token with a new random one and returns it. The old one stops working at once.
    public func reset() throws(StateError) -> String {
        let token = Self.newToken()
        try state.setAdminTokenDigest(Self.hash(token))
        refresh()
        return token
    }

    /// A new random token: `keel_` and 64 hex digits.
    static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return "keel_" + Hex.lowercase(bytes)
    }

    /// The digest of the token in force (nil: none yet), as cached: what a credential issued under the token is tied to.
    public var digest: String? { cached.withLock { $0 } }

    /// True when `candidate` is the admin token. Compares digests in constant time.
    public func verify(_ candidate: String) -> Bool {
        guard let expected = cached.withLock({ $0 }) else { return false }
        // The candidate's digest as hex, compared byte by byte with the cached one without an early exit; no string
        // or array is made for it (every admin call and every request that presents the token pays this).
        var candidate = candidate
        let digest = candidate.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        var expectedUTF8 = expected
        return expectedUTF8.withUTF8 { hex in
            guard hex.count == 2 * SHA256.byteCount else { return false }
            // The candidate's own hex digits (their timing tells nothing of the expected digest).
            func digit(_ d: UInt8) -> UInt8 { d < 10 ? 0x30 + d : 0x57 + d }
            var difference: UInt8 = 0
            var i = 0
            for byte in digest {
                difference |= hex[i] ^ digit(byte >> 4)
                difference |= hex[i + 1] ^ digit(byte & 0x0f)
                i += 2
            }
            return difference == 0
        }
    }

    static func hash(_ token: String) -> String {
        Hex.lowercase(SHA256.hash(data: Data(token.utf8)))
    }
}
