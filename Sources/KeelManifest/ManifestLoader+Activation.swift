// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Yams

/// `activation:`, `idle-timeout:` and `isolation:`. Same rules as the rest of `NodeReader`: errors name the file, the line and the key.
extension NodeReader {
    /// Reads `activation: eager|lazy` and `idle-timeout: 10m` into `manifest` (after its capabilities are read).
    /// A lazy plugin must have a library, must not decide other plugins' requests (authenticate, authorize: while it
    /// is idle its hooks would be missing from the chain) and serves only under `/ext/<id>/` (no foreign prefix).
    func readActivation(_ fields: [String: Node], into manifest: inout Manifest) throws(ManifestError) {
        if let text = try optionalString(fields, "isolation") {
            guard let mode = Isolation(rawValue: text) else {
                throw fail(fields["isolation"], "isolation", "expected in-process or process, found \"\(text)\"")
            }
            manifest.isolation = mode
        }
        if let text = try optionalString(fields, "activation") {
            guard let mode = Activation(rawValue: text) else {
                throw fail(fields["activation"], "activation", "expected eager or lazy, found \"\(text)\"")
            }
            manifest.activation = mode
        }
        if let text = try optionalString(fields, "idle-timeout") {
            guard let seconds = Self.duration(text), seconds > 0, seconds <= 7 * 86_400 else {
                throw fail(fields["idle-timeout"], "idle-timeout",
                           "expected a duration such as 30s, 10m or 2h (at most 7 days), found \"\(text)\"")
            }
            guard manifest.activation == .lazy else {
                throw fail(fields["idle-timeout"], "idle-timeout", "applies only to a plugin with activation: lazy")
            }
            manifest.idleTimeout = seconds
        }
        guard manifest.activation == .lazy else { return }
        let node = fields["activation"]
        if manifest.library == nil {
            throw fail(node, "activation", "lazy needs a library: a manifest-only bundle loads no code anyway")
        }
        if let hook = manifest.capabilities.intersection([.authenticate, .authorize]).sorted().first {
            throw fail(node, "activation", "a lazy plugin cannot have capability \(hook.rawValue): its hooks decide every request, so they must be loaded at start")
        }
        if let prefix = manifest.routePrefixes.first {
            throw fail(node, "activation", "a lazy plugin serves only under /ext/\(manifest.id)/, not route-prefix:\(prefix)")
        }
    }

    /// Seconds in `text`: a number followed by ms, s, m or h (a bare number is seconds); nil when malformed.
    static func duration(_ text: String) -> Double? {
        // "ms" before "s": "5ms" is five milliseconds, not a malformed "5m" followed by "s".
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard let value = Double(number), value.isFinite, !number.hasPrefix("+"), !number.hasPrefix("-") else { return nil }
            return value * scale
        }
        guard let value = Double(text), value.isFinite, !text.hasPrefix("+"), !text.hasPrefix("-") else { return nil }
        return value
    }
}
