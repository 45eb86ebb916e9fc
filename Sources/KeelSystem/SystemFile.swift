// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem
import Glibc

/// File descriptors as the host uses them: whole writes, in-memory files. Stateless; every function is safe from any
/// thread (each works on the descriptor it is given).
public enum SystemFile {
    /// The names in `directory` (without "." and ".."), in the order the file system gives them; nil when it cannot
    /// be listed. `readdir`, not `FileManager`: its first use in a process costs a third of a millisecond of
    /// run-time type look-ups, paid at every start. [any thread]
    public static func names(in directory: String) -> [String]? {
        guard let dir = opendir(directory) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    /// Why a file could not be read: the `errno` of the failed call (`EISDIR` for anything but a regular file; `EPERM`
    /// with `owner` for a file another user owns, when only this user's may be read).
    public struct ReadError: Error, Sendable {
        public var code: Int32
        /// The file's owner, when it was refused for belonging to another user.
        public var owner: UInt32?

        public init(code: Int32, owner: UInt32? = nil) { (self.code, self.owner) = (code, owner) }

        /// "belongs to uid N, not to this user (uid M): another user could have written it", or the system's words.
        public var description: String {
            owner.map { "belongs to uid \($0), not to this user (uid \(geteuid())): another user could have written it" }
                ?? String(cString: strerror(code))
        }
    }

    /// The first `limit` bytes of the regular file at `path` (fewer when it is cut short while read; anything but a
    /// regular file, a FIFO included, is `EISDIR` without waiting for a writer). `open` and
    /// `read`, not `FileManager`: its first use in a process cost a lazy start about 0.3 ms of run-time type
    /// look-ups (for a crash record that is not there). [any thread]
    /// - Parameter ownedHere: read only a file this user (or root) owns, checked on the descriptor read: for the files
    ///   Keel keeps beside its state (the manifest cache, the crash record, the activation mark), which another user
    ///   could plant where the state's folder lets others write (such as /tmp).
    public static func read(_ path: String, limit: Int = .max, ownedHere: Bool = false) throws(ReadError) -> [UInt8] {
        let (fd, size) = try openRegular(path, ownedHere: ownedHere)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: max(0, min(size, limit)))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { buffer in
                buffer.baseAddress.map { Glibc.read(fd, $0 + done, buffer.count - done) } ?? 0
            }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                if n < 0 { throw ReadError(code: errno) }
                break
            }
            done += n
        }
        return done == bytes.count ? bytes : Array(bytes.prefix(done))
    }

    /// Opens the regular file at `path` for reading: its descriptor (close-on-exec; the caller closes it) and size.
    /// Anything but a regular file is `EISDIR`, found without waiting: O_NONBLOCK keeps a FIFO in the file's place
    /// from holding the caller in `open` (a regular file ignores it). [any thread]
    /// With `ownedHere`, a file another user owns (root's excepted) is `EPERM` with its `owner`.
    public static func openRegular(_ path: String, ownedHere: Bool = false) throws(ReadError) -> (fd: Int32, size: Int) {
        // An owned file is never reached through a link (one planted at its name would choose what is read).
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (ownedHere ? O_NOFOLLOW : 0))
        guard fd >= 0 else { throw ReadError(code: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            close(fd)
            throw ReadError(code: code)
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw ReadError(code: EISDIR)
        }
        if ownedHere, st.st_uid != geteuid(), st.st_uid != 0 {
            close(fd)
            throw ReadError(code: EPERM, owner: st.st_uid)
        }
        return (fd, Int(st.st_size))
    }

    /// The text of a file of /proc or of a cgroup, read to its end (such files say they are empty: `read`, which
    /// reads as many bytes as the size says, reads nothing of them); nil when it cannot be read. At most 1 MiB. [any thread]
    public static func text(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `read(_:limit:)`, nil when the file does not exist or cannot be read.
    public static func contents(_ path: String, limit: Int) -> [UInt8]? { try? read(path, limit: limit) }

    /// A pipe, both ends close-on-exec from the start: `(read, write)`, or nil (`errno` says why).
    public static func pipe() -> (read: Int32, write: Int32)? {
        var fds: [Int32] = [0, 0]
        guard keel_pipe_cloexec(&fds) == 0 else { return nil }
        return (fds[0], fds[1])
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR. False on an error (`errno` says which).
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        whole(bytes) { write(fd, $0, $1) }
    }

    /// Writes `text` whole to standard output (`fd` 1) or standard error (2) at once, unbuffered, and ignores a failure:
    /// a reader that went away (`keel serve | head -1`, a supervisor's closed pipe) or a full disk must not end the
    /// process. Foundation's `FileHandle.write` traps on such an error (`EPIPE` is a `try!` inside it). Any thread.
    public static func say(_ text: String, to fd: Int32 = 1) {
        var text = text
        _ = text.withUTF8 { writeAll(fd, UnsafeRawBufferPointer($0)) }
    }

    /// Sends all of `bytes` on the socket `fd` as `writeAll` writes them, never raising SIGPIPE (MSG_NOSIGNAL). False
    /// on an error, when the socket's send time-out (`SO_SNDTIMEO`) passed in one `send`, or, given `within`, when
    /// bytes were still left once that much time had passed (a peer that takes a little at a time, each `send` short
    /// of the time-out): the whole then takes at most `within` plus one send time-out.
    public static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, within limit: Duration? = nil) -> Bool {
        guard let limit else { return whole(bytes) { send(fd, $0, $1, Int32(MSG_NOSIGNAL)) } }
        let deadline = ContinuousClock.now + limit
        var late = false
        return whole(bytes) { base, count in
            // Checked between sends: the first always goes (it is bounded by SO_SNDTIMEO).
            if late { errno = ETIMEDOUT; return -1 }
            let n = send(fd, base, count, Int32(MSG_NOSIGNAL))
            late = ContinuousClock.now > deadline
            return n
        }
    }

    private static func whole(_ bytes: UnsafeRawBufferPointer, _ put: (UnsafeRawPointer, Int) -> Int) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var offset = 0
        while offset < bytes.count {
            let n = put(base + offset, bytes.count - offset)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// An anonymous in-memory file (`memfd_create`, close-on-exec, sealable), shown as `memfd:<name>` in
    /// `/proc/<pid>/maps`.
    /// Returns its descriptor, or -1 with `errno` (no memfd on this kernel).
    public static func memoryFile(name: String) -> Int32 {
        keel_memfd_create(String(name.prefix(240)))
    }

    /// A memory file (`memoryFile`) holding `text`, its offset at the start: a child's standard input that holds
    /// something not meant for its arguments or environment (which other users' `ps` and `/proc` may show).
    /// Returns its descriptor (close-on-exec; the caller closes it), or -1 with `errno`.
    public static func memoryFile(name: String, holding text: String) -> Int32 {
        let fd = memoryFile(name: name)
        guard fd >= 0 else { return -1 }
        var text = text
        let written = text.withUTF8 { writeAll(fd, UnsafeRawBufferPointer($0)) }
        guard written, lseek(fd, 0, SEEK_SET) == 0 else {
            let code = errno
            close(fd)
            errno = code
            return -1
        }
        return fd
    }

    /// Seals memory file `fd` (made by `memoryFile`) against any change of its bytes or size, and against removing
    /// the seals: no process holding a descriptor of it, this one included, can write it again (a writable mapping
    /// of it must be private). Returns false with `errno` when the kernel refuses.
    public static func sealMemoryFile(_ fd: Int32) -> Bool {
        // <linux/fcntl.h>, not imported into Swift: F_ADD_SEALS, and F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW |
        // F_SEAL_WRITE (the kernel's ABI since 3.17).
        let addSeals: Int32 = 1024 + 9, seals: Int32 = 0x1 | 0x2 | 0x4 | 0x8
        return fcntl(fd, addSeals, seals) == 0
    }

    /// Opens `relative` read-only below the folder `root`, following no symbolic link (nor mount point) from `root`
    /// down (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). Returns the descriptor (close-on-exec), or -1
    /// with `errno` (ENOSYS on a kernel before 5.6).
    public static func openBeneath(_ root: String, _ relative: String) -> Int32 {
        keel_open_beneath(root, relative)
    }

    /// The text of `errno`, for one-line messages.
    /// `bytes` compressed as gzip, or nil when that does not make them smaller (or zlib fails).
    public static func gzip(_ bytes: [UInt8]) -> [UInt8]? {
        guard !bytes.isEmpty else { return nil }
        var out = [UInt8](repeating: 0, count: bytes.count)
        let n = bytes.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { keel_gzip(input.baseAddress, input.count, $0.baseAddress, $0.count) }
        }
        guard n > 0, n < bytes.count else { return nil }
        return Array(out.prefix(n))
    }

    public static var lastError: String { String(cString: strerror(errno)) }

    /// Raises this process's soft limit on open descriptors to its hard limit, at most `cap`, and returns the soft
    /// limit then in force. A server holds a descriptor per client connection and per connection to an upstream, plus
    /// its library copies and pipes: the usual soft limit of 1,024 runs out long before the hard one.
    @discardableResult
    public static func raiseDescriptorLimit(cap: Int = 65_536) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        let wanted = min(limit.rlim_max, rlim_t(cap))
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(min(limit.rlim_cur, rlim_t(Int.max)))
    }
}

extension SystemFile {
    /// Makes every allocation of `bytes` or more its own mapping, given back to the system when freed. glibc starts
    /// at 128 KiB but raises the threshold to the size of each large block freed, after which blocks that size come
    /// from the heap and stay in the process once freed: a worker's ten 4 MiB log frames (`HostileWorkerTests`) left
    /// the host 36 MiB larger, or not, depending on the order of a few unrelated allocations. A fixed threshold ends
    /// that. For the host process (`keel serve` calls it); an embedding program keeps its own malloc settings.
    public static func returnLargeBlocks(from bytes: Int32 = 1 << 20) {
        _ = keel_return_large_blocks(bytes)
    }
}
