// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc

extension SystemFile {
    /// An errno value in plain words ("not a folder" rather than "Not a directory"), for one-line messages that name
    /// the file first. [any thread]
    public static func describe(errno code: Int32) -> String {
        switch code {
        case ENOENT: return "no such file or folder"
        case EACCES, EPERM: return "permission denied"
        case ENOTDIR: return "not a folder"
        case EISDIR: return "is a folder"
        case EEXIST: return "already exists"
        case ENOSPC: return "no space left on the device"
        case EROFS: return "the file system is read-only"
        case EADDRINUSE: return "the address is in use"
        case EADDRNOTAVAIL: return "the address is not available on this machine"
        case ELOOP: return "a symbolic link loop"
        case ENAMETOOLONG: return "the name is too long"
        default: return String(cString: strerror(code)).lowercased()
        }
    }

    /// Makes the folder `path` and its parents (like `mkdir -p`). Returns nil when it is a folder now, else one line
    /// naming the part of the path at fault: `state/x: not a folder`, `/proc/a: cannot be made: permission denied`.
    /// [any thread]
    public static func makeFolders(_ path: String) -> String? {
        var st = stat()
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + part
            if stat(prefix, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFDIR else { return "\(prefix): not a folder" }
                continue
            }
            guard errno == ENOENT else { return "\(prefix): \(describe(errno: errno))" }
            guard mkdir(prefix, 0o755) == 0 || errno == EEXIST else { return "\(prefix): cannot be made: \(describe(errno: errno))" }
        }
        return nil
    }

    /// Why `path`, given as a state file, is most likely a mistyped URL rather than a file: it starts with a URL
    /// scheme and a slash (`sqlite:///tmp/x.db`, `postgres:/db`, `file:state.db` is taken as a file). Nil for a path.
    /// A state file's folders are made when missing, so such a path would otherwise leave a folder `sqlite:` behind
    /// and open a fresh, empty state. The reason does not name `path`: the caller does. [any thread]
    public static func urlLikeProblem(_ path: String) -> String? {
        // Two characters at least: `C:/state.db` is a folder `C:` here, as anywhere on Linux.
        guard let colon = path.firstIndex(of: ":"), path.distance(from: path.startIndex, to: colon) >= 2,
              path[path.index(after: colon)...].hasPrefix("/"),
              path[..<colon].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+.-".contains($0)) }),
              path.first?.isLetter == true else { return nil }
        let scheme = path[..<colon].lowercased()
        let shared = scheme.hasPrefix("postgres") ? "postgres://user@host:port/database (two slashes)" : "postgres://user@host:port/database"
        return "a URL (\(scheme):), not a file path: a state file is a path (e.g. /var/lib/keel/state.db), a shared state \(shared)"
    }

    /// Makes the folders that hold the file at `path` (`makeFolders` of its parent) and checks that `path` itself
    /// is not a folder. Returns nil when the file can be made there, else one line naming the part of the path at
    /// fault, or `s.db: is a folder, not a file`. [any thread]
    public static func prepareParent(of path: String) -> String? {
        var st = stat()
        if stat(path, &st) == 0 { return st.st_mode & S_IFMT == S_IFDIR ? "\(path): is a folder, not a file" : nil }
        guard let slash = path.lastIndex(of: "/") else { return nil }
        return makeFolders(slash == path.startIndex ? "/" : String(path[..<slash]))
    }
}

extension SystemFile {
    /// Why the file at `path`, or one of its `companions` (suffixes, e.g. SQLite's `-wal` and `-shm`), must not be
    /// trusted as this user's own: it exists and belongs to another user, who could have written into it what this
    /// process will act on (a state file planted in a shared folder such as `/tmp` holds queued commands, grants,
    /// repositories). Root may open a file of another user (a service account's state, for `sudo keel ...`) unless
    /// the folder holding it may be written by users other than its owner, where anyone could have planted it. Nil
    /// when none of them is a problem (or does not exist). [any thread]
    public static func ownershipProblem(_ path: String, companions: [String] = []) -> String? {
        let me = geteuid()
        for file in [path] + companions.map({ path + $0 }) {
            var st = stat()
            guard stat(file, &st) == 0, st.st_uid != me else { continue }
            if me == 0 {
                let slash = file.lastIndex(of: "/")
                let folder = slash.map { $0 == file.startIndex ? "/" : String(file[..<$0]) } ?? "."
                var dir = stat()
                if stat(folder, &dir) == 0, dir.st_mode & 0o022 == 0 { continue }
            }
            return "\(file) belongs to uid \(st.st_uid), not to this user (uid \(me))\(me == 0 ? ", in a folder others may write" : ""): another user could have written it; run as its owner, or use a state file of your own"
        }
        return nil
    }

    /// Makes the file at `path` readable and writable by its owner only: creates it empty with mode 0600 when it
    /// does not exist, and takes the group's and others' bits off an existing regular file (and off `path` followed
    /// by each of `companions`, e.g. SQLite's `-wal` and `-shm`, where they exist). For files that hold secrets, such
    /// as the state file (the proxy secret, plugin configurations). Returns the paths whose mode it narrowed.
    /// With `byPath`, nothing is opened or made (`lstat` and `chmod`): for a file SQLite holds open in this process,
    /// whose locks closing any descriptor of it would drop. [any thread]
    @discardableResult
    public static func keepToOwner(_ path: String, companions: [String] = [], byPath: Bool = false) -> [String] {
        var narrowed: [String] = []
        for (index, file) in ([path] + companions.map { path + $0 }).enumerated() {
            if byPath {
                var st = stat()
                if lstat(file, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_mode & 0o077 != 0, chmod(file, st.st_mode & 0o700) == 0 {
                    narrowed.append(file)
                }
                continue
            }
            // The main file is made if missing; a companion only narrowed where it exists.
            let fd = open(file, O_RDWR | O_CLOEXEC | O_NONBLOCK | (index == 0 ? O_CREAT : 0), 0o600)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_mode & 0o077 != 0 else { continue }
            if fchmod(fd, st.st_mode & 0o700) == 0 { narrowed.append(file) }
        }
        return narrowed
    }
}
