// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelManifest
import KeelSystem
#if canImport(Glibc)
import Glibc
#endif

/// A packed plugin bundle: a ustar archive of the bundle folder's regular files (`<id>-<version>.keelpkg`).
///
/// Writing takes the files of one folder. Reading is defensive and streams: the archive is read in chunks of
/// `chunkSize` bytes, entry by entry, and each file is written out as it is read, so memory never holds more than a
/// chunk whatever the archive's size. Only regular files and folders are accepted; no absolute paths, no `..`, no
/// links or devices, no control or invisible formatting characters in names (C1 and bidirectional overrides
/// included), names in UTF-8, and no path twice (paths are normalised first: `./a`, `a` and
/// `a/` are the same entry, and a file cannot also be a folder). At most `Limits.maxFiles` entries and
/// `Limits.maxBytes` unpacked, so that an archive can neither escape its folder, nor fill the disk, nor show one
/// `plugin.yaml` to the index and install another. Every refusal is one line naming the archive and the entry.
/// Stateless and thread-safe.
public enum PackageArchive {
    public static let fileExtension = "keelpkg"
    /// Bytes read or written at a time.
    public static let chunkSize = 64 << 10

    /// Writes all of `chunk` to `fd`, retrying short writes and EINTR. False on an error (`errno` says which).
    static func writeAll(_ fd: Int32, _ chunk: Data) -> Bool {
        chunk.withUnsafeBytes { SystemFile.writeAll(fd, $0) }
    }

    /// How big an archive may be. `standard` is the documented limit; tests use smaller ones.
    public struct Limits: Sendable {
        /// Entries (files and folders).
        public var maxFiles: Int
        /// Bytes of all files, unpacked.
        public var maxBytes: Int
        /// Bytes of the archive itself (a download stops as soon as it passes this).
        public var maxArchiveBytes: Int

        public init(maxFiles: Int, maxBytes: Int, maxArchiveBytes: Int) {
            self.maxFiles = maxFiles
            self.maxBytes = maxBytes
            self.maxArchiveBytes = maxArchiveBytes
        }

        /// 1000 entries, 256 MiB of files, 258 MiB of archive (files plus headers).
        public static let standard = Limits(maxFiles: 1000, maxBytes: 256 << 20, maxArchiveBytes: (256 << 20) + (2 << 20))
    }

    public static var maxFiles: Int { Limits.standard.maxFiles }
    public static var maxBytes: Int { Limits.standard.maxBytes }

    public struct ArchiveError: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
        /// `reason` may quote an entry's name: escaped (`Printable`).
        init(reason: String) { self.reason = Printable.escapingControls(reason) }
    }

    // MARK: writing

    /// Whether `path` (relative to a bundle folder) is something the bundle needs at run time: its manifest, its
    /// configuration schema, its library (`library`, the manifest's path) or a file under `assets/`. Sources, build
    /// files and notes beside them are not.
    public static func isBundleFile(_ path: String, library: String?) -> Bool {
        path == ManifestLoader.fileName || path == PluginConfig.schemaFile || path == library || path.hasPrefix("assets/")
    }

    /// The files of the bundle at `folder` that it needs (`isBundleFile`), packed, and the paths left out. `library`
    /// is nil for a manifest-only bundle.
    /// - Throws: `ArchiveError` naming the file and the reason; also when the library is not in the folder.
    public static func packBundle(folder: String, library: String?) throws -> (archive: Data, leftOut: [String]) {
        var isDirectory: ObjCBool = false
        if let library {
            guard FileManager.default.fileExists(atPath: folder + "/" + library, isDirectory: &isDirectory) else {
                throw ArchiveError(reason: "\(folder)/\(library): no such file (the library plugin.yaml names; build it first)")
            }
            guard !isDirectory.boolValue else {
                throw ArchiveError(reason: "\(folder)/\(library): is a folder, not the library plugin.yaml names")
            }
        }
        var leftOut: [String] = []
        let archive = try pack(folder: folder) { path in
            if isBundleFile(path, library: library) { return true }
            leftOut.append(path)
            return false
        }
        return (archive, leftOut.sorted())
    }

    /// The regular files under `folder` (relative paths, sorted) for which `keep` is true, packed. Hidden files and
    /// folders are never packed.
    public static func pack(folder: String, keep: (String) -> Bool = { _ in true }) throws -> Data {
        let fm = FileManager.default
        guard let walker = fm.enumerator(atPath: folder) else { throw ArchiveError(reason: "\(folder): cannot be read") }
        var names: [String] = []
        while let name = walker.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let path = folder + "/" + name
            guard fm.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            let attributes = try fm.attributesOfItem(atPath: path)
            guard attributes[.type] as? FileAttributeType == .typeRegular else {
                throw ArchiveError(reason: "\(path): not a regular file (links and devices are not packed)")
            }
            if !name.split(separator: "/").contains(where: { $0.hasPrefix(".") }), keep(name) { names.append(name) }
        }
        var out = Data()
        for name in names.sorted() {
            guard name.utf8.count < 100 else { throw ArchiveError(reason: "\(name): path longer than 99 bytes") }
            let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name))
            out.append(header(name: name, size: data.count))
            out.append(data)
            out.append(Data(count: (512 - data.count % 512) % 512))
        }
        out.append(Data(count: 1024))
        return out
    }

    static func header(name: String, size: Int) -> Data {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ offset: Int) { for (i, b) in s.utf8.enumerated() { h[offset + i] = b } }
        put(name, 0)
        put("0000644\0", 100)
        put("0000000\0", 108)
        put("0000000\0", 116)
        put(String(format: "%011o\0", size), 124)
        put("00000000000\0", 136)
        put("        ", 148)
        h[156] = UInt8(ascii: "0")
        put("ustar\0", 257)
        put("00", 263)
        let sum = h.reduce(0) { $0 + Int($1) }
        put(String(format: "%06o\0 ", sum), 148)
        return Data(h)
    }

    /// A ustar number field: octal digits, then NUL or spaces to its end (at least one digit, no leading space);
    /// nil for anything else.
    static func octal(_ field: ArraySlice<UInt8>) -> Int? {
        let digits = field.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") }
        guard !digits.isEmpty, digits.count <= 21, field.dropFirst(digits.count).allSatisfy({ $0 == 0 || $0 == 32 }) else { return nil }
        return digits.reduce(0) { $0 * 8 + Int($1 - UInt8(ascii: "0")) }
    }

    // MARK: reading

    /// The files in the in-memory `archive` as (normalised relative path, contents), after every check.
    /// - Throws: `ArchiveError` naming `name`, the entry and the reason.
    public static func entries(_ archive: Data, name: String = "archive", limits: Limits = .standard) throws -> [(path: String, data: Data)] {
        var source = DataSource(data: archive)
        return try collect(&source, name: name, limits: limits) { _ in true }
    }

    /// The contents of `plugin.yaml` in the archive file at `path`, after checking every entry (streamed).
    /// - Throws: `ArchiveError` naming the archive, the entry and the reason; also when there is no `plugin.yaml`.
    public static func manifestData(file path: String, manifestName: String, limits: Limits = .standard) throws -> Data {
        var source = try FileSource(path: path)
        defer { source.close() }
        guard let data = try collect(&source, name: path, limits: limits, keep: { $0 == manifestName }).first?.data else {
            throw ArchiveError(reason: "\(path): no \(manifestName) inside")
        }
        return data
    }

    /// The mode of every file an install unpacks: readable, and writable by no one, so that no one but the host's
    /// user (who would have to change the mode first) or root can change an installed file in place. The loader maps
    /// such a library where it lies, without a private copy (`GenerationStore`); folders stay writable by the host's
    /// user, so that an uninstall or upgrade can remove them.
    public static let installedFileMode: mode_t = 0o444

    /// Unpacks the archive file at `path` into the new folder `folder` (which must not exist), entry by entry and
    /// chunk by chunk, every file read-only (`installedFileMode`). `name` names the archive in errors (its URL). On
    /// error the caller removes `folder`.
    /// - Throws: `ArchiveError` naming the archive, the entry and the reason.
    public static func unpack(file path: String, name: String, into folder: String, limits: Limits = .standard) throws {
        var source = try FileSource(path: path, shownAs: name)
        defer { source.close() }
        guard mkdir(folder, 0o755) == 0 else { throw ArchiveError(reason: "\(folder): cannot be created: \(String(cString: strerror(errno)))") }
        try walk(&source, name: name, limits: limits) { entry, isFile in
            let target = folder + "/" + entry
            try makeParents(of: entry, in: folder, archive: name)
            guard isFile else {
                guard mkdir(target, 0o755) == 0 || errno == EEXIST else { throw ArchiveError(reason: "\(name): entry \"\(entry)\": cannot be created: \(String(cString: strerror(errno)))") }
                return nil
            }
            let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, installedFileMode)
            guard fd >= 0 else { throw ArchiveError(reason: "\(name): entry \"\(entry)\": cannot be written: \(String(cString: strerror(errno)))") }
            return FileSink(fd: fd, archive: name, entry: entry)
        }
    }

    static func makeParents(of entry: String, in folder: String, archive: String) throws {
        var path = folder
        // By bytes, as `walk` split the entry (see there).
        for part in entry.utf8.split(separator: UInt8(ascii: "/")).dropLast() {
            path += "/" + String(decoding: part, as: UTF8.self)
            guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
                throw ArchiveError(reason: "\(archive): entry \"\(entry)\": cannot be created: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Collects the files whose normalised path passes `keep` in memory.
    static func collect(_ source: inout some ByteSource, name: String, limits: Limits, keep: (String) -> Bool) throws -> [(path: String, data: Data)] {
        let files = FileList()
        try walk(&source, name: name, limits: limits) { path, isFile in
            guard isFile, keep(path) else { return nil }
            return MemorySink(path: path, into: files)
        }
        return files.items
    }

    /// A place a file's contents go, a chunk at a time.
    protocol Sink {
        func write(_ chunk: Data) throws
        func close() throws
    }

    final class FileList { var items: [(path: String, data: Data)] = [] }

    final class MemorySink: Sink {
        let path: String, list: FileList
        var data = Data()
        init(path: String, into list: FileList) { self.path = path; self.list = list }
        func write(_ chunk: Data) throws { data.append(chunk) }
        func close() throws { list.items.append((path, data)) }
    }

    final class FileSink: Sink {
        let fd: Int32, archive: String, entry: String
        init(fd: Int32, archive: String, entry: String) { self.fd = fd; self.archive = archive; self.entry = entry }
        func write(_ chunk: Data) throws {
            guard PackageArchive.writeAll(fd, chunk) else { throw ArchiveError(reason: "\(archive): entry \"\(entry)\": cannot be written: \(String(cString: strerror(errno)))") }
        }
        private var closed = false
        func close() throws { if !closed { closed = true; Glibc.close(fd) } }
        deinit { if !closed { Glibc.close(fd) } }
    }

    /// Walks the entries in order with every check. `open(path, isFile)` is called once per entry with the normalised
    /// path; for a file it returns where the contents go (nil: skip them).
    static func walk(_ source: inout some ByteSource, name: String, limits: Limits, open: (String, Bool) throws -> (any Sink)?) throws {
        var files = Set<String>(), folders = Set<String>(), listedFolders = Set<String>(), entries = 0, total = 0
        func fail(_ raw: String, _ reason: String) -> ArchiveError { ArchiveError(reason: "\(name): entry \"\(raw)\": \(reason)") }
        while true {
            let block = [UInt8](try source.read(512))
            guard block.count == 512 else { throw ArchiveError(reason: "\(name): truncated archive (no end marker)") }
            if block.allSatisfy({ $0 == 0 }) { return }
            // Read only as a ustar header, with its checksum right, so that the archive is what tar reads: GNU tar's
            // own format has no name prefix there, and a size with leading spaces read as 0 here but not there (a
            // signer who looked at a package with tar approved other files than Keel would install).
            guard block[257..<263].elementsEqual(Array("ustar\0".utf8)), block[263..<265].elementsEqual(Array("00".utf8)) else {
                throw ArchiveError(reason: "\(name): not a ustar archive (an entry's header says another format)")
            }
            let stored = PackageArchive.octal(block[148..<156])
            let sum = block.indices.reduce(0) { $0 + ((148..<156).contains($1) ? 32 : Int(block[$1])) }
            guard stored == sum else { throw ArchiveError(reason: "\(name): an entry's header checksum is wrong") }
            let nameBytes = Array(block[0..<100].prefix { $0 != 0 }), prefixBytes = Array(block[345..<500].prefix { $0 != 0 })
            let rawBytes = prefixBytes.isEmpty ? nameBytes : prefixBytes + [UInt8(ascii: "/")] + nameBytes
            let decoded = String(decoding: rawBytes, as: UTF8.self)
            let raw = Printable.escapingControls(decoded)
            guard !rawBytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { throw fail(raw, "control characters in the name") }
            guard let size = PackageArchive.octal(block[124..<136]) else { throw fail(raw, "bad size field") }
            // Split on the byte the kernel splits on: a `/` followed by a combining mark is one Swift Character, so
            // splitting the String let `../\u{301}x/../y` through as harmless parts while the kernel walked `..`.
            let byteParts = rawBytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
                .filter { !$0.elementsEqual([UInt8(ascii: ".")]) }
            guard rawBytes.first != UInt8(ascii: "/"), !byteParts.contains(where: { $0.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) })
            else { throw fail(raw, "a path that escapes the bundle folder") }
            // C0 and DEL above, by byte; C1 (U+0080–U+009F: CSI, NEL), invisible formatting (bidirectional overrides
            // that make `txt.exe` read `exe.txt`) and bytes that are not UTF-8 (decoded as U+FFFD) by character.
            guard !decoded.unicodeScalars.contains(where: Printable.isHidden) else {
                throw fail(raw, "control or invisible formatting characters in the name")
            }
            guard !decoded.unicodeScalars.contains("\u{FFFD}") else { throw fail(raw, "a name that is not UTF-8") }
            let parts = byteParts.map { String(decoding: $0, as: UTF8.self) }
            let path = parts.joined(separator: "/")
            entries += 1
            guard entries <= limits.maxFiles else { throw ArchiveError(reason: "\(name): more than \(limits.maxFiles) entries") }
            let ancestors = parts.indices.dropLast().map { parts[...$0].joined(separator: "/") }
            if let file = ancestors.first(where: files.contains) { throw fail(raw, "inside \"\(file)\", which is a file") }
            switch block[156] {
            case UInt8(ascii: "0"), 0:
                guard !path.isEmpty else { throw fail(raw, "a file entry without a file name") }
                guard !files.contains(path) && !folders.contains(path) else { throw fail(raw, "duplicate entry: \"\(path)\" appears twice") }
                total += size
                guard total <= limits.maxBytes else { throw ArchiveError(reason: "\(name): unpacks to more than \(limits.maxBytes) bytes") }
                files.insert(path)
                folders.formUnion(ancestors)
                let sink = try open(path, true)
                var left = size
                while left > 0 {
                    let chunk = try source.read(min(left, chunkSize))
                    guard !chunk.isEmpty else { throw fail(raw, "truncated archive") }
                    try sink?.write(chunk)
                    left -= chunk.count
                }
                try sink?.close()
                guard try source.read((512 - size % 512) % 512).count == (512 - size % 512) % 512 else { throw fail(raw, "truncated archive") }
            case UInt8(ascii: "5"):
                guard size == 0 else { throw fail(raw, "a folder entry with contents") }
                if path.isEmpty { continue }  // "." or "./": the bundle folder itself
                guard !files.contains(path), listedFolders.insert(path).inserted else { throw fail(raw, "duplicate entry: \"\(path)\" appears twice") }
                folders.formUnion(ancestors + [path])
                _ = try open(path, false)
            case UInt8(ascii: "1"), UInt8(ascii: "2"):
                throw fail(raw, "links are not allowed in a plugin archive")
            case let type:
                throw fail(raw, "entry type \(Character(UnicodeScalar(type))) is not allowed in a plugin archive")
            }
        }
    }

    // MARK: byte sources

    protocol ByteSource {
        /// Up to `count` bytes; fewer only at the end.
        mutating func read(_ count: Int) throws -> Data
    }

    struct DataSource: ByteSource {
        let data: Data
        var offset = 0
        mutating func read(_ count: Int) throws -> Data {
            let end = min(data.count, offset + count)
            defer { offset = end }
            return data.subdata(in: (data.startIndex + offset)..<(data.startIndex + end))
        }
    }

    /// A file read with read(2), so errors are one line.
    struct FileSource: ByteSource {
        let fd: Int32, shownAs: String
        init(path: String, shownAs: String? = nil) throws {
            self.shownAs = shownAs ?? path
            // A regular file only, found without blocking (a local repository's `x.keelpkg` made with `mkfifo` held
            // an install, and every install after it, for good).
            do throws(SystemFile.ReadError) { fd = try SystemFile.openRegular(path).fd } catch {
                throw ArchiveError(reason: error.code == EISDIR ? "\(self.shownAs): not a regular file; refused"
                                   : "\(self.shownAs): cannot be read: \(String(cString: strerror(error.code)))")
            }
        }
        func close() { Glibc.close(fd) }
        mutating func read(_ count: Int) throws -> Data {
            guard count > 0 else { return Data() }
            var out = Data(count: count), filled = 0
            while filled < count {
                let n = out.withUnsafeMutableBytes { buffer -> Int in
                    guard let base = buffer.baseAddress else { return 0 }
                    return Glibc.read(fd, base + filled, count - filled)
                }
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw ArchiveError(reason: "\(shownAs): cannot be read: \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                filled += n
            }
            return filled == count ? out : out.prefix(filled)
        }
    }
}
