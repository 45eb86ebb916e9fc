// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem
import Glibc
import Synchronization

/// The folder a thread sweeping leftover cgroups works on (handed to it through `pthread_create`'s argument).
private final class LeftoverSweep {
    let folder: String
    init(folder: String) { self.folder = folder }
}

/// A cgroup of the `pids` controller made for one child process (a `keel worker`) below the host's own: the kernel
/// refuses a `fork` or `clone` that would take the child and everything it started past `limit` tasks (processes and
/// threads together) with EAGAIN, at once, with no window for a bomb to outrun. Made with `make`, the child moved in
/// with `add` before it runs anything it was not built with, ended with `end` once the child was reaped.
///
/// Where: below the host's cgroup of the `pids` hierarchy, as /proc/self/cgroup and /proc/self/mountinfo name it
/// (cgroup v1: the hierarchy mounted with `pids`; cgroup v2: the unified one, when the host's cgroup hands `pids` to
/// its children in `cgroup.subtree_control`, or beside the host's when its parent does), as
/// `keel-<pid namespace>-<host pid>-<child pid>.<n>` (the namespace's inode number, so that a host tells its own
/// namespace's hosts from others' sharing the folder; `n` counts the host's cgroups, so that a child given the pid of
/// one whose cgroup is still being ended gets a cgroup of its own). The host must be able to make folders
/// there (root, or a cgroup delegated to its user); where it cannot, `make` says why and the caller goes without.
/// A child confined from writing anywhere (Landlock) cannot move itself out nor raise its limit.
///
/// Stateless but for its path: every function is safe from any thread.
public struct PidsCgroup: Sendable {
    /// The cgroup's folder.
    public let path: String

    /// Why a cgroup could not be made or joined, in a phrase that names the file ("cannot make
    /// /sys/fs/cgroup/pids/keel-1-2: Permission denied").
    public struct Unavailable: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The folder below which the cgroups are made (the host's own cgroup of the `pids` controller), or why there is
    /// none. Looked up once per process. Cgroups of hosts no longer running that are left there (a host that was
    /// killed) are removed at that look-up when they are empty.
    public static let parent: Result<String, Unavailable> = {
        let found = locate(cgroups: SystemFile.text("/proc/self/cgroup") ?? "", mounts: SystemFile.text("/proc/self/mountinfo") ?? "")
        guard case let .success(folder) = found else { return found }
        guard access(folder, W_OK) == 0 else {
            return .failure(Unavailable(description: "the host's pids cgroup \(folder) is not writable by it (\(SystemFile.lastError))"))
        }
        // Off the caller's thread: ending a leftover waits for its killed members to leave.
        let box = Unmanaged.passRetained(LeftoverSweep(folder: folder)).toOpaque()
        var thread = pthread_t()
        if pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            PidsCgroup.removeLeftovers(in: Unmanaged<LeftoverSweep>.fromOpaque(raw).takeRetainedValue().folder)
            return nil
        }, box) == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<LeftoverSweep>.fromOpaque(box).release()
            removeLeftovers(in: folder)
        }
        return .success(folder)
    }()

    /// Where the host's `pids` cgroup is, from the text of /proc/self/cgroup and /proc/self/mountinfo; the reason when
    /// there is none this host can give its children (no `pids` controller, not mounted, cgroup v2 without `pids` in
    /// the host's `cgroup.subtree_control`). Pure but for the v2 check, which reads that file.
    static func locate(cgroups: String, mounts: String) -> Result<String, Unavailable> {
        // Each line of /proc/self/cgroup: "ID:CONTROLLERS:PATH" (v2: "0::PATH").
        var v1: String?, v2: String?
        for line in cgroups.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            if parts[1].split(separator: ",").contains("pids") { v1 = String(parts[2]) }
            if parts[0] == "0", parts[1].isEmpty { v2 = String(parts[2]) }
        }
        // Each line of mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
        func mounted(_ matches: (_ type: Substring, _ options: [Substring]) -> Bool) -> [(root: String, point: String)] {
            mounts.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: " ")
                guard let dash = fields.firstIndex(of: "-"), dash >= 6, fields.count > dash + 3,
                      matches(fields[dash + 1], fields[dash + 3].split(separator: ",")) else { return nil }
                return (unescape(fields[3]), unescape(fields[4]))
            }
        }
        // The path of the cgroup below a mount point, when the mount shows it (its root is the path or above).
        func folder(_ path: String, in m: (root: String, point: String)) -> String? {
            let root = m.root == "/" ? "" : m.root
            guard path == root || path.hasPrefix(root + "/") || root.isEmpty else { return nil }
            let below = String(path.dropFirst(root.count))
            return m.point + (below == "/" ? "" : below)
        }
        // Of the mounts that show it (a hierarchy may be mounted more than once, a subtree bind-mounted), the one whose
        // root is nearest. Never a path that climbs: in a cgroup namespace, a cgroup outside the namespace's root
        // reads as "/../..", and no mount here shows it.
        func place(_ path: String, in candidates: [(root: String, point: String)]) -> String? {
            guard !path.split(separator: "/").contains("..") else { return nil }
            return candidates.compactMap { m in folder(path, in: m).map { (m.root.count, $0) } }.max { $0.0 < $1.0 }?.1
        }
        if let v1 {
            let candidates = mounted { type, options in type == "cgroup" && options.contains("pids") }
            guard let first = candidates.first else {
                return .failure(Unavailable(description: "the pids cgroup controller is not mounted here"))
            }
            guard let path = place(v1, in: candidates) else {
                return .failure(Unavailable(description: "the host's pids cgroup \(v1) lies outside the mount at \(first.point)"))
            }
            return .success(path)
        }
        let unified = mounted { type, _ in type == "cgroup2" }
        guard let v2, let path = place(v2, in: unified),
              let m = unified.filter({ path == $0.point || path.hasPrefix($0.point == "/" ? "/" : $0.point + "/") }).max(by: { $0.point.count < $1.point.count }) else {
            return .failure(Unavailable(description: "this kernel has no pids cgroup controller the host can use"))
        }
        // A v2 cgroup with processes of its own hands no controller to children (but the root), so the usual place
        // is beside the host: its parent, when that hands `pids` down (systemd: `Delegate=pids` with
        // `DelegateSubgroup=`, which puts the service's processes one level down).
        func handsPids(_ folder: String) -> Bool {
            (SystemFile.text(folder + "/cgroup.subtree_control") ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("pids")
        }
        if handsPids(path) { return .success(path) }
        if path.count > m.point.count, let slash = path.lastIndex(of: "/") {
            let parent = String(path[..<slash])
            if parent.count >= m.point.count, handsPids(parent) { return .success(parent) }
        }
        return .failure(Unavailable(description: "neither the host's cgroup \(path) nor its parent hands the pids controller to its children "
                                    + "(cgroup v2: \"pids\" is in neither's cgroup.subtree_control; under systemd: Delegate=pids and DelegateSubgroup=)"))
    }

    /// Mountinfo's octal escapes (`\040` for a space) undone.
    private static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = [], utf8 = Array(field.utf8), i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), i + 3 < utf8.count,
               let code = UInt8(String(decoding: utf8[i + 1...i + 3], as: UTF8.self), radix: 8) {
                bytes.append(code)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Makes the cgroup for `child` (a process this host started and that has not yet run code it was not built
    /// with) with room for `limit` tasks, and moves the child in.
    /// - Throws: `Unavailable` when there is no parent, or a file of the cgroup cannot be made or written (the cgroup
    ///   is removed again then).
    public static func make(for child: pid_t, limit: Int) throws(Unavailable) -> PidsCgroup {
        let parent: String
        switch Self.parent {
        case let .success(folder): parent = folder
        case let .failure(why): throw why
        }
        let cgroup = PidsCgroup(path: "\(parent)/keel-\(namespace)-\(getpid())-\(child).\(Self.counter.add(1, ordering: .relaxed).newValue)")
        // Never one that exists (a leftover of the same name keeps its refusal count, and its members): it is
        // removed first when empty, else this worker goes without.
        var made = mkdir(cgroup.path, 0o755) == 0
        if !made, errno == EEXIST, rmdir(cgroup.path) == 0 { made = mkdir(cgroup.path, 0o755) == 0 }
        guard made else {
            throw Unavailable(description: "cannot make \(cgroup.path): \(SystemFile.lastError)")
        }
        for (file, value) in [("pids.max", "\(limit)"), ("cgroup.procs", "\(child)")] {
            guard let why = cgroup.write(file, value) else { continue }
            _ = rmdir(cgroup.path)
            throw Unavailable(description: why)
        }
        return cgroup
    }

    /// Writes `value` to the cgroup's `file`; nil, or why it could not.
    private func write(_ file: String, _ value: String) -> String? {
        let fd = open(path + "/" + file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return "cannot open \(path)/\(file): \(SystemFile.lastError)" }
        defer { close(fd) }
        let done = Array(value.utf8).withUnsafeBytes { SystemFile.writeAll(fd, $0) }
        return done ? nil : "cannot write \(value) to \(path)/\(file): \(SystemFile.lastError)"
    }

    /// How many forks or clones the kernel refused for this cgroup's limit so far (the `max` line of `pids.events`);
    /// nil when it cannot be read.
    public var refusals: Int? {
        guard let text = SystemFile.text(path + "/pids.events") else { return nil }
        let line = text.split(separator: "\n").first { $0.hasPrefix("max ") }
        return line.flatMap { Int($0.dropFirst(4)) }
    }

    /// The tasks (processes and threads) in the cgroup now (`pids.current`); nil when it cannot be read.
    public var tasks: Int? {
        guard let text = SystemFile.text(path + "/pids.current") else { return nil }
        return Int(text.filter { $0.isNumber })
    }

    /// SIGKILLs every process left in the cgroup (the child's descendants, wherever their process group is), then
    /// removes it. The killed may take a while to leave (a process of many GiB frees its memory first): every 5 ms
    /// for the first half second, then every 100 ms up to `patience` seconds. Returns false when the cgroup is still
    /// there then, left for the next host's start to remove. [any thread; blocks up to `patience` seconds]
    @discardableResult
    public func end(patience: Double = 10) -> Bool {
        let procs = path + "/cgroup.procs"
        _ = write("pids.max", "0")  // no more forks while its members are killed
        _ = write("cgroup.kill", "1")  // cgroup v2 (Linux 5.14): every member at once, by the kernel; else by pidfd below
        let clock = ContinuousClock(), start = clock.now
        var tries = 0
        while true {
            if rmdir(path) == 0 || errno == ENOENT { return true }
            guard clock.now - start < .milliseconds(Int(patience * 1000)) else { return false }
            _ = keel_cgroup_kill_members(procs)
            tries += 1
            usleep(tries <= 100 ? 5_000 : 100_000)
        }
    }

    /// How many cgroups this process made (the last part of their names).
    private static let counter = Atomic<Int>(0)

    /// This process's pid namespace, as the inode number of /proc/self/ns/pid ("0" when it cannot be read): pids are
    /// only comparable within one namespace.
    public static let namespace: String = {
        var buffer = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/self/ns/pid", &buffer, buffer.count - 1)
        guard n > 0 else { return "0" }
        let link = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) // "pid:[4026531836]"
        let digits = link.filter(\.isNumber)
        return digits.isEmpty ? "0" : digits
    }()

    /// Ends the cgroups in `folder` that hosts of this pid namespace left when they died (SIGKILL, the OOM killer):
    /// `keel-<namespace>-<host>-<child>` whose host pid no longer runs. What a killed host's workers started and that
    /// outlived them (a worker granted `processes`) is killed with it. A cgroup of another namespace, whose pids
    /// mean nothing here, is left alone; one of the older `keel-<host>-<child>` form is removed when empty and its host
    /// is gone.
    static func removeLeftovers(in folder: String) {
        for name in SystemFile.names(in: folder) ?? [] where name.hasPrefix("keel-") {
            let parts = name.split(separator: "-")
            let ours = parts.count == 4 && parts[1] == namespace && namespace != "0"
            guard ours || parts.count == 3, let host = pid_t(parts[parts.count - 2]), host != getpid(),
                  kill(host, 0) != 0, errno == ESRCH else { continue }
            if ours { PidsCgroup(path: folder + "/" + name).end(patience: 1) } else { _ = rmdir(folder + "/" + name) }
        }
    }
}
