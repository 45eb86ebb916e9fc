// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation

/// SHA-256 of files, as lowercase hex: what load history, probe results and signature records key on.
public enum FileDigest {
    /// The file's SHA-256, or nil when it cannot be read.
    public static func sha256(atPath path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return hex(SHA256.hash(data: data))
    }

    /// Lowercase hex, without per-byte formatting (this runs once per plugin at start-up).
    public static func hex(_ digest: SHA256.Digest) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in digest {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
