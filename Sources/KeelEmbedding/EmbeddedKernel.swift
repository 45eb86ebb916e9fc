// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelABI.Embed
import Foundation
import Keel
import KeelHTTP
import Synchronization

/// One `keel *`: the kernel, the embedder's callbacks, the HTTP server if one runs, and the count of calls in
/// progress that `close` waits for. Thread-safe.
final class EmbeddedKernel: Sendable {
    let kernel: Kernel
    let logGate: LogGate?
    let events: EventPump
    private let subscription: Int
    private let calls = Mutex<(running: Int, closing: Bool)>((0, false))
    private let idle = DispatchSemaphore(value: 0)
    let started = Atomic<Bool>(false)
    private let server = Mutex<Task<Void, Error>?>(nil)

    init(configuration: KernelConfiguration, logGate: LogGate?) throws(KernelError) {
        let kernel = try Kernel(configuration: configuration)
        self.kernel = kernel
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

    /// Starts serving HTTP; returns the bound port, or the reason it could not listen.
    func serve(host: String, port: Int) -> Result<Int, ServeFailure> {
        let bound = Mutex<Int?>(nil)
        let ready = DispatchSemaphore(value: 0)
        var configuration = ServerConfiguration(host: host, port: port)
        configuration.stopsOnSignals = false
        configuration.logsThroughKernel = true
        let http = KeelServer(kernel: kernel, token: AdminToken(state: kernel.state), configuration: configuration)
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
            server.withLock { $0 = task }
            return .success(port)
        }
        return .failure(ServeFailure(reason: blocking {
            switch await task.result {
            case .success: "\(host):\(port): the server stopped at once"
            case let .failure(error): "\(host):\(port): cannot listen: \(error)"
            }
        }))
    }

    var isServing: Bool { server.withLock { $0 != nil } }

    /// Waits for the calls in progress, stops the server, shuts the kernel down, stops the callbacks.
    func close() {
        if calls.withLock({ c in c.closing = true; return c.running > 0 }) { idle.wait() }
        if let task = server.withLock({ $0.take() }) {
            task.cancel()
            blocking { _ = await task.result }
        }
        let kernel = self.kernel
        blocking { await kernel.shutdown() }
        kernel.events.unsubscribe(subscription)
        events.stop()
        logGate?.close()
    }
}

/// Why `keel_serve` could not listen: one line naming the address.
struct ServeFailure: Error {
    let reason: String
}
