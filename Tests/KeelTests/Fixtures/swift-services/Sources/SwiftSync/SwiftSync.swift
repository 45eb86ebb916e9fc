// swift-sync: a provider of gitops.sync/1 in Swift, beside argo-sync (C) and flux-sync (Rust).

import CKeelABI
import GitopsSync
import KeelPluginKit

final class SwiftSync: KeelPlugin {
    init() {}

    func activate(_ host: PluginHost) throws {
        // The table's functions are C functions: closures that capture nothing (Table.swift).
        let table = syncTable()
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
/// C function exported by name, with the C types of its signature (here through GitopsSync; `import CKeelABI` gives
/// them too); `Command` writes its result.
@_cdecl("swift_sync_engine")
public func engineCommand(_ out: UnsafeMutablePointer<keel_output>?) -> keel_status {
    Command.json(out) { Command.quote("swiftsync") }
}

/// The command `shout` (`(str, i64) -> status(json)`): a thrown error is the call's status and message.
@_cdecl("swift_sync_shout")
public func shoutCommand(_ text: keel_str, _ times: Int64, _ out: UnsafeMutablePointer<keel_output>?) -> keel_status {
    Command.json(out) {
        guard (1...100).contains(times) else { throw PluginError(.invalidArgument, "times must be 1 to 100, not \(times)") }
        return "{\"text\": \(Command.quote(String(repeating: try text.string("text"), count: Int(times)).uppercased()))}"
    }
}

@_cdecl("keel_plugin_entry")
public func keelPluginEntry() -> UnsafeRawPointer? { PluginExport.descriptor(for: SwiftSync.self) }
