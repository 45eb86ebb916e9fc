// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelABI.Embed
import Foundation
import Keel
import KeelHTTP
import KeelState
import KeelSystem
import NIOCore
import Synchronization

/// One `keel *`: the kernel, the embedder's callbacks, the HTTP server if one runs, and the count of calls in
/// progress that `close` waits for. Thread-safe.
///
/// A kernel on a state file owns it as `keel serve` does, from `keel_open` to `keel_close`: it holds the file's
/// server lock (a second kernel, in this process or another, or a `keel serve`, is refused with the holder's pid),
/// and takes the commands the `keel` CLI queues there (`keel plugins enable`, `keel plugins list` and the rest reach
/// the running kernel instead of changing the file beside it).
final class EmbeddedKernel: Sendable {
    let kernel: Kernel
    /// The state file's server lock (nil for a state in memory, which nobody else can open).
    private let lock: Mutex<ServerLock?>
    /// The admin token the HTTP server checks, refreshed with the queue's changes.
    let token: AdminToken
    /// Takes the CLI's queued commands while the handle is open (nil for a state in memory).
    private let remote: Task<Void, Never>?
    let logGate: LogGate?
    let events: EventPump
    private let subscription: Int
    private let calls = Mutex<(running: Int, closing: Bool)>((0, false))
    private let idle = DispatchSemaphore(value: 0)
    let started = Atomic<Bool>(false)
    private let server = Mutex<ServerSlot>(.none)

    /// The HTTP server of this handle: none, one starting (`keel_serve` in progress on some thread), or running.
    private enum ServerSlot {
        case none, starting
        case running(Task<Void, Error>)
    }

    init(configuration: KernelConfiguration, logGate: LogGate?) throws(KernelError) {
        let onFile = configuration.stateFile != StateStore.inMemory
        // The folder is named for the CLI, whose commands beside this program act on it (`ServerLock.servedFolder`).
        let lock = onFile ? try ServerLock(stateFile: configuration.stateFile, info: "embedded (libkeel, not serving HTTP)",
                                           pluginsFolder: configuration.pluginsDirectory.isEmpty ? nil
                                               : URL(fileURLWithPath: configuration.pluginsDirectory).standardizedFileURL.path) : nil
        self.lock = Mutex(lock)
        let kernel: Kernel
        do { kernel = try Kernel(configuration: configuration) } catch {
            lock?.abandon()
            throw error
        }
        self.kernel = kernel
        let token = AdminToken(state: kernel.state)
        self.token = token
        remote = onFile ? Task.detached { await RemoteControl.serve(kernel, token: token) } : nil
        self.logGate = logGate
        let events = EventPump(state: kernel.state)
        self.events = events
        subscription = kernel.events.subscribe { event in
            switch event {
            case let .executed(command, _, failure): events.post(.command(name: command.name, pluginID: command.pluginID, failure: failure))
            case .pluginsChanged: events.post(.refresh)
            }
        }
    }

    /// Counts a call in; false once closing began.
    func admit() -> Bool {
        calls.withLock { c in
            guard !c.closing else { return false }
            c.running += 1
            return true
        }
    }

    func release() {
        if calls.withLock({ c in c.running -= 1; return c.closing && c.running == 0 }) { idle.signal() }
    }

    /// Starts serving HTTP; returns the bound port, or the reason it could not listen (`alreadyServing`, when a
    /// server runs or another thread is starting one: the slot is taken under the lock before anything binds).
    func serve(host: String, port: Int) -> Result<Int, ServeFailure> {
        let free = server.withLock { slot -> Bool in
            guard case .none = slot else { return false }
            slot = .starting
            return true
        }
        guard free else { return .failure(ServeFailure(reason: "keel_serve: already serving", alreadyServing: true)) }
        // Said in words before the server tries (its own error is SwiftNIO's: SocketAddressError.UnknownHost ...).
        if let problem = ListenCheck.problem(host: host, port: port) {
            server.withLock { $0 = .none }
            let why: String = switch problem {
            case let .unresolved(reason): "\(host) is not an address or a name this machine resolves (\(reason))"
            case .notLocal: "\(host) is not an address of this machine"
            case .inUse: "the port is in use (port 0 picks a free one)"
            case .privileged: "a port below 1024 needs root or CAP_NET_BIND_SERVICE"
            case let .other(reason): "cannot listen: \(reason)"
            }
            return .failure(ServeFailure(reason: "keel_serve: \(host):\(port): " + why, alreadyServing: false))
        }
        let bound = Mutex<Int?>(nil)
        let ready = DispatchSemaphore(value: 0)
        var configuration = ServerConfiguration(host: host, port: port)
        configuration.stopsOnSignals = false
        configuration.logsThroughKernel = true
        configuration.servesCommandQueue = false
        // No token in force (a state in memory stores none): $KEEL_ADMIN_TOKEN as it is now, set after keel_open
        // perhaps, as the header allows ("set it first": before keel_serve). Still none: the admin API refuses
        // everyone, which the log says once.
        token.adoptEnvironment()
        if token.digest == nil {
            kernel.configuration.log(LogRecord(level: .warn, pluginID: nil, message: "keel_serve: no admin token is in force (the state holds none "
                + "and $\(AdminToken.environmentVariable) is not set): the admin API answers 401 to every caller; set "
                + "$\(AdminToken.environmentVariable) before keel_serve" + (kernel.configuration.stateFile == StateStore.inMemory ? ""
                    : ", or run `keel --state <this state> token reset`, which this kernel takes at once")))
        }
        let http = KeelServer(kernel: kernel, token: token, configuration: configuration)
        let task = Task.detached {
            try await http.run { port in
                bound.withLock { $0 = port }
                ready.signal()
            }
        }
        Task.detached {
            _ = await task.result
            ready.signal()
        }
        ready.wait()
        if let port = bound.withLock({ $0 }) {
            server.withLock { $0 = .running(task) }
            lock.withLock { $0?.update("http://\(host.contains(":") ? "[\(host)]" : host):\(port)") }
            return .success(port)
        }
        server.withLock { $0 = .none }
        return .failure(ServeFailure(reason: blocking {
            switch await task.result {
            case .success: "\(host):\(port): the server stopped at once"
            case let .failure(error): "\(host):\(port): cannot listen: "
                + ((error as? IOError).map { SystemFile.describe(errno: $0.errnoCode) } ?? "\(error)")
            }
        }))
    }

    /// Waits for the calls in progress, stops the server, shuts the kernel down, stops the callbacks.
    func close() {
        if calls.withLock({ c in c.closing = true; return c.running > 0 }) { idle.wait() }
        let running = server.withLock { slot -> Task<Void, Error>? in
            defer { slot = .none }
            if case let .running(task) = slot { return task }
            return nil
        }
        if let task = running {
            task.cancel()
            blocking { _ = await task.result }
        }
        if let remote {
            remote.cancel()
            blocking { await remote.value }
        }
        let kernel = self.kernel
        blocking { await kernel.shutdown() }
        // The state is free for the next kernel or server once this one has stopped writing to it.
        lock.withLock { $0 = nil }
        kernel.events.unsubscribe(subscription)
        events.stop()
        logGate?.close()
    }
}

/// Why `keel_serve` could not listen: one line naming the address.
struct ServeFailure: Error {
    let reason: String
    var alreadyServing = false
}
