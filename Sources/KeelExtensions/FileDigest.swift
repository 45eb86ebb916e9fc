// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import KeelState
import KeelSystem

/// SHA-256 of files, as lowercase hex: what load history, probe results and signature records key on.
public enum FileDigest {
    /// The file's SHA-256, or nil when it cannot be read or is not a regular file (`SystemFile.read`: a FIFO in a
    /// bundle is refused at once, not waited on for ever).
    public static func sha256(atPath path: String) -> String? {
        guard let bytes = try? SystemFile.read(path) else { return nil }
        return hex(SHA256.hash(data: bytes))
    }

    /// Lowercase hex (`Hex.lowercase`).
    public static func hex(_ digest: SHA256.Digest) -> String { Hex.lowercase(digest) }
}
