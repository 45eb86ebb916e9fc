// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc

/// One page of a file, mapped shared: writes through memory reach the file without a system call, and survive a
/// crash of this process (the page cache keeps them), not of the machine. The mapping is made on first use; when
/// the file cannot be created or mapped, or is a link or another user's file, `bytes` is nil and callers skip what they
/// wanted to write.
/// Not thread-safe: its owner serialises its use.
public final class SharedPage {
    public let path: String
    public static let size = 4096
    private var mapped: UnsafeMutableRawBufferPointer?
    private var triedMapping = false
    /// Why the page was refused, when the file at `path` is a link or another user's (set by the first use).
    public private(set) var refusal: String?

    public init(path: String) { self.path = path }

    /// The mapped page, or nil when it cannot be made.
    public var bytes: UnsafeMutableRawBufferPointer? {
        if mapped != nil || triedMapping { return mapped }
        triedMapping = true
        // Never through a link, nor into another user's file: one planted where the folder lets others write (such as
        // /tmp) would be cut to a page, or written by its owner under this process's feet.
        // Private to its user, as the state beside it is (it names the plugin being activated).
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o600)
        guard fd >= 0 else {
            // Another user's file in a sticky folder is EACCES (`fs.protected_regular`, or its mode), a folder EISDIR.
            refusal = errno == ELOOP ? "is a symbolic link, which is never followed" : "cannot be opened: \(SystemFile.describe(errno: errno))"
            return nil
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid() else {
            refusal = st.st_mode & S_IFMT != S_IFREG ? "is not a regular file" : "belongs to uid \(st.st_uid), not to this user (uid \(geteuid()))"
            return nil
        }
        if st.st_mode & 0o077 != 0 { _ = fchmod(fd, 0o600) }
        guard ftruncate(fd, off_t(Self.size)) == 0 else { return nil }
        let p = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { return nil }
        mapped = UnsafeMutableRawBufferPointer(start: p, count: Self.size)
        return mapped
    }

    deinit { if let mapped { munmap(mapped.baseAddress, Self.size) } }
}
