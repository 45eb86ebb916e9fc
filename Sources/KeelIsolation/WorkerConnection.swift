// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Dispatch
import Foundation
import Glibc
import KeelLoader
import KeelSystem
import Synchronization

/// One running worker process and the socket to it, host side.
///
/// `spawn` starts `keel worker` with one end of a socket pair as its standard input; a reader thread takes the
/// worker's frames and hands each answer to the call waiting for it. Calls may be made from any number of threads
/// at once; each blocks its thread until the answer, the worker's death or its deadline (then the worker is killed:
/// a call cannot be abandoned while the plugin code goes on, and a worker is cheap to replace). Everything the
/// worker sends is checked; a malformed frame kills it. Thread-safe.
final class WorkerConnection: Sendable {
    /// Why a call got no answer.
    enum Failure: Error, Sendable {
        /// The worker died (or was killed) with the call in flight, or before it was sent.
        case crashed(String)
        /// The call ran past its deadline; the worker was killed.
        case timedOut(Double)
    }

    let pid: pid_t
    private let socket: Int32
    private let pending = Mutex(Pending())
    /// What goes to the worker, written by a thread of its own: no caller (a task on Swift's cooperative pool, the
    /// reader thread, the kernel's thread) ever blocks on a worker that stopped reading.
    private let outbox: WorkerOutbox
    /// Set by a call that got its answer: the worker has served since it started (for the restart back-off).
    let served = Atomic<Bool>(false)
    /// Set once the worker is reaped: its output's reader stops when the pipe has nothing more (see `WorkerOutput`).
    private let outputDone = WorkerOutput.Stop()
    /// Signalled once the reader thread has reaped the worker and removed its cgroup, or handed a cgroup whose killed
    /// members are slow to leave to a thread of its own (`waitForEnd`).
    private let ended = DispatchSemaphore(value: 0)

    private struct Pending {
        var next: UInt64 = 1
        var slots: [UInt64: Slot] = [:]
        /// Why the worker is gone; set once.
        var ended: String?
    }

    /// One call's wait: a thread on `done`, or a task on `continuation`. Whoever removes the slot from `slots` (under
    /// the lock) finishes it, exactly once, through `finish`. `@unchecked` because `answer` is written once, before
    /// `done` is signalled, and read only after the wait.
    private final class Slot: @unchecked Sendable {
        /// For a thread's call only (an async call resumes `continuation`, and needs no semaphore).
        let done: DispatchSemaphore?
        var answer: Result<WireReader, Failure> = .failure(.crashed("no answer"))
        /// Set for an async call, before the slot is registered.
        var continuation: CheckedContinuation<Result<WireReader, Failure>, Never>?
        /// For an async call: when the sweeper fails it (a thread's wait has its own time-out), and its budget.
        var deadline: Double = .infinity
        var budget: Double = 0
        /// For a `handle` call: the request's principal, the only one the worker may act for while it serves it.
        var principal: Principal?
        /// The kind of frame the call sent, set under the lock before it is sent: the answer must be of its kind
        /// (`Wire.Kind.answers`); nil until then (an answer to a call not yet sent is forged).
        var asked: Wire.Kind?

        init(waiting: Bool) { done = waiting ? DispatchSemaphore(value: 0) : nil }

        func finish(_ result: Result<WireReader, Failure>) {
            if let continuation {
                continuation.resume(returning: result)
            } else {
                answer = result
                done?.signal()
            }
        }
    }

    /// What the reader thread does with frames that answer no call (logs, the worker's own calls) and with the
    /// worker's end.
    struct Handlers: Sendable {
        var log: @Sendable (Int, String) -> Void
        var exited: @Sendable (WorkerConnection, String) -> Void
        var services: HostServices = .none
    }

    /// Threads the worker may have at once (`IsolationPolicy.threadLimit`); 0 is none.
    private let threadLimit: Int
    /// The worker's own `pids` cgroup, when the host can make one: `threadLimit` then bounds the worker and every
    /// process it starts, together, and the kernel refuses what would go past it (see `spawn`).
    let cgroup: PidsCgroup?

    private init(pid: pid_t, socket: Int32, threadLimit: Int, cgroup: PidsCgroup?) {
        self.pid = pid
        self.socket = socket
        self.threadLimit = threadLimit
        self.cgroup = cgroup
        outbox = WorkerOutbox(socket: socket)
    }

    /// Set once a host has said that its workers go without a cgroup (said once per process), and once one was made
    /// (from then on, each worker that goes without is said: the folder is usable, so that is not expected).
    private static let saidUnbounded = Atomic<Bool>(false)
    private static let madeOne = Atomic<Bool>(false)

    deinit { close(socket) }

    /// Starts `executable worker` with its end of a new socket pair as standard input (its output and errors go to
    /// the host's). `environment` entries are added to the host's.
    /// - Throws: `WorkerConnection.Failure.crashed` with the system's reason when the process cannot be started.
    /// - Parameter readable: the folders the worker may read besides the system's (its plugin's bundle); the rest of
    ///   the file system is closed to it where the kernel has Landlock (`WorkerMain.readable`).
    ///   A folder with a line break in its path is refused (`.crashed`): the worker reads them one per line, and
    ///   plugin.yaml names the library's folder, so "x\n/home/me/lib.so" would add /home/me.
    /// - Parameter threadLimit: `IsolationPolicy.threadLimit`; 0 is no limit. Where the host can make a `pids` cgroup
    ///   (`PidsCgroup`), the worker is moved into one of its own before it runs plugin code: the kernel refuses a
    ///   thread or process that would take the worker and its processes past the limit (EAGAIN), and the worker is
    ///   killed at the first refusal (read every 50 ms), as a crash. Elsewhere its own threads are counted every 50 ms
    ///   and it is killed once over the limit (its processes' threads are not counted: said once per process in
    ///   the plugin's log).
    static func spawn(executable: String, arguments: [String], readable: [String], network: Bool, processes: Bool,
                      threadLimit: Int = 0, handlers: Handlers) throws(Failure) -> WorkerConnection {
        if let folder = readable.first(where: { $0.contains("\n") }) {
            throw .crashed("the plugin's folder \"\(folder.replacingOccurrences(of: "\n", with: "\\n"))\" has a line break in its path: no worker is started for it")
        }
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw .crashed("cannot make a socket pair: \(SystemFile.lastError)")
        }
        // Its /proc/<pid>/mem, descriptors and environment are no worker's to open.
        Confinement.closeHostToWorkers()
        // No Swift crash backtracer in the worker: a crash is expected there, and reported by the host.
        var environment = ChildEnvironment.scrubbed(ProcessInfo.processInfo.environment)
        environment["SWIFT_BACKTRACE"] = "enable=no"
        environment[WorkerMain.wireVariable] = String(WorkerMain.wireVersion)
        environment[WorkerMain.readableVariable] = readable.joined(separator: "\n")
        environment[WorkerMain.networkVariable] = network ? "1" : nil
        environment[WorkerMain.processesVariable] = processes ? "1" : nil
        // Its standard output and error: a pipe the host reads and logs as the plugin's (`WorkerOutput`), never
        // the host's own (a log file it could truncate, a terminal).
        guard let output = SystemFile.pipe() else {
            close(fds[0])
            close(fds[1])
            throw .crashed("cannot make a pipe for its output: \(SystemFile.lastError)")
        }
        let pid: pid_t
        do {
            // In a process group of its own: killing the worker kills what it started too (see `terminate`).
            pid = try ChildProcess.spawn(executable, arguments: [OwnExecutable.shown(executable), "worker"] + arguments,
                                         environment: environment.map { "\($0.key)=\($0.value)" },
                                         standard: [.descriptor(fds[1]), .descriptor(output.write), .descriptor(output.write)], ownGroup: true)
        } catch {
            for fd in [fds[0], fds[1], output.read, output.write] { close(fd) }
            throw .crashed("cannot start \(OwnExecutable.shown(executable)): \(error)")
        }
        close(fds[1])
        close(output.write)
        // Moved in before it is sent anything: plugin code runs only once the host sends the activation.
        var cgroup: PidsCgroup?
        if threadLimit > 0 {
            do {
                cgroup = try PidsCgroup.make(for: pid, limit: threadLimit)
                madeOne.store(true, ordering: .relaxed)
            } catch {
                if !saidUnbounded.exchange(true, ordering: .relaxed) {
                    handlers.log(LogLevel.warn.rawValue, "workers get no cgroup of their own (\(error)): a worker's threads are counted "
                                 + "every 50 ms against --worker-threads, and the processes a worker granted `processes` starts are not bounded")
                } else if madeOne.load(ordering: .relaxed) {
                    handlers.log(LogLevel.warn.rawValue, "this worker gets no cgroup of its own (\(error)): its threads are counted every 50 ms, "
                                 + "and the processes it starts are not bounded")
                }
            }
        }
        let connection = WorkerConnection(pid: pid, socket: fds[0], threadLimit: threadLimit, cgroup: cgroup)
        WorkerOutput.drain(output.read, name: "keel-worker-output-\(pid)", until: connection.outputDone, log: handlers.log)
        let reader = Thread { connection.read(handlers) }
        reader.name = "keel-worker-\(pid)"
        reader.start()
        connection.outbox.start(name: "keel-worker-out-\(pid)") {
            connection.terminate(because: "did not read what was sent to it within \(WorkerOutbox.writeTimeout) s")
        }
        // Its threads are counted from the start, the spare's and the activation's included.
        if threadLimit > 0 { connection.startSweeper() }
        return connection
    }

    /// Sends a call and waits for its answer, at most `timeout` seconds (then the worker is killed). `principal`:
    /// the request's, for a `handle` call (see `principal(ofCall:)`).
    func call(_ frame: (UInt64) -> [UInt8], timeout: Double, principal: Principal? = nil) -> Result<WireReader, Failure> {
        let slot = Slot(waiting: true)
        slot.principal = principal
        let registered: Result<UInt64, Failure> = pending.withLock { p in
            if let ended = p.ended { return .failure(.crashed(ended)) }
            let id = p.next
            p.next += 1
            p.slots[id] = slot
            return .success(id)
        }
        let id: UInt64
        switch registered {
        case let .success(n): id = n
        case let .failure(f): return .failure(f)
        }
        guard send(asking(frame(id), in: slot)) else {
            terminate(because: "left \(WorkerOutbox.limit >> 20) MiB sent to it unread")
            _ = slot.done?.wait(timeout: .now() + 5)
            return pending.withLock { p in
                p.slots[id] = nil
                return .failure(.crashed(p.ended ?? "the worker stopped reading"))
            }
        }
        guard slot.done?.wait(timeout: .now() + timeout) == .success else {
            pending.withLock { _ = $0.slots.removeValue(forKey: id) }
            terminate()
            return .failure(.timedOut(timeout))
        }
        if case .success = slot.answer { served.store(true, ordering: .relaxed) }
        return slot.answer
    }

    /// Sends a call and suspends the task until its answer, at most `timeout` seconds (then the worker is killed):
    /// no thread waits. The write itself is one `send` on a socket the worker drains.
    func call(_ frame: (UInt64) -> [UInt8], timeout: Double, principal: Principal? = nil) async -> Result<WireReader, Failure> {
        let answer = await withCheckedContinuation { (continuation: CheckedContinuation<Result<WireReader, Failure>, Never>) in
            let slot = Slot(waiting: false)
            slot.principal = principal
            slot.continuation = continuation
            slot.deadline = Self.monotonic() + timeout
            slot.budget = timeout
            let registered: UInt64? = pending.withLock { p in
                guard p.ended == nil else { return nil }
                let id = p.next
                p.next += 1
                p.slots[id] = slot
                return id
            }
            guard let id = registered else {
                continuation.resume(returning: .failure(.crashed(pending.withLock { $0.ended } ?? "ended")))
                return
            }
            startSweeper()
            if !send(asking(frame(id), in: slot)) {
                // The reader fails the slot when the worker is gone.
                terminate(because: "left \(WorkerOutbox.limit >> 20) MiB sent to it unread")
            }
        }
        if case .success = answer { served.store(true, ordering: .relaxed) }
        return answer
    }

    private let sweeping = Atomic<Bool>(false)

    /// Starts, once, the thread that fails async calls past their deadline (and kills the worker for them).
    private func startSweeper() {
        guard !sweeping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // The worker's status file is opened once, while it is surely this worker's (not yet reaped), and read from
        // its start at each sweep: its pid cannot become another process's under it, and a count that cannot be
        // read ends the worker rather than leave it unchecked (the limit fails closed).
        let (status, unopened) = threadLimit > 0 && cgroup == nil ? signalling.withLock { s -> (Int32, String?) in
            guard !s.reaped else { return (-1, nil) }
            let fd = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
            return (fd, fd < 0 ? String(cString: strerror(errno)) : nil)
        } : (-1, nil)
        let sweeper = Thread { [self] in
            defer { if status >= 0 { close(status) } }
            // Until the worker has ended, not only until it is told to (`isRunning`): calls still pending on a worker
            // being killed keep their deadline (one stuck in the kernel after SIGKILL is not reaped at once).
            while pending.withLock({ $0.ended == nil }) {
                usleep(50_000)
                if let cgroup {
                    // The kernel keeps the limit; the first refusal ends the worker, as a count over it did.
                    if let refused = cgroup.refusals, refused > 0 {
                        terminate(because: "reached its limit of \(threadLimit) threads and processes (keel serve --worker-threads): "
                                  + "the kernel refused it \(refused) more")
                    }
                } else if threadLimit > 0 {
                    switch Self.threadCount(status: status) {
                    case let threads? where threads > threadLimit:
                        terminate(because: "had \(threads) threads, over the limit of \(threadLimit) (keel serve --worker-threads)")
                    case nil where pending.withLock({ $0.ended == nil }):
                        terminate(because: "its thread count could not be read from /proc/\(pid)/status (\(unopened ?? "read failed")), so its thread limit (keel serve --worker-threads) could not be kept")
                    default: break
                    }
                }
                let now = Self.monotonic()
                let late = pending.withLock { p -> [Slot] in
                    let ids = p.slots.filter { $0.value.deadline < now }.map(\.key)
                    return ids.compactMap { p.slots.removeValue(forKey: $0) }
                }
                guard !late.isEmpty else { continue }
                terminate()
                for slot in late { slot.finish(.failure(.timedOut(slot.budget))) }
            }
        }
        sweeper.name = "keel-worker-sweep-\(pid)"
        sweeper.start()
    }

    /// The number of threads of a process whose /proc/PID/status is open as `status` (its `Threads:` line, the
    /// whole file read from its start, however long); nil when it cannot be read (the process is gone, or the file
    /// was never opened: -1).
    static func threadCount(status fd: Int32) -> Int? {
        guard fd >= 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096), used = 0
        while true {
            if used == buffer.count {
                guard buffer.count < 1 << 20 else { return nil }
                buffer += [UInt8](repeating: 0, count: buffer.count)
            }
            let n = buffer.withUnsafeMutableBytes { room in
                room.baseAddress.map { pread(fd, $0 + used, room.count - used, off_t(used)) } ?? -1
            }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            used += n
        }
        let text = String(decoding: buffer[..<used], as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Threads:") }) else { return nil }
        return Int(line.dropFirst("Threads:".count).filter { $0 != " " && $0 != "\t" })
    }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// `frame`, after noting its kind in `slot` (under the lock the reader takes the slot under).
    private func asking(_ frame: [UInt8], in slot: Slot) -> [UInt8] {
        let kind = frame.count > 4 ? Wire.Kind(rawValue: frame[4]) : nil
        pending.withLock { _ in slot.asked = kind }
        return frame
    }

    /// Queues one frame for the worker (`WorkerOutbox.send`); false when the connection ended or the worker does
    /// not read. Never blocks.
    @discardableResult
    func send(_ frame: [UInt8]) -> Bool { outbox.send(frame) }

    /// The principal of the host's call `id` to this worker while it is in flight (a `handle` call; nil for any
    /// other call, or once it was answered): on whose behalf the worker may call a command while serving it.
    func principal(ofCall id: UInt64) -> Principal? {
        pending.withLock { $0.slots[id]?.principal }
    }


    /// Kills the worker and its process group, and shuts the host's end of the socket, so that the reader thread
    /// sees the end even when something the worker started (a forked child) still holds the other end; the reader
    /// then reaps the worker and fails its calls.
    /// - Parameter why: said as the reason the worker ended (instead of "crashed with SIGKILL"), when given.
    func terminate(because why: String? = nil) {
        // Once reaped, its pid may be another process's: the check and the signals are one step under the lock the
        // reader takes to mark it reaped, so they reach the worker (not yet reaped) or nothing.
        // Not running from here on: a call that arrives before the reader has reaped it waits for the next worker
        // (`WorkerSupervisor.currentConnection`) instead of being sent to the one being killed.
        killed.store(true, ordering: .releasing)
        signalling.withLock { s in
            guard !s.reaped else { return }
            if s.why == nil { s.why = why }
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
        }
        shutdown(socket, Int32(SHUT_RDWR))
    }

    /// Set by `terminate`, before its signals.
    private let killed = Atomic<Bool>(false)

    /// Waits up to `seconds` until the worker, once it ends (`terminate`), is reaped and its cgroup removed (or, when
    /// what it held takes longer than half a second to leave, handed to a thread that ends it; a host that exits
    /// meanwhile leaves that one to the next start). False when that took longer. [any thread but the reader]
    @discardableResult
    func waitForEnd(_ seconds: Double) -> Bool {
        guard ended.wait(timeout: .now() + seconds) == .success else { return false }
        ended.signal()  // for any later waiter
        return true
    }

    /// Whether the reader thread is about to reap (or reaped) the worker, set under the lock `terminate` signals in;
    /// and why the host killed it, when it said.
    private let signalling = Mutex<(reaped: Bool, why: String?)>((false, nil))

    /// True while the worker has not ended, nor been told to (`terminate`).
    var isRunning: Bool { !killed.load(ordering: .acquiring) && pending.withLock { $0.ended == nil } }

    // MARK: the reader thread

    private func read(_ handlers: Handlers) {
        var reason = "closed its socket"
        var violated = false
        let source = FrameSource(socket: socket)
        var logs = LogBudget(now: Self.monotonic())
        // The leases this worker holds on the host's tables: all released when it ends.
        let leases = handlers.services.leases?()
        defer { leases?.releaseAll() }
        while let body = source.next() {
            do throws(WireError) {
                var frame = try WireReader(frame: body)
                if let dropped = logs.tick(now: Self.monotonic()) { handlers.log(LogLevel.warn.rawValue, dropped) }
                switch frame.kind {
                case .log:
                    let level = try frame.int()
                    let message = TextLimits.logLine(try frame.string())
                    guard logs.admit(now: Self.monotonic()) else { continue }
                    handlers.log(level, message)
                case .callCommand, .checkPermission, .serviceAcquire, .serviceRelease, .serviceInvoke:
                    try serveHostCall(frame, services: handlers.services, leases: leases) { level, message in
                        if logs.admit(now: Self.monotonic()) { handlers.log(level, message) }
                    }
                case .activated, .activationFailed, .response, .principal, .decision, .deactivated, .commandResult, .serviceResult:
                    // An answer to no call waiting is dropped (a late one, after its call timed out); one of another
                    // kind than its call's is forged.
                    let kind = frame.kind
                    let taken: Slot?? = pending.withLock { p in
                        guard let slot = p.slots[frame.id] else { return .some(nil) }
                        guard let asked = slot.asked, kind.answers(asked) else { return nil }
                        return p.slots.removeValue(forKey: frame.id)
                    }
                    guard let taken else { throw WireError(description: "a \(kind) frame answering a call of another kind") }
                    taken?.finish(.success(frame))
                default:
                    throw WireError(description: "a \(frame.kind) frame from a worker")
                }
            } catch {
                reason = "sent a malformed frame (\(error)); killed"
                violated = true
                terminate()
                break
            }
        }
        if source.malformed {
            reason = "sent a frame of a bad size; killed"
            violated = true
            terminate()
        }
        if let dropped = logs.tick(now: Self.monotonic(), force: true) { handlers.log(LogLevel.warn.rawValue, dropped) }
        // Shut, not closed: a late answer to one of the worker's own calls may still be sent on it, and must not
        // reach a file that reused the number. Closed with the connection.
        shutdown(socket, Int32(SHUT_RDWR))
        outbox.close()
        // What the worker started goes with it.
        let why = signalling.withLock { s -> String? in
            kill(-pid, SIGKILL)
            s.reaped = true
            return s.why
        }
        let end = Self.reap(pid)
        // And what it started that left its group, or is still on its way out: the cgroup goes once they are gone.
        // Half a second here (the calls waiting on this worker are failed only after it); one whose killed members take
        // longer to leave (a process of many GiB) is ended on a thread of its own, and said when even that fails.
        if let cgroup, !cgroup.end(patience: 0.5) {
            let log = handlers.log
            let finishing = Thread {
                if !cgroup.end(patience: 30) {
                    log(LogLevel.warn.rawValue, "the worker's cgroup \(cgroup.path) still holds processes 30 s after they were killed; "
                        + "the next host's start removes it once they are gone")
                }
            }
            finishing.name = "keel-cgroup-end"
            finishing.start()
        }
        ended.signal()
        outputDone.set()
        // The host's reason, when the host's SIGKILL is what ended it (not a crash of its own meanwhile).
        if !violated, let end { reason = (end == "crashed with SIGKILL" ? why.map { "\($0); killed" } : nil) ?? end }
        let slots = pending.withLock { p -> [Slot] in
            p.ended = reason
            defer { p.slots = [:] }
            return Array(p.slots.values)
        }
        for slot in slots { slot.finish(.failure(.crashed(reason))) }
        handlers.exited(self, reason)
    }

    /// Waits for the worker and says how it ended, e.g. "crashed with SIGSEGV".
    private static func reap(_ pid: pid_t) -> String? {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 { if errno != EINTR { return nil } }
        let signal = status & 0x7f
        if signal != 0 { return "crashed with \(signalName(signal))" }
        let code = (status >> 8) & 0xff
        return "exited with code \(code)"
    }

    static func signalName(_ s: Int32) -> String {
        switch s {
        case SIGSEGV: "SIGSEGV"
        case SIGBUS: "SIGBUS"
        case SIGABRT: "SIGABRT"
        case SIGILL: "SIGILL"
        case SIGFPE: "SIGFPE"
        case SIGKILL: "SIGKILL"
        case SIGXCPU: "SIGXCPU (over its CPU time limit)"
        default: "signal \(s)"
        }
    }
}
