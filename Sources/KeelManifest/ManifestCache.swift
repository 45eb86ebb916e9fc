// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelSystem

/// Parsed manifests kept on disk between starts, so that a start with many installed plugins does not parse every
/// `plugin.yaml` again (`BundleScanner.scan(_:bundleFolders:cache:)`).
///
/// One file (by default `<state file>.manifests`, beside the state) holds, for each bundle folder, the identity of its
/// `plugin.yaml` when it was read — device, inode, size, modification and change time to the nanosecond — and the
/// manifest and warnings parsed from it (`ManifestCodec`). An entry is used only while one `stat` of the file still
/// gives the same identity; any write to the file changes its change time, which no program can set back. A file
/// changed within `racyMargin` seconds of being read could still show the same times after a second write in the
/// same clock tick (timestamps are as coarse as the kernel's tick, or a second or two on some file systems): such an
/// entry also keeps the file's bytes, and is used only when the file still has exactly those bytes.
///
/// The file is only ever an optimisation: one that is missing, unreadable, corrupt (checked by a checksum over the
/// whole file), of another format version or written by another Keel version is ignored (`load` says why, in one
/// line) and written anew; it is safe to delete at any time. It is replaced whole and atomically (a fresh file
/// renamed over it), so two processes sharing a state folder each leave a complete file, and each entry is checked
/// against the disk on use whichever process wrote it.
///
/// Thread-safe (plain data; each call works on its own files).
public struct ManifestCache: Sendable {
    /// The cache file.
    public let path: String
    /// Seconds after a change within which an entry is also checked by content (see the type's comment).
    var racyMargin: Double = 2

    /// Bumped whenever the layout of the file or of `ManifestCodec`'s bytes changes.
    static let formatVersion: UInt64 = 3
    static let magic = Array("KEELMANI".utf8)

    public init(path: String) { self.path = path }

    /// The identity of a file as `stat` gives it.
    typealias Stamp = FileStamp

    /// One bundle's manifest as it was read.
    struct Entry: Sendable {
        var stamp: Stamp
        /// The file's bytes when it was read within `racyMargin` of its last change; nil otherwise.
        var content: [UInt8]?
        /// `ManifestCodec`'s bytes of the manifest and its warnings: a slice of the cache file as it was read (no
        /// copy per entry; a thousand of them are read at every start).
        var payload: ArraySlice<UInt8>

        init(stamp: Stamp, content: [UInt8]?, payload: ArraySlice<UInt8>) {
            (self.stamp, self.content, self.payload) = (stamp, content, payload)
        }

        init(stamp: Stamp, content: [UInt8]?, payload: [UInt8]) {
            self.init(stamp: stamp, content: content, payload: payload[...])
        }
    }

    /// The entries of the cache file by bundle folder; empty, with the reason, when there is no usable file. A
    /// missing file has no reason (a first start is not a problem).
    func load() -> (entries: [String: Entry], problem: String?) {
        let (read, problem) = CacheFile.read(path, what: "manifests")
        guard let bytes = read else { return ([:], problem) }
        guard let entries = Self.decode(bytes) else {
            return ([:], "\(path): not a manifest cache of this Keel version, or damaged; the manifests are read again")
        }
        return (entries, nil)
    }

    /// Replaces the cache file with `entries`. Returns a one-line problem when it cannot be written (nothing breaks:
    /// the next start reads the manifests again).
    func save(_ entries: [String: Entry]) -> String? { CacheFile.replace(path, with: Self.encode(entries), what: "manifests") }

    /// An entry for a manifest just parsed from `bytes`, read from a file whose identity before the read was
    /// `stamp`; nil when the manifest cannot be cached exactly.
    func entry(_ manifest: Manifest, warnings: [ManifestWarning], stamp: Stamp, bytes: ArraySlice<UInt8>) -> Entry? {
        guard let payload = ManifestCodec.encode(manifest, warnings: warnings) else { return nil }
        // A change after the stamp gives a newer stamp or other bytes than these: either way the entry misses.
        return Entry(stamp: stamp, content: isRacy(stamp) ? Array(bytes) : nil, payload: payload)
    }

    /// True when a file with this stamp changed too recently for its times alone to tell a later change.
    func isRacy(_ stamp: Stamp) -> Bool { !stamp.isSettled(readAt: FileStamp.now(), margin: racyMargin) }

    /// The cached manifest for `manifestPath` with identity `stamp`, if `entry` still describes it. `refresh` is set
    /// when the entry is good but should be written again (it no longer needs its content kept).
    func lookup(_ entry: Entry, stamp: Stamp, manifestPath: String, refresh: inout Bool) -> (Manifest, [ManifestWarning])? {
        guard entry.stamp == stamp else { return nil }
        if let content = entry.content {
            guard let bytes = try? Self.readFile(manifestPath), bytes == content else { return nil }
            refresh = !isRacy(stamp)
        }
        guard let decoded = ManifestCodec.decode(entry.payload) else { return nil }
        return (decoded.manifest, decoded.warnings)
    }

    /// The whole file at `path` (`SystemFile.read`).
    static func readFile(_ path: String) throws(SystemFile.ReadError) -> [UInt8] { try SystemFile.read(path) }

    // MARK: file layout
    // magic, format version, Keel version, then per entry: folder, stamp (7 numbers), optional content, payload;
    // last, an FNV-1a checksum of everything before it.

    static func encode(_ entries: [String: Entry]) -> [UInt8] {
        CacheFile.encode(entries, magic: magic, version: formatVersion) { w, e in
            w.stamp(e.stamp)
            w.bool(e.content != nil)
            if let content = e.content { w.raw(content) }
            w.raw(e.payload)
        }
    }

    static func decode(_ bytes: [UInt8]) -> [String: Entry]? {
        CacheFile.decode(bytes, magic: magic, version: formatVersion) { r in
            guard let stamp = r.stamp(), let content = r.optional({ $0.raw() }), let payload = r.rawRange() else { return nil }
            // A slice of the file as read: no copy per entry.
            return Entry(stamp: stamp, content: content, payload: bytes[(magic.count + payload.lowerBound)..<(magic.count + payload.upperBound)])
        }
    }
}
