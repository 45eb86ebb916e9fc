// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelState
import Synchronization

/// How many refused admin calls the audit trail takes one by one: at most `perMinute` in a minute and `perDay` rows in
/// a day (UTC). Any client may ask for refusals, anonymous ones included; without a budget, one sending them as fast
/// as it can pushed every executed command out of the trail (it keeps the newest `StateStore.auditCapacity` rows)
/// within minutes, at a synced write per request, and with the minute's budget alone in about 2.7 hours (a security
/// review, 2026-12-07). With the day's, refusals take at most a tenth of the trail a day: the commands of the last ten
/// days stay, however many refusals come. Past the budget refusals are counted, and the first refusal recorded later
/// (the next minute's, or the next day's) reports how many were left out (a row of its own, counted in the day's
/// rows); the log still has each. Thread-safe.
final class RefusalBudget: Sendable {
    let perMinute: Int
    let perDay: Int
    private let state = Mutex<(minute: Int64, written: Int, leftOut: Int, day: Int64, writtenToday: Int)>((Int64.min, 0, 0, Int64.min, 0))

    init(perMinute: Int = 60, perDay: Int = StateStore.auditCapacity / 10) {
        self.perMinute = perMinute
        self.perDay = perDay
    }

    /// Decides for one refusal at `seconds` (since the Unix epoch): whether it gets its row, and how many refusals left
    /// out before were not reported yet (reported now, when it gets its row: the caller writes that row first).
    func admit(at seconds: Int64) -> (record: Bool, leftOutBefore: Int) {
        let minute = seconds / 60, day = seconds / 86_400
        return state.withLock { s in
            if minute != s.minute { (s.minute, s.written) = (minute, 0) }
            if day != s.day { (s.day, s.writtenToday) = (day, 0) }
            let rows = s.leftOut > 0 ? 2 : 1
            guard s.written < perMinute, s.writtenToday + rows <= perDay else {
                s.leftOut += 1
                return (false, 0)
            }
            let reported = s.leftOut
            s.written += 1
            s.writtenToday += rows
            s.leftOut = 0
            return (true, reported)
        }
    }
}
