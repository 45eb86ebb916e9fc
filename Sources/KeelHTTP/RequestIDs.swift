// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Synchronization

/// The server's ids for requests that come without a sane `X-Request-Id`: 32 lowercase hex digits, a random half
/// drawn once per process and a counter, so ids do not repeat within a process and are unlikely to across restarts
/// and hosts. Made without Foundation or string interpolation (one per plugin request, on the hot path).
/// Thread-safe.
enum RequestIDs {
    private static let prefix = UInt64.random(in: .min ... .max)
    private static let counter = Atomic<UInt64>(UInt64.random(in: .min ... .max))

    static func next() -> String {
        let low = counter.wrappingAdd(1, ordering: .relaxed).oldValue
        return String(unsafeUninitializedCapacity: 32) { buffer in
            let digits: StaticString = "0123456789abcdef"
            digits.withUTF8Buffer { hex in
                for i in 0..<16 {
                    buffer[i] = hex[Int((prefix >> UInt64(60 - 4 * i)) & 0xf)]
                    buffer[16 + i] = hex[Int((low >> UInt64(60 - 4 * i)) & 0xf)]
                }
            }
            return 32
        }
    }
}
