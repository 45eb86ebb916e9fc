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
        let bytes: [UInt8]
        // Only this user's file: entries name the library each bundle loads, so a cache another user planted beside the
        // state (in a folder others may write) would have the host load that user's code.
        do { bytes = try SystemFile.read(path, ownedHere: true) } catch {
            if error.owner != nil { return ([:], "\(path): ignored: it \(error.description); the manifests are read again") }
            return ([:], error.code == ENOENT ? nil : "\(path): cannot be read (\(error.description)); the manifests are read again")
        }
        guard let entries = Self.decode(bytes) else {
            return ([:], "\(path): not a manifest cache of this Keel version, or damaged; the manifests are read again")
        }
        return (entries, nil)
    }

    /// Replaces the cache file with `entries`. Returns a one-line problem when it cannot be written (nothing breaks:
    /// the next start reads the manifests again).
    func save(_ entries: [String: Entry]) -> String? {
        let bytes = Self.encode(entries)
        // A hidden name beside the cache (file watchers, such as `keel dev`'s, ignore hidden files).
        let slash = path.lastIndex(of: "/").map { path.index(after: $0) } ?? path.startIndex
        let temporary = String(path[..<slash]) + "." + String(path[slash...]) + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return "\(path): cannot be written (\(String(cString: strerror(errno)))); the next start reads the manifests again" }
        // No fsync: a cache lost in a power cut is rebuilt; one cut short fails its checksum and is rebuilt.
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            done += n
        }
        close(fd)
        guard done == bytes.count, rename(temporary, path) == 0 else {
            unlink(temporary)
            return "\(path): cannot be written; the next start reads the manifests again"
        }
        return nil
    }

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
        var w = ByteWriter()
        w.bytes.append(contentsOf: magic)
        w.u64(formatVersion)
        w.string(KeelVersion.current)
        w.count(entries.count)
        for (folder, e) in entries.sorted(by: { $0.key < $1.key }) {
            w.string(folder)
            w.u64(e.stamp.device)
            w.u64(e.stamp.inode)
            for v in [e.stamp.size, e.stamp.modified, e.stamp.modifiedNanos, e.stamp.changed, e.stamp.changedNanos] { w.int(Int(v)) }
            w.bool(e.content != nil)
            if let content = e.content { w.raw(content) }
            w.raw(e.payload)
        }
        w.u64(checksum(w.bytes[...]))
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) -> [String: Entry]? {
        guard bytes.count >= magic.count + 16, Array(bytes[..<magic.count]) == magic else { return nil }
        let body = bytes[..<(bytes.count - 8)]
        let stored = bytes[(bytes.count - 8)...].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard checksum(body) == stored else { return nil }
        return body.withUnsafeBufferPointer { buffer -> [String: Entry]? in
            var r = ByteReader(UnsafeBufferPointer(rebasing: buffer[magic.count...]))
            guard r.u64() == formatVersion, r.string() == KeelVersion.current, let n = r.count() else { return nil }
            var entries: [String: Entry] = [:]
            entries.reserveCapacity(n)
            for _ in 0..<n {
                guard let folder = r.string(), let device = r.u64(), let inode = r.u64(), let size = r.int(),
                      let modified = r.int(), let modifiedNanos = r.int(), let changed = r.int(), let changedNanos = r.int(),
                      let content = r.optional({ $0.raw() }), let payload = r.rawRange() else { return nil }
                let stamp = Stamp(device: device, inode: inode, size: Int64(size), modified: Int64(modified),
                                  modifiedNanos: Int64(modifiedNanos), changed: Int64(changed), changedNanos: Int64(changedNanos))
                entries[folder] = Entry(stamp: stamp, content: content,
                                        payload: bytes[(magic.count + payload.lowerBound)..<(magic.count + payload.upperBound)])
            }
            return r.atEnd ? entries : nil
        }
    }

    /// FNV-1a, 64 bits, taken eight bytes at a time (then the rest byte by byte): catches a file cut short or
    /// damaged, not a forgery (whoever can write the state folder can write the state itself).
    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        bytes.withUnsafeBytes { buffer in
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            let words = buffer.count / 8
            for i in 0..<words {
                h = (h ^ UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))) &* 0x0000_0100_0000_01b3
            }
            for b in buffer[(words * 8)...] { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
            return h
        }
    }
}
