// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Logging
import Synchronization
import KeelSystem

/// How `keel serve` writes its log to stderr: `text` (the default), one `keel: <level>: [<plugin>] <message>` line per
/// record, or `json`, one JSON object per line.
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json
}

/// The host's structured log: every `LogRecord` goes through swift-log, with the plugin id, its generation and the
/// request id as metadata (`plugin`, `generation`, `request_id`), written by `KeelLogHandler` in the chosen format.
///
/// A JSON line:
/// `{"ts":"2026-11-29T12:00:00.000Z","level":"info","label":"keel","message":"...","plugin":"hello","generation":3,"request_id":"..."}`
/// The message is the record's text as its writer made it: the host's own lines never quote a configuration value
/// or a token (Kernel+Audit.swift); a plugin's lines are as the plugin wrote them.
public enum StructuredLog {
    /// A log sink for `KernelConfiguration.log` writing through a swift-log `Logger` in `format`; `passes` picks the
    /// records written (the others are dropped before any formatting). Thread-safe.
    public static func sink(format: LogFormat, passes: @escaping @Sendable (LogRecord) -> Bool = { _ in true })
        -> @Sendable (LogRecord) -> Void {
        var configured = Logger(label: "keel") { label in KeelLogHandler(label: label, format: format) }
        configured.logLevel = .trace
        let logger = configured
        return { record in
            guard passes(record) else { return }
            var metadata: Logger.Metadata = [:]
            if let plugin = record.pluginID { metadata["plugin"] = .string(plugin) }
            if let generation = record.generation { metadata["generation"] = .stringConvertible(generation) }
            if let request = record.requestID { metadata["request_id"] = .string(request) }
            logger.log(level: level(record.level), "\(record.message)", metadata: metadata.isEmpty ? nil : metadata)
        }
    }

    /// Makes every swift-log `Logger` of the process (Hummingbird's among them) write in `format`. Call once, first.
    public static func bootstrap(_ format: LogFormat) {
        LoggingSystem.bootstrap { label in KeelLogHandler(label: label, format: format) }
    }

    /// A swift-log handler that hands every message to `sink` as a `LogRecord` (metadata appended as `key=value`):
    /// for the HTTP server's own lines where the process's log is a callback (an embedder's), not stderr.
    static func handler(label: String, sink: @escaping @Sendable (LogRecord) -> Void) -> some LogHandler {
        KernelSinkLogHandler(label: label, sink: sink)
    }

    static func level(_ level: LogLevel) -> Logger.Level {
        switch level {
        case .debug: .debug
        case .info: .info
        case .warn: .warning
        case .error: .error
        }
    }
}

/// Writes one line per message to stderr, in `text` or `json`. A line is written with one `write(2)`, so lines of
/// concurrent writers never interleave. Thread-safe.
public struct KeelLogHandler: LogHandler {
    public let label: String
    public let format: LogFormat
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]

    public init(label: String, format: LogFormat) {
        self.label = label
        self.format = format
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let more = event.metadata { all.merge(more) { $1 } }
        let line = format == .json ? json(event, all) : text(event, all)
        SystemFile.say(line + "\n", to: 2)
    }

    /// `keel: <level>: [<plugin>] <message>`, as the host has always written; other metadata (not the plugin's
    /// generation or request id, which the JSON form carries) is appended as `key=value`.
    func text(_ event: LogEvent, _ metadata: Logger.Metadata) -> String {
        let level = event.level == .warning ? "warning" : event.level == .critical ? "error" : "\(event.level)"
        var line = "keel: \(level): " + (metadata["plugin"].map { "[\($0)] " } ?? "") + "\(event.message)"
        let rest = metadata.filter { !["plugin", "generation", "request_id"].contains($0.key) }
        for (key, value) in rest.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(value)" }
        // One line: a plugin's or a client's line break, escape sequence or bidirectional override is shown escaped,
        // never written to the terminal or the log file as it is (it forged whole lines; a review, 2026-12-07).
        return Printable.escapingControls(line)
    }

    private static let timestamp = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// One JSON object: ts, level, label, message, then the metadata (generation as a number when it is one).
    func json(_ event: LogEvent, _ metadata: Logger.Metadata) -> String {
        Self.jsonLine(level: "\(event.level)", label: label, message: "\(event.message)",
                      metadata: metadata.sorted { $0.key < $1.key }.map { ($0.key, "\($0.value)") })
    }

    /// The JSON line for one message (without its newline): `{"ts":...,"level":...,"label":...,"message":...,
    /// <metadata>}`. Every string is escaped, so no message or metadata value can end the line or add a field.
    public static func jsonLine(level: String, label: String, message: String, metadata: [(String, String)]) -> String {
        var fields: [(String, String)] = [
            ("ts", quoted(timestamp.format(Date()))), ("level", quoted(level)), ("label", quoted(label)), ("message", quoted(message)),
        ]
        for (key, value) in metadata {
            fields.append((key, key == "generation" && Int(value) != nil ? value : quoted(value)))
        }
        return "{" + fields.map { quoted($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }

    /// `text` as a JSON string: quotes, backslashes and control characters escaped, so a message can never break
    /// the line or forge a field.
    static func quoted(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0x2028 || scalar.value == 0x2029:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Passes swift-log messages on to the kernel's log sink, as records of no plugin. Thread-safe (the sink is).
struct KernelSinkLogHandler: LogHandler {
    let label: String
    let sink: @Sendable (LogRecord) -> Void
    var logLevel: Logger.Level = .warning
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let more = event.metadata { all.merge(more) { $1 } }
        var message = "\(label): \(event.message)"
        for (key, value) in all.sorted(by: { $0.key < $1.key }) { message += " \(key)=\(value)" }
        let level: LogLevel = switch event.level {
        case .trace, .debug: .debug
        case .info, .notice: .info
        case .warning: .warn
        case .error, .critical: .error
        }
        sink(LogRecord(level: level, pluginID: nil, message: message))
    }
}
