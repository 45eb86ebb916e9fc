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
