// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import Keel
import KeelRegistry
import Synchronization
import Testing

/// The kernel's replaceable handlers (HandlerSlot.swift): the metrics sink, the misbehaviour and change handlers and
/// the lazy waker are called once per failed plugin call, misbehaving plugin, worker restart or idle provider a
/// plugin asks for, so a plugin decides how often. Held as `Mutex<closure?>`, each call nested the stored closure two
/// thunks deeper, and a thread with a 512 KiB stack crashed after some ten thousand calls; these make 50,000 calls
/// of each on a thread with a 256 KiB stack.
@Suite("handler slots", .scheduled)
struct HandlerSlotTests {
    static let calls = 50_000

    /// Runs `body` on a new thread with a 256 KiB stack and waits for it.
    static func onSmallStack(_ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                body()
                done.resume()
            }
            thread.stackSize = 256 << 10
            thread.start()
        }
    }

    @Test("the metrics sink takes 50,000 events on a small stack, each reaching the handler attached last")
    func metricsSink() async {
        let metrics = KernelMetrics()
        let first = Atomic<Int>(0), second = Atomic<Int>(0)
        metrics.attach { _ in first.add(1, ordering: .relaxed) }
        await Self.onSmallStack {
            for i in 0..<Self.calls {
                if i == Self.calls / 2 { metrics.attach { _ in second.add(1, ordering: .relaxed) } }
                metrics.report(.callFailed(plugin: "p"))
            }
            metrics.attach(nil)
            metrics.report(.callFailed(plugin: "p"))
        }
        #expect(first.load(ordering: .relaxed) == Self.calls / 2)
        #expect(second.load(ordering: .relaxed) == Self.calls / 2)
        // The last successful activation is kept with no sink attached.
        metrics.report(.activated(plugin: "p", seconds: 0.25, ok: true))
        #expect(metrics.lastActivationSeconds == ["p": 0.25])
    }

    @Test("the environment's change, misbehaviour and wake handlers take 50,000 calls each on a small stack")
    func environmentHandlers() async {
        let environment = KernelEnvironment(registry: PluginRegistry(), log: { _ in })
        let changes = Atomic<Int>(0), misbehaving = Atomic<Int>(0), wakes = Atomic<Int>(0)
        // Nothing attached yet: no handler runs, a wake finds nothing to wake.
        environment.changed()
        #expect(environment.wake(.plugin("idle")) == nil)
        environment.onChanged { changes.add(1, ordering: .relaxed) }
        environment.onMisbehaving { plugin, _, _ in if plugin == "p" { misbehaving.add(1, ordering: .relaxed) } }
        environment.onIdleNeeded { need in
            wakes.add(1, ordering: .relaxed)
            if case let .plugin(id) = need { return KernelError(.unknownPlugin, pluginID: id, reason: "not installed") }
            return nil
        }
        let refused = Atomic<Int>(0)
        await Self.onSmallStack {
            for _ in 0..<Self.calls {
                environment.changed()
                environment.misbehaving(plugin: "p", generation: 1, reason: "test")
                if environment.wake(.plugin("missing"))?.pluginID == "missing" { refused.add(1, ordering: .relaxed) }
            }
        }
        #expect(changes.load(ordering: .relaxed) == Self.calls)
        #expect(misbehaving.load(ordering: .relaxed) == Self.calls)
        #expect(wakes.load(ordering: .relaxed) == Self.calls)
        #expect(refused.load(ordering: .relaxed) == Self.calls)
    }
}
