// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest
import Synchronization

/// Who serves a lease taken in another process, as that process's host granted it.
public struct RemoteLeaseGrant: Sendable, Hashable {
    /// The host's id for the lease: valid for the worker it was granted to, until released.
    public var id: UInt64
    public var version: String
    public var providerID: String
    public var providerVersion: String
    public var generation: Int
    public var tableSize: Int

    public init(id: UInt64, version: String, providerID: String, providerVersion: String, generation: Int, tableSize: Int) {
        self.id = id
        self.version = version
        self.providerID = providerID
        self.providerVersion = providerVersion
        self.generation = generation
        self.tableSize = tableSize
    }
}

/// Leases a plugin in a worker process takes through its host ("keel.services/1" acquire, release, and the calls
/// through the table). Implemented by the worker's environment over its socket. Thread-safe; calls block.
public protocol RemoteServiceBroker: AnyObject, Sendable {
    func acquireRemote(_ interface: String, tenant: String, minSize: Int) -> Result<RemoteLeaseGrant, PluginCallError>
    func releaseRemote(_ lease: UInt64)
    func callRemote(lease: UInt64, function: Int, _ call: ServiceCall) -> Result<ServiceAnswer, PluginCallError>
}

extension ActivationContext {
    /// `acquire` for a plugin in a worker: the host leases the serving table (and checks everything again); the
    /// plugin gets a table of closures built from its own `functions:`, whose calls go to the host. [thread-safe]
    func acquireRemote(_ consumed: ConsumedInterface, tenant: String, minSize: Int,
                       broker: any RemoteServiceBroker) -> Result<ServiceLease, PluginCallError> {
        func failure(_ status: Int32, _ message: String) -> Result<ServiceLease, PluginCallError> {
            logBudgeted(.warn, message)
            return .failure(PluginCallError(pluginID: pluginID, status: status, message: message))
        }
        guard !consumed.functions.isEmpty else {
            return failure(StatusCode.unsupported, "\(consumed.interface): its functions are not declared under functions: of its consumes: entry, so its table cannot cross a process boundary")
        }
        guard leases.wrappingAdd(1, ordering: .relaxed).newValue <= ServiceLease.limitPerConsumer else {
            leases.wrappingSubtract(1, ordering: .relaxed)
            return failure(StatusCode.limit, "\(ServiceLease.limitPerConsumer) service leases held at once; release each lease when its work is done")
        }
        let grant: RemoteLeaseGrant
        switch broker.acquireRemote(consumed.interface.description, tenant: tenant, minSize: minSize) {
        case let .failure(error):
            leases.wrappingSubtract(1, ordering: .relaxed)
            return .failure(error)
        case let .success(g):
            grant = g
        }
        let id = grant.id
        let proxy = ServiceProxyTable(interface: consumed.interface, declared: consumed.functions, count: (grant.tableSize - 8) / 8,
                                      context: self, send: { function, call in broker.callRemote(lease: id, function: function, call) })
        guard let proxy, Int(proxy.table.load(as: UInt32.self)) >= minSize else {
            broker.releaseRemote(id)
            leases.wrappingSubtract(1, ordering: .relaxed)
            return failure(StatusCode.unsupported, "\(consumed.interface): its functions: declare a table of fewer than the \(minSize) bytes asked for")
        }
        let provision = ServiceProvision(
            interface: consumed.interface, version: Semver(grant.version) ?? Semver(consumed.interface.major, 0, 0), ranking: 0,
            providerID: grant.providerID, providerVersion: grant.providerVersion, generation: grant.generation,
            table: UnsafeRawPointer(proxy.table), context: nil, owner: proxy, released: { broker.releaseRemote(id) })
        _ = provision.retain()
        return .success(ServiceLease(provision: provision, consumer: self))
    }

    /// Registers a listener reported by a worker: the host's notices about `text` go to `forward`.
    public func addRemoteListener(_ text: String, forward: @escaping @Sendable (String, ServiceProvision?) -> Void) -> Int32 {
        addListener(text, function: nil, userData: nil, forward: forward)
    }
}

extension ServiceProvision {
    /// A provision that only describes a provider (no table): what a worker hands its listeners for a notice from
    /// its host.
    public static func describing(_ interface: InterfaceID, version: String, providerID: String, providerVersion: String,
                                  generation: Int, tableSize: Int) -> ServiceProvision {
        let provision = ServiceProvision(interface: interface, version: Semver(version) ?? Semver(interface.major, 0, 0), ranking: 0,
                                         providerID: providerID, providerVersion: providerVersion, generation: generation,
                                         table: ActivationContext.emptyTable, context: nil)
        provision.info.pointee.table_size = UInt32(clamping: tableSize)
        return provision
    }
}

/// The leases one worker process holds on the host's tables, by ids the host gave it: a worker can use and release
/// only its own. Ended (all released) when the worker ends. Thread-safe.
public final class RemoteLeases: Sendable {
    /// The worker plugin's activation, host side: acquires are checked as its own (declared under consumes:,
    /// versions, sizes, the limit of leases).
    let context: ActivationContext
    private let state = Mutex(State())

    /// One lease a worker holds, with the calls into its table running now: a release that comes while one runs (or
    /// the worker's end) gives the lease back only when the last of them returns, so that the provider's count of
    /// calls in flight, which its deactivation waits for, holds while the host is in its code.
    private struct Held {
        var lease: ServiceLease
        var caller: ServiceTableCaller
        var usable: Int
        var calls = 0
        var released = false
    }

    private struct State {
        var next: UInt64 = 1
        var held: [UInt64: Held] = [:]
        var ended = false
    }

    /// Largest output buffer a worker's call may ask the host for.
    public static let outputLimit = 1 << 20

    public init(context: ActivationContext) { self.context = context }

    /// Leases the table serving `interface` for `tenant`, as the worker's plugin. The provider must declare its
    /// functions (the host calls its table only with the signatures its provider declared), the consumer too.
    public func acquire(_ interface: String, tenant: String, minSize: Int) -> Result<RemoteLeaseGrant, PluginCallError> {
        func refuse(_ status: Int32, _ message: String) -> Result<RemoteLeaseGrant, PluginCallError> {
            context.logBudgeted(.warn, message)
            return .failure(PluginCallError(pluginID: context.pluginID, status: status, message: message))
        }
        guard let consumed = context.identity.consumed(interface) else {
            return refuse(StatusCode.denied, "service \(interface) denied: not declared under consumes: in plugin.yaml")
        }
        guard !consumed.functions.isEmpty else {
            return refuse(StatusCode.unsupported, "\(consumed.interface): the consumer's functions are not declared, so it cannot be called from a worker process")
        }
        let lease: ServiceLease
        switch ActivationContext.serving(context, { context.acquire(interface, tenant: tenant, minSize: minSize) }) {
        case let .failure(error): return .failure(error)
        case let .success(l): lease = l
        }
        let provision = lease.provision
        guard !provision.functions.isEmpty else {
            lease.release()
            return refuse(StatusCode.unsupported, "\(consumed.interface) is served by \"\(provision.providerID)\", which does not declare its functions under functions:, so a consumer in a worker process cannot call it")
        }
        let caller = ServiceTableCaller(provision, functions: provision.functions)
        let id = state.withLock { s -> UInt64? in
            guard !s.ended else { return nil }
            defer { s.next += 1 }
            s.held[s.next] = Held(lease: lease, caller: caller, usable: min(consumed.functions.count, provision.functions.count))
            return s.next
        }
        guard let id else {
            lease.release()
            return .failure(PluginCallError(pluginID: context.pluginID, status: StatusCode.unavailable, message: "the worker ended"))
        }
        return .success(RemoteLeaseGrant(id: id, version: "\(provision.version)", providerID: provision.providerID,
                                         providerVersion: provision.providerVersion, generation: provision.generation,
                                         tableSize: provision.tableSize))
    }

    /// Ends lease `id`; false when this worker holds no such lease.
    public func release(_ id: UInt64) -> Bool {
        let (found, now) = state.withLock { s -> (Bool, ServiceLease?) in
            guard var held = s.held[id], !held.released else { return (false, nil) }
            if held.calls == 0 {
                s.held[id] = nil
                return (true, held.lease)
            }
            held.released = true
            s.held[id] = held
            return (true, nil)
        }
        now?.release()
        return found
    }

    /// Calls function `function` of lease `id`'s table: only leases of this worker, only functions the consumer
    /// declared (and the provider's table has), output bounded by `outputLimit`.
    public func call(_ id: UInt64, function: Int, _ call: ServiceCall) -> Result<ServiceAnswer, PluginCallError> {
        func refuse(_ status: Int32, _ message: String) -> Result<ServiceAnswer, PluginCallError> {
            .failure(PluginCallError(pluginID: context.pluginID, status: status, message: message))
        }
        let entered = state.withLock { s -> Held? in
            guard var held = s.held[id], !held.released else { return nil }
            held.calls += 1
            s.held[id] = held
            return held
        }
        guard let held = entered else { return refuse(StatusCode.invalidArgument, "no lease \(id) held by this worker") }
        defer {
            let last = state.withLock { s -> ServiceLease? in
                guard var held = s.held[id] else { return nil }
                held.calls -= 1
                if held.released && held.calls == 0 {
                    s.held[id] = nil
                    return held.lease
                }
                s.held[id] = held
                return nil
            }
            last?.release()
        }
        guard function >= 0, function < held.usable else { return refuse(StatusCode.unsupported, "no function \(function) declared") }
        var bounded = call
        bounded.outCap = min(max(call.outCap, 0), Self.outputLimit)
        guard let answer = held.caller.call(function, bounded) else {
            return refuse(StatusCode.unsupported, "function \(function) is not in the provider's table, or its arguments do not fit its signature")
        }
        return .success(answer)
    }

    /// Releases every lease (the worker ended); later acquires are refused. Returns how many there were.
    @discardableResult
    public func releaseAll() -> Int {
        let (count, now) = state.withLock { s -> (Int, [ServiceLease]) in
            s.ended = true
            var now: [ServiceLease] = []
            let count = s.held.values.filter { !$0.released }.count
            for (id, var held) in s.held {
                if held.calls == 0 {
                    now.append(held.lease)
                    s.held[id] = nil
                } else {
                    // Given back by the last call running in it.
                    held.released = true
                    s.held[id] = held
                }
            }
            return (count, now)
        }
        now.forEach { $0.release() }
        return count
    }
}
