// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Synchronization

/// How many refused admin calls the audit trail takes one by one: at most `perMinute` in a minute. Any client may ask
/// for refusals, anonymous ones included; without a budget, one sending them as fast as it can pushed every executed
/// command out of the trail (it keeps the newest `StateStore.auditCapacity` rows) within minutes, at a synced write
/// per request. Past the budget a minute's refusals are counted, and the first refusal of a later minute reports
/// how many were left out (a row of its own); the log still has each. Thread-safe.
final class RefusalBudget: Sendable {
    let perMinute: Int
    private let state = Mutex<(minute: Int64, written: Int, leftOut: Int)>((Int64.min, 0, 0))

    init(perMinute: Int = 60) { self.perMinute = perMinute }

    /// Decides for one refusal at `seconds` (since any fixed epoch): whether it gets its row, and how many refusals
    /// of an earlier minute were left out and not reported yet (reported now: the caller writes that row first).
    func admit(at seconds: Int64) -> (record: Bool, leftOutBefore: Int) {
        let minute = seconds / 60
        return state.withLock { s in
            var reported = 0
            if minute != s.minute {
                reported = s.leftOut
                s = (minute, 0, 0)
            }
            guard s.written < perMinute else {
                s.leftOut += 1
                return (false, reported)
            }
            s.written += 1
            return (true, reported)
        }
    }
}
