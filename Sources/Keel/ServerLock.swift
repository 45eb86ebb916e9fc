// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import KeelSystem

/// Marks that a server owns a state file: an exclusive `flock` on `<state>.lock`, held while the server runs and
/// released by the kernel when the process ends, however it ends. Other processes ask `running(stateFile:)` to
/// decide whether to talk to the server instead of loading plugins themselves.
public final class ServerLock: Sendable {
    let fd: Int32
    public let path: String
    /// The server's id among the hosts of a shared state, told to the CLI so that the commands it queues are for
    /// this server only (`host(inLine:)`); nil for a state file, which one server owns.
    let host: String?
    /// The plugin folder the server serves (absolute), written on the file's second line for the CLI: a command that
    /// goes through the server acts on this folder, whatever `--plugins` it was given (`servedFolder`).
    let pluginsFolder: String?
    /// True when this lock made the file (none was there): `abandon()` removes it again.
    private let madeFile: Bool

    /// Takes the lock and writes `info` (e.g. the server's URL) into the file, after the server's `host` id if any,
    /// and `pluginsFolder` (absolute) on a line of its own.
    /// - Throws: `KernelError.Code.state` when another server holds it or the file cannot be made.
    public init(stateFile: String, info: String, host: String? = nil, pluginsFolder: String? = nil) throws(KernelError) {
        path = Self.lockPath(stateFile: stateFile)
        self.host = host
        // A folder whose name holds a line break is not written: the file is read line by line.
        self.pluginsFolder = pluginsFolder.flatMap { $0.contains("\n") ? nil : $0 }
        if let problem = SystemFile.urlLikeProblem(stateFile) { throw KernelError(.state, reason: "\(stateFile): \(problem)") }
        if let problem = SystemFile.prepareParent(of: stateFile) {
            throw KernelError(.state, reason: "\(stateFile): cannot be used as the state file: \(problem)")
        }
        // Never through a link (it would be cut and written over), nor another user's file (the CLI trusts only its
        // own user's lock): a folder others may write could hold either, planted.
        var before = stat()
        let existed = lstat(path, &before) == 0
        // Private to its user, as the state is: it names the server's pid, address and plugin folder.
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o600)
        guard fd >= 0 else {
            let why = errno == ELOOP ? "is a symbolic link, which is never followed; remove it"
                : "cannot be made: \(SystemFile.describe(errno: errno))"
            throw KernelError(.state, reason: "\(stateFile): its lock file \(path) \(why)")
        }
        var st = stat()
        // Root may use a service account's lock in a folder only its owner writes (`sudo keel serve`), as it may
        // that account's state (`SystemFile.ownershipProblem`).
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG,
              st.st_uid == geteuid() || (geteuid() == 0 && SystemFile.ownershipProblem(path) == nil) else {
            let owner = st.st_uid
            close(fd)
            throw KernelError(.state, reason: "\(stateFile): its lock file \(path) "
                + (st.st_mode & S_IFMT != S_IFREG ? "is not a regular file" : "belongs to uid \(owner), not to this user (uid \(geteuid()))")
                + ": another user could have put it there, or runs a server on this state; keep the state in a folder only you may write")
        }
        // One an earlier keel made readable by anyone is narrowed (as SQLite's files are).
        if st.st_uid == geteuid(), st.st_mode & 0o077 != 0 { _ = fchmod(fd, 0o600) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            // Its first line (`pid N URL`); the folder line is for the CLI.
            let other = (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").first.map(String.init) ?? ""
            throw KernelError(.state, reason: "\(stateFile): another keel server is using it (\(other.trimmingCharacters(in: .whitespaces)))")
        }
        madeFile = !existed
        update(info)
    }

    /// For a host that could not start on the state after all (the file is another program's database, or not a
    /// state at all): removes the lock file when this lock made it, so that nothing is left beside a file Keel
    /// refused. Call it before letting go of the lock; the lock itself ends with the object.
    public func abandon() {
        // Only while the name still names the file this lock holds: one replaced since (another server's) stays.
        var held = stat(), named = stat()
        guard madeFile, fstat(fd, &held) == 0, lstat(path, &named) == 0,
              held.st_dev == named.st_dev, held.st_ino == named.st_ino else { return }
        unlink(path)
    }

    /// `<state>.lock` beside the file the state is: a state file named through a symbolic link (or in a linked folder)
    /// is locked where its target lies, so that every name of one file finds one lock (a second embedder opened
    /// `link.db` while another owned `two.db`, and the CLI's commands on `link.db` went to nobody), also when the
    /// state is not made yet (`resolved`).
    static func lockPath(stateFile: String) -> String {
        resolved(stateFile) + ".lock"
    }

    /// Where `path` lies: its links followed (the last component's too, even when what it names is not there yet, as
    /// a state file is not before its first start), then its folder's real path and its own name. A path whose folder
    /// cannot be resolved is kept as given. Before and after the file is made, the answer is the same.
    static func resolved(_ path: String) -> String {
        var current = path
        for _ in 0..<16 {
            var info = stat()
            guard lstat(current, &info) == 0, info.st_mode & S_IFMT == S_IFLNK,
                  let target = try? FileManager.default.destinationOfSymbolicLink(atPath: current) else { break }
            let folder = (current as NSString).deletingLastPathComponent
            current = target.hasPrefix("/") || folder.isEmpty ? target : folder + "/" + target
        }
        let folder = (current as NSString).deletingLastPathComponent
        guard let real = realpath(folder.isEmpty ? "." : folder, nil) else { return current }
        defer { free(real) }
        return String(cString: real) + "/" + (current as NSString).lastPathComponent
    }

    /// Rewrites the information other processes read: `pid N [host ID ]INFO`, then `plugins FOLDER` when the server
    /// named its folder. Written over the old text, then cut to its length, so that a reader never finds the file empty.
    public func update(_ info: String) {
        let line = "pid \(getpid()) " + (host.map { "host \($0) " } ?? "") + "\(info)\n"
            + (pluginsFolder.map { "\(Self.folderPrefix)\($0)\n" } ?? "") + "\(Self.featuresPrefix)\(Self.features.joined(separator: " "))\n"
        let length = line.withCString { pwrite(fd, $0, strlen($0), 0) }
        if length >= 0 { ftruncate(fd, off_t(length)) }
    }

    /// The host id a server's lock line names (`host ID`), nil when it names none (a state file's server, `keel dev
    /// --serve`, a server of an earlier keel).
    public static func host(inLine line: String) -> String? {
        let words = line.split(separator: " ")
        guard let at = words.firstIndex(of: "host"), at + 1 < words.count else { return nil }
        return String(words[at + 1])
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }

    /// A check that a server which held the lock on `stateFile` has let go of it (it stopped): for
    /// `RemoteControl.submit`'s `serverGone`. Any thread.
    public static func released(stateFile: String) -> @Sendable () -> Bool {
        { running(stateFile: stateFile) == nil }
    }

    /// The running server's line (`pid N URL`) when a server holds the lock on `stateFile`, else nil.
    public static func running(stateFile: String) -> String? {
        runningText(stateFile: stateFile).map { text in
            String(text.split(separator: "\n", omittingEmptySubsequences: true).first ?? "running")
                .trimmingCharacters(in: .whitespaces)
        }
    }

    /// The plugin folder the server running on `stateFile` serves (absolute), nil when none runs or it did not name
    /// one (`keel dev --serve`, an embedding program, a server of an earlier keel).
    public static func servedFolder(stateFile: String) -> String? {
        // Only a lock file of this user's (or root's, `runningText`): one anybody could write in a shared folder would
        // point the CLI's copies and checks at a folder of their choosing.
        guard let text = runningText(stateFile: stateFile) else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix(folderPrefix) }.map { String($0.dropFirst(folderPrefix.count)) }
    }

    private static let folderPrefix = "plugins ", featuresPrefix = "takes "

    /// What this keel's server reads in a queued command beyond an earlier keel's (written as `takes ...`): a CLI
    /// asks `takes(_:stateFile:)` before it sends what an earlier server would read as something else.
    /// `call-tenant`: a command call's `tenant` (an earlier server runs the call in the default tenant).
    public static let features = ["call-tenant"]

    /// True when the server running on `stateFile` names `feature` among what it takes; false when none runs or it
    /// is an earlier keel's.
    public static func takes(_ feature: String, stateFile: String) -> Bool {
        guard let text = runningText(stateFile: stateFile),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(featuresPrefix) }) else { return false }
        return line.dropFirst(featuresPrefix.count).split(separator: " ").contains(Substring(feature))
    }

    /// The lock file's text while a server holds the lock on `stateFile` ("running" when it cannot be read), else nil.
    /// Only a lock file of this user's or root's, never through a link, read from the descriptor checked: another
    /// user's, planted in a folder others may write, would name an address the CLI sends the admin token to (`keel
    /// logs`, `keel dev`) and a plugin folder it copies into.
    private static func runningText(stateFile: String) -> String? {
        let fd = open(lockPath(stateFile: stateFile), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid() || st.st_uid == 0 else { return nil }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return nil
        }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? String(decoding: bytes[..<n], as: UTF8.self) : "running"
    }
}
