// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import KeelState

/// SHA-256 of files, as lowercase hex: what load history, probe results and signature records key on.
public enum FileDigest {
    /// The file's SHA-256, or nil when it cannot be read.
    public static func sha256(atPath path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return hex(SHA256.hash(data: data))
    }

    /// Lowercase hex (`Hex.lowercase`).
    public static func hex(_ digest: SHA256.Digest) -> String { Hex.lowercase(digest) }
}
