// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Synchronization

/// A continuation resumed by whichever comes first, e.g. a call on another thread or a timer; later resumes are
/// dropped, and a resume before the continuation is set is kept for it. Thread-safe.
final class FirstOf<Value: Sendable>: Sendable {
    private enum Slot {
        case empty
        case waiting(CheckedContinuation<Value, Never>)
        case early(Value)
        case finished
    }
    private let slot = Mutex<Slot>(.empty)

    /// Hands over the continuation to resume (at once, when a value came first).
    func set(_ continuation: CheckedContinuation<Value, Never>) {
        let early = slot.withLock { s -> Value? in
            if case let .early(value) = s {
                s = .finished
                return .some(value)
            }
            s = .waiting(continuation)
            return nil
        }
        if let early { continuation.resume(returning: early) }
    }

    /// True once a value was given (whether or not the waiter has had it).
    var isFinished: Bool {
        slot.withLock { s in
            switch s {
            case .empty, .waiting: false
            case .early, .finished: true
            }
        }
    }

    /// Resumes with `value` if nothing did before.
    func resume(_ value: Value) {
        let waiting = slot.withLock { s -> CheckedContinuation<Value, Never>? in
            switch s {
            case let .waiting(c):
                s = .finished
                return c
            case .empty:
                s = .early(value)
                return nil
            case .early, .finished:
                return nil
            }
        }
        waiting?.resume(returning: value)
    }
}
