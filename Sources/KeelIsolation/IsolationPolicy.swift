// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc

/// How workers are run: their call budget, restarts, and resource limits. Documented in the README.
public struct IsolationPolicy: Sendable, Hashable {
    /// Seconds a call into a worker may take; a call past it gets 504 and the worker is killed and restarted.
    public var callTimeout: Double
    /// Seconds a worker may take to start and activate.
    public var startTimeout: Double
    /// A plugin whose worker crashes `crashLimit` times within `crashWindow` seconds, or `crashLimit` times in a row
    /// each within `crashWindow` of its start with no call answered (a worker that cannot start again), is given up:
    /// reported as misbehaving, which disables it (unless it has auth hooks: see `Kernel.disableMisbehaving`).
    public var crashLimit: Int
    public var crashWindow: Double
    /// Delay before the restart after the second crash (or failed restart) in a row; the first restarts at once, and
    /// each further one in a row doubles it, up to `maximumBackoff` (`WorkerSupervisor.backoff(afterCrashesInARow:)`).
    public var backoff: Double
    public var maximumBackoff: Double
    /// Address-space limit of a worker (bytes, RLIMIT_AS) and its CPU time (seconds, RLIMIT_CPU); 0 is none.
    public var memoryLimitBytes: Int
    public var cpuSeconds: Int
    /// Threads a worker may have at once; 0 is none. Every thread takes one of the machine's process ids, which the
    /// host needs too (a thread bomb in a worker would leave it none), and no limit the kernel keeps binds one
    /// process's threads (`RLIMIT_NPROC` counts a user's, and never root's): the host reads the worker's count every
    /// 50 ms and kills a worker over the limit (`WorkerConnection`), which then counts as a crash. A limit under
    /// `minimumThreadLimit` (other than 0; a negative one too) is taken as that minimum: a worker's runtime alone has about 22 threads
    /// idle and 70 busy, and a lower limit would kill every worker in a loop.
    public var threadLimit: Int {
        get { limit }
        set { limit = newValue == 0 ? 0 : max(newValue, Self.minimumThreadLimit) }
    }
    private var limit = 0
    /// The lowest thread limit there is (other than none): `keel serve --worker-threads` refuses a lower one.
    public static let minimumThreadLimit = 96
    /// The default thread limit on this machine: `defaultThreadLimit(cores:)` of its online cores. Those, not the
    /// container's CPU quota (which `ProcessInfo.activeProcessorCount` follows): the runtime sizes its thread pools
    /// by the cores it may run on, whatever share of them it is given.
    public static let defaultThreadLimit = defaultThreadLimit(cores: sysconf(Int32(_SC_NPROCESSORS_ONLN)))

    /// 256, or 8 per core with more than 32 cores: the runtime's thread pools grow with the cores, and a limit its idle
    /// threads reach would kill every worker in a loop.
    public static func defaultThreadLimit(cores: Int) -> Int { max(256, 8 * cores) }
    /// Keep one started, not yet activated worker process ready per plugin, so that a restart after a crash costs
    /// only the library's load and activate, not a process start (calls, auth hooks above all, wait for it).
    public var spare: Bool

    public init(callTimeout: Double = 10, startTimeout: Double = 10, crashLimit: Int = 20, crashWindow: Double = 60,
                backoff: Double = 0.05, maximumBackoff: Double = 5, memoryLimitBytes: Int = 0, cpuSeconds: Int = 0,
                threadLimit: Int = IsolationPolicy.defaultThreadLimit, spare: Bool = true) {
        self.spare = spare
        self.callTimeout = callTimeout
        self.startTimeout = startTimeout
        self.crashLimit = crashLimit
        self.crashWindow = crashWindow
        self.backoff = backoff
        self.maximumBackoff = maximumBackoff
        self.memoryLimitBytes = memoryLimitBytes
        self.cpuSeconds = cpuSeconds
        self.threadLimit = threadLimit
    }

    public static let `default` = IsolationPolicy()
}
