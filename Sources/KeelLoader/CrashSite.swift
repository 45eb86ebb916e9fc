// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelSystem

/// One place the host calls plugin code from (a route handler, an auth hook, a command, activate), prepared once
/// when the place is set up: what the fatal-signal handler names when the host dies during such a call (see
/// `keel_crash.h`). Marking a call costs two thread-local stores; nothing is allocated or locked per call.
///
/// `@unchecked Sendable` because of `record`, a C struct written once in `init` and only read afterwards (by the
/// signal handler, from any thread); it is freed in `deinit`, after the last call that could be marked with it,
/// since the object that calls the plugin holds its site.
final class CrashSite: @unchecked Sendable {
    let record: UnsafeMutablePointer<keel_crash_site>

    init(plugin: String, generation: Int, what: String) {
        record = .allocate(capacity: 1)
        keel_crash_site_init(record, plugin, UInt64(max(0, generation)), what)
    }

    deinit { record.deallocate() }

    /// Runs `call` (the call into plugin code, nothing more) marked with this site on the calling thread.
    @inline(__always)
    func around<R>(_ call: () throws -> R) rethrows -> R {
        let outer = keel_crash_enter(record)
        defer { keel_crash_leave(outer) }
        return try call()
    }
}

/// The process-wide half of crash attribution: the fatal-signal handler and the address ranges of loaded plugin
/// libraries.
public enum CrashGuard {
    /// Installs the handler for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT: when the process dies of one, a crash
    /// record goes to `recordPath` (see `keel_crash.h`) and the process dies of the same signal. A later call only
    /// changes the path (the last kernel to start in a process wins). Returns false when it could not be installed.
    /// [any thread]
    @discardableResult
    public static func install(recordPath: String) -> Bool { keel_crash_install(recordPath) == 0 }

    /// Registers the library containing `address` as plugin `id`, generation `generation`. [any thread]
    static func register(_ address: UnsafeRawPointer, plugin id: String, generation: Int) {
        _ = keel_crash_register_library(address, id, UInt64(max(0, generation)))
    }

    /// Forgets the library containing `address` before it is unmapped. [any thread]
    static func unregister(_ address: UnsafeRawPointer) { keel_crash_unregister_library(address) }

    /// The plugin and generation whose registered library contains `address`, or nil. [any thread]
    public static func owner(of address: UnsafeRawPointer) -> (plugin: String, generation: Int)? {
        var name = [CChar](repeating: 0, count: 80)
        let generation = keel_crash_owner(address, &name, name.count)
        guard generation >= 0 else { return nil }
        return (String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), Int(generation))
    }
}

extension ActivationContext {
    /// A site for calls into this activation's code: `what` names the call, e.g. `handler GET /ext/x/items/:id`.
    func crashSite(_ what: String) -> CrashSite { CrashSite(plugin: pluginID, generation: identity.generation, what: what) }
}
