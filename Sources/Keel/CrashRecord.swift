// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// What the fatal-signal handler (`keel_crash.h`) wrote when the host died: which plugin was running, where, and of
/// which signal. One `key value` line per field, first `keel-crash 1`; a record cut short (the process died while
/// writing it) is read as far as it goes, and refused without a signal.
struct CrashRecord: Sendable, Equatable {
    /// The plugin the crash is attributed to; empty for a crash of the host's own.
    var plugin: String
    var generation: Int
    var signal: Int32
    /// The faulting address (`si_addr`) as hex text, nil for a signal that was sent (kill, raise, abort).
    var address: String?
    /// The instruction's address, as hex text.
    var pc: String
    /// The instruction's offset in the plugin's library, when it was in one (for addr2line).
    var offset: String?
    /// What the host was calling: `handler GET /ext/x/items/:id`, `authorize hook "h"`, `activate`, ...
    var site: String
    /// How it was attributed: `address` (the instruction is in the library), `call` (the thread's call), both, none.
    var by: String
    /// Seconds since 1970 (UTC).
    var time: Int
    /// For a record of a call that never returned (`Kernel.recordStall`), not of a signal: how long it had run, in
    /// seconds, when the host ended.
    var hang: Int?
    /// The library's checksum, when the record names it (a stall record does: a hung `activate` has no load-history
    /// row to take it from).
    var checksum: String?

    init?(text: String) {
        var fields: [String: String] = [:]
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.first == "keel-crash 1" else { return nil }
        for line in lines.dropFirst() {
            guard let space = line.firstIndex(of: " ") else { continue }
            fields[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        guard let signal = fields["signal"].flatMap({ Int32($0) }) else { return nil }
        plugin = fields["plugin"] ?? ""
        generation = fields["generation"].flatMap { Int($0) } ?? 0
        self.signal = signal
        address = fields["address"]
        pc = fields["pc"] ?? ""
        offset = fields["offset"]
        site = fields["site"] ?? ""
        by = fields["by"] ?? ""
        time = fields["time"].flatMap { Int($0) } ?? 0
        hang = fields["hang"].flatMap { Int($0) }
        checksum = fields["checksum"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The text of a record of a call into `plugin` that had not returned after `seconds` when the host ended
    /// (signal 0, attributed by `stall`).
    static func stallText(plugin: String, generation: Int, checksum: String, site: String, seconds: Int, time: Int) -> String {
        // One field per line: a newline in a value would start a field of its own.
        func field(_ s: String) -> String { String(s.map { $0 == "\n" || $0 == "\r" ? " " : $0 }) }
        return "keel-crash 1\nplugin \(field(plugin))\ngeneration \(generation)\nchecksum \(field(checksum))\nsignal 0\nsite \(field(site))\nby stall\nhang \(seconds)\ntime \(time)\n"
    }

    var signalName: String { PluginProbe.signalName(signal) }

    /// The failure reason the plugin is quarantined with, e.g.
    /// `crashed the host with SIGSEGV in handler GET /ext/x/items/:id (generation 3)`.
    var reason: String {
        if let hang { return "hung the host: its \(site.isEmpty ? "call" : site) had not returned after \(hang) s (generation \(generation))" }
        return "crashed the host with \(signalName)\(site.isEmpty ? "" : " in " + site) (generation \(generation))"
    }

    /// The details kept in the load history: the reason, where, and when.
    var detail: String {
        var parts = [reason]
        if let address { parts.append("at address \(address)") }
        if !pc.isEmpty { parts.append("instruction \(pc)") }
        if let offset { parts.append("offset \(offset) in the library") }
        parts.append("attributed by \(by)")
        parts.append("time \(Date(timeIntervalSince1970: TimeInterval(time)).formatted(.iso8601))")
        return parts.joined(separator: ", ")
    }
}
