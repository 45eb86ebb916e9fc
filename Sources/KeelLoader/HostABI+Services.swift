// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import KeelManifest

/// The host's half of "keel.services/1" (ABI 1.1): provide and listen during activate, acquire, release and
/// describe leases at any time. See PluginABI/include/keel/services.h for the contract.
extension HostABI {
    nonisolated(unsafe) static let services: UnsafeMutablePointer<keel_host_services> = {
        let table = UnsafeMutablePointer<keel_host_services>.allocate(capacity: 1)
        var s = keel_host_services()
        s.struct_size = UInt32(MemoryLayout<keel_host_services>.size)
        s.provide = { ctx, provision in
            HostABI.registration(ctx, provision, "service") { context, p in
                guard let id = p.interface_id.validated(limit: 160) else {
                    return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "service: interface id is not UTF-8 or too long")
                }
                guard let table = p.table else { return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "service \(id): NULL table") }
                return context.addProvision(id, table: table)
            }
        }
        s.listen = { ctx, listener in
            HostABI.registration(ctx, listener, "service listener") { context, l in
                guard let id = l.interface_id.validated(limit: 160) else {
                    return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "service listener: interface id is not UTF-8 or too long")
                }
                guard let fn = l.changed else {
                    return context.refuse(KEEL_ERR_INVALID_ARGUMENT, "service listener for \(id): NULL function")
                }
                return context.addListener(id, function: fn, userData: l.user_data)
            }
        }
        s.acquire = { ctx, interface, tenant, minSize, outLease, outTable in HostRefusal.noted({
            guard let context = HostABI.context(ctx), let outLease, let outTable else { return KEEL_ERR_INVALID_ARGUMENT }
            outLease.pointee = nil
            outTable.pointee = nil
            guard let id = interface.validated(limit: 160), let t = tenant.validated(limit: 128) else {
                return KEEL_ERR_INVALID_ARGUMENT
            }
            switch context.acquire(id, tenant: t, minSize: Int(minSize)) {
            case let .failure(error):
                return error.status
            case let .success(lease):
                guard let handle = LeaseTable.add(lease) else {
                    // Its handle is one a held lease has (odds of about 2^-36): given back, and the plugin may retry.
                    lease.release()
                    return KEEL_ERR_UNAVAILABLE
                }
                // Closed meanwhile (its `close` released what the table held before this one was added): given back.
                if context.isClosed {
                    if LeaseTable.remove(handle) != nil { lease.release() }
                    return KEEL_ERR_WRONG_STATE
                }
                outLease.pointee = OpaquePointer(bitPattern: handle)
                outTable.pointee = lease.provision.table
                return KEEL_OK
            }
        }()) }
        s.release = { lease in
            guard let lease else { return }
            let handle = UInt(bitPattern: UnsafeRawPointer(lease))
            guard let held = LeaseTable.remove(handle) else {
                if let caller = ActivationContext.currentCall {
                    caller.logBudgeted(.warn, "released a service lease that is not held (released twice?); ignored")
                }
                return
            }
            held.release()
        }
        s.describe = { lease, out in
            guard let lease, let out, let held = LeaseTable.find(UInt(bitPattern: UnsafeRawPointer(lease))) else {
                return KEEL_ERR_INVALID_ARGUMENT
            }
            // Only the bytes the caller's struct_size covers, never more than this host's declaration.
            let size = min(Int(out.pointee.struct_size), MemoryLayout<keel_service_info>.size)
            guard size >= MemoryLayout<UInt32>.size else { return KEEL_ERR_INVALID_ARGUMENT }
            UnsafeMutableRawPointer(out).advanced(by: 4)
                .copyMemory(from: UnsafeRawPointer(held.provision.info).advanced(by: 4), byteCount: size - 4)
            return KEEL_OK
        }
        table.initialize(to: s)
        return table
    }()
}
