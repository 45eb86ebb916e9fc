// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization

/// The last minute of one plugin's requests, for `GET /api/v1/plugins/<id>/health`: how many, how many failed
/// (status 5xx), and the 99th percentile of their latency.
///
/// Bounded: the newest `capacity` requests, whatever their age (under heavier traffic the figures cover the newest
/// `capacity` of the minute). One short lock per request, no allocation once the ring is full. Thread-safe.
final class PluginWindow: Sendable {
    static let capacity = 4096
    static let span: Duration = .seconds(60)

    private struct Sample {
        var at: ContinuousClock.Instant
        var nanoseconds: Int64
        var failed: Bool
    }
    private struct Ring {
        var samples: [Sample] = []
        var next = 0
    }
    private let ring = Mutex(Ring())

    func record(nanoseconds: Int64, failed: Bool, at: ContinuousClock.Instant = .now) {
        let sample = Sample(at: at, nanoseconds: nanoseconds, failed: failed)
        ring.withLock { r in
            if r.samples.count < Self.capacity {
                r.samples.append(sample)
            } else {
                r.samples[r.next] = sample
                r.next = (r.next + 1) % Self.capacity
            }
        }
    }

    /// Requests within the last minute: count, failed (5xx) count, and p99 latency in milliseconds (nil: none).
    func summary(now: ContinuousClock.Instant = .now) -> (requests: Int, failed: Int, p99Milliseconds: Double?) {
        let recent = ring.withLock { r in r.samples.filter { now - $0.at <= Self.span } }
        guard !recent.isEmpty else { return (0, 0, nil) }
        let sorted = recent.map(\.nanoseconds).sorted()
        // Nearest rank: the smallest value at or above 99 % of the samples.
        let rank = Int((Double(sorted.count) * 0.99).rounded(.up)) - 1
        return (recent.count, recent.filter(\.failed).count, Double(sorted[max(0, rank)]) / 1e6)
    }
}
