// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Dispatch
import Foundation
import Glibc
import KeelLoader
import KeelManifest
import KeelSystem
import Synchronization

/// The worker process (`keel worker`): one plugin, loaded through the same loader and ABI as in the host, serving
/// the host's calls over the socket on its standard input.
///
/// The first frame must be `activate`; the worker sets its resource limits, opens and checks the library, activates
/// it and reports what it registered. Then every call runs on a thread of its own (a handler may block), and its
/// answer goes back with the call's id. `deactivate` drains, runs the plugin's deactivate, answers, and exits. The
/// worker exits too when the host closes the socket (the host died or gave up on it).
public enum WorkerMain {
    /// Runs the worker on `socket` until the host ends it. Never returns.
    public static func run(socket: Int32 = 0) -> Never {
        // Its threads are named for it (they inherit this thread's name; `keel` names the process itself).
        OwnExecutable.nameProcess("keel-worker")
        // A worker of another keel build (the executable replaced while the server runs) would misread every frame.
        let spoken = getenv(wireVariable).map { String(cString: $0) }
        guard spoken == String(wireVersion) else {
            say("speaks worker protocol \(wireVersion), the host \(spoken ?? "none (an earlier keel)"): the keel executable was "
                + "replaced after the server started; restart the server")
            exit(78)
        }
        if getenv(confinedMarker) == nil {
            var noCore = rlimit(rlim_cur: 0, rlim_max: 0)
            setrlimit(Int32(RLIMIT_CORE.rawValue), &noCore)
            // Before any plugin code: it may not signal, trace or read the host (or any process but this one).
            // The network only when the operator granted it (`networkVariable`, from the host).
            let network = getenv(networkVariable) != nil
            // Processes of its own likewise (`processesVariable`): else threads only.
            let processes = getenv(processesVariable) != nil
            // Fails closed, as the file confinement below: a worker without its filter could signal the host, open
            // sockets and start processes it was not granted.
            if let problem = Confinement.confineWorker(network: network, processes: processes) {
                say("cannot confine itself (its system call filter, its capabilities): \(problem); the plugin is not run")
                exit(71)
            }
            // Landlock confines this thread and what it starts, not the run-time's threads that exist already:
            // confined, the worker executes itself again, so that every thread it will ever have is confined. The
            // seccomp filter, the limits and the dropped capability carry over.
            switch Confinement.restrictFiles(readable: readable(), writable: ["/dev/null"], network: network) {
            case .success:
                setenv(confinedMarker, "1", 1)
                execv("/proc/self/exe", CommandLine.unsafeArgv)
                say("cannot execute itself again, confined: \(String(cString: strerror(errno)))")
                exit(71)
            case let .failure(problem) where Confinement.landlockABI != nil:
                // The kernel has Landlock and the rules could not be set: fail closed, never run the plugin open.
                say("cannot confine itself to its files: \(problem)")
                exit(71)
            case let .failure(problem):
                say("running without file-system confinement: \(problem)")
            }
        }
        unsetenv(confinedMarker)
        watchHost(socket)
        let done = DispatchSemaphore(value: 0)
        // Plugin activate runs here: a full-size stack, as the host's lifecycle thread has.
        let thread = Thread {
            WorkerServer(socket: socket).serve()
            done.signal()
        }
        thread.stackSize = 16 << 20
        thread.start()
        done.wait()
        exit(0)
    }

    /// Ends the worker the moment the host's end of the socket closes (the host died, or killed it and shut the
    /// socket), whatever its threads are doing: a plugin busy in its activate or in handlers holds every reader, so
    /// none would read the end of the stream, and the worker would outlive its host. A thread of its own that only
    /// polls for the hang-up; it reads nothing.
    static func watchHost(_ socket: Int32) {
        let watcher = Thread {
            let hangUp: Int16 = 0x2000  // POLLRDHUP (Linux), which Glibc's Swift module does not carry
            var fd = pollfd(fd: socket, events: hangUp, revents: 0)
            while true {
                if poll(&fd, 1, -1) > 0, fd.revents & (hangUp | Int16(POLLHUP | POLLERR | POLLNVAL)) != 0 { _exit(0) }
            }
        }
        watcher.name = "keel-worker-watch"
        watcher.stackSize = 64 << 10
        watcher.start()
    }

    /// The version of the frames host and worker exchange (`Wire`), raised with every change to them (2: an
    /// outcome says whether a refusal was passed on). The host names its own in `wireVariable`; a worker of another
    /// version ends at once, saying so, before it reads a frame.
    static let wireVersion = 2
    static let wireVariable = "KEEL_WORKER_WIRE"

    /// Set for the confined re-execution of a worker (`run`).
    static let confinedMarker = "KEEL_WORKER_CONFINED"
    /// The folders the host lets this worker read, one per line (its plugin's bundle: `WorkerConnection.spawn`).
    static let readableVariable = "KEEL_WORKER_READ"
    /// Set when the plugin was granted `network`: its worker may open sockets and connect out.
    static let networkVariable = "KEEL_WORKER_NETWORK"
    /// Set when the plugin was granted `processes`: its worker may start processes (fork, posix_spawn).
    static let processesVariable = "KEEL_WORKER_PROCESSES"

    /// What a worker may read and execute: its plugin's folders (from the host), the system's folders, its own
    /// executable and the libraries it has mapped, and the folder of the Swift run-time (a Swift plugin loads more of
    /// it). Not the host's state, not other plugins, not the user's files.
    static func readable() -> [String] {
        // `OwnExecutable.execPath` is the file this worker runs (a rule is set on the file it opens), which the
        // confined re-execution executes: under its name, or after that name was given to a newer keel.
        var paths = ["/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc", "/proc", "/sys",
                     "/dev/zero", "/dev/urandom", "/dev/random", OwnExecutable.execPath]
        if let given = getenv(readableVariable) {
            paths += String(cString: given).split(separator: "\n").map(String.init).filter { $0.hasPrefix("/") }
        }
        // Read to its end: /proc files say they are empty, and a read by their size gets nothing.
        let maps = String(decoding: FileHandle(forReadingAtPath: "/proc/self/maps")?.readDataToEndOfFile() ?? Data(), as: UTF8.self)
        var mapped = Set<String>()
        for line in maps.split(separator: "\n") {
            guard let slash = line.firstIndex(of: "/") else { continue }
            let file = String(line[slash...])
            guard !file.hasPrefix("/memfd:"), !file.hasSuffix(" (deleted)") else { continue }
            mapped.insert(file.contains("/libswiftCore.so") ? (file as NSString).deletingLastPathComponent : file)
        }
        return paths + mapped.sorted()
    }

    private static func say(_ text: String) {
        SystemFile.say("keel worker: \(text)\n", to: 2)
    }
}

/// The worker's side of the socket.
///
/// Leader and followers: `threads` threads take turns reading the socket; the one that read a call runs it and
/// answers it, while the next one reads (no hand-over between threads per call). A handler that blocks holds one
/// thread; the others go on. When the last reader takes a call, another thread is started (up to `maximumThreads`),
/// so that some thread always reads: a handler waiting for the host's answer to its own call (a command, a
/// permission check) is woken by a reader. Its state is set once by `activate`, before the host sends any call.
final class WorkerServer: @unchecked Sendable {
    // `@unchecked`: `library`, `context` and `contributions` are written once, by `activate`, before its answer is
    // sent; the host sends no call before that answer, and calls only read them. `source` is used under `reading`.
    let socket: Int32
    /// The write side and the read side, each taken by one thread at a time. Locks that sleep at once (`NSLock`, a
    /// pthread mutex), not `Mutex`: the reader holds its lock while it blocks in `read` for the host's next call,
    /// and a `Mutex` spins before it sleeps, so the waiting threads burned more CPU than the calls themselves.
    let writing = NSLock()
    private let reading = NSLock()
    /// Read only under `reading` (hence `@unchecked` above too).
    private var source: FrameSource
    var library: PluginLibrary?
    var context: ActivationContext?
    var contributions = Contributions()
    /// The provided service tables, in the order reported to the host, each with its declared functions.
    var serviceTables: [ServiceTableCaller] = []
    /// Threads started with the plugin, and the most a worker runs.
    static let threads = 16
    static let maximumThreads = 64
    /// Threads reading (or waiting to read) the socket, and threads started.
    private let readers = Atomic<Int>(0)
    private let started = Atomic<Int>(1)
    /// Runs the listeners for the host's notices, in their order, off the reader threads.
    let notices = DispatchQueue(label: "keel-worker-notices")
    /// The plugin's own calls to the host, waiting for their answers.
    let hostCalls = HostCallTable()
    /// Set once activate returned: before, the only thread that reads the socket is the one running activate, so a
    /// call to the host from there would wait for ever.
    let active = Atomic<Bool>(false)

    init(socket: Int32) {
        self.socket = socket
        source = FrameSource(socket: socket)
    }

    /// Reads and runs frames until the host ends the worker; the first thread starts the others once activated.
    func serve() {
        while true {
            readers.add(1, ordering: .relaxed)
            let body = reading.withLock { source.next() }
            let stillReading = readers.subtract(1, ordering: .relaxed).newValue
            guard let body, let frame = try? WireReader(frame: body) else { exit(0) }
            switch frame.kind {
            case .activate where library == nil:
                var frame = frame
                guard let activation = try? frame.activation() else { exit(70) }
                if activate(activation, id: frame.id) {
                    for _ in 1..<Self.threads { startFollower() }
                }
            case .handle, .authenticate, .authorize, .command, .serviceCall:
                if stillReading == 0, library != nil { startFollower() }
                answer(frame)
            case .commandAnswer, .permissionAnswer, .serviceGrant, .serviceReturn:
                hostCalls.deliver(frame)
            case .serviceChanged:
                var frame = frame
                guard let interface = try? frame.string(), let tenant = try? frame.string(), let present = try? frame.bool(),
                      let id = InterfaceID(interface) else { exit(70) }
                var grant: RemoteLeaseGrant?
                if present {
                    guard let g = try? frame.grant() else { exit(70) }
                    grant = g
                }
                notices.async { [self, grant] in
                    let now = grant.map {
                        ServiceProvision.describing(id, version: $0.version, providerID: $0.providerID, providerVersion: $0.providerVersion,
                                                    generation: $0.generation, tableSize: $0.tableSize)
                    }
                    for listener in contributions.listeners where listener.interface == id { listener.notify(tenant: tenant, now: now) }
                }
            case .deactivate:
                deactivate(id: frame.id)
                exit(0)
            default:
                exit(70)
            }
        }
    }

    /// Starts one more thread taking turns at the socket, unless `maximumThreads` run.
    private func startFollower() {
        guard started.add(1, ordering: .relaxed).newValue <= Self.maximumThreads else {
            started.subtract(1, ordering: .relaxed)
            return
        }
        let follower = Thread { self.serve() }
        follower.stackSize = 8 << 20
        follower.start()
    }

    // MARK: lifecycle

    /// Loads and activates the plugin, and answers; true when it is active.
    private func activate(_ a: WorkerActivation, id: UInt64) -> Bool {
        if a.memoryLimitBytes > 0 {
            var limit = rlimit(rlim_cur: rlim_t(a.memoryLimitBytes), rlim_max: rlim_t(a.memoryLimitBytes))
            setrlimit(Int32(RLIMIT_AS.rawValue), &limit)
        }
        if a.cpuSeconds > 0 {
            var limit = rlimit(rlim_cur: rlim_t(a.cpuSeconds), rlim_max: rlim_t(a.cpuSeconds + 1))
            setrlimit(Int32(RLIMIT_CPU.rawValue), &limit)
        }
        do throws(WorkerRefusal) {
            let manifest: Manifest
            do { (manifest, _) = try ManifestLoader().load(path: a.manifestPath) } catch { throw WorkerRefusal(error.description) }
            let library: PluginLibrary
            do {
                library = try PluginLibrary.open(path: a.libraryPath, expectedID: a.pluginID)
                try library.verify(against: manifest, manifestPath: a.manifestPath)
            } catch { throw WorkerRefusal(error, pluginID: a.pluginID) }
            let context = ActivationContext(
                pluginID: a.pluginID, grants: Set(a.grants.compactMap(Capability.init(rawValue:))), routePrefixes: a.routePrefixes,
                requestedRoutePrefixes: manifest.routePrefixes, requestedCapabilities: manifest.capabilities, config: a.config, limits: a.limits, budgets: a.budgets,
                identity: ServiceIdentity(version: a.version, generation: a.generation, provides: manifest.provides,
                                          consumes: manifest.consumes, calls: manifest.calls),
                grantHint: GrantHint(a.grantHint), environment: WorkerEnvironment(server: self))
            var seed = Contributions()
            do { seed.commands = try library.prepareCommands(manifest.commands, context: context) } catch {
                throw WorkerRefusal(error, pluginID: a.pluginID)
            }
            do { contributions = try library.activate(context, seed: seed) } catch { throw WorkerRefusal(error, pluginID: a.pluginID) }
            self.library = library
            self.context = context
            serviceTables = contributions.services.map { provision in
                ServiceTableCaller(provision, functions: manifest.provides.first { $0.interface == provision.interface }?.functions ?? [])
            }
            active.store(true, ordering: .releasing)
            var w = WireWriter(.activated, id: id)
            w.registrations(RemoteRegistrations(contributions))
            send(w.frame)
            return true
        } catch {
            var w = WireWriter(.activationFailed, id: id)
            w.string(error.message)
            send(w.frame)
            return false
        }
    }

    private func deactivate(id: UInt64) {
        var w = WireWriter(.deactivated, id: id)
        if let library, let context {
            w.string(library.deactivate(context, drainTimeout: 5) ?? "")
        } else {
            w.string("")
        }
        send(w.frame)
    }

    // MARK: calls

    private func answer(_ call: WireReader) {
        var call = call
        do throws(WireError) {
            switch call.kind {
            case .handle:
                let index = try call.int(), request = try call.request()
                let result = contributions.routes.indices.contains(index)
                    ? HostCallTable.serving(call.id) { contributions.routes[index].handler.handle(request) }
                    : .failure(PluginCallError(pluginID: context?.pluginID ?? "", status: StatusCode.notFound, message: "no route \(index)"))
                var w = WireWriter(.response, id: call.id, capacity: 64 + ((try? result.get())?.body.count ?? 0))
                w.outcome(result.map { _ in () })
                if case let .success(response) = result { w.response(response) }
                send(w.frame)
            case .authenticate:
                let index = try call.int(), request = try call.request()
                let result = contributions.authenticators.indices.contains(index)
                    ? contributions.authenticators[index].authenticate(request) : .success(nil)
                var w = WireWriter(.principal, id: call.id)
                w.outcome(result.map { _ in () })
                if case let .success(principal) = result {
                    w.bool(principal != nil)
                    if let principal { w.principal(principal) }
                }
                send(w.frame)
            case .authorize:
                let index = try call.int(), principal = try call.principal(), action = try call.string()
                let resource = try call.string()
                let request = try call.bool() ? try call.request() : nil
                let result = contributions.authorizers.indices.contains(index)
                    ? contributions.authorizers[index].authorize(principal, action: action, resource: resource, request: request)
                    : .success(.abstain)
                var w = WireWriter(.decision, id: call.id)
                w.outcome(result.map { _ in () })
                if case let .success(decision) = result { w.u8(decision.wireValue) }
                send(w.frame)
            case .command:
                let index = try call.int(), values = try call.values()
                let result = contributions.commands.indices.contains(index)
                    ? contributions.commands[index].invoke(values)
                    : .failure(CommandError(.unknown, "no command \(index)"))
                var w = WireWriter(.commandResult, id: call.id)
                w.commandOutcome(result)
                send(w.frame)
            case .serviceCall:
                let table = try call.int(), function = try call.int(), arguments = try call.serviceCall()
                let answer = serviceTables.indices.contains(table) ? serviceTables[table].call(function, arguments) : nil
                var w = WireWriter(.serviceResult, id: call.id, capacity: 64 + (answer?.bytes.count ?? 0))
                w.outcome(answer == nil ? .failure(PluginCallError(pluginID: context?.pluginID ?? "", status: StatusCode.unsupported,
                                                                   message: "no function \(function) in service table \(table)")) : .success(()))
                if let answer { w.serviceAnswer(answer) }
                send(w.frame)
            default:
                return
            }
        } catch {
            exit(70)
        }
    }

    // MARK: the socket

    func send(_ frame: [UInt8]) {
        let ok = writing.withLock { frame.withUnsafeBytes { SystemFile.writeAll(socket, $0) } }
        if !ok { exit(0) }
    }
}

private struct WorkerRefusal: Error {
    let message: String
    init(_ message: String) { self.message = message }

    /// The loader's reason alone when it is about this plugin: the host names the plugin and its library around it.
    init(_ error: LoadError, pluginID: String) {
        let own = error.pluginID == nil || error.pluginID == pluginID
        message = !own ? error.description : error.code == .incompatibleABI ? "incompatible: \(error.reason)" : error.reason
    }
}

// MARK: outcomes on the wire

extension WireWriter {
    /// A call's status: `KEEL_OK`, or the plugin's status and message.
    mutating func outcome(_ result: Result<Void, PluginCallError>) {
        switch result {
        case .success: i32(StatusCode.ok); string(""); u8(0)
        case let .failure(e): i32(e.status); string(e.message); u8(e.passedOn ? 1 : 0)
        }
    }
}

extension WireReader {
    /// The status a worker reported, as the error of the call when it is not `KEEL_OK`. A status a worker may not
    /// send (the host's own codes) reads as an internal error.
    mutating func outcome(pluginID: String) throws(WireError) -> PluginCallError? {
        var status = try i32()
        let message = try string()
        let passedOn = try u8() == 1
        guard status != StatusCode.ok else { return nil }
        if status < 0 { status = StatusCode.internalError }
        var error = PluginCallError(pluginID: pluginID, status: status, message: message.prefix(utf8Bytes: 4096))
        error.passedOn = passedOn
        return error
    }
}

extension AuthDecision {
    var wireValue: UInt8 {
        switch self {
        case .abstain: 0
        case .allow: 1
        case .deny: 2
        }
    }

    init?(wireValue: UInt8) {
        switch wireValue {
        case 0: self = .abstain
        case 1: self = .allow
        case 2: self = .deny
        default: return nil
        }
    }
}
