// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import Synchronization

/// What a plugin in a worker process may ask of the host: another plugin's command (keel.commands/1) and the
/// permission check (keel.auth/1). Set by the kernel, which answers them as it does for a plugin in the host.
///
/// The host trusts nothing of what the worker says about itself: the caller is always the plugin the worker was
/// started for, the command must be declared under `calls:` in the plugin.yaml the host read, and a command runs on
/// behalf of the principal of the host's own request the worker is serving (the worker names that request by the id
/// of the host's call, never by a principal of its own making). Thread-safe.
public struct HostServices: Sendable {
    /// `plugin.name` entries of the plugin's `calls:`, as the host read them.
    public var calls: Set<String>
    /// Runs `plugin`'s command `name` with JSON `arguments` for `principal`; the answer as JSON text.
    public var command: @Sendable (_ plugin: String, _ name: String, _ arguments: String, _ principal: Principal) -> Result<String, CommandError>
    /// The host's permission check for `principal` doing `action` on `resource` (one of the plugin's own items).
    public var permission: @Sendable (_ principal: Principal, _ action: String, _ resource: String) -> AuthDecision
    /// Makes the lease table of one worker process (keel.services/1 through the host); nil: none offered.
    public var leases: (@Sendable () -> RemoteLeases)?

    public init(calls: Set<String>,
                command: @escaping @Sendable (String, String, String, Principal) -> Result<String, CommandError>,
                permission: @escaping @Sendable (Principal, String, String) -> AuthDecision,
                leases: (@Sendable () -> RemoteLeases)? = nil) {
        self.calls = calls
        self.command = command
        self.permission = permission
        self.leases = leases
    }

    /// The host calls of this activation's workers running now: one count for every worker the supervisor starts
    /// with these services, so that a worker that crashes and is restarted does not get a fresh `concurrentCalls`
    /// while its predecessor's calls still run. (A reload makes new services, and a new count.)
    let inFlight = HostCallCount()

    /// None offered: every command call is refused and every check denied.
    static var none: HostServices { HostServices(calls: [], command: { _, _, _, _ in .failure(CommandError(.unavailable, "not offered")) },
                                   permission: { _, _, _ in .deny }) }

    /// Calls of one worker the host runs at once; more are refused at once (`unavailable`), so that a worker cannot
    /// tie up the host's threads.
    static let concurrentCalls = 32
    /// Bytes the arguments of those calls may hold at once (a service call carries up to 16 MiB, copied once more for
    /// the provider: 32 of them held a gigabyte of the host's memory while a provider was slow).
    static let bytesInFlight = 64 << 20
}

/// The host calls running, bounded by `HostServices.concurrentCalls`, and the bytes their arguments hold, bounded by
/// `HostServices.bytesInFlight`. Thread-safe.
final class HostCallCount: Sendable {
    private let running = Atomic<Int>(0)
    private let bytes = Atomic<Int>(0)

    /// Takes one of the `HostServices.concurrentCalls` for a call whose arguments hold `holding` bytes; false, having
    /// taken nothing, when all are taken or those bytes would pass `HostServices.bytesInFlight`.
    func admit(holding: Int = 0) -> Bool {
        if running.add(1, ordering: .acquiringAndReleasing).newValue <= HostServices.concurrentCalls {
            if bytes.add(holding, ordering: .acquiringAndReleasing).newValue <= HostServices.bytesInFlight { return true }
            bytes.subtract(holding, ordering: .acquiringAndReleasing)
        }
        running.subtract(1, ordering: .acquiringAndReleasing)
        return false
    }

    /// Gives back what `admit(holding:)` took.
    func end(holding: Int = 0) {
        bytes.subtract(holding, ordering: .acquiringAndReleasing)
        running.subtract(1, ordering: .acquiringAndReleasing)
    }
}

extension WorkerConnection {
    /// Runs a host call on a thread of its own, off the reader thread. Never on Dispatch's global queues: on Linux
    /// their threads are Swift's cooperative pool (two here), which a slow command or provider would take from the
    /// whole server. At most `HostServices.concurrentCalls` of one activation's workers run at once (`HostServices.inFlight`).
    static func offReader(_ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = "keel.host-call"
        thread.start()
    }

    /// Answers a `callCommand` or `checkPermission` frame off the reader thread (the call may take long, and may call
    /// back into this worker, whose answers the reader must go on reading). [reader thread]
    /// - Throws: `WireError` for a malformed frame (the reader then kills the worker).
    /// `log` takes the lines about refused calls (the reader passes them through the worker's log budget).
    func serveHostCall(_ frame: WireReader, services: HostServices, leases: RemoteLeases?,
                       log: (Int, String) -> Void) throws(WireError) {
        var frame = frame
        let id = frame.id
        switch frame.kind {
        case .callCommand:
            let onBehalfOf = try frame.u64(), plugin = try frame.string(), name = try frame.string()
            let arguments = try frame.string()
            func refuse(_ error: CommandError) {
                var w = WireWriter(.commandAnswer, id: id)
                w.commandText(.failure(error))
                _ = send(w.frame)
            }
            guard arguments.utf8.count <= 1 << 20, plugin.utf8.count <= 64, name.utf8.count <= 64 else {
                return refuse(CommandError(.tooLarge, "a plugin id, name or argument text over its limit"))
            }
            guard services.calls.contains("\(plugin).\(name)") else {
                let message = "called \(plugin).\(name), which it does not declare under calls: in plugin.yaml: denied"
                log(LogLevel.warn.rawValue, message)
                return refuse(CommandError(.forbidden, message))
            }
            guard let principal = principal(ofCall: onBehalfOf) else {
                let message = "called \(plugin).\(name) for no request it is serving (a principal of its own making): denied"
                log(LogLevel.warn.rawValue, message)
                return refuse(CommandError(.forbidden, message))
            }
            guard services.inFlight.admit() else { return refuse(CommandError(.unavailable, "too many calls from the worker at once")) }
            Self.offReader { [self] in
                defer { services.inFlight.end() }
                var w = WireWriter(.commandAnswer, id: id)
                w.commandText(services.command(plugin, name, arguments, principal))
                _ = send(w.frame)
            }
        case .checkPermission:
            // Any principal may be asked about, as in-process; but only one within the builder's limits (it reaches
            // other plugins' authorize hooks, some in workers of their own: one over them blew up the host's memory
            // and the guard's frame).
            let principal = try frame.workerPrincipal(), action = try frame.string(), resource = try frame.string()
            // Permission keys and actions are short names; anything longer is no item of the plugin's.
            guard action.utf8.count <= 256, resource.utf8.count <= 256, services.inFlight.admit() else {
                var w = WireWriter(.permissionAnswer, id: id)
                w.u8(AuthDecision.deny.wireValue)
                _ = send(w.frame)
                return
            }
            Self.offReader { [self] in
                defer { services.inFlight.end() }
                var w = WireWriter(.permissionAnswer, id: id)
                w.u8(services.permission(principal, action, resource) == .allow ? AuthDecision.allow.wireValue : AuthDecision.deny.wireValue)
                _ = send(w.frame)
            }
        case .serviceAcquire:
            let interface = try frame.string(), tenant = try frame.string(), minSize = try frame.int()
            @Sendable func answer(_ result: Result<RemoteLeaseGrant, PluginCallError>) {
                var w = WireWriter(.serviceGrant, id: id)
                w.outcome(result.map { _ in () })
                if case let .success(grant) = result { w.grant(grant) }
                _ = send(w.frame)
            }
            guard let leases else {
                return answer(.failure(PluginCallError(pluginID: "", status: StatusCode.unsupported, message: "services are not offered")))
            }
            guard interface.utf8.count <= 160, tenant.utf8.count <= 128 else {
                return answer(.failure(PluginCallError(pluginID: "", status: StatusCode.invalidArgument, message: "an interface or tenant over its limit")))
            }
            // As for every host call over the limit: retrying may succeed (KEEL_ERR_UNAVAILABLE), nothing was wrong with it.
            guard services.inFlight.admit() else {
                return answer(.failure(PluginCallError(pluginID: "", status: StatusCode.unavailable, message: "too many calls from the worker at once")))
            }
            Self.offReader { [self] in
                defer { services.inFlight.end() }
                answer(leases.acquire(interface, tenant: tenant, minSize: max(0, minSize)))
            }
        case .serviceRelease:
            let lease = try frame.u64()
            if leases?.release(lease) != true {
                log(LogLevel.warn.rawValue, "released a service lease it does not hold (released twice, or not its own); ignored")
            }
        case .serviceInvoke:
            let lease = try frame.u64(), function = try frame.int(), call = try frame.serviceCall()
            @Sendable func answer(_ result: Result<ServiceAnswer, PluginCallError>) {
                var w = WireWriter(.serviceReturn, id: id, capacity: 64 + ((try? result.get())?.bytes.count ?? 0))
                w.outcome(result.map { _ in () })
                if case let .success(a) = result { w.serviceAnswer(a) }
                _ = send(w.frame)
            }
            let held = call.arguments.reduce(0) { sum, argument in
                if case let .bytes(b) = argument { return sum + b.count }
                return sum
            }
            guard let leases, services.inFlight.admit(holding: held) else {
                return answer(.failure(PluginCallError(pluginID: "", status: StatusCode.unavailable,
                                                       message: "too many calls from the worker at once, or too many bytes in them")))
            }
            Self.offReader { [self] in
                defer { services.inFlight.end(holding: held) }
                answer(leases.call(lease, function: function, call))
            }
        default:
            throw WireError(description: "a \(frame.kind) frame from a worker")
        }
    }
}

// MARK: command answers as JSON text

extension WireWriter {
    /// A keel.commands/1 answer: 0 and the JSON text, or 1, the error's code, message and status.
    mutating func commandText(_ r: Result<String, CommandError>) {
        switch r {
        case let .success(json): u8(0); string(json)
        case let .failure(e): commandError(e)
        }
    }
}

extension WireReader {
    mutating func commandText() throws(WireError) -> Result<String, CommandError> {
        guard try u8() == 1 else { return .success(try string()) }
        return .failure(try commandError())
    }
}
