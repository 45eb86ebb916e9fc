// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import NIOCore

/// An event loop as a task executor. An HTTP connection's async code prefers its own loop (`KeelHTTPChannel`):
/// reading a request, proxying it and writing the answer then run on the thread that does the connection's I/O, so a
/// proxied request costs no hop between the loop and Swift's cooperative pool (a hop is a thread wake-up each way,
/// and four of them were most of a proxied request's CPU time). Everything that may block the thread (plugin code,
/// the admin API, the console: every request the proxy does not serve) goes back to the cooperative pool
/// (`KeelResponder`, `PluginProxy.admit`), so a loop never waits on anything but I/O. Thread-safe.
final class LoopExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
