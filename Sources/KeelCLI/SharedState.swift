// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelStatePostgres
import Synchronization

/// Keeps a `keel serve` on a shared state (PostgreSQL) in line with the other hosts: applies the desired state
/// after each change notification and every `reconcileEvery` as a safety net for a notification missed, and reports
/// itself in the hosts table every second. Its store observes for this host (`StateStore.observe(as:)`), so each
/// host records its own status of each plugin.
///
/// Threads: notifications arrive on the store's event loop and only wake the apply loop, which runs on the kernel's
/// own executor (`Kernel.followSharedState`): a change reaches the kernel without waiting for Swift's cooperative
/// pool, which blocking state calls elsewhere in the host occupy under load. The heartbeat runs on a task of its own.
/// A failing state (PostgreSQL away) leaves the host serving what it runs; it catches up when the state answers again.
final class SharedStateLoop: Sendable {
    let kernel: Kernel
    let id: String
    private let startedAt = Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(Date())
    private let address = Mutex("")
    /// Since when the shared state has not answered a heartbeat (nil: it answers), so that losing it and getting it
    /// back are each logged once.
    private let unreachableSince = Mutex<ContinuousClock.Instant?>(nil)
    private let wake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    private let tasks = Mutex<[Task<Void, Never>]>([])
    /// The safety net's period (25 ticks of the 200 ms loop).
    static let reconcileEvery: Duration = .seconds(5)

    /// Makes the kernel's store observe for this host: call it before the kernel loads anything.
    init(kernel: Kernel) {
        self.kernel = kernel
        id = Self.hostID(pid: getpid())
        kernel.state.observe(as: id)
    }

    /// The id a `keel serve` of process `pid` on this machine has among the hosts of a shared state.
    static func hostID(pid: Int32) -> String { "\(ProcessInfo.processInfo.hostName)-\(pid)" }

    /// Where this host serves, once it listens.
    func listening(at url: String) { address.withLock { $0 = url } }

    /// Starts listening for changes, the apply loop and the heartbeat. - Throws: `StateError` when it cannot listen.
    func start() throws(StateError) {
        let continuation = wake.continuation
        try PostgresStore.observeChanges(of: kernel.state) { table in
            // The desired state, and the grants and configuration a running plugin must be reloaded for (a revoke
            // through another host is heeded here at once, not at the next pass in any case).
            if table == "plugins" || table == "grants" || table == "plugin_config" || table.isEmpty { continuation.yield() }
        }
        let apply = Task { [kernel, stream = wake.stream] in await kernel.followSharedState(stream) }
        let heartbeat = Task { [self] in
            // Every 200 ms the listener is kept up (after PostgreSQL restarted, the host hears of changes again within
            // that); every second the heartbeat; every `reconcileEvery` a pass in any case.
            var tick = 0
            while !Task.isCancelled {
                try? PostgresStore.listen(kernel.state)
                if tick % 5 == 0 { await beat() }
                // Hosts silent for a day (killed: their rows stay), at start and every hour.
                if tick % 18_000 == 0 { try? kernel.state.forgetHosts(silentFor: 86_400) }
                tick += 1
                if tick % 25 == 0 { continuation.yield() }
                try? await Task.sleep(for: .milliseconds(200))
            }
            continuation.finish()
        }
        continuation.yield()
        tasks.withLock { $0 = [apply, heartbeat] }
    }

    /// One heartbeat: this host's row with what it runs. (The change listener is kept up beside it: after PostgreSQL
    /// restarted, listening again counts as a change, so the host reconciles.)
    private func beat() async {
        let plugins = await kernel.runningGenerations()
        do {
            try kernel.state.heartbeat(.init(id: id, address: address.withLock { $0 }, version: Kernel.version,
                                             startedAt: startedAt, plugins: plugins))
            kernel.noteState(answering: true)
            if let since = unreachableSince.withLock({ since in defer { since = nil }; return since }) {
                kernel.log(.warn, nil, "the shared state answers again after \((ContinuousClock.now - since).components.seconds) s: catching up with the changes made meanwhile")
            }
        } catch {
            kernel.noteState(answering: false)
            // Said once per outage: the plugins running serve on, and every change is refused naming the database.
            if unreachableSince.withLock({ since in defer { since = since ?? .now }; return since == nil }) {
                kernel.log(.error, nil, "the shared state does not answer (\(error)): the plugins running keep serving; changes are refused until it is back")
            }
        }
    }

    /// Stops the loop and removes this host's row (a host killed leaves its row, with a heartbeat that stops).
    func stop() {
        tasks.withLock { for task in $0 { task.cancel() } }
        wake.continuation.finish()
        try? kernel.state.removeHost(id)
    }
}
