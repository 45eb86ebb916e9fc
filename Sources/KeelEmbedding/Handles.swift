// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelABI.Embed
import Foundation
import Glibc
import KeelLoader
import KeelSystem
import Synchronization

/// The table of open handles. A `keel *` handed to C is a token, never a pointer the library dereferences: it is
/// looked up here, so a NULL, made-up or closed handle is refused (`KEEL_MISUSE`) instead of crashing. Tokens are
/// never reused within the process. Thread-safe.
enum Handles {
    private static let open = Mutex<[UInt: EmbeddedKernel]>([:])
    private static let counter = Atomic<UInt>(0)
    /// Spreads tokens away from small integers and real heap addresses; the low bits stay zero.
    private static let tag: UInt = 0x6B65_0000_0000_0000

    static func add(_ kernel: EmbeddedKernel) -> OpaquePointer? {
        let token = tag | (counter.add(1, ordering: .relaxed).newValue << 4)
        open.withLock { $0[token] = kernel }
        return OpaquePointer(bitPattern: token)
    }

    static func find(_ handle: OpaquePointer?) -> EmbeddedKernel? {
        let token = UInt(bitPattern: handle)
        guard token != 0 else { return nil }
        return open.withLock { $0[token] }
    }

    static func remove(_ handle: OpaquePointer?) -> EmbeddedKernel? {
        open.withLock { $0.removeValue(forKey: UInt(bitPattern: handle)) }
    }
}

/// What the calling thread is doing inside the library, in thread-local storage: the last error message, and whether
/// the thread is inside a call or a callback (a call made then could wait for the thread it runs on, so it is
/// refused). Thread-safe by construction (each thread sees its own values).
enum ThreadState {
    /// Non-nil while the thread is inside a library call or runs one of the embedder's callbacks.
    private static let busyKey: pthread_key_t = makeKey(destructor: nil)
    /// The thread's last error message (a malloc'd C string, freed when replaced or when the thread ends).
    private static let errorKey: pthread_key_t = makeKey(destructor: { free($0) })

    private static func makeKey(destructor: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?) -> pthread_key_t {
        var key = pthread_key_t()
        pthread_key_create(&key, destructor)
        return key
    }

    static var isBusy: Bool { pthread_getspecific(busyKey) != nil }

    /// Runs `body` with the thread marked busy (nested use keeps the mark until the outermost ends).
    static func busy<T>(_ body: () throws -> T) rethrows -> T {
        let outer = isBusy
        if !outer { pthread_setspecific(busyKey, UnsafeRawPointer(bitPattern: 1)) }
        defer { if !outer { pthread_setspecific(busyKey, nil) } }
        return try body()
    }

    /// Why a call may not be made from this thread now, or nil when it may.
    static var refusal: String? {
        if isBusy { return "called from inside a keel callback or from plugin code keel is running; call from a thread of your own" }
        if withUnsafeCurrentTask(body: { $0 != nil }) { return "called from a Swift task; blocking there can stall Swift's cooperative pool" }
        return nil
    }

    /// Keeps `message` as this thread's last error: one line (control characters escaped: an id the caller passed, a
    /// plugin's message) of at most 4 KiB (an id of 32 MB made an error of 32 MB).
    static func setError(_ message: String?) {
        let old = pthread_getspecific(errorKey)
        let line = message.map { TextLimits.logLine(Printable.escapingControls($0)) }
        pthread_setspecific(errorKey, line.flatMap { strdup($0) }.map { UnsafeRawPointer($0) })
        free(old)
    }

    static var error: UnsafePointer<CChar>? { pthread_getspecific(errorKey).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) } }
}

/// Runs an API call: checks the thread, finds the handle, admits the call (not once closing began), marks the thread
/// busy, clears the last error. Every function taking a `keel *` goes through here.
func withKernel(_ handle: OpaquePointer?, caller: String = #function, _ body: (EmbeddedKernel) -> keel_status) -> keel_status {
    // Named as the C caller knows it ("keel_enable", not Swift's "keel_enable(_:_:)"), as the other messages are.
    let name = caller.prefix { $0 != "(" }
    if let refusal = ThreadState.refusal { return fail(KEEL_MISUSE, name + ": " + refusal) }
    guard let kernel = Handles.find(handle) else {
        return fail(KEEL_MISUSE, name + (handle == nil ? ": the keel handle is NULL" : ": not an open keel handle (closed, or never opened)"))
    }
    guard kernel.admit() else { return fail(KEEL_MISUSE, name + ": the keel handle is being closed") }
    defer { kernel.release() }
    ThreadState.setError(nil)
    return ThreadState.busy { body(kernel) }
}

/// Records `message` as the thread's last error and returns `status`.
func fail(_ status: keel_status, _ message: String) -> keel_status {
    ThreadState.setError(message)
    return status
}

/// Runs `work` (kernel operations: async, on the kernel's own thread) and blocks the calling thread until it is
/// done. The calling thread is never one of Swift's cooperative pool (`ThreadState.refusal` turned those away), so
/// the pool keeps running the work.
func blocking<T: Sendable>(_ work: @escaping @Sendable () async -> T) -> T {
    let result = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        let value = await work()
        result.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    guard let value = result.withLock({ $0.take() }) else { preconditionFailure("blocking: the task ended without a result") }
    return value
}
