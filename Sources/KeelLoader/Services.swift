// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import KeelManifest
import Synchronization

/// What an activation is, as consumers of its services see it, and the interfaces its manifest declares.
public struct ServiceIdentity: Sendable, Hashable {
    /// The plugin's version.
    public var version: String
    /// Which load of the plugin it is (1, 2, ...).
    public var generation: Int
    public let provides: [ProvidedInterface]
    public let consumes: [ConsumedInterface]
    /// Other plugins' commands it may call, as `plugin.command` (`calls:`).
    public let calls: Set<String>
    /// `consumes` by both spellings a plugin may use (`gitops.sync`, `gitops.sync/1`): one look-up per acquire.
    private let byName: [String: ConsumedInterface]

    public init(version: String = "", generation: Int = 0, provides: [ProvidedInterface] = [], consumes: [ConsumedInterface] = [],
                calls: [String] = []) {
        self.calls = Set(calls)
        self.version = version
        self.generation = generation
        self.provides = provides
        self.consumes = consumes
        var names: [String: ConsumedInterface] = [:]
        for c in consumes {
            names[c.interface.name] = c
            names[c.interface.description] = c
        }
        byName = names
    }

    /// The consumed interface `text` names (`gitops.sync` or `gitops.sync/1`), if declared.
    public func consumed(_ text: String) -> ConsumedInterface? { byName[text] }
}

/// One provider's table for one interface ("keel.services/1"), as an activation registered it during activate, or
/// as the host (or its embedder) provides it.
///
/// Immutable after creation but for the count of leases held. The `keel_service_info` handed to consumers is built
/// once here and freed with the object; a lease keeps the object alive, so what `describe` hands out stays valid while
/// the lease is held.
/// `@unchecked Sendable` because of `table` and `info`, pointers: the table is the provider's constant data (valid
/// while its activation is, which the leases keep alive), and `info` is written once in `init` and only read after.
public final class ServiceProvision: @unchecked Sendable {
    public let interface: InterfaceID
    /// The interface version implemented.
    public let version: Semver
    /// Preference when the operator chose no provider: higher serves first.
    public let ranking: Int
    /// The providing plugin's id, or `ServiceProvision.hostID` for the host's own.
    public let providerID: String
    public let providerVersion: String
    /// Which load of the provider it is; 0 for the host.
    public let generation: Int
    /// The table's own struct_size.
    public let tableSize: Int
    let table: UnsafeRawPointer
    /// The provider's activation; nil for the host's own tables (which are never taken down).
    let context: ActivationContext?
    private let held = Atomic<Int>(0)
    let info: UnsafeMutablePointer<keel_service_info>
    /// The table's functions as the provider's plugin.yaml declares them (`functions:`); empty when undeclared.
    public let functions: [ServiceFunction]
    /// What owns `table` when the host made it (a provider in a worker: `ServiceProxyTable`); kept as long as this.
    let owner: AnyObject?
    /// Run when a lease on it ends, after the count: a lease a worker holds through its host tells the host.
    let released: (@Sendable () -> Void)?

    /// The provider id the host's own provisions carry.
    public static let hostID = "keel"

    init(interface: InterfaceID, version: Semver, ranking: Int, providerID: String, providerVersion: String,
         generation: Int, table: UnsafeRawPointer, context: ActivationContext?, functions: [ServiceFunction] = [],
         owner: AnyObject? = nil, released: (@Sendable () -> Void)? = nil) {
        self.owner = owner
        self.released = released
        self.functions = functions
        self.interface = interface
        self.version = version
        self.ranking = ranking
        self.providerID = providerID
        self.providerVersion = providerVersion
        self.generation = generation
        self.table = table
        self.tableSize = Int(table.loadUnaligned(as: UInt32.self))
        self.context = context
        info = .allocate(capacity: 1)
        var i = keel_service_info()
        i.struct_size = UInt32(MemoryLayout<keel_service_info>.size)
        i.version = keel_version(major: UInt32(clamping: version.major), minor: UInt32(clamping: version.minor),
                                 patch: UInt32(clamping: version.patch))
        i.interface_id = HostABI.staticString(interface.description)
        i.provider_id = HostABI.staticString(providerID)
        i.provider_version = HostABI.staticString(providerVersion)
        i.generation = UInt64(generation)
        i.table_size = UInt32(tableSize)
        info.initialize(to: i)
    }

    /// A table the host (or an embedding program) provides: never taken down, so leases on it need no drain.
    /// `table` must start with `uint32_t struct_size` and stay valid for the life of the process.
    public static func host(_ interface: InterfaceID, version: Semver, ranking: Int = 0, table: UnsafeRawPointer) -> ServiceProvision {
        ServiceProvision(interface: interface, version: version, ranking: ranking, providerID: hostID,
                         providerVersion: KeelVersion.current, generation: 0, table: table, context: nil)
    }

    deinit {
        for s in [info.pointee.interface_id, info.pointee.provider_id, info.pointee.provider_version] {
            s.ptr.map { UnsafeMutablePointer(mutating: $0).deallocate() }
        }
        info.deallocate()
    }

    /// Leases held on this table now. [thread-safe]
    public var leasesHeld: Int { held.load(ordering: .relaxed) }

    /// True while the provider's activation admits calls (always for the host's own).
    public var isServing: Bool { context?.isActive ?? true }

    /// Takes a lease: counts as a call in flight of the provider's activation, so it is not deactivated while the
    /// lease is held. False when the activation no longer admits calls.
    func retain() -> Bool {
        if let context, !context.enter() { return false }
        held.wrappingAdd(1, ordering: .relaxed)
        return true
    }

    func releaseLease() {
        held.wrappingSubtract(1, ordering: .relaxed)
        context?.leave()
        released?()
    }
}

/// A consumer's request to hear about changes of the provider of one interface.
public final class ServiceListener: Sendable {
    public let interface: InterfaceID
    let function: keel_service_changed_fn?
    nonisolated(unsafe) let userData: UnsafeMutableRawPointer?
    let context: ActivationContext
    /// For a consumer in a worker process: sends the notice there instead (the worker calls its listeners).
    let forward: (@Sendable (_ tenant: String, _ now: ServiceProvision?) -> Void)?

    init(interface: InterfaceID, function: keel_service_changed_fn?, userData: UnsafeMutableRawPointer?, context: ActivationContext,
         forward: (@Sendable (String, ServiceProvision?) -> Void)? = nil) {
        self.interface = interface
        self.function = function
        self.userData = userData
        self.context = context
        self.forward = forward
        site = context.crashSite("service listener for \(interface)")
    }

    /// Names this listener when the host dies inside it.
    private let site: CrashSite

    /// The consumer's plugin id.
    public var pluginID: String { context.pluginID }
    /// The consumer's generation.
    public var generation: Int { context.identity.generation }

    /// Tells the consumer that `now` (nil: none) serves the interface for `tenant` ("" host-wide). Skipped when the
    /// consumer's activation no longer admits calls. Over the hook budget is logged. [lifecycle]: the kernel's thread.
    public func notify(tenant: String, now: ServiceProvision?) {
        guard context.enter(use: false) else { return }
        defer { context.leave(use: false) }
        if let forward { return forward(tenant, now) }
        guard let function else { return }
        let outer = ActivationContext.beginCall(context)
        defer { ActivationContext.endCall(outer) }
        let started = ActivationContext.now()
        interface.description.withKeelStr { id in
            tenant.withKeelStr { t in
                withExtendedLifetime(now) { site.around { function(userData, id, t, now.map { UnsafePointer($0.info) }) } }
            }
        }
        _ = context.account("service listener for \(interface)", started: started, budget: context.budgets.handler,
                            failed: false, detail: "")
    }
}

/// A lease a consumer holds: which provision, for which consumer. The `keel_service_lease *` a plugin holds is a
/// number no plugin can guess (`nextHandle`), not this object's address (which `malloc` gives the next lease: a stale
/// handle then released another consumer's lease), nor a count (16, 32, ...: a plugin with no grant released every
/// other consumer's leases by counting, and a provider went idle under a held lease and was called unmapped); the
/// host looks it up in `LeaseTable` before touching it, so a stale, doubled or made-up release is caught rather than
/// followed. The handle is the capability: `release` and `describe` carry no caller, so a plugin that reads another's
/// memory for its handle can end that lease (in-process code shares the host's address space; a worker process,
/// `isolation: process`, is the boundary for code that is not trusted with it).
final class ServiceLease: Sendable {
    let provision: ServiceProvision
    let consumer: ActivationContext

    /// The most leases one activation may hold at once: a consumer that never releases cannot grow the host's memory
    /// without bound, and the refusal says what is wrong.
    static let limitPerConsumer = 4096

    /// The handle the plugin holds: a multiple of 16, never 0 (`nextHandle`).
    let handle: UInt

    private static let issued = Atomic<UInt>(0)
    /// A secret of this process's, mixed into every handle: with it, handles stay unguessable even where Swift's
    /// hashing is made deterministic (`SWIFT_DETERMINISTIC_HASHING`).
    private static let secret = UInt64.random(in: .min ... .max)

    init(provision: ServiceProvision, consumer: ActivationContext) {
        self.provision = provision
        self.consumer = consumer
        handle = Self.nextHandle()
    }

    /// A handle no plugin can guess from those it was given: a count that never repeats, with the process's secret,
    /// through SipHash (Swift's `Hasher`, seeded at random per process), cut to a multiple of 16 (`LeaseTable`'s
    /// shards take turns by the bits above). Two leases held at once get one handle with odds of about 2^-36 for
    /// 4,096 held leases; `LeaseTable.add` refuses that case rather than replace a lease.
    static func nextHandle() -> UInt {
        while true {
            var hasher = Hasher()
            hasher.combine(secret)
            hasher.combine(issued.wrappingAdd(1, ordering: .relaxed).oldValue)
            let handle = UInt(bitPattern: hasher.finalize()) & ~0xF
            if handle != 0 { return handle }
        }
    }

    /// Ends the lease on both sides: the provider may drain, the consumer may lease again.
    func release() {
        provision.releaseLease()
        consumer.leaseReleased()
    }
}

/// Every lease held in the process, by handle, in shards so that threads acquiring at once rarely meet on a lock.
/// Thread-safe.
enum LeaseTable {
    final class Shard: Sendable {
        let leases = Mutex<[UInt: ServiceLease]>([:])
    }

    static let shards: [Shard] = (0..<16).map { _ in Shard() }

    static func shard(_ handle: UInt) -> Shard { shards[Int((handle >> 4) & 15)] }

    /// Adds `lease` under its handle; nil when a lease held now has that handle already (see
    /// `ServiceLease.nextHandle`: the acquire is then refused, never another lease replaced).
    static func add(_ lease: ServiceLease) -> UInt? {
        let handle = lease.handle
        return shard(handle).leases.withLock { leases in
            guard leases[handle] == nil else { return nil }
            leases[handle] = lease
            return handle
        }
    }

    /// Removes and returns the lease with `handle`, or nil when no such lease is held (released already, or never
    /// a lease).
    static func remove(_ handle: UInt) -> ServiceLease? {
        shard(handle).leases.withLock { $0.removeValue(forKey: handle) }
    }

    static func find(_ handle: UInt) -> ServiceLease? {
        shard(handle).leases.withLock { $0[handle] }
    }

    /// Releases every lease `consumer` still holds (its activation is over). Returns how many there were.
    static func releaseAll(heldBy consumer: ActivationContext) -> [InterfaceID] {
        var released: [InterfaceID] = []
        for shard in shards {
            let mine = shard.leases.withLock { leases -> [ServiceLease] in
                let found = leases.values.filter { $0.consumer === consumer }
                for lease in found { leases.removeValue(forKey: lease.handle) }
                return found
            }
            for lease in mine {
                lease.release()
                released.append(lease.provision.interface)
            }
        }
        return released
    }
}

extension String {
    /// Runs `body` with this string as a borrowed `keel_str`.
    func withKeelStr<R>(_ body: (keel_str) -> R) -> R {
        var copy = self
        return copy.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { body(keel_str(ptr: $0.baseAddress, len: $0.count)) }
        }
    }
}
