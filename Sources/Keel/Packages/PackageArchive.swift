// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// A packed plugin bundle: a ustar archive of the bundle folder's regular files (`<id>-<version>.keelpkg`).
///
/// Writing takes the files of one folder. Reading is defensive: only regular files and folders, no absolute paths,
/// no `..`, no links or devices, at most `maxFiles` entries and `maxBytes` unpacked, so that an archive can neither
/// escape its folder nor fill the disk. Stateless and thread-safe.
public enum PackageArchive {
    public static let fileExtension = "keelpkg"
    public static let maxFiles = 1000
    public static let maxBytes = 256 << 20

    public struct ArchiveError: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// The regular files under `folder` (relative paths, sorted), packed.
    public static func pack(folder: String) throws -> Data {
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
            if !name.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { names.append(name) }
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

    /// The files in `archive` as (relative path, contents), after every check.
    /// - Throws: `ArchiveError` naming the entry and the reason.
    public static func entries(_ archive: Data) throws -> [(path: String, data: Data)] {
        let bytes = [UInt8](archive)
        var offset = 0, total = 0
        var out: [(String, Data)] = []
        while offset + 512 <= bytes.count {
            let block = bytes[offset..<offset + 512]
            if block.allSatisfy({ $0 == 0 }) { return out }
            let name = String(decoding: block.prefix(100).prefix { $0 != 0 }, as: UTF8.self)
            let prefix = String(decoding: block[(offset + 345)..<(offset + 500)].prefix { $0 != 0 }, as: UTF8.self)
            let path = prefix.isEmpty ? name : prefix + "/" + name
            let sizeText = String(decoding: block[(offset + 124)..<(offset + 136)].prefix { $0 != 0 && $0 != 32 }, as: UTF8.self)
            guard let size = Int(sizeText.isEmpty ? "0" : sizeText, radix: 8), size >= 0 else {
                throw ArchiveError(reason: "\(path): bad size field")
            }
            let type = bytes[offset + 156]
            offset += 512
            switch type {
            case UInt8(ascii: "0"), 0:
                guard !path.hasPrefix("/"), !path.split(separator: "/").contains(".."), !path.isEmpty else {
                    throw ArchiveError(reason: "\(path): a path that escapes the bundle folder")
                }
                total += size
                guard total <= maxBytes else { throw ArchiveError(reason: "unpacks to more than \(maxBytes) bytes") }
                guard out.count < maxFiles else { throw ArchiveError(reason: "more than \(maxFiles) files") }
                guard offset + size <= bytes.count else { throw ArchiveError(reason: "\(path): truncated archive") }
                out.append((path, Data(bytes[offset..<offset + size])))
            case UInt8(ascii: "5"):
                guard !path.split(separator: "/").contains("..") else { throw ArchiveError(reason: "\(path): a path that escapes the bundle folder") }
            case UInt8(ascii: "1"), UInt8(ascii: "2"):
                throw ArchiveError(reason: "\(path): links are not allowed in a plugin archive")
            default:
                throw ArchiveError(reason: "\(path): entry type \(Character(UnicodeScalar(type))) is not allowed in a plugin archive")
            }
            offset += (size + 511) / 512 * 512
        }
        throw ArchiveError(reason: "truncated archive (no end marker)")
    }

    /// Unpacks `archive` into the new folder `folder` (which must not exist).
    public static func unpack(_ archive: Data, into folder: String) throws {
        let files = try entries(archive)
        let fm = FileManager.default
        try fm.createDirectory(atPath: folder, withIntermediateDirectories: false)
        for (path, data) in files {
            let target = folder + "/" + path
            try fm.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try data.write(to: URL(fileURLWithPath: target))
        }
    }
}
