// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelABI.Embed
import Foundation
import Keel
import KeelSystem
import Synchronization

/// The embedder's log callback. Calls are serialised by a lock, so the embedder never sees two at once, and `close`
/// takes the same lock: once it returns, no call is in progress and none follows. The callback runs with the thread
/// marked busy, so an API call from inside it is refused rather than left to deadlock.
/// `@unchecked Sendable`: the C function pointer and its user data are only read, under the lock.
final class LogGate: @unchecked Sendable {
    private let open = Mutex(true)
    private let fn: keel_log_fn
    private let userData: UnsafeMutableRawPointer?

    init(fn: keel_log_fn, userData: UnsafeMutableRawPointer?) {
        self.fn = fn
        self.userData = userData
    }

    func log(_ record: LogRecord) {
        open.withLock { isOpen in
            guard isOpen else { return }
            // One line each, as the header says: a plugin's (or a caller's) control characters are escaped, so that an
            // embedder writing the record as it comes never writes a forged line or an escape sequence.
            let message = Printable.escapingControls(record.message)
            ThreadState.busy {
                if let id = record.pluginID {
                    Printable.escapingControls(id).withCString { fn(userData, keel_log_level(record.level.rawValue), $0, message) }
                } else {
                    fn(userData, keel_log_level(record.level.rawValue), nil, message)
                }
            }
        }
    }

    func close() { open.withLock { $0 = false } }
}

/// Delivers the kernel's events to the embedder's subscribers on a thread of its own (one per handle), in order,
/// one at a time. The kernel only queues an item (it never waits for embedder code); this thread turns it into
/// `keel_event`s: the command that ran, then one `KEEL_EVENT_PLUGIN_STATE` per plugin whose stored status or reason
/// changed since that subscriber last heard of it. Delivery follows the change, so an event may arrive after the call
/// that made it returned. A command's event goes to the subscriptions made before it was posted (`post`); plugin
/// states are compared, for each subscriber, with those stored when it subscribed, so it hears of every change made
/// after `subscribe` returned and of none made before. Subscribers are called under a lock that `unsubscribe` and
/// `stop` take too, so after either returns the callback is not running and is not called again.
/// `@unchecked Sendable`: the subscribers' C pointers are used only under `subscribers`' lock; `seen` only on the
/// event thread.
final class EventPump: @unchecked Sendable {
    enum Item: Sendable {
        case command(name: String, pluginID: String?, failure: String?)
        /// Look at the stored plugin states again.
        case refresh
    }

    /// Status and reason per plugin.
    typealias States = [String: (PluginStatus, String?)]

    /// `@unchecked Sendable`: a C function and the embedder's pointer for it, only ever passed back to that function
    /// (the header makes the embedder keep it valid until unsubscribed).
    private struct Subscriber: @unchecked Sendable {
        let token: Int64
        let fn: keel_event_fn
        let userData: UnsafeMutableRawPointer?
        /// The plugin states stored when it subscribed: what it is not told of.
        let baseline: States
    }

    /// Items with the last subscription token issued when each was posted: a command's event goes to the
    /// subscriptions up to it (still subscribed when it is delivered), never to one made after the change it tells of.
    /// Taken without the subscribers' lock, which the event thread holds while callbacks run: posting (the kernel's
    /// side) never waits for embedder code.
    private let queue = Mutex<(items: [(Item, Int64)], stopped: Bool)>(([], false))
    private let wakeups = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let subscribers = Mutex<[Subscriber]>([])
    /// Subscription tokens, counted for the whole process (not per kernel): a token of one handle never names a
    /// subscription on another (`keel_unsubscribe(B, A's token)` ended B's own). Increasing, so a subscriber's token
    /// still says whether it came before an item (`post`).
    private static let nextToken = Atomic<Int64>(0)
    private let state: StateStore
    /// The states each subscriber was last told of, by token (its baseline until the first delivery). Event thread only.
    private var seen: [Int64: States] = [:]

    init(state: StateStore) {
        self.state = state
        let thread = Thread { [self] in run() }
        thread.name = "keel.events"
        thread.start()
    }

    func post(_ item: Item) {
        let bound = Self.nextToken.load(ordering: .acquiring)
        queue.withLock { $0.items.append((item, bound)) }
        wakeups.signal()
    }

    /// Adds a subscriber; reads the stored plugin states (its baseline) on the calling thread.
    func subscribe(_ fn: keel_event_fn, _ userData: UnsafeMutableRawPointer?) -> Int64 {
        let token = Self.nextToken.add(1, ordering: .acquiringAndReleasing).newValue
        let baseline = Self.read(state)
        subscribers.withLock { $0.append(Subscriber(token: token, fn: fn, userData: userData, baseline: baseline)) }
        return token
    }

    func unsubscribe(_ token: Int64) -> Bool {
        subscribers.withLock { list in
            guard let i = list.firstIndex(where: { $0.token == token }) else { return false }
            list.remove(at: i)
            return true
        }
    }

    /// Delivers what is queued, then ends the thread; no callback runs after it returns.
    func stop() {
        queue.withLock { $0.stopped = true }
        wakeups.signal()
        finished.wait()
        subscribers.withLock { $0.removeAll() }
    }

    private static func read(_ state: StateStore) -> States {
        let records = (try? state.plugins()) ?? []
        return Dictionary(records.map { ($0.id, ($0.status, $0.reason)) }, uniquingKeysWith: { a, _ in a })
    }

    private func run() {
        while true {
            wakeups.wait()
            // One signal per item and one from `stop`: the queue is empty here only after `stop`, with all delivered.
            let (next, stopped): ((Item, Int64)?, Bool) = queue.withLock { q in (q.items.isEmpty ? nil : q.items.removeFirst(), q.stopped) }
            guard let (item, bound) = next else {
                if stopped { finished.signal(); return }
                continue
            }
            if case let .command(name, pluginID, failure) = item {
                deliver(KEEL_EVENT_COMMAND, pluginID: pluginID, command: name, status: nil, message: failure) { $0.token <= bound }
            }
            deliverStates()
        }
    }

    /// Tells each subscriber of the plugins whose state differs from what it was last told of (or stored when it
    /// subscribed), by id. The states are read under the subscribers' lock: a subscription made meanwhile has a
    /// baseline at least as new, never newer than what it is then told (a stale state after a newer one). [event thread]
    private func deliverStates() {
        subscribers.withLock { list in
            guard !list.isEmpty else { return }
            let now = Self.read(state)
            let sorted = now.sorted { $0.key < $1.key }
            for s in list {
                let before = seen[s.token] ?? s.baseline
                seen[s.token] = now
                for (id, entry) in sorted {
                    if let old = before[id], old.0 == entry.0, old.1 == entry.1 { continue }
                    call(s, KEEL_EVENT_PLUGIN_STATE, pluginID: id, command: nil, status: entry.0.rawValue, message: entry.1)
                }
            }
            // The unsubscribed ones' go.
            if seen.count > list.count { seen = seen.filter { token, _ in list.contains { $0.token == token } } }
        }
    }

    private func deliver(_ kind: Int32, pluginID: String?, command: String?, status: String?, message: String?,
                         to included: (Subscriber) -> Bool) {
        subscribers.withLock { list in
            for s in list where included(s) { call(s, kind, pluginID: pluginID, command: command, status: status, message: message) }
        }
    }

    /// Calls one subscriber with one event, the thread marked busy. [event thread, under `subscribers`' lock]
    private func call(_ s: Subscriber, _ kind: Int32, pluginID: String?, command: String?, status: String?, message: String?) {
        withOptionalCString(pluginID) { plugin in
            withOptionalCString(command) { command in
                withOptionalCString(status) { status in
                    withOptionalCString(message) { message in
                        var event = keel_event(struct_size: UInt32(MemoryLayout<keel_event>.size), kind: kind, plugin_id: plugin,
                                               command: command, status: status, message: message)
                        ThreadState.busy { s.fn(s.userData, &event) }
                    }
                }
            }
        }
    }
}

/// `body` with a C string for `text`, or NULL for nil; the pointer is valid only inside `body`.
func withOptionalCString<T>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> T) -> T {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}
