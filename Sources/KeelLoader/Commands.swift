// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelFFI
import Foundation
import KeelManifest

/// A checked value of one of the signature's types, or a command's result.
public enum CommandValue: Sendable, Hashable {
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case bool(Bool)
    case string(String)
    case bytes([UInt8])
    /// JSON text a status(json) command wrote (checked to be JSON).
    case json(String)
    /// void, or status: nothing to return.
    case none

    /// The value as JSON text: a number, true/false, a string, the command's JSON, or null.
    public var json: String {
        switch self {
        case let .int(i): return "\(i)"
        case let .uint(u): return "\(u)"
        case let .double(d): return d.isFinite ? "\(d)" : "null"
        case let .bool(b): return b ? "true" : "false"
        case let .string(s): return Self.quoted(s)
        case let .bytes(b): return Self.quoted(Data(b).base64EncodedString())
        case let .json(j): return j
        case .none: return "null"
        }
    }

    static func quoted(_ s: String) -> String {
        let data = (try? JSONEncoder().encode([s])) ?? Data("[\"\"]".utf8)
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}

/// Why a command call did not succeed. `code` is stable (the admin API's error code); `message` names the command
/// and, for a bad argument, the argument.
public struct CommandError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case unknown = "unknown-command"
        case badArgument = "bad-argument"
        case forbidden
        case failed = "command-failed"
        case unavailable
        case tooLarge = "result-too-large"
    }

    public var code: Code
    public var message: String
    /// The keel_status the command returned, for `failed`.
    public var status: Int32

    public init(_ code: Code, _ message: String, status: Int32 = StatusCode.internalError) {
        self.code = code
        self.message = message
        self.status = status
    }

    public var description: String { message }
}

/// One command of one activation: the declaration, the function found with dlsym, and the libffi call prepared once.
/// Thread-safe: calls run concurrently, like route handlers.
/// `@unchecked Sendable` because of `function` and `call`, pointers: the function lives in the library, mapped while
/// this object lives; the prepared call is immutable after `init` and freed only in `deinit`, after the last call.
public final class PluginCommand: @unchecked Sendable {
    public let declaration: CommandDeclaration
    /// Nil for a command of a plugin running in a worker process (`remote`).
    let function: UnsafeRawPointer?
    let call: OpaquePointer?
    /// A command of a plugin running in a worker process: the checked values go there instead.
    let remote: RemoteTarget?
    public let context: ActivationContext
    private let kinds: [UInt8]
    /// Names this command when the host dies inside it.
    private let site: CrashSite

    /// The output limit of a status(str|json) command.
    public static let outputLimit = 1 << 20

    init?(_ declaration: CommandDeclaration, function: UnsafeRawPointer, context: ActivationContext) {
        var kinds = declaration.signature.arguments.map(Self.kind)
        if declaration.signature.result.writesOutput { kinds.append(UInt8(KEEL_FFI_POINTER)) }
        let result: UInt8 = switch declaration.signature.result {
        case .void: UInt8(KEEL_FFI_VOID)
        case let .value(t): Self.kind(t)
        case .status, .statusText, .statusJSON: UInt8(KEEL_FFI_I32)
        }
        guard let call = kinds.withUnsafeBufferPointer({ keel_ffi_prepare($0.baseAddress, $0.count, result) }) else { return nil }
        self.declaration = declaration
        self.function = function
        self.call = call
        remote = nil
        self.context = context
        self.kinds = kinds
        site = context.crashSite("command \(declaration.name)")
    }

    /// Command number `index` (in the manifest's order) of a plugin running in a worker process, reached through
    /// `calls`. Arguments are checked here, against `declaration`, before they are sent.
    public init(_ declaration: CommandDeclaration, remote calls: any RemoteCalls, index: Int, context: ActivationContext) {
        self.declaration = declaration
        function = nil
        call = nil
        remote = RemoteTarget(calls: calls, index: index)
        self.context = context
        kinds = []
        site = context.crashSite("command \(declaration.name)")
    }

    deinit { if let call { keel_ffi_free(call) } }

    public var pluginID: String { context.pluginID }
    public var name: String { declaration.name }

    static func kind(_ t: CommandSignature.ArgumentType) -> UInt8 {
        switch t {
        case .i32: UInt8(KEEL_FFI_I32)
        case .i64: UInt8(KEEL_FFI_I64)
        case .u32: UInt8(KEEL_FFI_U32)
        case .u64: UInt8(KEEL_FFI_U64)
        case .f64: UInt8(KEEL_FFI_F64)
        case .bool: UInt8(KEEL_FFI_BOOL)
        case .str: UInt8(KEEL_FFI_STR)
        case .bytes: UInt8(KEEL_FFI_BYTES)
        }
    }

    /// Checks `arguments` against the signature: count, type, range, UTF-8, base64 for bytes.
    /// - Throws: `CommandError.badArgument`, e.g. `argument 1 of calc.add: "two" is not an i64`.
    public func check(_ arguments: [CommandArgument]) throws(CommandError) -> [CommandValue] {
        let types = declaration.signature.arguments
        guard arguments.count == types.count else {
            throw CommandError(.badArgument, "\(pluginID).\(name) takes \(types.count) argument(s) \(declaration.signature), got \(arguments.count)")
        }
        var values: [CommandValue] = []
        values.reserveCapacity(types.count)
        for i in types.indices {
            switch CommandArgumentReader.read(arguments[i], as: types[i]) {
            case let .success(value): values.append(value)
            case let .failure(why):
                throw CommandArgumentReader.error(why, arguments[i], as: types[i], position: i + 1, command: "\(pluginID).\(name)")
            }
        }
        return values
    }

    /// The probe call of a command that declares sample arguments (`probe:`): nil when it answered (or declares
    /// none), else why it failed. Runs plugin code, as `invoke` does.
    public func probeFailure() -> CommandError? {
        guard let sample = declaration.probe else { return nil }
        return Result { () throws(CommandError) in try check(sample.map(CommandArgument.text)) }.flatMap(invoke).failure
    }

    /// Calls the function with checked `values` (from `check`). Admitted like a route call: not before activate
    /// returned, not after deactivation started; a reload lets it finish on this generation. Timed against the
    /// handler budget; an error status counts as a failed call, and a step toward disabling the plugin unless it
    /// refuses the call (`StatusCode.isRefusal`). [request]

    public func invoke(_ values: [CommandValue]) -> Result<CommandValue, CommandError> {
        guard context.enter() else { return .failure(CommandError(.unavailable, "plugin \"\(pluginID)\" is not active")) }
        defer { context.leave() }
        if let remote {
            let started = ActivationContext.now()
            let outcome = remote.calls.command(remote.index, values).flatMap { value -> Result<CommandValue, CommandError> in
                // The worker's answer is checked as the plugin's own result would be: the declared kind, JSON that is
                // JSON, and text no longer than an in-process command may write.
                switch value {
                case let .string(text) where text.utf8.count > Self.outputLimit, let .json(text) where text.utf8.count > Self.outputLimit:
                    return .failure(CommandError(.tooLarge, "\(pluginID).\(name) wrote more than \(Self.outputLimit) bytes"))
                default: break
                }
                switch (declaration.signature.result, value) {
                case (.void, .none), (.status, .none), (.statusText, .string):
                    return .success(value)
                // A value of the declared type and in its range, as the in-process call would read it.
                case let (.value(.i32), .int(v)) where Int32(exactly: v) != nil: return .success(value)
                case (.value(.i64), .int): return .success(value)
                case let (.value(.u32), .uint(v)) where UInt32(exactly: v) != nil: return .success(value)
                case (.value(.u64), .uint), (.value(.f64), .double), (.value(.bool), .bool): return .success(value)
                case let (.statusJSON, .json(text))
                    where (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil:
                    return .success(value)
                default:
                    return .failure(CommandError(.failed, "\(pluginID).\(name): its worker answered a value of the wrong kind"))
                }
            }
            // Counted here; its line comes from the worker, whose own call wrote it (written here too, it was twice).
            account(outcome, started: started, logs: false)
            return outcome
        }
        guard let call, let function else { return .failure(CommandError(.unavailable, "plugin \"\(pluginID)\" has no code")) }
        let outer = ActivationContext.beginCall(context)
        defer { ActivationContext.endCall(outer) }
        let writer = declaration.signature.result.writesOutput ? ResponseWriter(limit: Self.outputLimit) : nil
        let started = ActivationContext.now()
        var result = (UInt64(0), UInt64(0))
        CommandFrame.with(values, output: writer) { arguments in
            withUnsafeMutableBytes(of: &result) { r in site.around { keel_ffi_invoke(call, function, r.baseAddress, arguments) } }
        }
        let outcome = decode(result, writer: writer)
        account(outcome, started: started)
        return outcome
    }

    /// Counts the call (its time, a failure toward disabling the plugin) and writes a failure to the plugin's log: a
    /// warning for a refusal, an error otherwise, as a route handler's (until 2026-12-08 a failed command left no
    /// line, nineteen in a row included, until the twentieth disabled the plugin). Held to the plugin's log budget.
    private func account(_ outcome: Result<CommandValue, CommandError>, started: Double, logs: Bool = true) {
        let failure = outcome.failure
        _ = context.account("command \(name)", started: started, budget: context.budgets.handler,
                            failed: failure != nil, declined: failure.map(Self.refuses) ?? false, detail: failure?.message ?? "")
        if logs, let failure { context.logBudgeted(Self.refuses(failure) ? .warn : .error, "command \(name) failed: \(failure.message)") }
    }

    /// Whether a failed call is the command refusing the request (see `StatusCode.isRefusal`), not a broken plugin.
    private static func refuses(_ error: CommandError) -> Bool { error.code == .failed && StatusCode.isRefusal(error.status) }

    private func decode(_ result: (UInt64, UInt64), writer: ResponseWriter?) -> Result<CommandValue, CommandError> {
        var r = result
        let raw = withUnsafeBytes(of: &r) { $0 }
        func status() -> Int32 { raw.loadUnaligned(as: Int32.self) }
        switch declaration.signature.result {
        case .void: return .success(.none)
        case let .value(t):
            switch t {
            case .i32: return .success(.int(Int64(raw.loadUnaligned(as: Int32.self))))
            case .i64: return .success(.int(raw.loadUnaligned(as: Int64.self)))
            case .u32: return .success(.uint(UInt64(raw.loadUnaligned(as: UInt32.self))))
            case .u64: return .success(.uint(raw.loadUnaligned(as: UInt64.self)))
            case .f64: return .success(.double(raw.loadUnaligned(as: Double.self)))
            case .bool: return .success(.bool(raw.loadUnaligned(as: UInt8.self) != 0))
            case .str, .bytes: return .success(.none)
            }
        case .status, .statusText, .statusJSON:
            let s = status()
            guard let writer, declaration.signature.result.writesOutput else {
                return s == StatusCode.ok ? .success(.none) : .failure(failure(s))
            }
            if writer.overflowed {
                return .failure(CommandError(.tooLarge, "\(pluginID).\(name) wrote more than \(Self.outputLimit) bytes"))
            }
            guard s == StatusCode.ok else { return .failure(failure(s)) }
            switch declaration.signature.result {
            case .statusText:
                guard let text = String(validating: writer.body, as: UTF8.self) else {
                    return .failure(CommandError(.failed, "\(pluginID).\(name) wrote text that is not UTF-8"))
                }
                return .success(.string(text))
            case .statusJSON:
                let text = String(decoding: writer.body, as: UTF8.self)
                guard (try? JSONSerialization.jsonObject(with: Data(writer.body), options: [.fragmentsAllowed])) != nil else {
                    return .failure(CommandError(.failed, "\(pluginID).\(name) wrote output that is not JSON: \(text.prefix(80))"))
                }
                return .success(.json(text))
            default: return .success(.none)
            }
        }
    }

    /// The command returned error status `s`: with the message it set, if any.
    private func failure(_ s: Int32) -> CommandError {
        let message = context.takeError()
        return CommandError(.failed, "\(pluginID).\(name) returned \(StatusCode.name(s))\(message.isEmpty ? "" : ": " + message)", status: s)
    }
}

/// The arguments of one call laid out for libffi: one slot per argument (strings and bytes copied to memory that lives
/// for the call), and the output writer's pointer last when the result is written.
enum CommandFrame {
    static func with(_ values: [CommandValue], output: ResponseWriter?, _ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> Void) {
        let count = values.count + (output == nil ? 0 : 1)
        // On the stack: a call allocates nothing unless it passes strings or bytes.
        withUnsafeTemporaryAllocation(byteCount: max(count, 1) * 16, alignment: 16) { slotBuffer in
            withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer?.self, capacity: max(count, 1)) { pointerBuffer in
                guard let slots = slotBuffer.baseAddress, let pointers = pointerBuffer.baseAddress else { return }
                var owned: [UnsafeMutableRawPointer] = []
                defer { for p in owned { p.deallocate() } }
                func copy(_ bytes: [UInt8]) -> UnsafeMutableRawPointer {
                    let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
                    bytes.withUnsafeBytes { if let base = $0.baseAddress { p.copyMemory(from: base, byteCount: bytes.count) } }
                    owned.append(p)
                    return p
                }
                for (i, value) in values.enumerated() {
                    let slot = slots + i * 16
                    pointers[i] = slot
                    // A narrower integer goes in the low bytes of its slot (little-endian): i32, u32 and bool read right.
                    switch value {
                    case let .int(v): slot.storeBytes(of: v, as: Int64.self)
                    case let .uint(v): slot.storeBytes(of: v, as: UInt64.self)
                    case let .double(v): slot.storeBytes(of: v, as: Double.self)
                    case let .bool(v): slot.storeBytes(of: UInt8(v ? 1 : 0), as: UInt8.self)
                    case let .string(s):
                        let bytes = Array(s.utf8)
                        slot.storeBytes(of: keel_str(ptr: copy(bytes).assumingMemoryBound(to: CChar.self), len: bytes.count), as: keel_str.self)
                    case let .bytes(b):
                        slot.storeBytes(of: keel_bytes(ptr: copy(b).assumingMemoryBound(to: UInt8.self), len: b.count), as: keel_bytes.self)
                    case .json, .none: slot.storeBytes(of: 0, as: UInt64.self)
                    }
                }
                guard let output else { body(pointers); return }
                HostABI.withOutput(output) { out in
                    let slot = slots + values.count * 16
                    slot.storeBytes(of: UnsafeMutableRawPointer(out), as: UnsafeMutableRawPointer.self)
                    pointers[values.count] = slot
                    body(pointers)
                }
            }
        }
    }
}

/// Reads caller arguments as the signature's types. Stateless.
enum CommandArgumentReader {
    /// Why an argument was refused; the caller words the error (nothing is built for an argument that reads).
    enum Refusal: Error {
        case notA, outOfRange, nul, notBase64
    }

    /// The error for argument `position` of `command` refused for `why`.
    static func error(_ why: Refusal, _ a: CommandArgument, as type: CommandSignature.ArgumentType, position: Int, command: String) -> CommandError {
        let reason = switch why {
        case .notA: "is not \(type == .i32 || type == .i64 ? "an" : "a") \(type.rawValue)"
        case .outOfRange: "is out of range for \(type.rawValue)"
        case .nul: "contains a NUL byte"
        case .notBase64: "is not base64"
        }
        return CommandError(.badArgument, "argument \(position) of \(command): \(a) \(reason)")
    }

    static func read(_ a: CommandArgument, as type: CommandSignature.ArgumentType) -> Result<CommandValue, Refusal> {
        switch type {
        case .i32, .i64:
            let v: Int64
            switch a {
            case let .int(i): v = i
            case let .uint(u): guard u <= UInt64(Int64.max) else { return .failure(.outOfRange) }; v = Int64(u)
            case let .double(d): guard d.rounded() == d, let i = Int64(exactly: d) else { return .failure(.notA) }; v = i
            case let .text(t):
                guard let i = Int64(t) else { return .failure(UInt64(t) != nil ? .outOfRange : .notA) }
                v = i
            default: return .failure(.notA)
            }
            if type == .i32, Int32(exactly: v) == nil { return .failure(.outOfRange) }
            return .success(.int(v))
        case .u32, .u64:
            let v: UInt64
            switch a {
            case let .int(i): guard i >= 0 else { return .failure(.outOfRange) }; v = UInt64(i)
            case let .uint(u): v = u
            case let .double(d): guard d.rounded() == d, let u = UInt64(exactly: d) else { return .failure(.notA) }; v = u
            case let .text(t):
                guard let u = UInt64(t) else { return .failure(Int64(t) != nil ? .outOfRange : .notA) }
                v = u
            default: return .failure(.notA)
            }
            if type == .u32, UInt32(exactly: v) == nil { return .failure(.outOfRange) }
            return .success(.uint(v))
        case .f64:
            switch a {
            case let .int(i): return .success(.double(Double(i)))
            case let .uint(u): return .success(.double(Double(u)))
            case let .double(d): return .success(.double(d))
            case let .text(t): guard let d = Double(t), d.isFinite else { return .failure(.notA) }; return .success(.double(d))
            default: return .failure(.notA)
            }
        case .bool:
            switch a {
            case let .bool(b): return .success(.bool(b))
            case .text("true"): return .success(.bool(true))
            case .text("false"): return .success(.bool(false))
            default: return .failure(.notA)
            }
        case .str:
            switch a {
            case let .string(s), let .text(s):
                guard !s.utf8.contains(0) else { return .failure(.nul) }
                return .success(.string(s))
            default: return .failure(.notA)
            }
        case .bytes:
            switch a {
            case let .string(s), let .text(s):
                guard let d = Data(base64Encoded: s) else { return .failure(.notBase64) }
                return .success(.bytes([UInt8](d)))
            default: return .failure(.notA)
            }
        }
    }
}

extension HostABI {
    /// A `keel_output` over `writer` for the duration of `body`.
    static func withOutput(_ writer: ResponseWriter, _ body: (UnsafeMutablePointer<keel_output>) -> Void) {
        var out = keel_output()
        out.struct_size = UInt32(MemoryLayout<keel_output>.size)
        out.host_data = Unmanaged.passUnretained(writer).toOpaque()
        out.write = { out, data, len in
            guard let host = out?.pointee.host_data else { return KEEL_ERR_INVALID_ARGUMENT }
            let w = Unmanaged<ResponseWriter>.fromOpaque(host).takeUnretainedValue()
            guard len != 0 else { return KEEL_OK }
            guard let data else { return KEEL_ERR_INVALID_ARGUMENT }
            // Not `count + len`: a length near SIZE_MAX would overflow that sum, and the trap would end the host; one
            // past Int.max reads as negative here (size_t imports as Int).
            guard len > 0, len <= w.limit - w.body.count else {
                w.overflowed = true
                return KEEL_ERR_LIMIT
            }
            w.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: len))
            return KEEL_OK
        }
        withExtendedLifetime(writer) { body(&out) }
    }
}
