// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelSystem

/// The SHA-256 of plugin libraries kept on disk between starts, so that a start with many installed plugins does not
/// hash every library again.
///
/// A checksum names a build everywhere in Keel (the load history, quarantine, the probe's record, the signature
/// status, a reload's "has it changed"), so it has to describe the bytes that are loaded. One file (by default
/// `<state file>.libraries`, beside the state) holds, for each library path, the identity of the file (`FileStamp`:
/// device, inode, size, modification and change time to the nanosecond) when it was read and hashed, taken only when
/// the file had settled before the read (`FileStamp.isSettled`): while a `stat` of the file still gives that identity,
/// its bytes are those hashed, since any write changes the change time, which no program can set back, and a file
/// that settled cannot show the same times after a later write. The identity is this machine's (device and inode
/// numbers): the file stays beside the state even when the state is a shared PostgreSQL database.
///
/// The kernel records and uses entries only for libraries it loads where they lie (`GenerationStore`'s in-place
/// loads): files of this user's that no one may write, opened beneath the plugin folder without a link or a mount
/// point, hashed through the descriptor the loader maps. A file someone else may write can change its bytes without
/// changing its identity (stores through a shared writable mapping reach the times only at write-back, on tmpfs
/// never), so a plugins/ folder library is hashed at every load. An entry recorded later than the clock now reads
/// (the clock was set back) is not used: a rewrite in the same second of such a clock could repeat a stamp on a file
/// system with coarse times.
///
/// Only an optimisation, like `ManifestCache`: a missing, damaged or foreign file (another user's, another Keel
/// version's) is ignored and written anew; it is safe to delete at any time.
///
/// Thread-safe (plain data; each call works on its own files).
public struct LibrarySums: Sendable {
    /// The cache file.
    public let path: String

    static let formatVersion: UInt64 = 1
    static let magic = Array("KEELSUMS".utf8)

    public init(path: String) { self.path = path }

    /// A library's checksum (SHA-256, hex) and the identity of the file it was computed for.
    public struct Entry: Sendable, Equatable {
        public var stamp: FileStamp
        public var sum: String
        /// When the checksum was computed (seconds since the epoch).
        public var recorded: Int64

        public init(stamp: FileStamp, sum: String, recorded: Int64 = Int64(FileStamp.now())) {
            (self.stamp, self.sum, self.recorded) = (stamp, sum, recorded)
        }

        /// The checksum, when this entry describes a file with identity `stamp` now.
        public func sum(for stamp: FileStamp?) -> String? {
            guard let stamp, stamp == self.stamp, Double(recorded) <= FileStamp.now() else { return nil }
            return sum
        }
    }

    /// The entries of the cache file by library path; empty, with a one-line reason, when there is no usable file (a
    /// missing file has no reason).
    public func load() -> (entries: [String: Entry], problem: String?) {
        let (read, problem) = CacheFile.read(path, what: "libraries' checksums")
        guard let bytes = read else { return ([:], problem) }
        guard let entries = Self.decode(bytes) else {
            return ([:], "\(path): not a checksum cache of this Keel version, or damaged; the libraries are hashed again")
        }
        return (entries, nil)
    }

    /// Replaces the cache file with `entries`; a one-line problem when it cannot be written (the next start hashes
    /// the libraries again).
    public func save(_ entries: [String: Entry]) -> String? {
        CacheFile.replace(path, with: Self.encode(entries), what: "libraries' checksums")
    }

    // MARK: file layout
    // magic, format version, Keel version, then per entry: path, stamp (7 numbers), checksum, time recorded; last,
    // `CacheFile`'s seal.

    static func encode(_ entries: [String: Entry]) -> [UInt8] {
        CacheFile.encode(entries, magic: magic, version: formatVersion) { w, e in
            w.stamp(e.stamp)
            w.string(e.sum)
            w.int(Int(e.recorded))
        }
    }

    static func decode(_ bytes: [UInt8]) -> [String: Entry]? {
        CacheFile.decode(bytes, magic: magic, version: formatVersion) { r in
            // A SHA-256 in hex, nothing else: the value is handed on as a build's identity.
            guard let stamp = r.stamp(), let sum = r.string(), sum.utf8.count == 64,
                  sum.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }), let recorded = r.int() else { return nil }
            return Entry(stamp: stamp, sum: sum, recorded: Int64(recorded))
        }
    }
}
