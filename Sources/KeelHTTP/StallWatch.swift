// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel

/// Watches the kernel's lifecycle for a stall (`Kernel.lifecycleStall`: plugin code on the kernel's thread that has
/// not returned within the stall limit) while the server runs, twice a second, on Swift's pool (a lock and a clock
/// read each time, nothing that blocks).
///
/// It logs the stall once when it is seen and once when the call returns. With `exits` (`keel serve
/// --exit-on-stall`) it instead writes the stall record (`Kernel.recordStall`) and ends the process with status 70, so
/// that a supervisor (systemd's `Restart=on-failure`) starts the host again and the next start quarantines the plugin:
/// Envoy's watchdog `kill_timeout`, for the one thread whose stall Keel cannot route around.
public struct StallWatch: Sendable {
    let kernel: Kernel
    let exits: Bool
    let log: @Sendable (LogRecord) -> Void
    /// True once a stop was asked for: a stall is then recorded and the process ended as with `exits` (a host that
    /// is still starting has no server whose stop would).
    let stopping: @Sendable () -> Bool

    public init(kernel: Kernel, exits: Bool, log: @escaping @Sendable (LogRecord) -> Void,
                stopping: @escaping @Sendable () -> Bool = { false }) {
        self.kernel = kernel
        self.exits = exits
        self.log = log
        self.stopping = stopping
    }

    /// The exit status of a host ended by a stall (EX_SOFTWARE).
    public static let exitStatus: Int32 = 70

    /// When `kernel`'s lifecycle is stalled now: records the stall (`Kernel.recordStall`), says so through `say`,
    /// and ends the process with `exitStatus` at once. Returns when it is not stalled (or the call returned while the
    /// record was written). For a host stopping: shutting down would wait for the stalled call for ever.
    public static func exitIfStalled(_ kernel: Kernel, say: (String) -> Void) {
        guard let stall = kernel.lifecycleStall else { return }
        recordAndExit(kernel, stall) { say("keel: the lifecycle is stalled (\(stall)); exiting without deactivating the plugins" + $0) }
    }

    /// Records `stall` and ends the process with `exitStatus`, after `say` was given the tail of the line to tell
    /// (where the record is). Returns, having done nothing else, when the call returned while the record was being
    /// written (which then leaves none): no stall after all.
    /// `_exit`, not `exit`: no atexit handler or library destructor runs beside the thread stuck in plugin code (one
    /// could wait for a lock that thread holds, or crash and overwrite the record).
    private static func recordAndExit(_ kernel: Kernel, _ stall: LifecycleStall, say: (String) -> Void) {
        let record = kernel.recordStall(stall)
        guard record != nil || kernel.lifecycleStall != nil else { return }
        say(record.map { "; the next start quarantines \"\(stall.plugin)\" (stall record: \($0))" } ?? "")
        _exit(exitStatus)
    }

    /// Watches until the task is cancelled.
    public func run() async {
        var reported: LifecycleStall?
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            guard let stall = kernel.lifecycleStall else {
                if let done = reported {
                    log(LogRecord(level: .warn, pluginID: done.plugin, message: "the host's lifecycle runs again: \(done.call) of generation \(done.generation) returned"))
                    reported = nil
                }
                continue
            }
            if exits || stopping() {
                Self.recordAndExit(kernel, stall) { tail in
                    log(LogRecord(level: .error, pluginID: stall.plugin,
                                  message: "the host's lifecycle is stalled: \(stall); exiting (\(exits ? "--exit-on-stall" : "stopping"))" + tail))
                }
                continue
            }
            if reported?.sequence != stall.sequence {
                log(LogRecord(level: .error, pluginID: stall.plugin,
                              message: "the host's lifecycle is stalled: \(stall); lifecycle commands and the admin API answer 503 lifecycle-stalled until it returns; \(stall.remedy)"))
                reported = stall
            }
        }
    }
}
