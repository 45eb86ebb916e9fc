// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem
import Synchronization

/// The calls into one auth hook now, so that a hook that stops returning is noticed while it hangs.
///
/// Every request of the host asks every authorize hook (and authenticate hooks until one names the caller), from
/// whichever lane serves it: a hook that never returns for some input (a remote call without a time-out, a crafted
/// path) would otherwise take a thread of every lane in turn until no thread was left for anyone, the admin API's
/// included. So:
/// - at most `maxInFlight` calls of one hook run at once, so that a burst of such requests takes at most that many
///   threads for ever (the pool has 32 by default);
/// - once `stuckLimit` of its calls have been running for longer than the hook budget (a call that slow counts as a
///   deny when it returns anyway), the hook is not asked until fewer are.
/// A call not made is a failure of the hook: its request is denied (failing closed, as when a hook errors). It is
/// counted in the metrics and logged once per episode, but not toward the failures in a row that disable a plugin
/// as misbehaving: a plugin whose authorize hook denies would then stop denying, so a hang that a client can cause
/// would become a way around the hook. The operator disables the plugin (`keel plugins disable`, which reaches a
/// running server without the auth chain).
///
/// Costs two atomic additions, a compare-and-swap and a store per call; the slots are scanned for stuck calls only
/// while at least `stuckLimit` others run. `@unchecked Sendable`: the slots are only read and written through the C
/// atomics of `keel_slots_enter` / `keel_slots_leave`; the pointer itself never changes and is freed when the hook is.
final class HookWatch: @unchecked Sendable {
    /// Calls tracked at once: more than the server ever runs into one hook (its pool of threads plus the inline ones).
    static let slots: Int32 = 64
    /// Stuck calls that stop the hook being asked.
    static let stuckLimit: Int32 = 4
    /// Calls of one hook that may run at once.
    static let maxInFlight: Int32 = 16
    /// What `enter` returns when the hook is not to be called: too many of its calls are stuck, or running.
    static let stuck: Int32 = -2
    static let full: Int32 = -3

    private let starts: UnsafeMutablePointer<UInt64>
    /// Milliseconds after which a running call counts as stuck: the hook budget.
    let stuckAfterMilliseconds: UInt64
    /// True from the first call not made until one is made again: the refusals of one episode are logged once.
    private let refusing = Atomic<Bool>(false)

    /// - Parameter budget: the hook budget in seconds (at least 0.1 s counts as stuck).
    init(budget: Double) {
        // The count of calls in flight, then the slots.
        starts = .allocate(capacity: Int(Self.slots) + 1)
        starts.initialize(repeating: 0, count: Int(Self.slots) + 1)
        // Bounded before the conversion (a day): an infinite or huge budget would trap there.
        stuckAfterMilliseconds = UInt64(min(max(0.1, budget), 86_400) * 1000)
    }

    deinit { starts.deallocate() }

    /// Counts in a call starting `now` (seconds, `ActivationContext.now()`): the slot it holds, -1 when none was free
    /// (the call runs counted but untracked), or `stuck` / `full` (then it is not counted: do not call `leave`).
    /// [any thread]
    func enter(at now: Double) -> Int32 {
        let ms = UInt64(max(0, now) * 1000) + 1
        let slot = keel_slots_enter(starts, Self.slots, ms, ms > stuckAfterMilliseconds ? ms - stuckAfterMilliseconds : 0,
                                    Self.stuckLimit, Self.maxInFlight)
        // Read first: on the common path the flag's cache line is not written.
        if slot >= -1, refusing.load(ordering: .relaxed) { refusing.store(false, ordering: .relaxed) }
        return slot
    }

    /// Ends a call `enter` let through (with what it returned). [any thread]
    func leave(_ slot: Int32) { keel_slots_leave(starts, slot) }

    /// Why the hook was not asked (`slot` is what `enter` returned), and whether this refusal is the first of its
    /// episode (to be logged).
    func refusal(_ what: String, _ slot: Int32) -> (reason: String, first: Bool) {
        let reason = slot == Self.full
            ? "\(what) was not asked: \(Self.maxInFlight) of its calls are running"
            : "\(what) was not asked: \(Self.stuckLimit) of its calls have run for over \(stuckAfterMilliseconds) ms without returning"
        return (reason, !refusing.exchange(true, ordering: .relaxed))
    }
}
