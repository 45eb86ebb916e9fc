// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelState
import Synchronization

/// How many refused admin calls the audit trail takes one by one: for anonymous callers and for identified ones
/// (any principal), each at most `perMinute` in a minute and half of `perDay` rows in a day (UTC). Any client may ask
/// for refusals, anonymous ones included; without a budget, one sending them as fast as it can pushed every executed
/// command out of the trail (it keeps the newest `StateStore.auditCapacity` rows) within minutes, at a synced write
/// per request, and with the minute's budget alone in about 2.7 hours (a security review, 2026-12-07). With the day's,
/// refusals take at most a tenth of the trail a day: the commands of the last ten days stay, however many refusals
/// come. The two classes have budgets of their own, so an anonymous flood cannot spend the rows an identified caller's
/// refusals (an insider's forbidden tries) get. Past a budget refusals are counted, and the first refusal of that
/// class recorded later (the next minute's, or the next day's) reports how many were left out (a row of its own,
/// counted in the day's rows); the log still has each. Thread-safe.
final class RefusalBudget: Sendable {
    let perMinute: Int
    /// Rows a day for both classes together (each gets half).
    let perDay: Int
    private struct Class {
        var minute = Int64.min, written = 0, leftOut = 0, day = Int64.min, writtenToday = 0
    }
    private let classes = Mutex<(anonymous: Class, identified: Class)>((Class(), Class()))

    init(perMinute: Int = 60, perDay: Int = StateStore.auditCapacity / 10) {
        self.perMinute = perMinute
        self.perDay = perDay
    }

    /// Decides for one refusal at `seconds` (since the Unix epoch) of an `anonymous` caller or an identified one:
    /// whether it gets its row, and how many refusals of that class left out before were not reported yet (reported
    /// now, when it gets its row: the caller writes that row first).
    func admit(at seconds: Int64, anonymous: Bool = true) -> (record: Bool, leftOutBefore: Int) {
        let minute = seconds / 60, day = seconds / 86_400, dayRows = perDay / 2, perMinute = self.perMinute
        func admit(_ s: inout Class) -> (record: Bool, leftOutBefore: Int) {
            if minute != s.minute { (s.minute, s.written) = (minute, 0) }
            if day != s.day { (s.day, s.writtenToday) = (day, 0) }
            let rows = s.leftOut > 0 ? 2 : 1
            guard s.written < perMinute, s.writtenToday + rows <= dayRows else {
                s.leftOut += 1
                return (false, 0)
            }
            let reported = s.leftOut
            s.written += 1
            s.writtenToday += rows
            s.leftOut = 0
            return (true, reported)
        }
        return classes.withLock { anonymous ? admit(&$0.anonymous) : admit(&$0.identified) }
    }
}
