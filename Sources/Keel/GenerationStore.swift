// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest
import KeelState
import KeelSystem
import Crypto
import Foundation
import Glibc
import Synchronization

/// Private copies of plugin libraries, one per load.
///
/// Every build is loaded from its own copy so that (1) glibc cannot hand back an already-loaded library for the same
/// path or inode, and (2) overwriting the bundle's file (a rebuild, `cp` over it) never touches a mapped library,
/// which would crash the host. The library is read once and checksummed on the way, unless its checksum is known
/// for the file's current identity (`LibrarySums`).
///
/// The copy lives in memory: an anonymous file (`memfd_create`, named `keel-<id>-g<generation>` in
/// `/proc/self/maps`), reached by the dynamic loader through a name that no earlier load in this process used
/// (`LoaderPath`: a spelling of `/proc/<pid>/fd/<fd>`), so that neither the name nor the inode of any earlier load can
/// match. The descriptor goes as soon as the library is mapped; the mapping keeps the memory. Creating and deleting a
/// real file per load costs a third of a millisecond on ext4 (inode allocation skips recently deleted inodes), which
/// dominated start-up with many plugins; a memfd costs microseconds. (Until 2026-12-02 the name was a symbolic link
/// made in `/dev/shm` and removed after each load: a `symlink` and an `unlink` per load, about a seventh of a lazy
/// plugin's first request.) Where there is no memfd or no `/proc`, the copy is a file under `<state dir>/generations/`,
/// removed once mapped.
///
/// A library Keel installed needs no copy (`owned`): it is loaded where it lies, through the same kind of name for
/// the descriptor its checks were made on (see `inPlace`).
///
/// Thread-safe: every call works on its own files; the set of files loaded in place is behind a lock.
struct GenerationStore: Sendable {
    /// Where file copies go when memory copies are not available.
    let directory: String
    /// Whether copies are memory files, and libraries Keel installed are loaded where they lie: both need the
    /// dynamic loader to reach a descriptor by name (`/proc/self/fd`).
    let byDescriptor: Bool

    /// False when the state lives in memory (`StateStore.inMemory`): then nothing may be written to disk, and a load
    /// that cannot have a memory copy fails instead of falling back to a file.
    let filesAllowed: Bool

    /// The files (device, inode) loaded in place so far: a second load of one is copied, so that the dynamic loader
    /// (which matches an open library by device and inode) opens a fresh library for every generation.
    private let mappedInPlace = InodeSet()

    /// Seconds after a library's last change within which its stamp is not trusted (`Copy.source` stays nil).
    let stampMargin: Double

    init(stateFile: String, inMemory: Bool = true, stampMargin: Double = 2) {
        self.stampMargin = stampMargin
        let folder = (stateFile as NSString).deletingLastPathComponent
        directory = (folder.isEmpty ? "." : folder) + "/generations"
        filesAllowed = stateFile != StateStore.inMemory
        byDescriptor = inMemory && access("/proc/self/fd", X_OK) == 0
    }

    struct Copy {
        /// The path to hand to dlopen.
        let path: String
        let checksum: String
        /// The library's first bytes (up to 64: its ELF header) and its size, for the loader's header check.
        let header: [UInt8]
        let size: Int
        /// The memory file's (or, in place, the library's) descriptor, or -1 for a file copy.
        let descriptor: Int32
        /// Loaded where it lies, not from a copy.
        var inPlace = false
        /// The checksum came from `LibrarySums`: the library was not read beyond its header.
        var checksumKnown = false
        /// The library file's stamp when its bytes were read, if it had settled by then (see `FileStamp.isSettled`):
        /// while the file keeps this stamp, it holds the bytes `checksum` describes. Nil otherwise.
        var source: FileStamp? = nil
    }

    /// SHA-256 (hex) of the file at `path`, or nil when it cannot be read.
    static func checksum(_ path: String) -> String? { FileDigest.sha256(atPath: path) }

    private static func hex(_ digest: SHA256.Digest) -> String { FileDigest.hex(digest) }

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
            // Missing at both looks: not a file being written (a copy being made exists from its start), but one
            // that is not there (a typo in `library:`): no use waiting out the time-out.
            if now == nil && last == nil { return false }
            last = now
        }
        return false
    }

    /// Copies `library` to a fresh private copy for plugin `id`, generation `generation`. Call `discard` once the
    /// copy is loaded (or failed to load).
    /// - Throws: `KernelError.Code.bundle` when the library cannot be read or the copy cannot be written.
    /// With `owned` (the plugin folder), a library below it that passes `inPlace`'s checks is not copied: the
    /// result's `inPlace` says so.
    ///
    /// `known`, the library's checksum from an earlier in-place load (`LibrarySums`), spares reading and hashing a
    /// library loaded where it lies again while the file keeps the identity it had then: only its header is read.
    /// A copied library is always hashed: its file may be someone else's to write, and stores through a shared
    /// mapping change bytes without changing the file's identity until write-back (never, on tmpfs).
    func copy(_ library: String, id: String, generation: Int, owned: String? = nil,
              known: LibrarySums.Entry? = nil) throws(KernelError) -> Copy {
        if let owned, byDescriptor, let copy = inPlace(library, below: owned, known: known) { return copy }
        let (image, source) = try read(library, id: id)
        let checksum = GenerationStore.hex(SHA256.hash(data: image))
        if byDescriptor, var copy = inMemory(image, checksum: checksum, name: "keel-\(id)-g\(generation)") {
            copy.source = source
            return copy
        }
        guard filesAllowed else {
            throw KernelError(.bundle, pluginID: id, reason: "\(library): no memory copy can be made (memfd_create or /proc/self/fd is missing) and the state lives in memory, so no file copy is written")
        }
        let target = directory + "/\(id)-g\(generation)-\(checksum.prefix(12))-\(UInt32.random(in: 0...UInt32.max)).so"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KernelError(.bundle, pluginID: id, reason: "\(directory): cannot write a private copy: \(error.localizedDescription)")
        }
        // A folder of this user's that nobody else may write (not a link): one another user made first (the state
        // in /tmp) would let them swap a copy between its rename and `dlopen`.
        var folder = stat()
        guard lstat(directory, &folder) == 0, folder.st_mode & S_IFMT == S_IFDIR, folder.st_uid == geteuid(),
              folder.st_mode & 0o022 == 0 else {
            throw KernelError(.bundle, pluginID: id, reason: "\(directory): not a folder of this user's that only it may write, "
                + "so no private copy is made there; keep the state in a folder of your own")
        }
        let temporary = target + ".tmp"
        // A plain write, no fsync: the copy only has to outlive this load, not a power cut.
        // A new file only: never one (or a link) someone put at this name.
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw KernelError(.bundle, pluginID: id, reason: "\(temporary): cannot be written: \(String(cString: strerror(errno)))")
        }
        let written = GenerationStore.writeAll(fd, image)
        close(fd)
        guard written else {
            unlink(temporary)
            throw KernelError(.bundle, pluginID: id, reason: "\(temporary): short write")
        }
        guard rename(temporary, target) == 0 else {
            throw KernelError(.bundle, pluginID: id, reason: "\(target): rename failed: \(String(cString: strerror(errno)))")
        }
        return Copy(path: target, checksum: checksum, header: Array(image.prefix(64)), size: image.count, descriptor: -1, source: source)
    }

    /// Copies several libraries at once, on every core: `(library, id, generation)` each, results in the same order.
    /// While every one has a known checksum that still holds (installed libraries, each about to be loaded where it
    /// lies after an open, a `stat` and a 64-byte read), on this thread: that is less than waking the other core's
    /// workers, whose running there can also make the dynamic loader's `mprotect`s and `munmap`s interrupt that core
    /// (TLB shoot-downs, docs/bench/HISTORY.md, the load of 2026-12-01); about 4 % of a start of 1,000, in alternating child
    /// starts. From the first one that has to be read and hashed after all (a stale entry: an upgrade, a changed
    /// mode), the rest go to every core.
    func copy(_ requests: [(library: String, id: String, generation: Int)], owned: String? = nil,
              known: [String: LibrarySums.Entry] = [:]) -> [Result<Copy, KernelError>] {
        var results: [Result<Copy, KernelError>] = []
        if requests.allSatisfy({ known[$0.library] != nil }) {
            results.reserveCapacity(requests.count)
            for r in requests {
                let result = Result { () throws(KernelError) in
                    try copy(r.library, id: r.id, generation: r.generation, owned: owned, known: known[r.library])
                }
                results.append(result)
                guard case let .success(made) = result, made.checksumKnown else { break }
            }
        }
        let rest = requests[results.count...]
        guard !rest.isEmpty else { return results }
        // Each worker fills its own slot; the lock is held only to store a finished result.
        let made = Mutex([Result<Copy, KernelError>?](repeating: nil, count: rest.count))
        DispatchQueue.concurrentPerform(iterations: rest.count) { i in
            let r = rest[rest.startIndex + i]
            let result = Result { () throws(KernelError) in
                try copy(r.library, id: r.id, generation: r.generation, owned: owned, known: known[r.library])
            }
            made.withLock { $0[i] = result }
        }
        return results + made.withLock { $0 }.map { $0 ?? .failure(KernelError(.bundle, reason: "copy not made")) }
    }

    /// Removes what a process that died while loading left behind: file copies older than a minute (a copy lives for
    /// the duration of one load; another process sharing the state folder may be in the middle of one). Memory copies
    /// leave nothing.
    func removeLeftovers() {
        guard filesAllowed, let names = SystemFile.names(in: directory) else { return }
        let now = time(nil)
        for name in names where name.hasSuffix(".so") || name.hasSuffix(".tmp") {
            var st = stat()
            let path = directory + "/" + name
            if lstat(path, &st) == 0, now - st.st_mtim.tv_sec > 60 { unlink(path) }
        }
    }

    /// Removes a copy once it is mapped (or failed to load): closes its descriptor, or removes its file.
    func discard(_ copy: Copy) {
        if copy.descriptor >= 0 { close(copy.descriptor) } else { unlink(copy.path) }
    }

    /// The largest library loaded.
    static let maxLibraryBytes = 512 * 1024 * 1024

    /// The library's bytes, after checking it is a regular file of a sane size, with its stamp when it had settled
    /// before the read (`FileStamp.isSettled`).
    private func read(_ library: String, id: String) throws(KernelError) -> (image: [UInt8], source: FileStamp?) {
        func failure(_ reason: String) -> KernelError {
            KernelError(.bundle, pluginID: id, reason: "plugin \"\(id)\" (\(library)): \(reason)")
        }
        // O_NONBLOCK: a FIFO in the library's place is refused below, not waited on for ever (a regular file ignores it).
        let fd = open(library, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            throw failure(errno == ELOOP ? "a symbolic link loop, not a shared library"
                : errno == ENOENT ? "no such file" : "cannot be read: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw failure("cannot be read: \(String(cString: strerror(errno)))") }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw failure(st.st_mode & S_IFMT == S_IFDIR ? "a directory, not a shared library" : "not a regular file, not a shared library")
        }
        guard st.st_size <= GenerationStore.maxLibraryBytes else {
            throw failure("\(st.st_size) bytes is over the 512 MiB limit for a library")
        }
        let readAt = FileStamp.now()
        guard let image = GenerationStore.readAll(fd, size: Int(st.st_size)) else {
            throw failure("cannot be read: \(errno == 0 ? "it shrank while being read" : String(cString: strerror(errno)))")
        }
        return (image, FileStamp(st)?.ifSettled(readAt: readAt, margin: stampMargin))
    }

    /// `size` bytes of `fd` from its start, or nil when it could not be read (errno 0: the file was shorter).
    private static func readAll(_ fd: Int32, size: Int) -> [UInt8]? {
        var image = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < image.count {
            let n = image.withUnsafeMutableBytes { buffer in
                buffer.baseAddress.map { pread(fd, $0 + done, buffer.count - done, off_t(done)) } ?? 0
            }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                if n == 0 { errno = 0 }
                return nil
            }
            done += n
        }
        return image
    }

    /// The library opened for a load where it lies, or nil when it does not qualify (the caller copies it).
    ///
    /// It qualifies when Keel owns it: it lies in a bundle folder directly below `root` (the plugin folder, where
    /// installs and upgrades rename each unpacked package into place) and is reached from `root` without a symbolic
    /// link or mount point (`SystemFile.openBeneath`); it is a regular file owned by this process's user that no one
    /// may write (no write bit at all: an install leaves every file so, `PackageArchive.installedFileMode`); and no
    /// generation was loaded from the same file before (see `mappedInPlace`). The checks are made on the descriptor
    /// that the dynamic loader then opens, through `/proc/<pid>/fd/<fd>` (`LoaderPath`), so no file swapped in by
    /// name afterwards is loaded instead. No one but this user (or root) can change the file's bytes, and Keel never
    /// does: an install or upgrade unpacks a new folder. Someone who can write the plugin folder but is not this user
    /// can only rename the folder away (the mapping keeps the file) or put a bundle of their own there, which fails
    /// the owner check and is copied.
    private func inPlace(_ library: String, below root: String, known: LibrarySums.Entry?) -> Copy? {
        let prefix = root.hasSuffix("/") ? root : root + "/"
        guard library.hasPrefix(prefix) else { return nil }
        let relative = String(library.dropFirst(prefix.count))
        // By bytes: `String.contains` of a string goes through Foundation (CFStringFind), for every load.
        guard relative.utf8.contains(UInt8(ascii: "/")), !relative.hasPrefix(".") else { return nil }
        let fd = SystemFile.openBeneath(root, relative)
        guard fd >= 0 else { return nil }
        var st = stat()
        let readAt = FileStamp.now()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid(), st.st_mode & 0o222 == 0,
              st.st_size <= GenerationStore.maxLibraryBytes,
              mappedInPlace.insert(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) else {
            close(fd)
            return nil
        }
        let stamp = FileStamp(st)
        // Hashed before with this identity: the header is all the load needs to read (the loader maps this descriptor).
        if let sum = known?.sum(for: stamp), let header = GenerationStore.readAll(fd, size: min(64, Int(st.st_size))) {
            return Copy(path: LoaderPath.make(fd), checksum: sum, header: header, size: Int(st.st_size), descriptor: fd,
                        inPlace: true, checksumKnown: true, source: stamp)
        }
        guard let image = GenerationStore.readAll(fd, size: Int(st.st_size)) else {
            close(fd)
            return nil
        }
        return Copy(path: LoaderPath.make(fd), checksum: GenerationStore.hex(SHA256.hash(data: image)), header: Array(image.prefix(64)),
                    size: image.count, descriptor: fd, inPlace: true, source: stamp?.ifSettled(readAt: readAt, margin: stampMargin))
    }

    /// The copy as a memory file, or nil when it cannot be made (the caller falls back to a file copy). It is sealed
    /// once written: the bytes the dynamic loader maps are the ones `checksum` describes, even though the load probe's
    /// child process (plugin code) gets a descriptor of it.
    private func inMemory(_ image: [UInt8], checksum: String, name: String) -> Copy? {
        let fd = SystemFile.memoryFile(name: name)
        guard fd >= 0 else { return nil }
        guard GenerationStore.writeAll(fd, image), SystemFile.sealMemoryFile(fd) else {
            close(fd)
            return nil
        }
        return Copy(path: LoaderPath.make(fd), checksum: checksum, header: Array(image.prefix(64)), size: image.count, descriptor: fd)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { SystemFile.writeAll(fd, $0) }
    }
}

/// A set of files by (device, inode), shared by the copies of a `GenerationStore`. Thread-safe (a lock).
final class InodeSet: Sendable {
    /// A file's identity. A struct, not a two-element array: no allocation per insert, and no run-time conformance
    /// look-up for `Array<UInt64>: Hashable` on a lazy plugin's first request.
    private struct FileID: Hashable {
        let device: UInt64, inode: UInt64
    }

    private let members = Mutex<Set<FileID>>([])

    /// Adds the file; false when it was there already.
    func insert(device: UInt64, inode: UInt64) -> Bool {
        members.withLock { $0.insert(FileID(device: device, inode: inode)).inserted }
    }
}
