// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import Glibc

/// Private copies of plugin libraries, one per load.
///
/// Every build is loaded from its own copy so that (1) glibc cannot hand back an already-loaded library for the same
/// path or inode, and (2) overwriting the bundle's file (a rebuild, `cp` over it) never touches a mapped library,
/// which would crash the host. The copy is written to a temporary name and renamed, checksummed on the way, and
/// removed as soon as it is mapped (the mapping outlives the name).
struct GenerationStore: Sendable {
    let directory: String

    init(stateFile: String) {
        let folder = (stateFile as NSString).deletingLastPathComponent
        directory = (folder.isEmpty ? "." : folder) + "/generations"
    }

    struct Copy {
        let path: String
        let checksum: String
        let size: Int
    }

    /// SHA-256 (hex) of the file at `path`, or nil when it cannot be read.
    static func checksum(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// Waits until the file at `path` stops changing (same size and modification time `quiet` apart), at most
    /// `timeout`. A library still being written is not loaded half-written. Returns false when it never settled.
    static func waitUntilSettled(_ path: String, quiet: Double = 0.15, timeout: Double = 5) -> Bool {
        func stamp() -> (Int, Int, Int)? {
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            return (Int(st.st_size), Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec))
        }
        let deadline = Date().addingTimeInterval(timeout)
        var last = stamp()
        while Date() < deadline {
            usleep(UInt32(quiet * 1_000_000))
            let now = stamp()
            if let now, let l = last, now == l { return true }
            last = now
        }
        return false
    }

    /// Copies `library` to a fresh unique file for plugin `id`, generation `generation`.
    /// - Throws: `KernelError.Code.bundle` when the library cannot be read or the copy cannot be written.
    func copy(_ library: String, id: String, generation: Int) throws(KernelError) -> Copy {
        var st = stat()
        if stat(library, &st) != 0 {
            let reason = errno == ELOOP ? "a symbolic link loop, not a shared library"
                : errno == ENOENT ? "no such file" : "cannot be read: \(String(cString: strerror(errno)))"
            throw KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\" (\(library)): \(reason)")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            let what = st.st_mode & S_IFMT == S_IFDIR ? "a directory" : "not a regular file"
            throw KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\" (\(library)): \(what), not a shared library")
        }
        guard st.st_size <= 512 * 1024 * 1024 else {
            throw KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\" (\(library)): \(st.st_size) bytes is over the 512 MiB limit for a library")
        }
        guard let data = FileManager.default.contents(atPath: library) else {
            throw KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\" (\(library)): cannot be read")
        }
        let checksum = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        let name = "\(id)-g\(generation)-\(checksum.prefix(12))-\(UInt32.random(in: 0...UInt32.max)).so"
        let target = directory + "/" + name
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let temporary = target + ".tmp"
            // A plain write, no fsync: the copy only has to outlive this load, not a power cut.
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw KernelError(.bundle, pluginID: id, reason: "\(temporary): cannot be written: \(String(cString: strerror(errno)))")
            }
            let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            guard written == data.count else {
                unlink(temporary)
                throw KernelError(.bundle, pluginID: id, reason: "\(temporary): short write")
            }
            guard rename(temporary, target) == 0 else {
                throw KernelError(.bundle, pluginID: id, reason: "\(target): rename failed: \(String(cString: strerror(errno)))")
            }
        } catch let error as KernelError {
            throw error
        } catch {
            throw KernelError(.bundle, pluginID: id, reason: "\(directory): cannot write a private copy: \(error.localizedDescription)")
        }
        return Copy(path: target, checksum: checksum, size: data.count)
    }

    /// Removes a copy once it is mapped (or failed to load).
    func discard(_ copy: Copy) { unlink(copy.path) }
}
