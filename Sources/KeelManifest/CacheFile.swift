// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelSystem

/// The file layer the caches kept beside the state share (`ManifestCache`, `LibrarySums`): each is one file of this
/// user's, replaced whole and atomically, ending in a checksum of everything before it. A cache file is only ever an
/// optimisation: one that is missing, damaged or another user's is ignored and written anew.
///
/// Thread-safe (stateless; each call works on its own files).
enum CacheFile {
    /// The largest cache file read (a thousand plugins' manifests take about 400 KB).
    static let limit = 64 << 20

    /// The file's bytes, or a one-line reason (`what` names what the cache holds) when there is no usable file; a
    /// missing file has no reason (a first start is not a problem). Only this user's file is read: a cache another
    /// user planted beside the state (in a folder others may write) would steer what the host loads.
    static func read(_ path: String, what: String) -> (bytes: [UInt8]?, problem: String?) {
        // At most `limit` bytes: a larger file is cut there, fails its seal and is ignored like a damaged one.
        do { return (try SystemFile.read(path, limit: limit, ownedHere: true), nil) } catch {
            if error.owner != nil { return (nil, "\(path): ignored: it \(error.description); the \(what) are read again") }
            return (nil, error.code == ENOENT ? nil : "\(path): cannot be read (\(error.description)); the \(what) are read again")
        }
    }

    /// Replaces the file at `path` with `bytes` (a fresh file renamed over it, so that two processes sharing a state
    /// folder each leave a complete file). Returns a one-line problem when it cannot be written.
    static func replace(_ path: String, with bytes: [UInt8], what: String) -> String? {
        // A hidden name beside the cache (file watchers, such as `keel dev`'s, ignore hidden files).
        let slash = path.lastIndex(of: "/").map { path.index(after: $0) } ?? path.startIndex
        let temporary = String(path[..<slash]) + "." + String(path[slash...]) + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return "\(path): cannot be written (\(String(cString: strerror(errno)))); the next start reads the \(what) again" }
        // No fsync: a cache lost in a power cut is rebuilt; one cut short fails its checksum and is rebuilt.
        let written = bytes.withUnsafeBytes { SystemFile.writeAll(fd, $0) }
        close(fd)
        guard written, rename(temporary, path) == 0 else {
            unlink(temporary)
            return "\(path): cannot be written; the next start reads the \(what) again"
        }
        return nil
    }

    /// The file's bytes for `entries` by key: `magic`, the format `version`, this Keel's version, then each key and
    /// what `write` writes of its entry (in the keys' order), sealed.
    static func encode<Entry>(_ entries: [String: Entry], magic: [UInt8], version: UInt64,
                              _ write: (inout ByteWriter, Entry) -> Void) -> [UInt8] {
        var w = ByteWriter()
        w.bytes.append(contentsOf: magic)
        w.u64(version)
        w.string(KeelVersion.current)
        w.count(entries.count)
        for (key, entry) in entries.sorted(by: { $0.key < $1.key }) {
            w.string(key)
            write(&w, entry)
        }
        return sealed(w.bytes)
    }

    /// The entries `encode` wrote, each read by `read` (whose reader's offsets count from the end of `magic`); nil
    /// when the file is damaged, of another format or Keel version, or `read` refuses an entry.
    static func decode<Entry>(_ bytes: [UInt8], magic: [UInt8], version: UInt64,
                              _ read: (inout ByteReader) -> Entry?) -> [String: Entry]? {
        guard let body = unsealed(bytes, magic: magic) else { return nil }
        return body.withUnsafeBufferPointer { buffer -> [String: Entry]? in
            var r = ByteReader(UnsafeBufferPointer(rebasing: buffer[magic.count...]))
            guard r.u64() == version, r.string() == KeelVersion.current, let n = r.count() else { return nil }
            var entries: [String: Entry] = [:]
            entries.reserveCapacity(n)
            for _ in 0..<n {
                guard let key = r.string(), let entry = read(&r) else { return nil }
                entries[key] = entry
            }
            return r.atEnd ? entries : nil
        }
    }

    /// `body` followed by its checksum: the bytes to write.
    static func sealed(_ body: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.bytes = body
        w.u64(checksum(body[...]))
        return w.bytes
    }

    /// The bytes before the checksum when they start with `magic` and the checksum matches; nil otherwise.
    static func unsealed(_ bytes: [UInt8], magic: [UInt8]) -> ArraySlice<UInt8>? {
        guard bytes.count >= magic.count + 16, bytes[..<magic.count].elementsEqual(magic) else { return nil }
        let body = bytes[..<(bytes.count - 8)]
        let stored = bytes[(bytes.count - 8)...].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return checksum(body) == stored ? body : nil
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

extension ByteWriter {
    mutating func stamp(_ s: FileStamp) {
        u64(s.device)
        u64(s.inode)
        for v in [s.size, s.modified, s.modifiedNanos, s.changed, s.changedNanos] { int(Int(v)) }
    }
}

extension ByteReader {
    mutating func stamp() -> FileStamp? {
        guard let device = u64(), let inode = u64(), let size = int(), let modified = int(), let modifiedNanos = int(),
              let changed = int(), let changedNanos = int() else { return nil }
        return FileStamp(device: device, inode: inode, size: Int64(size), modified: Int64(modified), modifiedNanos: Int64(modifiedNanos),
                         changed: Int64(changed), changedNanos: Int64(changedNanos))
    }
}
