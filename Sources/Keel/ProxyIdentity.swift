// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import KeelLoader
import KeelState

/// The identity the host forwards to a proxied app, and the signature that lets the app trust it.
///
/// Headers: `X-Keel-User` (principal id, empty when anonymous), `X-Keel-Tenant`, `X-Keel-Roles` (comma-separated),
/// `X-Keel-Timestamp` (Unix seconds) and `X-Keel-Signature`: lowercase hex HMAC-SHA256, keyed with the plugin's proxy
/// key (`keel plugins proxy-key ID`), over `timestamp \n METHOD \n path-with-query \n user \n tenant \n roles` as sent
/// to the upstream. Any `X-Keel-*` header the client sent is dropped first. An app checks the signature and that the
/// timestamp is recent. Stateless.
public enum ProxyIdentity {
    /// The plugin's proxy key (hex): HMAC-SHA256 of the plugin id under the host's secret.
    public static func key(for pluginID: String, secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data(pluginID.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return hex(mac)
    }

    /// The headers to send with a request `method` `target` (path and query as sent upstream) for `principal`.
    public static func headers(_ principal: Principal, method: String, target: String, key: String,
                               now: Int = Int(Date().timeIntervalSince1970)) -> [(String, String)] {
        headers(principal, method: method, target: target, signer: Signer(key: key), now: now)
    }

    /// `headers(_:method:target:key:now:)` with the key made ready once (`Signer`): the same headers and signature.
    public static func headers(_ principal: Principal, method: String, target: String, signer: Signer,
                               now: Int = Int(Date().timeIntervalSince1970)) -> [(String, String)] {
        let roles = principal.roles.joined(separator: ",")
        let message = "\(now)\n\(method)\n\(target)\n\(principal.id)\n\(principal.tenant)\n\(roles)"
        return [("x-keel-user", principal.id), ("x-keel-tenant", principal.tenant), ("x-keel-roles", roles),
                ("x-keel-timestamp", "\(now)"), ("x-keel-signature", signer.sign(message))]
    }

    /// A proxy key ready to sign with: the HMAC's key blocks are hashed once here, not once per request (a copy of
    /// the keyed state signs each message). Immutable, thread-safe.
    public struct Signer: Sendable {
        private let keyed: HMAC<SHA256>

        public init(key: String) { keyed = HMAC<SHA256>(key: SymmetricKey(data: Data(key.utf8))) }

        /// Lowercase hex HMAC-SHA256 of `message` (UTF-8) under the key.
        public func sign(_ message: String) -> String {
            var mac = keyed
            var message = message
            message.withUTF8 { mac.update(data: UnsafeRawBufferPointer($0)) }
            return hex(mac.finalize())
        }
    }

    static func hex<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String { Hex.lowercase(bytes) }
}
