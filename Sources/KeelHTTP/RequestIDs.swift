// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Synchronization

/// The server's ids for requests that come without a sane `X-Request-Id`: 32 lowercase hex digits, a random half
/// drawn once per process and a counter, so ids do not repeat within a process and are unlikely to across restarts
/// and hosts. Made without Foundation or string interpolation (one per plugin request, on the hot path).
/// Thread-safe.
enum RequestIDs {
    /// The random half, as its 16 hex digits.
    private static let prefix: [UInt8] = hex(UInt64.random(in: .min ... .max))
    private static let counter = Atomic<UInt64>(UInt64.random(in: .min ... .max))
    private static let digits = Array("0123456789abcdef".utf8)

    private static func hex(_ value: UInt64) -> [UInt8] {
        (0..<16).map { i in digits[Int((value >> UInt64(60 - 4 * i)) & 0xf)] }
    }

    static func next() -> String {
        let low = counter.wrappingAdd(1, ordering: .relaxed).oldValue
        return String(unsafeUninitializedCapacity: 32) { buffer in
            prefix.withUnsafeBufferPointer { high in
                digits.withUnsafeBufferPointer { hex in
                    for i in 0..<16 {
                        buffer[i] = high[i]
                        buffer[16 + i] = hex[Int((low >> UInt64(60 - 4 * i)) & 0xf)]
                    }
                }
            }
            return 32
        }
    }
}
