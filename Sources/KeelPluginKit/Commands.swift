// Keel — a microkernel plugin host. Licensed under Apache-2.0.

public import CKeelABI
import Synchronization

/// The body of a plugin's own command (plugin.yaml `commands:`, keel.commands/1), without pointers or raw statuses.
///
/// A command is a C function the host finds by its `symbol:` and calls with the C types of its signature
/// (`str` → `keel_str`, `bytes` → `keel_bytes`, `i64` → `Int64`, `f64` → `Double`, `bool` → `Bool`, ...). Export it
/// with `@_cdecl` and let `Command` turn the Swift result into the call's output and a thrown error into its status
/// and message:
///
/// ```swift
/// import CKeelABI        // the C types of the signature
/// import KeelPluginKit
///
/// // plugin.yaml: {name: shout, symbol: demo_shout, signature: "(str, i64) -> status(json)"}
/// @_cdecl("demo_shout")
/// public func shout(_ text: keel_str, _ times: Int64, _ out: UnsafeMutablePointer<keel_output>?) -> keel_status {
///     Command.json(out) {
///         guard (1...100).contains(times) else { throw PluginError(.invalidArgument, "times must be 1 to 100") }
///         return "{\"text\": \(Command.quote(String(repeating: try text.string("text"), count: Int(times))))}"
///     }
/// }
/// ```
///
/// The signature is the contract: a function whose parameters differ from it is undefined behaviour, as in C.
/// Commands run on the host's request threads, concurrently; the body must be thread-safe. An error thrown by the
/// body is the call's status (a `PluginError`'s, else `KEEL_ERR_INTERNAL`) with its description as the message the
/// caller sees; nothing thrown crosses into the host. A Swift runtime trap (a force-unwrap of nil, an index out of
/// range) is a crash of the process, as in a route handler.
public enum Command {
    /// A `status(str)` command: writes the text `body` returns. [request]
    public static func text(_ out: UnsafeMutablePointer<keel_output>?, _ body: () throws -> String) -> keel_status {
        run { try write(out, body()) }
    }

    /// A `status(json)` command: writes the JSON text `body` returns (the host checks that it is JSON; build strings
    /// with `quote`). [request]
    public static func json(_ out: UnsafeMutablePointer<keel_output>?, _ body: () throws -> String) -> keel_status {
        run { try write(out, body()) }
    }

    /// A `status` command: `KEEL_OK` once `body` returns. [request]
    public static func status(_ body: () throws -> Void) -> keel_status {
        run(body)
    }

    /// `text` as a JSON string literal, quotes included: `"`, `\` and control characters escaped.
    public static func quote(_ text: String) -> String {
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            case let c where c.value < 0x20:
                let hex = String(c.value, radix: 16)
                quoted += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    private static func run(_ body: () throws -> Void) -> keel_status {
        do {
            try body()
            return KEEL_OK
        } catch {
            // set_error with a NULL context sets the message of the call running on this thread.
            return Trampolines.fail(PluginExport.hostTable, nil, error)
        }
    }

    private static func write(_ out: UnsafeMutablePointer<keel_output>?, _ text: String) throws {
        guard let out, let writer = out.pointee.write else {
            throw PluginError(.invalidArgument, "the command has no output: its signature in plugin.yaml must return status(str) or status(json)")
        }
        var text = text
        let status = text.withUTF8 { writer(out, $0.baseAddress, $0.count) }
        guard status == KEEL_OK else {
            throw PluginError(PluginError.Status(rawValue: status) ?? .internalError, "writing the command's result of \(text.utf8.count) bytes")
        }
    }
}

extension keel_str {
    /// `text`'s bytes, which live as long as the library: for a provider's `-> str` table function, whose text the
    /// caller may read for as long as it holds its lease.
    public init(_ text: StaticString) {
        guard text.hasPointerRepresentation else {
            // A one-scalar literal ("a") is held as the scalar, not as bytes: its bytes are made once and kept.
            self = Interned.scalar(text.unicodeScalar)
            return
        }
        self.init(ptr: UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self), len: text.utf8CodeUnitCount)
    }

    /// A copy of the borrowed text. Throws `PluginError(.invalidArgument)` naming `argument` when it is not UTF-8
    /// or is NULL with a length.
    public func string(_ argument: String = "argument") throws -> String {
        guard len != 0 else { return "" }
        // size_t reaches Swift as Int: a length past Int.max reads as negative.
        guard len > 0 else { throw PluginError(.invalidArgument, "\(argument): a length of \(UInt(bitPattern: len)) bytes") }
        guard let ptr else { throw PluginError(.invalidArgument, "\(argument): NULL text with a length of \(len)") }
        guard let text = String(validating: UnsafeRawBufferPointer(start: ptr, count: len), as: UTF8.self) else {
            throw PluginError(.invalidArgument, "\(argument): not UTF-8")
        }
        return text
    }
}

extension keel_bytes {
    /// A copy of the borrowed bytes. Throws `PluginError(.invalidArgument)` naming `argument` when NULL with a
    /// length.
    public func bytes(_ argument: String = "argument") throws -> [UInt8] {
        guard len != 0 else { return [] }
        guard len > 0 else { throw PluginError(.invalidArgument, "\(argument): a length of \(UInt(bitPattern: len)) bytes") }
        guard let ptr else { throw PluginError(.invalidArgument, "\(argument): NULL bytes with a length of \(len)") }
        return Array(UnsafeBufferPointer(start: ptr, count: len))
    }
}

/// The bytes of one-scalar `StaticString`s handed out as `keel_str`, made once each and kept for the library's life.
private enum Interned {
    /// `@unchecked Sendable`: the pointers are written once, under the lock, and the bytes never change after.
    struct Bytes: @unchecked Sendable { let pointer: UnsafePointer<CChar>; let count: Int }
    static let table = Mutex<[UInt32: Bytes]>([:])

    static func scalar(_ scalar: Unicode.Scalar) -> keel_str {
        let bytes = table.withLock { table -> Bytes in
            if let known = table[scalar.value] { return known }
            let utf8 = Array(String(scalar).utf8)
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count)
            for (i, b) in utf8.enumerated() { buffer[i] = CChar(bitPattern: b) }
            let made = Bytes(pointer: UnsafePointer(buffer), count: utf8.count)
            table[scalar.value] = made
            return made
        }
        return keel_str(ptr: bytes.pointer, len: bytes.count)
    }
}

/// The answer of a service table function of the `-> status(buf)` form (three trailing parameters `char *out, size_t
/// out_cap, size_t *out_len`; the gitops.sync/1 example's `sync`).
public enum StatusBuffer {
    /// Copies `text` into the caller's buffer: sets `*length` to the bytes it needs, and returns `KEEL_ERR_LIMIT`
    /// without writing when they do not fit; `KEEL_ERR_INVALID_ARGUMENT` for a NULL `length`, or a NULL `out` with
    /// text to write. [any thread]
    public static func write(_ text: String, into out: UnsafeMutablePointer<CChar>?, capacity: Int,
                             length: UnsafeMutablePointer<Int>?) -> keel_status {
        guard let length else { return KEEL_ERR_INVALID_ARGUMENT }
        var text = text
        return text.withUTF8 { bytes in
            length.pointee = bytes.count
            guard bytes.count <= capacity else { return KEEL_ERR_LIMIT }
            guard let source = bytes.baseAddress, bytes.count > 0 else { return KEEL_OK }
            guard let out else { return KEEL_ERR_INVALID_ARGUMENT }
            UnsafeMutableRawPointer(out).copyMemory(from: source, byteCount: bytes.count)
            return KEEL_OK
        }
    }
}
