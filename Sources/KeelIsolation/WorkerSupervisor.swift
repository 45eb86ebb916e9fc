// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Dispatch
import Foundation
import Glibc
import KeelLoader
import Synchronization

/// One plugin generation running in a worker process, host side: what its remote routes and hooks call.
///
/// It starts the worker and activates the plugin there (`start`), sends calls to the current worker, and when the
/// worker dies, fails the calls in flight in it (`StatusCode.workerCrashed`), restarts it after a back-off and
/// activates the plugin again (its registrations must be the same). A call that arrives while the worker restarts
/// waits for it (up to the start timeout). After `crashLimit` crashes within `crashWindow`, or `crashLimit` in a row
/// of workers gone soon after their start (`givingUp`), it reports the plugin as misbehaving through `failed`, and
/// calls fail at once while restarts go on at the longest back-off (see `State.givenUp`). Thread-safe; calls block their thread (make them off the
/// cooperative pool).
public final class WorkerSupervisor: RemoteCalls, Sendable {
    public let pluginID: String
    let executable: String
    let activation: WorkerActivation
    let policy: IsolationPolicy
    let log: @Sendable (LogLevel, String) -> Void
    let failed: @Sendable (String) -> Void
    let restarted: @Sendable () -> Void
    let services: HostServices
    /// The worker, its spare, and the crash counts (WorkerSupervisor+Restart.swift).
    let state = Mutex(State())

    struct State {
        var connection: WorkerConnection?
        /// A started worker with nothing loaded yet, for the next restart (`IsolationPolicy.spare`).
        var spare: WorkerConnection?
        var registrations = RemoteRegistrations()
        var crashes: [Double] = []
        /// Crashes since a worker last answered a call or lived for `crashWindow` (and failed restarts).
        var crashesInARow = 0
        /// When the current worker was activated (`monotonic`).
        var activatedAt = 0.0
        var restarts = 0
        /// Set by `stop`, or when a restarted worker registered something else: no restart.
        var stopped = false
        /// Set after too many crashes (`givingUp`), until a worker serves again: the plugin was reported (`failed`),
        /// calls fail at once instead of waiting for a worker, and restarts go on at `maximumBackoff`. The kernel
        /// disables a plugin so reported (which stops this), unless its hooks guard requests: such a worker keeps
        /// being tried, and the guard comes back by itself when it starts again.
        var givenUp = false
    }

    /// `log` receives the worker's log lines and the host's lines about it; `failed` is told when the plugin crashed
    /// too often (once until a worker serves again); `restarted`, after each restart that serves again (from the restarting thread);
    /// `services` answers the plugin's command calls and permission checks.
    public init(pluginID: String, executable: String, activation: WorkerActivation, policy: IsolationPolicy,
                services: HostServices? = nil,
                log: @escaping @Sendable (LogLevel, String) -> Void, failed: @escaping @Sendable (String) -> Void,
                restarted: @escaping @Sendable () -> Void = {}) {
        self.restarted = restarted
        self.services = services ?? .none
        self.pluginID = pluginID
        self.executable = executable
        self.activation = activation
        self.policy = policy
        self.log = log
        self.failed = failed
    }

    /// Starts the first worker and activates the plugin in it. [lifecycle; blocks up to the start timeout]
    /// - Returns: what the plugin registered, for the host to check and register (`ActivationContext.register`).
    /// - Throws: `LoadError` with the worker's reason (its load or activate failed, it crashed, it hung).
    public func start() throws(LoadError) -> RemoteRegistrations {
        let (connection, registrations) = try launch()
        state.withLock {
            $0.connection = connection
            $0.registrations = registrations
            $0.activatedAt = Self.monotonic()
        }
        prepareSpare()
        return registrations
    }

    /// The worker's process id, while one runs.
    public var workerPID: Int32? { state.withLock { $0.connection?.pid } }

    /// How many times the worker was restarted after a crash.
    public var restarts: Int { state.withLock { $0.restarts } }

    /// Takes the plugin down: its deactivate runs in the worker (which drains its calls first), then the worker
    /// exits; one that does not within `drainTimeout` (plus a second) is killed. Returns a problem to report, or nil.
    /// [lifecycle; blocks]
    public func stop(drainTimeout: Double) -> String? {
        let (connection, spare) = state.withLock { s -> (WorkerConnection?, WorkerConnection?) in
            s.stopped = true
            defer { s.spare = nil }
            return (s.connection, s.spare)
        }
        // Each ended before this returns: reaped, its cgroup removed (one slow to empty is left to a thread of its own,
        // and to the next start if the host exits first).
        spare?.terminate()
        spare?.waitForEnd(2)
        guard let connection, connection.isRunning else {
            connection?.waitForEnd(2)
            return nil
        }
        let answer = connection.call({ id in
            var w = WireWriter(.deactivate, id: id)
            return w.frame
        }, timeout: drainTimeout + 1)
        defer {
            connection.terminate()
            connection.waitForEnd(2)
        }
        switch answer {
        case var .success(frame):
            let problem = ((try? frame.string()) ?? "").prefix(utf8Bytes: 4096)
            return problem.isEmpty ? nil : problem
        case .failure(.timedOut):
            return "the worker did not finish deactivating within \(drainTimeout + 1) s; killed"
        case let .failure(.crashed(reason)):
            return "the worker \(reason) while deactivating"
        }
    }

    // MARK: calls (RemoteCalls)

    public func handle(route: Int, _ request: PluginRequest) -> Result<PluginResponse, PluginCallError> {
        call({ id in
            var w = WireWriter(.handle, id: id, capacity: 256 + request.body.count)
            w.int(route)
            w.request(request)
            return w.frame
        }, principal: request.principal, readResponse)
    }

    public func handleAsync(route: Int, _ request: PluginRequest) async -> Result<PluginResponse, PluginCallError> {
        var connection = state.withLock { $0.connection }
        if connection == nil || connection?.isRunning != true {
            // A restart is in progress: wait for it without holding a thread.
            let deadline = ContinuousClock.now + .milliseconds(Int64(policy.startTimeout * 1000))
            while ContinuousClock.now < deadline {
                let (current, stopped) = state.withLock { ($0.connection, $0.stopped) }
                if let current, current.isRunning { connection = current; break }
                if stopped { break }
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
        guard let connection, connection.isRunning else {
            return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.workerCrashed,
                                            message: "the plugin's worker process is not running"))
        }
        let answer = await connection.call({ id in
            var w = WireWriter(.handle, id: id, capacity: 256 + request.body.count)
            w.int(route)
            w.request(request)
            return w.frame
        }, timeout: policy.callTimeout, principal: request.principal)
        return finish(answer, connection: connection, read: readResponse)
    }

    /// A `handle` answer: the outcome, then the response within the size limit.
    private func readResponse(_ frame: inout WireReader) throws(WireError) -> Result<PluginResponse, PluginCallError> {
        if let error = try frame.outcome(pluginID: pluginID) { return .failure(error) }
        let response = try frame.response(headersAtMost: Wire.responseHeaders)
        // What `keel_http_response` lets an in-process plugin write (HostABI.withResponse): a status the HTTP layer
        // would trap on, or a header it would refuse (CR, LF or NUL split a response written out by an embedding
        // program's own HTTP code), is a malformed answer.
        guard (100...599).contains(response.status) else { throw WireError(description: "a response status of \(response.status)") }
        guard response.headers.allSatisfy({ h in
            !h.name.isEmpty && h.name.utf8.count <= 256 && h.value.utf8.count <= 8192
                && HeaderField.isSafe(h.name) && HeaderField.isSafe(h.value)
        }) else { throw WireError(description: "response headers over their limits, or with CR, LF or NUL in them") }
        guard response.body.count <= RouteHandler.responseLimit else {
            // The host refuses the answer: a broken plugin's doing, a step toward disabling it (not a refusal of the
            // caller, which `StatusCode.limit` would read as).
            return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.internalError, message: "response body over the limit"))
        }
        return .success(response)
    }

    public func authenticate(hook: Int, _ request: PluginRequest) -> Result<Principal?, PluginCallError> {
        call({ id in
            var w = WireWriter(.authenticate, id: id, capacity: 256 + request.body.count)
            w.int(hook)
            w.request(request)
            return w.frame
        }) { (frame: inout WireReader) throws(WireError) -> Result<Principal?, PluginCallError> in
            if let error = try frame.outcome(pluginID: pluginID) { return .failure(error) }
            guard try frame.bool() else { return .success(nil) }
            // The limits of `keel_principal_builder` (HostABI.withPrincipalBuilder), as for an in-process hook.
            var principal = try frame.workerPrincipal()
            guard !principal.id.isEmpty, principal.roles.allSatisfy({ !$0.isEmpty }) else {
                throw WireError(description: "a principal over its limits")
            }
            // Who established it is the host's to say.
            principal.authenticatedBy = pluginID
            return .success(principal)
        }
    }

    public func authorize(hook: Int, _ principal: Principal, action: String, resource: String,
                          request: PluginRequest?) -> Result<AuthDecision, PluginCallError> {
        call({ id in
            var w = WireWriter(.authorize, id: id, capacity: 256 + (request?.body.count ?? 0))
            w.int(hook)
            w.principal(principal)
            w.string(action)
            w.string(resource)
            w.bool(request != nil)
            if let request { w.request(request) }
            return w.frame
        }) { (frame: inout WireReader) throws(WireError) -> Result<AuthDecision, PluginCallError> in
            if let error = try frame.outcome(pluginID: pluginID) { return .failure(error) }
            guard let decision = AuthDecision(wireValue: try frame.u8()) else {
                throw WireError(description: "an unknown decision")
            }
            return .success(decision)
        }
    }

    public func command(_ index: Int, _ values: [CommandValue]) -> Result<CommandValue, CommandError> {
        let outcome: Result<Result<CommandValue, CommandError>, PluginCallError> = call({ id in
            var w = WireWriter(.command, id: id)
            w.int(index)
            w.u32(UInt32(values.count))
            for v in values { w.value(v) }
            return w.frame
        }) { (frame: inout WireReader) throws(WireError) -> Result<Result<CommandValue, CommandError>, PluginCallError> in
            .success(try frame.commandOutcome(pluginID: pluginID))
        }
        switch outcome {
        case let .success(result): return result
        case let .failure(error): return .failure(CommandError(.failed, "\(pluginID): \(error.message)", status: error.status))
        }
    }

    public func service(_ provision: Int, function: Int, _ call: ServiceCall) -> Result<ServiceAnswer, PluginCallError> {
        self.call({ id in
            var w = WireWriter(.serviceCall, id: id, capacity: 64 + call.arguments.reduce(0) {
                if case let .bytes(b) = $1 { return $0 + 5 + b.count } else { return $0 + 9 }
            })
            w.int(provision)
            w.int(function)
            w.serviceCall(call)
            return w.frame
        }) { (frame: inout WireReader) throws(WireError) -> Result<ServiceAnswer, PluginCallError> in
            if let error = try frame.outcome(pluginID: pluginID) { return .failure(error) }
            return .success(try frame.serviceAnswer())
        }
    }

    public func serviceChanged(_ interface: String, tenant: String, _ now: ServiceProvision?) {
        guard let connection = state.withLock({ $0.connection }), connection.isRunning else { return }
        var w = WireWriter(.serviceChanged, id: 0)
        w.string(interface)
        w.string(tenant)
        w.bool(now != nil)
        if let now {
            w.grant(RemoteLeaseGrant(id: 0, version: "\(now.version)", providerID: now.providerID, providerVersion: now.providerVersion,
                                     generation: now.generation, tableSize: now.tableSize))
        }
        _ = connection.send(w.frame)
    }

    /// Sends one call to the current worker (waiting for a restart in progress) and reads its answer.
    private func call<T>(_ frame: (UInt64) -> [UInt8], principal: Principal? = nil,
                         _ read: (inout WireReader) throws(WireError) -> Result<T, PluginCallError>) -> Result<T, PluginCallError> {
        guard let connection = currentConnection() else {
            return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.workerCrashed,
                                            message: "the plugin's worker process is not running"))
        }
        return finish(connection.call(frame, timeout: policy.callTimeout, principal: principal), connection: connection, read: read)
    }

    /// A call's answer read with `read`, or the failure that took its place.
    private func finish<T>(_ answer: Result<WireReader, WorkerConnection.Failure>, connection: WorkerConnection,
                           read: (inout WireReader) throws(WireError) -> Result<T, PluginCallError>) -> Result<T, PluginCallError> {
        switch answer {
        case var .success(answer):
            do throws(WireError) { return try read(&answer) } catch {
                connection.terminate()
                return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.workerCrashed,
                                                message: "the worker sent a malformed answer (\(error)); killed"))
            }
        case let .failure(.crashed(reason)):
            return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.workerCrashed,
                                            message: "the worker process \(reason) during the call"))
        case let .failure(.timedOut(seconds)):
            return .failure(PluginCallError(pluginID: pluginID, status: StatusCode.workerTimedOut,
                                            message: "the call ran past its budget of \(seconds) s; the worker was killed"))
        }
    }

    public func waitForWorker() { _ = currentConnection() }

    /// The running worker; while a restart is in progress, waits for it up to the start timeout.
    private func currentConnection() -> WorkerConnection? {
        let deadline = ContinuousClock.now + .milliseconds(Int64(policy.startTimeout * 1000))
        while true {
            let (connection, stopped, givenUp) = state.withLock { ($0.connection, $0.stopped, $0.givenUp) }
            if let connection, connection.isRunning { return connection }
            if stopped || givenUp || ContinuousClock.now > deadline { return nil }
            usleep(1000)
        }
    }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
