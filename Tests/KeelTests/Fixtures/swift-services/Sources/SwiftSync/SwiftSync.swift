// swift-sync: a provider of gitops.sync/1 in Swift, beside argo-sync (C) and flux-sync (Rust).

import GitopsSync
import KeelPluginKit

let engineName: StaticString = "swiftsync"

/// `s` as Swift text (a copy; the host's strings are borrowed for the call).
func text(_ s: keel_str) -> String {
    guard let ptr = s.ptr, s.len > 0 else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: ptr, count: s.len), as: UTF8.self)
}

final class SwiftSync: KeelPlugin {
    init() {}

    func activate(_ host: PluginHost) throws {
        // The table's functions are C functions: closures that capture nothing. struct_size 0: the kit sets it.
        let table = gitops_sync_v1(
            struct_size: 0,
            engine: {
                keel_str(ptr: UnsafeRawPointer(engineName.utf8Start).assumingMemoryBound(to: CChar.self),
                         len: engineName.utf8CodeUnitCount)
            },
            sync: { app, revision, out, capacity, length in
                guard let length, app.len > 0 else { return KEEL_ERR_INVALID_ARGUMENT }
                let line = Array("swiftsync synced \(text(app)) to \(revision.len == 0 ? "main" : text(revision))".utf8)
                length.pointee = line.count
                guard line.count <= capacity, let out else { return KEEL_ERR_LIMIT }
                line.withUnsafeBytes { bytes in
                    if let base = bytes.baseAddress { UnsafeMutableRawPointer(out).copyMemory(from: base, byteCount: line.count) }
                }
                return KEEL_OK
            })
        // A pointer passed where the table goes is refused: its bits would be read as a struct_size describing
        // memory the kit does not hold.
        if let pointer = UnsafeRawPointer(bitPattern: 0x7f00_0000_0040) {
            do {
                try host.provide("gitops.sync/1", table: pointer)
                host.log(.error, "a pointer was taken for a table")
            } catch {
                host.log(.warn, "refused as it should be: \(error)")
            }
        }
        try host.provide("gitops.sync/1", table: table)
    }
}

/// The command `engine` (plugin.yaml: `() -> status(json)`): the engine's name as a JSON string. A command is a plain
/// C function exported by name; its C types come from the headers (here through GitopsSync; `import CKeelABI` gives
/// them too).
@_cdecl("swift_sync_engine")
public func engineCommand(_ out: UnsafeMutablePointer<keel_output>?) -> keel_status {
    guard let out else { return KEEL_ERR_INVALID_ARGUMENT }
    let json = Array("\"\(engineName)\"".utf8)
    return json.withUnsafeBytes { out.pointee.write(out, $0.baseAddress, $0.count) }
}

@_cdecl("keel_plugin_entry")
public func keelPluginEntry() -> UnsafeRawPointer? { PluginExport.descriptor(for: SwiftSync.self) }
