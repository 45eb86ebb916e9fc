// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

extension Kernel {
    /// Frees `value` on a global dispatch queue instead of the calling thread, when the caller keeps no copy of it.
    /// [any thread]
    nonisolated static func freeElsewhere<T>(_ value: T) {
        let garbage = Garbage(value)
        DispatchQueue.global(qos: .utility).async { withExtendedLifetime(garbage) {} }
    }

    /// What `freeElsewhere` hands to another thread. `@unchecked Sendable`: the value is never read again, only
    /// released, and the thread that made the box keeps no reference to it or to the value.
    private final class Garbage<T>: @unchecked Sendable {
        let value: T
        init(_ value: T) { self.value = value }
    }
}
