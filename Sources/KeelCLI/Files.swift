// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelManifest
import KeelSystem
import Glibc

/// The file type of `path` itself (a link is not followed), or nil when nothing is there.
func fileType(_ path: String) -> mode_t? {
    var info = stat()
    guard lstat(path, &info) == 0 else { return nil }
    return info.st_mode & S_IFMT
}

/// The bytes of the file at `path`.
/// - Throws: `CLIError` "PATH: REASON", the reason in plain words ("no such file or folder", "is a folder").
func readFile(_ path: String) throws -> Data {
    guard let handle = FileHandle(forReadingAtPath: path) else {
        throw CLIError("\(path): \(ErrorText.plain(errno: errno == 0 ? ENOENT : errno))")
    }
    defer { try? handle.close() }
    do { return try handle.readToEnd() ?? Data() } catch {
        throw CLIError("\(path): \(ErrorText.plain(errno: errno == 0 ? EIO : errno))")
    }
}

/// The file at `path` as UTF-8 text (a configuration, a schema).
/// - Throws: `CLIError` "PATH: reason" when it cannot be read or is not UTF-8.
func readText(_ path: String) throws -> String {
    guard let text = String(validating: try readFile(path), as: UTF8.self) else { throw CLIError("\(path): not UTF-8 text") }
    return text
}

/// Makes `path` a folder (with its parents) unless it is one already.
/// - Throws: `CLIError` "PATH: not a folder" when something else is there, or the reason it cannot be made.
func makeFolder(_ path: String) throws {
    if let problem = SystemFile.makeFolders(path) { throw CLIError(problem) }
}

/// Throws `CLIError` "PATH: no such folder (HINT)" or "PATH: not a folder" unless `path` is an existing folder.
func requireFolder(_ path: String, hint: String) throws {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw CLIError("\(path): no such folder (\(hint))")
    }
    guard isDirectory.boolValue else { throw CLIError("\(path): not a folder (\(hint))") }
}

/// Refuses a `keel new` project named where its bundle folder is meant: a project's plugin.yaml names a library
/// that is not beside it, and `make` builds the bundle (plugin.yaml and library) in `bundle/ID`. Nothing when `folder`
/// is a bundle, or a project not built yet (the caller's own error says to build it).
/// - Throws: `CLIError` "FOLDER: a plugin project, not its bundle: `make` built the bundle in FOLDER/bundle/ID; run
///   `keel COMMAND FOLDER/bundle/ID`".
func refuseProjectForBundle(_ folder: String, command: String) throws {
    guard let manifest = try? ManifestLoader().load(path: folder + "/" + ManifestLoader.fileName).0, let library = manifest.library,
          !FileManager.default.fileExists(atPath: folder + "/" + library) else { return }
    let root = folder + "/bundle"
    let built = (SystemFile.names(in: root) ?? []).filter {
        FileManager.default.fileExists(atPath: root + "/" + $0 + "/" + ManifestLoader.fileName)
    }
    guard built.count == 1 else { return }
    let bundle = (folder == "." || folder == "./" ? "bundle" : (folder.hasSuffix("/") ? String(folder.dropLast()) : folder) + "/bundle") + "/" + built[0]
    throw CLIError("\(folder): a plugin project, not its bundle: `make` built the bundle in \(bundle); run `keel \(command) \(bundle)`")
}

/// Writes a secret (a private key) to `path` with mode 0600 from the first byte on.
///
/// A new path is created; an existing regular file is replaced only with `replacing` (through a rename, so the old
/// file is whole until the new one is); anything that is not a regular file (a device such as /dev/null, a FIFO, a
/// folder, a symbolic link) is never replaced.
/// - Throws: `CLIError` naming the path and the reason.
func writePrivateFile(_ path: String, contents: String, replacing: Bool) throws {
    if let type = fileType(path) {
        guard type == S_IFREG else {
            throw CLIError("\(path): not a regular file (\(describe(fileType: type))); refusing to replace it")
        }
        guard replacing else { throw CLIError("\(path): already exists; pass --force to replace it (the key in it is lost)") }
    }
    let url = URL(fileURLWithPath: path)
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp").path
    let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw CLIError("\(path): \(ErrorText.plain(errno: errno))") }
    let bytes = Array(contents.utf8)
    let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    let synced = fsync(fd) == 0
    let writeErrno = errno
    close(fd)
    guard written == bytes.count, synced else {
        unlink(temporary)
        throw CLIError("\(path): \(ErrorText.plain(errno: writeErrno))")
    }
    defer { unlink(temporary) }
    // A new file: link(2) fails if something appeared at `path` meanwhile, so nothing is ever overwritten.
    let placed = replacing ? rename(temporary, path) : link(temporary, path)
    guard placed == 0 else { throw CLIError("\(path): \(ErrorText.plain(errno: errno))") }
}

private func describe(fileType type: mode_t) -> String {
    switch type {
    case S_IFDIR: return "a folder"
    case S_IFLNK: return "a symbolic link"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFIFO: return "a FIFO"
    case S_IFSOCK: return "a socket"
    default: return "a special file"
    }
}
