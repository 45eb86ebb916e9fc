// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import KeelLoader
import KeelManifest
import Synchronization

/// Starting a worker, activating the plugin in it, and restarting it after it ends (with a back-off, up to the
/// crash limit). Called from `start`, from the reader thread that saw a worker end, and from restart threads.
extension WorkerSupervisor {
    /// Starts a worker process with nothing loaded.
    func spawn() throws(LoadError) -> WorkerConnection {
        // The plugin's bundle: its library and plugin.yaml (and what lies beside them), absolute: the worker allows
        // only absolute folders, and a host started with relative ones (the default ./plugins) passes them on.
        let here = FileManager.default.currentDirectoryPath
        let readable = Set([activation.libraryPath, activation.manifestPath].map { path in
            let folder = (path as NSString).deletingLastPathComponent
            return folder.hasPrefix("/") ? folder : here + "/" + folder
        }).sorted()
        let handlers = WorkerConnection.Handlers(
            log: { [log] level, message in log(LogLevel(rawValue: level) ?? .error, message) },
            exited: { [weak self] connection, reason in self?.exited(connection, reason: reason) }, services: services)
        do { return try WorkerConnection.spawn(executable: executable, arguments: [], readable: readable,
                                                   network: activation.grants.contains(Capability.network.rawValue),
                                                   processes: activation.grants.contains(Capability.processes.rawValue),
                                                   threadLimit: policy.threadLimit, handlers: handlers) } catch {
            throw refusal("\(error)")
        }
    }

    /// Starts a spare worker in the background, when the policy asks for one and none is ready.
    func prepareSpare() {
        guard policy.spare, state.withLock({ !$0.stopped && $0.spare == nil }) else { return }
        let thread = Thread { [self] in
            guard let spare = try? spawn() else { return }
            let kept = state.withLock { s -> Bool in
                guard !s.stopped, s.spare == nil else { return false }
                s.spare = spare
                return true
            }
            if !kept { spare.terminate() }
        }
        thread.start()
    }

    /// Activates the plugin in the spare worker, or in a new one.
    func launch() throws(LoadError) -> (WorkerConnection, RemoteRegistrations) {
        let spare = state.withLock { s -> WorkerConnection? in
            defer { s.spare = nil }
            return s.spare
        }
        let connection: WorkerConnection
        if let spare, spare.isRunning { connection = spare } else { connection = try spawn() }
        let activation = self.activation
        let answer = connection.call({ id in
            var w = WireWriter(.activate, id: id)
            w.activation(activation)
            return w.frame
        }, timeout: policy.startTimeout)
        switch answer {
        case var .success(frame) where frame.kind == .activated:
            // Serving is answering calls after the activation: a worker that crashes right after activating
            // again and again backs off longer each time.
            connection.served.store(false, ordering: .relaxed)
            do throws(WireError) { return (connection, try frame.registrations()) } catch {
                connection.terminate()
                throw refusal("the worker sent malformed registrations (\(error))")
            }
        case var .success(frame):
            connection.terminate()
            // The worker's words go into the load history and the failure reason: bounded.
            throw refusal((try? frame.string()).map { $0.prefix(utf8Bytes: 4096) } ?? "the worker refused the activation")
        case let .failure(.crashed(reason)):
            throw refusal("the worker process \(reason) while loading or activating the plugin")
        case let .failure(.timedOut(seconds)):
            throw refusal("the worker did not load and activate the plugin within \(seconds) s; killed")
        }
    }

    func refusal(_ reason: String) -> LoadError {
        LoadError(.activationFailed, path: activation.libraryPath, pluginID: pluginID, reason: reason)
    }

    /// The reader thread of `connection` saw it end.
    func exited(_ connection: WorkerConnection, reason: String) {
        let decision: (restart: Bool, delay: Double, failure: String?) = state.withLock { s in
            if s.spare === connection { s.spare = nil }
            guard s.connection === connection, !s.stopped else { return (false, 0, nil) }
            s.connection = nil
            let time = Self.monotonic()
            s.crashes = s.crashes.filter { time - $0 < policy.crashWindow } + [time]
            // A worker that answered a call, or lived for a whole window, ends a run of crashes: one that crashes
            // rarely, idle or not, is never given up for crashes days apart.
            let lived = time - s.activatedAt >= policy.crashWindow
            s.crashesInARow = connection.served.load(ordering: .relaxed) || lived ? 1 : s.crashesInARow + 1
            if let why = Self.givingUp(s, policy) {
                defer { s.givenUp = true }
                return (true, policy.maximumBackoff, s.givenUp ? nil : "its worker process \(why) (last: \(reason))")
            }
            return (true, Self.backoff(afterCrashesInARow: s.crashesInARow, policy), nil)
        }
        if let failure = decision.failure {
            log(.error, failure)
            failed(failure)
        }
        guard decision.restart else { return }
        log(.error, "worker process \(connection.pid) \(reason); restarting" + (decision.delay > 0 ? " in \(Int(decision.delay * 1000)) ms" : ""))
        let restart = Thread { [self] in
            if decision.delay > 0 { usleep(UInt32(decision.delay * 1_000_000)) }
            restartNow()
        }
        restart.start()
    }

    /// Starts a new worker for the plugin and activates it there, again after a back-off while that fails, until it
    /// succeeds or the plugin is given up (`givingUp`). Runs on a thread of its own; a loop, not a recursion, so a
    /// worker that fails for hours does not deepen the stack.
    func restartNow() {
        while !state.withLock({ $0.stopped }) {
            let failure: LoadError
            do throws(LoadError) {
                let (connection, registrations) = try launch()
                let accepted = state.withLock { s -> Bool in
                    guard !s.stopped, registrations == s.registrations else { return false }
                    s.givenUp = false
                    s.connection = connection
                    s.activatedAt = Self.monotonic()
                    s.restarts += 1
                    return true
                }
                if accepted {
                    prepareSpare()
                    restarted()
                    return
                }
                connection.terminate()
                if !state.withLock({ $0.stopped }) {
                    state.withLock { $0.stopped = true }
                    failed("registered different routes or hooks after its worker restarted")
                }
                return
            } catch {
                failure = error
            }
            // Counted as a crash of its own: a worker that cannot start again backs off, then fails the plugin.
            let time = Self.monotonic()
            let give: (why: String?, delay: Double)? = state.withLock { s in
                guard !s.stopped else { return nil }
                s.crashes = s.crashes.filter { time - $0 < policy.crashWindow } + [time]
                s.crashesInARow += 1
                if let why = Self.givingUp(s, policy) {
                    defer { s.givenUp = true }
                    return (s.givenUp ? nil : why, policy.maximumBackoff)
                }
                return (nil, Self.backoff(afterCrashesInARow: s.crashesInARow, policy))
            }
            guard let give else { return }
            if let why = give.why {
                failed("its worker could not be restarted: it \(why) (last: \(failure.reason))")
            }
            log(.error, "the worker could not be restarted: \(failure.reason)")
            usleep(UInt32(give.delay * 1_000_000))
        }
    }

    /// How long to wait before the next start after `n` crashes (or failed restarts) in a row: none after the first,
    /// then `backoff`, doubling each time, at most `maximumBackoff`. One rule for a crash and a failed restart alike.
    static func backoff(afterCrashesInARow n: Int, _ policy: IsolationPolicy) -> Double {
        n <= 1 ? 0 : min(policy.backoff * pow(2, Double(min(n - 2, 30))), policy.maximumBackoff)
    }

    /// Why the plugin is given up after the crash just counted in `s`, or nil to restart it: `crashLimit` crashes
    /// within `crashWindow`, or `crashLimit` in a row, each worker (or failed restart) gone within `crashWindow` of
    /// its start with no call answered. The second matters once the back-off reaches `maximumBackoff`: at 5 s apart,
    /// 20 crashes never fit in 60 s, and a worker that crashes or refuses at every start was restarted for ever.
    static func givingUp(_ s: State, _ policy: IsolationPolicy) -> String? {
        if s.crashes.count >= policy.crashLimit {
            return "crashed \(s.crashes.count) times within \(Int(policy.crashWindow)) s"
        }
        if s.crashesInARow >= policy.crashLimit {
            return "crashed \(s.crashesInARow) times in a row without answering a call"
        }
        return nil
    }
}
