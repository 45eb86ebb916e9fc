// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelFFI
import KeelManifest
import Synchronization

/// One call through a service table function as it crosses a process boundary: its arguments by their declared
/// types, and for a `status(buf)` function the caller's out_cap (bounded by `outputLimit`).
public struct ServiceCall: Sendable, Hashable {
    public enum Argument: Sendable, Hashable {
        /// An integer, bool or f64 argument: its bits, widened to 64.
        case scalar(UInt64)
        /// A `str` or `bytes` argument: the bytes, copied.
        case bytes([UInt8])
    }

    public var arguments: [Argument]
    public var outCap: Int

    public init(arguments: [Argument], outCap: Int = 0) {
        self.arguments = arguments
        self.outCap = outCap
    }

    /// The most bytes a call's arguments, or a `status(buf)` answer, carry across (a frame holds 17 MiB).
    public static let outputLimit = 16 << 20
    /// The longest `str` a function returns by value that crosses; a longer one reads as empty.
    public static let stringLimit = 64 << 10
}

/// A service function's answer from the other process: `value` is the status, or the bits of a scalar result;
/// `bytes` a `str` result or what a `status(buf)` function wrote; `length` its `*out_len`.
public struct ServiceAnswer: Sendable, Hashable {
    public var value: UInt64
    public var length: UInt64
    public var bytes: [UInt8]

    public init(value: UInt64 = 0, length: UInt64 = 0, bytes: [UInt8] = []) {
        self.value = value
        self.length = length
        self.bytes = bytes
    }
}

/// A libffi call prepared once for a service function's signature (`status(buf)`: its three trailing parameters
/// included). `@unchecked Sendable`: `call` is immutable after `init` and freed in `deinit`.
final class PreparedServiceCall: @unchecked Sendable {
    let signature: ServiceSignature
    let call: OpaquePointer

    init?(_ signature: ServiceSignature) {
        var kinds = signature.arguments.map(PluginCommand.kind)
        if signature.result == .statusBuffer {
            kinds += [UInt8(KEEL_FFI_POINTER), UInt8(KEEL_FFI_U64), UInt8(KEEL_FFI_POINTER)]
        }
        let result: UInt8 = switch signature.result {
        case .void: UInt8(KEEL_FFI_VOID)
        case let .value(t): PluginCommand.kind(t)
        case .status, .statusBuffer: UInt8(KEEL_FFI_I32)
        case .str: UInt8(KEEL_FFI_STR)
        }
        guard let call = kinds.withUnsafeBufferPointer({ keel_ffi_prepare_service($0.baseAddress, $0.count, result) }) else { return nil }
        self.signature = signature
        self.call = call
    }

    deinit { keel_ffi_free(call) }

    /// The answer's `value` for the 16 result bytes of a call.
    func value(of result: UnsafeRawPointer) -> UInt64 {
        switch signature.result {
        case .void, .str: 0
        case .status, .statusBuffer, .value(.i32): UInt64(bitPattern: Int64(result.loadUnaligned(as: Int32.self)))
        case .value(.u32): UInt64(result.loadUnaligned(as: UInt32.self))
        case .value(.bool): result.load(as: UInt8.self) != 0 ? 1 : 0
        case .value: result.loadUnaligned(as: UInt64.self)
        }
    }
}

/// The real table of a provider running in this process, called for a consumer in another one (the worker's side
/// of a provider in a worker). Thread-safe, like the table's functions.
/// `@unchecked Sendable`: immutable after `init`; the table stays valid while `provision`'s activation is.
public final class ServiceTableCaller: @unchecked Sendable {
    public let provision: ServiceProvision
    private let functions: [PreparedServiceCall?]
    /// Names the provider when the process dies inside its table (nil for the host's own tables).
    private let site: CrashSite?

    /// `functions`: the provider's `functions:` for the interface.
    public init(_ provision: ServiceProvision, functions: [ServiceFunction]) {
        self.provision = provision
        self.functions = functions.map { PreparedServiceCall($0.signature) }
        site = provision.context?.crashSite("service \(provision.interface)")
    }

    /// Calls function `index` (0: the first after struct_size) with `call`. Nil when the table has no such function
    /// (past its struct_size, or NULL) or the arguments do not fit its declared signature.
    public func call(_ index: Int, _ call: ServiceCall) -> ServiceAnswer? {
        guard functions.indices.contains(index), let prepared = functions[index],
              8 + 8 * (index + 1) <= provision.tableSize,
              let function = provision.table.loadUnaligned(fromByteOffset: 8 + 8 * index, as: UnsafeRawPointer?.self) else { return nil }
        let types = prepared.signature.arguments
        guard call.arguments.count == types.count else { return nil }
        let buffered = prepared.signature.result == .statusBuffer
        let count = types.count + (buffered ? 3 : 0)
        // One 16-byte slot per argument, and one for *out_len.
        let slots = UnsafeMutableRawPointer.allocate(byteCount: 16 * (count + 1), alignment: 16)
        let pointers = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: count + 1)
        var owned: [UnsafeMutableRawPointer] = []
        defer {
            owned.forEach { $0.deallocate() }
            slots.deallocate()
            pointers.deallocate()
        }
        for (i, (type, argument)) in zip(types, call.arguments).enumerated() {
            let slot = slots + 16 * i
            pointers[i] = slot
            switch (type, argument) {
            case let (.i32, .scalar(v)), let (.u32, .scalar(v)): slot.storeBytes(of: UInt32(truncatingIfNeeded: v), as: UInt32.self)
            case let (.bool, .scalar(v)): slot.storeBytes(of: UInt8(v != 0 ? 1 : 0), as: UInt8.self)
            case let (.i64, .scalar(v)), let (.u64, .scalar(v)), let (.f64, .scalar(v)): slot.storeBytes(of: v, as: UInt64.self)
            case let (.str, .bytes(b)), let (.bytes, .bytes(b)):
                let memory = UnsafeMutableRawPointer.allocate(byteCount: max(b.count, 1), alignment: 8)
                owned.append(memory)
                b.withUnsafeBytes { if let base = $0.baseAddress { memory.copyMemory(from: base, byteCount: b.count) } }
                slot.storeBytes(of: UnsafeRawPointer(memory), as: UnsafeRawPointer.self)
                slot.storeBytes(of: UInt64(b.count), toByteOffset: 8, as: UInt64.self)
            default:
                return nil
            }
        }
        let cap = min(max(call.outCap, 0), ServiceCall.outputLimit)
        let out = UnsafeMutableRawPointer.allocate(byteCount: max(cap, 1), alignment: 8)
        defer { out.deallocate() }
        let outLen = slots + 16 * count
        outLen.storeBytes(of: UInt64(0), as: UInt64.self)
        if buffered {
            let n = types.count
            (slots + 16 * n).storeBytes(of: cap == 0 ? nil : UnsafeMutableRawPointer?(out), as: UnsafeMutableRawPointer?.self)
            (slots + 16 * (n + 1)).storeBytes(of: UInt64(cap), as: UInt64.self)
            (slots + 16 * (n + 2)).storeBytes(of: outLen, as: UnsafeMutableRawPointer.self)
            for j in n..<(n + 3) { pointers[j] = slots + 16 * j }
        }
        var result = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &result) { r in
            let invoke = { keel_ffi_invoke(prepared.call, function, r.baseAddress, UnsafeMutablePointer(mutating: pointers)) }
            if let site { site.around(invoke) } else { invoke() }
        }
        return withUnsafeBytes(of: &result) { r -> ServiceAnswer in
            guard let base = r.baseAddress else { return ServiceAnswer() }
            var answer = ServiceAnswer(value: prepared.value(of: base))
            switch prepared.signature.result {
            case .str:
                // Longer than the limit reads as empty (as documented), never as a cut that may split a character.
                let announced = base.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                let length = announced <= UInt64(ServiceCall.stringLimit) ? Int(announced) : 0
                if length > 0, let p = base.loadUnaligned(as: UnsafeRawPointer?.self) {
                    answer.bytes = Array(UnsafeRawBufferPointer(start: p, count: length))
                }
            case .statusBuffer:
                answer.length = outLen.load(as: UInt64.self)
                if Int32(truncatingIfNeeded: answer.value) == StatusCode.ok {
                    if answer.length <= UInt64(cap) {
                        answer.bytes = Array(UnsafeRawBufferPointer(start: out, count: Int(answer.length)))
                    } else {
                        answer.value = UInt64(UInt32(bitPattern: StatusCode.limit))
                    }
                }
            default:
                break
            }
            return answer
        }
    }
}
