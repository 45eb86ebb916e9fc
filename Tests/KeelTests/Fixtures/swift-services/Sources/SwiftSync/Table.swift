// swift-sync's table, in a file that names no keel type itself: the fields' C types come from the interface's header
// (GitopsSync), and the kit's keel_str helpers must apply to them in a debug build too (the SDK's CKeelABI module
// owns keel.h, so the header's keel_str is the kit's).

import GitopsSync
import KeelPluginKit

/// gitops.sync/1 served by swiftsync. struct_size 0: the kit sets it.
func syncTable() -> gitops_sync_v1 {
    gitops_sync_v1(
        struct_size: 0,
        engine: { keel_str("swiftsync") },
        sync: { app, revision, out, capacity, length in
            guard let app = try? app.string("app"), !app.isEmpty, let revision = try? revision.string("revision") else {
                return KEEL_ERR_INVALID_ARGUMENT
            }
            return StatusBuffer.write("swiftsync synced \(app) to \(revision.isEmpty ? "main" : revision)",
                                      into: out, capacity: capacity, length: length)
        })
}
