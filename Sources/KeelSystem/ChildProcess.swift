// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem
import Glibc

/// Starting a child process with `posix_spawn` as the host does it everywhere: a clean signal state (no signal
/// blocked, every signal at its default: the host may block or ignore signals the child relies on), standard
/// descriptors set as asked and no other descriptor inherited, optionally in a process group of its own.
/// Stateless; safe from any thread.
public enum ChildProcess {
    /// What one of the child's standard descriptors (0, 1, 2) is.
    public enum Descriptor: Sendable {
        /// The parent's own, inherited.
        case inherit
        /// `/dev/null` (read-only for 0, write-only for 1 and 2).
        case null
        /// A descriptor of the parent's, duplicated onto it (its close-on-exec flag does not carry over).
        case descriptor(Int32)
    }

    /// The child's number for the descriptor `spawn(passing:)` hands it.
    public static let passedDescriptor: Int32 = 3

    /// Why a child could not be started: the `errno` of `posix_spawn`.
    public struct SpawnError: Error, Sendable, CustomStringConvertible {
        public let code: Int32
        public var description: String { String(cString: strerror(code)) }
    }

    /// Starts `path` with `arguments` (the first is the child's `argv[0]`) and `environment` as `NAME=value`
    /// entries (nil: this process's). `standard` gives descriptors 0, 1 and 2; `ownGroup` puts the child in a new
    /// process group whose id is its pid (to signal it and its children at once). `passing`, when given, is a
    /// descriptor of the parent's that the child gets as `passedDescriptor` (its close-on-exec flag does not carry over).
    /// - Returns: the child's pid; the caller reaps it.
    /// - Throws: `SpawnError` when it cannot be started.
    public static func spawn(_ path: String, arguments: [String], environment: [String]? = nil,
                             standard: [Descriptor] = [.inherit, .inherit, .inherit],
                             passing: Int32? = nil, ownGroup: Bool = false) throws(SpawnError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (fd, what) in standard.prefix(3).enumerated() {
            switch what {
            case .inherit: break
            case .null: posix_spawn_file_actions_addopen(&actions, Int32(fd), "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
            case let .descriptor(source): posix_spawn_file_actions_adddup2(&actions, source, Int32(fd))
            }
        }
        // Nothing else: a pipe another thread made meanwhile without close-on-exec (Foundation's Process does) must
        // not stay open in this child, or whoever reads that pipe to its end waits as long as the child lives.
        if let passing { posix_spawn_file_actions_adddup2(&actions, passing, passedDescriptor) }
        keel_spawn_closefrom(&actions, passing == nil ? 3 : passedDescriptor + 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if ownGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { $0.map { strdup($0) } + [nil] }
        defer { for p in argv + (envp ?? []) { free(p) } }
        var pid: pid_t = 0
        let status = envp.map { posix_spawn(&pid, path, &actions, &attributes, argv, $0) }
            ?? posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard status == 0 else { throw SpawnError(code: status) }
        return pid
    }

    /// How a child ended: the signal that ended it (0 when it exited), its exit code, or that it ran past its time.
    public struct Ending: Sendable {
        public let timedOut: Bool
        public let signal: Int32
        public let exitCode: Int32
    }

    /// Waits up to `timeout` seconds for the child `pid`, started in a process group of its own (`ownGroup`), then
    /// kills that whole group (whatever the child started that is still in it) and reaps the child. The group is
    /// killed before the child is reaped: until then its pid, the group's id, cannot be reused. Blocks the caller.
    public static func waitKillingGroup(_ pid: pid_t, timeout: Double) -> Ending {
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int64(timeout * 1000)))
        var ended = false
        while !ended && ContinuousClock.now < deadline {
            var info = siginfo_t()  // ended but not reaped (WNOWAIT)
            let r = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
            if (r == 0 && info._sifields._sigchld.si_pid == pid) || (r < 0 && errno != EINTR) { ended = true } else { usleep(5_000) }
        }
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return Ending(timedOut: !ended, signal: status & 0x7f, exitCode: (status >> 8) & 0xff)
    }
}
