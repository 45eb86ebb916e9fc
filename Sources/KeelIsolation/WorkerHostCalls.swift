// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Dispatch
import Glibc
import KeelLoader
import KeelManifest
import Synchronization

/// The plugin's own calls to the host from a worker (keel.commands/1, the permission check), waiting for their
/// answers, which a reader thread of the worker hands over (`deliver`). Thread-safe.
final class HostCallTable: Sendable {
    /// How long a call waits for the host. The host answers every call; this only bounds a host that went away
    /// (the worker then exits when it reads the end of its socket).
    static let timeout: Double = 120

    /// One call's wait. `@unchecked`: `answer` is written once, before `done` is signalled, and read after the wait.
    private final class Waiter: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var answer: WireReader?
    }

    private let state = Mutex<(next: UInt64, waiting: [UInt64: Waiter])>((1, [:]))

    /// Sends the frame `build` makes for a new id with `send`, and waits for its answer; nil when none came.
    func ask(_ build: (UInt64) -> [UInt8], send: ([UInt8]) -> Void) -> WireReader? {
        let waiter = Waiter()
        let id = state.withLock { s -> UInt64 in
            defer { s.next += 1 }
            s.waiting[s.next] = waiter
            return s.next
        }
        send(build(id))
        guard waiter.done.wait(timeout: .now() + Self.timeout) == .success else {
            state.withLock { _ = $0.waiting.removeValue(forKey: id) }
            return nil
        }
        return waiter.answer
    }

    /// Hands the host's answer to the call waiting for it (an answer to no call is dropped). [reader thread]
    func deliver(_ frame: WireReader) {
        guard let waiter = state.withLock({ $0.waiting.removeValue(forKey: frame.id) }) else { return }
        waiter.answer = frame
        waiter.done.signal()
    }

    /// Runs `body` (a route handler) as the answer to the host's call `id`: a command the plugin calls meanwhile on
    /// this thread goes out on behalf of that call, which the host knows the request (and principal) of.
    static func serving<T>(_ id: UInt64, _ body: () -> T) -> T {
        let outer = pthread_getspecific(servingKey)
        pthread_setspecific(servingKey, UnsafeRawPointer(bitPattern: UInt(id)))
        defer { pthread_setspecific(servingKey, outer) }
        return body()
    }

    /// The id of the host's call this thread is answering, nil outside a route handler.
    static var currentCall: UInt64? {
        pthread_getspecific(servingKey).map { UInt64(UInt(bitPattern: $0)) }
    }
}

/// The per-thread slot behind `HostCallTable.currentCall` (made once, never destroyed).
private let servingKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()

/// The host services a plugin in a worker sees. The log goes to the host; a command call and a permission check are
/// asked of the host, which checks them again (`HostServices`): the worker's own checks (calls:, the principal of
/// the request) run first, as in the host, but are not what protects anything. Services between plugins are leased
/// through the host (`RemoteServiceBroker`), which checks every acquire, lease id and call again.
final class WorkerEnvironment: PluginEnvironment {
    let server: WorkerServer
    init(server: WorkerServer) { self.server = server }

    // The host checks conflicts again when it registers what the worker reports.
    func routeOwner(method: String, shape: String, excluding plugin: String) -> String? { nil }
    func menuOwner(id: String, excluding plugin: String) -> String? { nil }

    func checkPermission(plugin: String, _ principal: Principal, action: String, resource: String) -> AuthDecision {
        guard server.active.load(ordering: .acquiring) else {
            log(plugin: plugin, generation: nil, level: .warn, message: "asked the permission check during activate, which a plugin in a worker process cannot: denied")
            return .deny
        }
        // The host takes a principal only within the builder's limits (`WireReader.workerPrincipal`) and kills a worker
        // that sends another: one the plugin made up past them is denied here, as no grant could name it anyway.
        guard Principal.fitsBuilder(principal) else {
            log(plugin: plugin, generation: nil, level: .warn, message: "asked the permission check for a principal over the limits of keel_principal_builder: denied")
            return .deny
        }
        var answer = server.hostCalls.ask({ id in
            var w = WireWriter(.checkPermission, id: id)
            w.principal(principal)
            w.string(action)
            w.string(resource)
            return w.frame
        }, send: server.send)
        return (try? answer?.u8()).flatMap { AuthDecision(wireValue: $0) } ?? .deny
    }

    /// Never asked: leases go through the host (`serviceBroker`).
    func resolveService(_ interface: InterfaceID, tenant: String) -> ServiceProvision? { nil }

    var serviceBroker: (any RemoteServiceBroker)? { self }

    /// `principal` is not sent: the host acts for the principal of the request this thread serves.
    func callCommand(caller: String, plugin: String, name: String, arguments: String, principal: Principal) -> Result<String, CommandError> {
        guard let serving = HostCallTable.currentCall else {
            return .failure(CommandError(.forbidden, "called \(plugin).\(name) outside a request it serves: denied"))
        }
        let answer = server.hostCalls.ask({ id in
            var w = WireWriter(.callCommand, id: id, capacity: 64 + arguments.utf8.count)
            w.u64(serving)
            w.string(plugin)
            w.string(name)
            w.string(arguments)
            return w.frame
        }, send: server.send)
        guard var answer, let result = try? answer.commandText() else {
            return .failure(CommandError(.unavailable, "the host did not answer the call of \(plugin).\(name)"))
        }
        return result
    }

    func log(plugin: String, generation: Int?, level: LogLevel, message: String) {
        var w = WireWriter(.log, id: 0)
        w.int(level.rawValue)
        w.string(message)
        server.send(w.frame)
    }

    // The host counts failed calls itself.
    func misbehaving(plugin: String, generation: Int, reason: String) {}
}

extension WorkerEnvironment: RemoteServiceBroker {
    func acquireRemote(_ interface: String, tenant: String, minSize: Int) -> Result<RemoteLeaseGrant, PluginCallError> {
        let pluginID = server.context?.pluginID ?? ""
        guard server.active.load(ordering: .acquiring) else {
            return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.wrongState,
                                            message: "acquired \(interface) during activate, which a plugin in a worker process cannot"))
        }
        return askHost("the acquire of \(interface)", { id in
            var w = WireWriter(.serviceAcquire, id: id)
            w.string(interface)
            w.string(tenant)
            w.int(minSize)
            return w.frame
        }, read: { (answer: inout WireReader) throws(WireError) in try answer.grant() })
    }

    func releaseRemote(_ lease: UInt64) {
        var w = WireWriter(.serviceRelease, id: 0)
        w.u64(lease)
        server.send(w.frame)
    }

    func callRemote(lease: UInt64, function: Int, _ call: ServiceCall) -> Result<ServiceAnswer, PluginCallError> {
        askHost("the call", { id in
            var w = WireWriter(.serviceInvoke, id: id)
            w.u64(lease)
            w.int(function)
            w.serviceCall(call)
            return w.frame
        }, read: { (answer: inout WireReader) throws(WireError) in try answer.serviceAnswer() })
    }

    /// Sends the frame `build` makes (with the call's id) and reads the host's answer with `read`. A failure the host
    /// answered is returned as it is; no answer, or one that does not read, is `unavailable`, naming `what`.
    private func askHost<T>(_ what: String, _ build: (UInt64) -> [UInt8],
                            read: (inout WireReader) throws(WireError) -> T) -> Result<T, PluginCallError> {
        let pluginID = server.context?.pluginID ?? ""
        let answer = server.hostCalls.ask(build, send: server.send)
        do throws(WireError) {
            guard var answer else { throw WireError(description: "no answer") }
            if let error = try answer.outcome(pluginID: pluginID) { return .failure(error) }
            return .success(try read(&answer))
        } catch {
            return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.unavailable, message: "the host did not answer \(what)"))
        }
    }
}
