// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem

/// The calls into one auth hook now, so that a hook that stops returning is noticed while it hangs.
///
/// Every request of the host asks every authorize hook (and authenticate hooks until one names the caller), from
/// whichever lane serves it: a hook that never returns for some input (a remote call without a time-out, a crafted
/// header) would otherwise take a thread of every lane in turn until no thread was left for anyone, the admin API's
/// included. So each call holds one of `slots` slots with its start time while it runs; once `stuckLimit` calls have
/// been running for longer than `stuckAfter`, the hook is not called any more and its requests are denied at once
/// (failing closed, as a failing hook does), counted as failures, so that the plugin is disabled as misbehaving
/// after the usual run of failures. The hook is asked again as soon as fewer of its calls are stuck. A plugin's
/// hooks thus hold at most `stuckLimit` threads each for ever.
///
/// Costs two atomic additions, a compare-and-swap and a store per call; the slots are scanned for stuck calls only
/// while at least `stuckLimit` others run. `@unchecked Sendable`: the slots are only read and
/// written through the C atomics of `keel_slots_enter` / `keel_slots_leave`; the pointer itself never changes and is
/// freed when the hook is.
final class HookWatch: @unchecked Sendable {
    /// Calls tracked at once: more than the server ever runs into one hook (its pool of threads plus the inline ones).
    static let slots: Int32 = 64
    /// Stuck calls that stop the hook being asked.
    static let stuckLimit: Int32 = 4
    /// What `enter` returns when the hook is not to be called.
    static let refused: Int32 = -2

    private let starts: UnsafeMutablePointer<UInt64>
    /// Milliseconds after which a running call counts as stuck.
    let stuckAfterMilliseconds: UInt64

    /// - Parameter budget: the hook budget in seconds; a call counts as stuck after four times it, at least 1 s.
    init(budget: Double) {
        // The count of calls in flight, then the slots.
        starts = .allocate(capacity: Int(Self.slots) + 1)
        starts.initialize(repeating: 0, count: Int(Self.slots) + 1)
        stuckAfterMilliseconds = UInt64(max(1, 4 * budget) * 1000)
    }

    deinit { starts.deallocate() }

    /// Counts in a call starting `now` (seconds, `ActivationContext.now()`): the slot it holds, -1 when none was free
    /// (the call runs counted but untracked), or `refused` (then it is not counted: do not call `leave`). [any thread]
    func enter(at now: Double) -> Int32 {
        let ms = UInt64(max(0, now) * 1000) + 1
        return keel_slots_enter(starts, Self.slots, ms, ms > stuckAfterMilliseconds ? ms - stuckAfterMilliseconds : 0, Self.stuckLimit)
    }

    /// Ends a call `enter` let through (with what it returned). [any thread]
    func leave(_ slot: Int32) { keel_slots_leave(starts, slot) }

    /// Why the hook was not asked, for the log and the denial.
    func refusal(_ what: String) -> String {
        "\(what) was not asked: \(Self.stuckLimit) of its calls have run for over \(stuckAfterMilliseconds / 1000) s without returning"
    }
}
