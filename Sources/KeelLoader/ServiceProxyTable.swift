// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelFFI
import KeelManifest
import Synchronization

/// A table whose functions run in another process: `struct_size` and one libffi closure per declared function
/// (`functions:`). The host registers one for a provider running in a worker process (`isolation: process`); a
/// worker hands one to a consumer it runs, per lease. A consumer calls it like any table; each call copies its
/// arguments into a frame, the other side calls the real table and answers, and the closure writes the answer back.
/// The consumer's thread blocks for the call (never more than the worker's call budget).
///
/// What the other side answers is bounded here: a `status(buf)` answer must fit the caller's out_cap (else it is refused,
/// nothing copied, and the caller gets KEEL_ERR_UNAVAILABLE), a status outside the ABI's reads as
/// KEEL_ERR_INTERNAL, a `str` over 64 KiB reads as empty. A worker that crashes or runs past its budget during a
/// call gives KEEL_ERR_UNAVAILABLE (zero or an empty `str` for functions without a status).
///
/// Lives as long as its `ServiceProvision` (which holds it): leases keep that alive, so the closures outlive every
/// call. `@unchecked Sendable`: the table and closures are written in `init` and freed in `deinit` only.
final class ServiceProxyTable: @unchecked Sendable {
    let table: UnsafeMutableRawPointer
    private var closures: [OpaquePointer] = []
    private let functions: [ProxyFunction]

    /// `count` of `declared` become the table (the worker's own table may be shorter than the declaration).
    /// Nil when libffi cannot make a closure.
    /// `send` makes the call in the other process (function index, call).
    init?(interface: InterfaceID, declared: [ServiceFunction], count: Int, context: ActivationContext,
          send: @escaping @Sendable (Int, ServiceCall) -> Result<ServiceAnswer, PluginCallError>) {
        let n = max(0, min(count, declared.count))
        let strings = StringPool()
        var made: [ProxyFunction] = []
        for (i, f) in declared.prefix(n).enumerated() {
            guard let prepared = PreparedServiceCall(f.signature) else { return nil }
            made.append(ProxyFunction(what: "service \(interface) \(f.name)", index: i, prepared: prepared, send: send,
                                      context: context, strings: strings))
        }
        functions = made
        table = .allocate(byteCount: 8 + 8 * n, alignment: 8)
        table.initializeMemory(as: UInt8.self, repeating: 0, count: 8 + 8 * n)
        table.storeBytes(of: UInt32(8 + 8 * n), as: UInt32.self)
        for (i, f) in made.enumerated() {
            var code: UnsafeMutableRawPointer?
            guard let closure = keel_ffi_closure_make(f.prepared.call, proxyHandler, Unmanaged.passUnretained(f).toOpaque(), &code),
                  let code else { return nil }
            closures.append(closure)
            table.storeBytes(of: code, toByteOffset: 8 + 8 * i, as: UnsafeMutableRawPointer.self)
        }
    }

    deinit {
        closures.forEach { keel_ffi_closure_free($0) }
        table.deallocate()
    }
}

/// The C entry of every proxy closure: `userData` is its `ProxyFunction`, kept alive by its table.
private let proxyHandler: keel_ffi_handler = { userData, result, arguments in
    guard let userData, let result, let arguments else { return }
    Unmanaged<ProxyFunction>.fromOpaque(userData).takeUnretainedValue().run(result, arguments)
}

/// `str` results of one proxy table, copied into memory the table owns: valid while it lives, so while the caller
/// holds its lease. Bounded: a worker answering ever new strings gets an empty one past `limit`.
/// `@unchecked Sendable`: the memory is only written before it is published under the lock, and freed in `deinit`.
private final class StringPool: @unchecked Sendable {
    static let limit = 256
    private let strings = Mutex<[[UInt8]: UnsafeMutableRawPointer]>([:])

    func intern(_ bytes: [UInt8]) -> UnsafeRawPointer? {
        strings.withLock { pool -> UnsafeRawPointer? in
            if let p = pool[bytes] { return UnsafeRawPointer(p) }
            guard pool.count < Self.limit else { return nil }
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
            bytes.withUnsafeBytes { if let base = $0.baseAddress { p.copyMemory(from: base, byteCount: bytes.count) } }
            pool[bytes] = p
            return UnsafeRawPointer(p)
        }
    }

    deinit { strings.withLock { $0.values.forEach { $0.deallocate() } } }
}

/// One function of a proxy table. Immutable; thread-safe.
private final class ProxyFunction: Sendable {
    let what: String
    let index: Int
    let prepared: PreparedServiceCall
    let send: @Sendable (Int, ServiceCall) -> Result<ServiceAnswer, PluginCallError>
    let context: ActivationContext
    let strings: StringPool

    init(what: String, index: Int, prepared: PreparedServiceCall, send: @escaping @Sendable (Int, ServiceCall) -> Result<ServiceAnswer, PluginCallError>,
         context: ActivationContext, strings: StringPool) {
        self.what = what
        self.index = index
        self.prepared = prepared
        self.send = send
        self.context = context
        self.strings = strings
    }

    /// Copies the caller's arguments into a call, sends it, and writes the answer into `result` (16 zeroed bytes).
    /// [the consumer's thread; blocks]
    func run(_ result: UnsafeMutableRawPointer, _ arguments: UnsafeMutablePointer<UnsafeMutableRawPointer?>) {
        let signature = prepared.signature
        let hasStatus = signature.result == .status || signature.result == .statusBuffer
        func fail(_ status: Int32) { if hasStatus { result.storeBytes(of: status, as: Int32.self) } }
        var call = ServiceCall(arguments: [])
        var total = 0
        for (i, type) in signature.arguments.enumerated() {
            guard let p = arguments[i] else { return fail(StatusCode.invalidArgument) }
            switch type {
            case .i32: call.arguments.append(.scalar(UInt64(bitPattern: Int64(p.load(as: Int32.self)))))
            case .u32: call.arguments.append(.scalar(UInt64(p.load(as: UInt32.self))))
            case .bool: call.arguments.append(.scalar(p.load(as: UInt8.self) != 0 ? 1 : 0))
            case .i64, .u64, .f64: call.arguments.append(.scalar(p.load(as: UInt64.self)))
            case .str, .bytes:
                let base = p.load(as: UnsafeRawPointer?.self), length = p.load(fromByteOffset: 8, as: UInt64.self)
                guard length <= UInt64(ServiceCall.outputLimit - total) else { return fail(StatusCode.limit) }
                guard base != nil || length == 0 else { return fail(StatusCode.invalidArgument) }
                total += Int(length)
                call.arguments.append(.bytes(Array(UnsafeRawBufferPointer(start: base, count: Int(length)))))
            }
        }
        var out: UnsafeMutableRawPointer?
        var outLen: UnsafeMutablePointer<UInt64>?
        if signature.result == .statusBuffer {
            let n = signature.arguments.count
            out = arguments[n]?.load(as: UnsafeMutableRawPointer?.self)
            let cap = arguments[n + 1]?.load(as: UInt64.self) ?? 0
            outLen = arguments[n + 2]?.load(as: UnsafeMutablePointer<UInt64>?.self)
            guard outLen != nil, out != nil || cap == 0 else { return fail(StatusCode.invalidArgument) }
            call.outCap = Int(min(cap, UInt64(ServiceCall.outputLimit)))
        }
        guard context.enter() else { return fail(StatusCode.unavailable) }
        defer { context.leave() }
        let started = ActivationContext.now()
        let answer = send(index, call)
        var problem: String?
        switch answer {
        case let .failure(error):
            problem = error.message
            // The worker's death or time-out: unavailable (a retry reaches its replacement).
            fail(error.status < 0 ? StatusCode.unavailable : Self.status(UInt64(UInt32(bitPattern: error.status))))
        case let .success(a):
            switch signature.result {
            case .void:
                break
            case .value(.i32), .value(.u32): result.storeBytes(of: UInt32(truncatingIfNeeded: a.value), as: UInt32.self)
            case .value(.bool): result.storeBytes(of: UInt8(a.value != 0 ? 1 : 0), as: UInt8.self)
            case .value: result.storeBytes(of: a.value, as: UInt64.self)
            case .status: result.storeBytes(of: Self.status(a.value), as: Int32.self)
            case .str:
                if a.bytes.count <= ServiceCall.stringLimit, let p = strings.intern(a.bytes) {
                    result.storeBytes(of: p, as: UnsafeRawPointer.self)
                    result.storeBytes(of: UInt64(a.bytes.count), toByteOffset: 8, as: UInt64.self)
                } else {
                    problem = "its worker answered a str over 64 KiB, or more different strings than the host keeps (\(StringPool.limit)); empty returned"
                }
            case .statusBuffer:
                let status = Self.status(a.value)
                if status == StatusCode.ok {
                    guard a.bytes.count == Int(clamping: a.length), a.bytes.count <= call.outCap else {
                        problem = "its worker answered \(a.bytes.count) bytes for a buffer of \(call.outCap); refused"
                        fail(StatusCode.unavailable)
                        break
                    }
                    if let out { a.bytes.withUnsafeBytes { if let base = $0.baseAddress { out.copyMemory(from: base, byteCount: a.bytes.count) } } }
                    outLen?.pointee = a.length
                } else if status == StatusCode.limit {
                    outLen?.pointee = min(a.length, UInt64(ServiceCall.outputLimit))
                }
                result.storeBytes(of: status, as: Int32.self)
            }
        }
        if let problem {
            context.logBudgeted(.warn, "\(what): \(problem)")
        }
        _ = context.account(what, started: started, budget: context.budgets.handler, failed: problem != nil, detail: problem ?? "")
    }

    /// A status a worker answered: one of the ABI's (0 to 10), else KEEL_ERR_INTERNAL.
    static func status(_ value: UInt64) -> Int32 {
        let s = Int32(truncatingIfNeeded: value)
        return (StatusCode.ok...StatusCode.unavailable).contains(s) ? s : StatusCode.internalError
    }
}
