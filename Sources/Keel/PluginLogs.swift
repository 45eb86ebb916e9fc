// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState
import Synchronization

/// What each plugin logged (through `host->log`) and what the host logged about it, in a bounded ring per plugin,
/// for `keel logs ID` and `GET /api/v1/plugins/<id>/logs`. Fed by the kernel's log sink: every `LogRecord` that names
/// a plugin. Kept in memory only (a restart starts empty).
///
/// Bounded: the last `perPlugin` lines of each plugin, for at most `plugins` plugin ids (the one silent longest is
/// dropped first). Lines carry what their writer put in them: the host's own lines never quote a configuration value
/// (Kernel+Audit.swift), a plugin's lines are as the plugin wrote them. Thread-safe; an append takes one short lock
/// and moves no other line.
public final class PluginLogs: Sendable {
    /// One line.
    public struct Line: Sendable, Codable, Hashable {
        /// Increasing across all plugins: `after` in `lines(_:after:)` continues from here (`keel logs -f`).
        public var seq: Int64
        /// ISO 8601 UTC with milliseconds.
        public var at: String
        /// `debug`, `info`, `warning` or `error`.
        public var level: String
        public var message: String
        /// The plugin's generation the line is about, when known.
        public var generation: Int?
        /// The HTTP request it happened in, if any.
        public var requestID: String?
    }

    public let perPlugin: Int
    public let plugins: Int
    /// One plugin's lines: a ring once full (`start` is the oldest), so an append never moves the others.
    private struct Ring {
        var lines: [Line] = []
        var start = 0
        mutating func append(_ line: Line, capacity: Int) {
            if lines.count < capacity {
                lines.append(line)
            } else {
                lines[start] = line
                start = (start + 1) % capacity
            }
        }
        var ordered: [Line] { Array(lines[start...] + lines[..<start]) }
    }
    private struct Rings {
        var lines: [String: Ring] = [:]
        var lastWrite: [String: Int64] = [:]
        var seq: Int64 = 0
    }
    private let rings = Mutex(Rings())

    public init(perPlugin: Int = 1000, plugins: Int = 512) {
        self.perPlugin = max(1, perPlugin)
        self.plugins = max(1, plugins)
    }

    /// Keeps `record` when it names a plugin.
    public func append(_ record: LogRecord) {
        guard let id = record.pluginID, !id.isEmpty else { return }
        let at = Timestamp.now()
        let level = record.levelName
        rings.withLock { r in
            r.seq += 1
            if r.lines[id] == nil, r.lines.count >= plugins, let quiet = r.lastWrite.min(by: { $0.value < $1.value })?.key {
                r.lines[quiet] = nil
                r.lastWrite[quiet] = nil
            }
            r.lines[id, default: Ring()].append(Line(seq: r.seq, at: at, level: level, message: record.message,
                                                     generation: record.generation, requestID: record.requestID), capacity: perPlugin)
            r.lastWrite[id] = r.seq
        }
    }

    /// The kept lines of `pluginID` with `seq` above `after`, oldest first.
    public func lines(_ pluginID: String, after: Int64 = 0) -> [Line] {
        rings.withLock { r in (r.lines[pluginID]?.ordered ?? []).filter { $0.seq > after } }
    }
}
