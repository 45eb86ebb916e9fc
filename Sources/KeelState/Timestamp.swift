// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// Record and log times: ISO 8601 in UTC with milliseconds (`2026-11-30T00:45:36.123Z`, milliseconds cut, not
/// rounded), exactly as `Date.ISO8601FormatStyle(includingFractionalSeconds: true)` writes them, but written by hand:
/// the format style's first use in a process sets up calendars and time zones, a millisecond or two that the first
/// request of a lazy plugin (its activation is recorded and logged) would otherwise pay. Thread-safe.
public enum Timestamp {
    /// The time now.
    public static func now() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return utc(seconds: now.tv_sec, milliseconds: Int(now.tv_nsec / 1_000_000))
    }

    /// The time `seconds` (since the epoch) and `milliseconds` (0–999).
    static func utc(seconds: Int, milliseconds: Int) -> String {
        var t = time_t(seconds), parts = tm()
        gmtime_r(&t, &parts)
        var text: [UInt8] = []
        text.reserveCapacity(24)
        func digits(_ value: Int32, _ width: Int, then separator: Character) {
            var divisor: Int32 = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
            if let byte = separator.asciiValue { text.append(byte) }
        }
        digits(parts.tm_year + 1900, 4, then: "-")
        digits(parts.tm_mon + 1, 2, then: "-")
        digits(parts.tm_mday, 2, then: "T")
        digits(parts.tm_hour, 2, then: ":")
        digits(parts.tm_min, 2, then: ":")
        digits(parts.tm_sec, 2, then: ".")
        digits(Int32(milliseconds), 3, then: "Z")
        return String(decoding: text, as: UTF8.self)
    }
}
