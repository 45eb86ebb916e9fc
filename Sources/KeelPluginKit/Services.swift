// Keel — a microkernel plugin host. Licensed under Apache-2.0.

internal import CKeelABI
import Synchronization

/// Who serves an interface: copied out of the host (keel.services/1, `keel_service_info`).
public struct ServiceInfo: Sendable, Hashable {
    /// The interface, e.g. "gitops.sync/1".
    public var interface: String
    /// The providing plugin's id, or "keel" for the host or the program embedding it.
    public var providerID: String
    /// The providing plugin's version ("" for the host).
    public var providerVersion: String
    /// The interface version the provider implements, e.g. "1.1.0".
    public var version: String
    /// Which load of the provider it is (1, 2, ...; 0 for the host).
    public var generation: UInt64
    /// The size of the provider's table, in bytes (its `struct_size`).
    public var tableSize: UInt32

    init(_ raw: keel_service_info) {
        interface = StringPack.copy(raw.interface_id)
        providerID = StringPack.copy(raw.provider_id)
        providerVersion = StringPack.copy(raw.provider_version)
        version = "\(raw.version.major).\(raw.version.minor).\(raw.version.patch)"
        generation = raw.generation
        tableSize = raw.table_size
    }
}

/// A held lease on the table of the provider serving an interface. Call the table's functions while it is held,
/// then `release()` it; a lease still held when the last reference to it goes is released then. While any lease
/// is held the provider stays active (a switch, a disable or a reload waits for it), so hold one for one unit of
/// work (a request, a job), not for the plugin's life. Thread-safe; `release` may be called more than once.
public final class ServiceLease<Table>: @unchecked Sendable {
    // @unchecked: `table`, `lease` and `services` are set once and point at host memory that stays valid until the
    // release; the host's `release` and `describe` are [thread-safe], and `released` (a lock) makes the release happen
    // once and never while `info` copies the host's strings.
    /// The provider's table, valid until `release()`.
    public let table: UnsafePointer<Table>
    private let lease: OpaquePointer
    private let services: UnsafePointer<keel_host_services>
    /// Whether it was released; held across `info`'s read of the host's strings, which a release would end.
    private let released = Mutex<Bool>(false)

    init(table: UnsafePointer<Table>, lease: OpaquePointer, services: UnsafePointer<keel_host_services>) {
        self.table = table
        self.lease = lease
        self.services = services
    }

    /// Who serves this lease. - Throws: `PluginError` when the lease was released or the host refuses.
    public func info() throws -> ServiceInfo {
        try released.withLock { released throws -> ServiceInfo in
            guard !released else { throw PluginError(.wrongState, "the lease was released") }
            var raw = keel_service_info()
            raw.struct_size = UInt32(MemoryLayout<keel_service_info>.size)
            try PluginHost.check(services.pointee.describe(lease, &raw), "describing a lease")
            return ServiceInfo(raw)  // copied while the lease still holds the host's strings
        }
    }

    /// Ends the lease: `table` must not be used after this. Later calls do nothing.
    public func release() {
        released.withLock { released in
            guard !released else { return }
            released = true
            services.pointee.release(lease)
        }
    }

    deinit { release() }
}

/// A provider's table, copied by the kit and kept until the activation that provided it is deactivated (the ABI
/// wants it valid until `deactivate` returns). `@unchecked`: the memory is written once, before the host sees it,
/// and only read after (by the host and the consumers it hands it to).
final class ProvidedTable: @unchecked Sendable {
    let memory: UnsafeMutableRawPointer
    private let free: (UnsafeMutableRawPointer) -> Void

    init<Table>(_ table: Table) {
        let typed = UnsafeMutablePointer<Table>.allocate(capacity: 1)
        typed.initialize(to: table)
        memory = UnsafeMutableRawPointer(typed)
        free = { raw in
            let typed = raw.assumingMemoryBound(to: Table.self)
            typed.deinitialize(count: 1)
            typed.deallocate()
        }
    }

    deinit { free(memory) }
}

typealias ListenHook = @Sendable (String, String, ServiceInfo?) -> Void

extension PluginHost {
    /// Provides `table` for `interface` (declared under `provides:` in plugin.yaml), e.g. "gitops.sync/1".
    /// `Table` is the interface's C table type, imported from its header (a C target of the plugin's package); it
    /// starts with `uint32_t struct_size`, which the kit sets to the table's size when it is 0. The kit keeps a
    /// copy until deactivate; its functions are called on the host's threads, concurrently. [activate-only]
    /// - Throws: `PluginError` when the host refuses (the interface not declared, provided twice, outside
    ///   activate, a host without services).
    public func provide<Table>(_ interface: String, table: Table) throws {
        guard MemoryLayout<Table>.size >= 8 else {
            throw PluginError(.invalidArgument, "providing \(interface): \(Table.self) is not an interface table (one starts with uint32_t struct_size, then its functions)")
        }
        let services = try service(KEEL_SERVICE_SERVICES, as: keel_host_services.self)
        let kept = ProvidedTable(table)
        let size = kept.memory.assumingMemoryBound(to: UInt32.self)
        if size.pointee == 0 { size.pointee = UInt32(MemoryLayout<Table>.size) }
        // A struct_size past the copy would let consumers read beyond it (a pointer passed as the table, or a size
        // set by hand): the table must describe the memory the kit holds.
        guard size.pointee >= 8, Int(size.pointee) <= MemoryLayout<Table>.size else {
            throw PluginError(.invalidArgument, "providing \(interface): its struct_size is \(size.pointee), but a \(Table.self) is \(MemoryLayout<Table>.size) bytes (pass the table itself, with struct_size 0 or its own size)")
        }
        let status = StringPack.with([interface]) { s -> keel_status in
            var provision = keel_service_provision(struct_size: UInt32(MemoryLayout<keel_service_provision>.size),
                                                   interface_id: s[0], table: UnsafeRawPointer(kept.memory))
            return services.pointee.provide(ctx, &provision)
        }
        try Self.check(status, "providing \(interface)") { status in
            switch status {
            case .denied: "not declared under provides: in plugin.yaml"
            case .conflict: "this activation provides it already"
            case .wrongState: "only inside activate"
            default: nil
            }
        }
        activation.retain(kept)
    }

    /// Leases the table serving `interface` (declared under `consumes:`, with or without `/<major>`) for `tenant`
    /// ("": the host-wide choice; a tenant without a choice of its own gets it). The provider's table must be at
    /// least `minimumSize` bytes (default: all of `Table`; pass the size of an earlier minor version's table to
    /// work with older providers, then check `info().tableSize` before calling a later function). [thread-safe]
    /// - Throws: `PluginError` with the host's status: `.notFound` (no provider enabled), `.unsupported` (its table
    ///   is too small or its version outside the declared range), `.unavailable` (being taken down: retry),
    ///   `.denied` (not declared under `consumes:`), `.limit` (4,096 leases held).
    public func acquire<Table>(_ interface: String, as: Table.Type, tenant: String = "",
                               minimumSize: Int = MemoryLayout<Table>.size) throws -> ServiceLease<Table> {
        let services = try service(KEEL_SERVICE_SERVICES, as: keel_host_services.self)
        var lease: OpaquePointer?
        var table: UnsafeRawPointer?
        let status = StringPack.with([interface, tenant]) { s in
            services.pointee.acquire(ctx, s[0], s[1], UInt32(clamping: minimumSize), &lease, &table)
        }
        try Self.check(status, "acquiring \(interface)") { status in
            switch status {
            case .denied: "not declared under consumes: in plugin.yaml"
            case .notFound: "no enabled plugin provides it"
            case .unsupported: "the serving provider's table is under \(minimumSize) bytes, or its version is outside the range declared under consumes:"
            case .unavailable: "its provider is being taken down"
            case .limit: "this activation holds 4,096 leases already"
            default: nil
            }
        }
        guard let lease, let table else { throw PluginError(.internalError, "acquiring \(interface): the host returned no table") }
        return ServiceLease(table: table.assumingMemoryBound(to: Table.self), lease: lease, services: services)
    }

    /// Runs `body` with the table serving `interface` and releases the lease when it returns or throws: one unit of
    /// work. See `acquire(_:as:tenant:minimumSize:)` for the arguments and errors. [thread-safe]
    public func withService<Table, Result>(_ interface: String, as type: Table.Type, tenant: String = "",
                                           minimumSize: Int = MemoryLayout<Table>.size,
                                           _ body: (ServiceLease<Table>) throws -> Result) throws -> Result {
        let lease = try acquire(interface, as: type, tenant: tenant, minimumSize: minimumSize)
        defer { lease.release() }
        return try body(lease)
    }

    /// Asks to be told when the provider serving `interface` (declared under `consumes:`) changes: `changed` gets
    /// the interface, the tenant ("" for the host-wide choice) and the new provider, or nil when none serves any
    /// more. It runs on the host's lifecycle thread, after this activation's `activate` returned and never after its
    /// `deactivate` started; it must not block for long. [activate-only]
    /// - Throws: `PluginError` when the host refuses (not declared, past 16 listeners, outside activate).
    public func listen(_ interface: String,
                       _ changed: @escaping @Sendable (_ interface: String, _ tenant: String, _ now: ServiceInfo?) -> Void) throws {
        let services = try service(KEEL_SERVICE_SERVICES, as: keel_host_services.self)
        let why = { (status: PluginError.Status) -> String? in
            switch status {
            case .denied: "not declared under consumes: in plugin.yaml"
            case .limit: "16 listeners already"
            case .wrongState: "only inside activate"
            default: nil
            }
        }
        try register(changed as ListenHook, "listening to \(interface)", why: why) { userData in
            StringPack.with([interface]) { s -> keel_status in
                var listener = keel_service_listener(struct_size: UInt32(MemoryLayout<keel_service_listener>.size),
                                                     interface_id: s[0], changed: Trampolines.changed, user_data: userData)
                return services.pointee.listen(ctx, &listener)
            }
        }
    }

    /// The plugin's configuration as JSON text (an object, checked by the host against the bundle's schema), or ""
    /// when it has none (keel.config/1). Read it in `activate`: a change of configuration reloads the plugin.
    /// [thread-safe] - Throws: `PluginError(.unsupported)` on a host without keel.config/1.
    public func configuration() throws -> String {
        let config = try service(KEEL_SERVICE_CONFIG, as: keel_host_config.self)
        return StringPack.copy(config.pointee.get(ctx))
    }
}

extension Trampolines {
    static let changed: @convention(c) (UnsafeMutableRawPointer?, keel_str, keel_str, UnsafePointer<keel_service_info>?) -> Void = {
        ud, interface, tenant, now in
        guard let ud else { return }
        let callback = Unmanaged<Callback<ListenHook>>.fromOpaque(ud).takeUnretainedValue()
        callback.hook(StringPack.copy(interface), StringPack.copy(tenant), now.map { ServiceInfo($0.pointee) })
    }
}
