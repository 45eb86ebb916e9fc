// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Synchronization

/// A handler that may be attached, replaced or detached while other threads call it. Thread-safe; `current` takes
/// a lock for a moment and never calls the handler under it.
///
/// Not `Mutex<(@Sendable (A) -> R)?>`, nor a `Mutex` of a tuple that holds a closure: `Mutex.withLock` hands its
/// value to the body `inout` through a generic parameter, and a closure held as a generic value is kept at another
/// abstraction than the body's. Swift 6.3 converts it on the way in and back on the way out, so every
/// `withLock { $0 }` wrapped the stored closure in two more reabstraction thunks and stored the result: each later
/// call ran through all of them, its cost and the memory held grew with every call, and after some ten thousand
/// calls the nesting overflowed a thread's stack. Measured 2026-12-01: a kernel's metrics sink, called once per
/// failed plugin call, crashed a 512 KiB-stack thread after 10,000–12,000 calls. Kept inside a struct, the closure's
/// layout does not depend on the context, and a read converts nothing that is stored (`HandlerSlotTests` calls each
/// slot 50,000 times on a small stack). Arrays and dictionaries of closures are not affected.
final class HandlerSlot<Handler: Sendable>: Sendable {
    private struct Stored: Sendable {
        let handler: Handler
    }
    private let slot = Mutex<Stored?>(nil)

    init() {}

    /// Replaces the handler (nil: none). Calls already running finish with the one they read.
    func set(_ handler: Handler?) { slot.withLock { $0 = handler.map(Stored.init) } }

    /// The handler now, if any.
    var current: Handler? { slot.withLock { $0?.handler } }
}
