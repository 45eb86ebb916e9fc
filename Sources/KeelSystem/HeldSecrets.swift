// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization

/// The host's own secrets, taken out of its environment when it starts (`take`): the admin token, the metrics token
/// and the state database's password, alone or in a `KEEL_STATE` URL. Plugin code in the process could otherwise read them with `getenv` or from
/// `/proc/self/environ` (a security review's plugin with no grant answered `KEEL_ADMIN_TOKEN=...` to anyone); a
/// child never inherited them (`ChildEnvironment`). Code that reads one of these variables reads `environment`.
///
/// This closes the cheapest path, not every one: plugin code in the process can read the host's memory, where the
/// token is kept (see the README's security section). Thread-safe.
public enum HeldSecrets {
    /// The variables taken.
    public static let names: Set<String> = ["KEEL_ADMIN_TOKEN", "KEEL_METRICS_TOKEN", "PGPASSWORD"]
    /// Taken when they hold a URL (`postgres://keel:PASSWORD@db/keel` carries its password; a file path does not).
    public static let urlNames: Set<String> = ["KEEL_STATE"]

    /// What `take` took, and whether it ran.
    private static let held = Mutex<(values: [String: String], taken: Bool)>(([:], false))

    /// Takes `names` out of the environment, keeping their values for `environment`: each value's bytes are
    /// overwritten where they lie (so `/proc/self/environ` no longer shows them) and the variable is unset. Call it
    /// first thing in `main`, before any other thread reads or changes the environment (neither is thread-safe).
    public static func take() {
        var found: [String: String] = [:]
        var entry = environ
        while let text = entry.pointee {
            if let equals = strchr(text, Int32(UInt8(ascii: "="))) {
                let nameLength = text.distance(to: equals)
                let name = String(decoding: UnsafeRawBufferPointer(start: text, count: nameLength), as: UTF8.self)
                if names.contains(name) || (urlNames.contains(name) && strstr(equals + 1, "://") != nil) {
                    found[name] = String(cString: equals + 1)
                    memset(equals + 1, 0, strlen(equals + 1))
                }
            }
            entry += 1
        }
        for name in found.keys { unsetenv(name) }
        held.withLock { $0 = (found, true) }
    }

    /// The process's environment with the taken secrets back in it. Once `take` ran, `names` come from what it
    /// took alone, never from the environment as it is now: plugin code that `setenv`s `KEEL_ADMIN_TOKEN` in its
    /// activate (which runs before `keel serve` reads the token) would otherwise choose the admin token. Before
    /// `take` (a program embedding the kernel), the environment as it is.
    public static var environment: [String: String] {
        let (values, taken) = held.withLock { $0 }
        let live = ProcessInfo.processInfo.environment
        guard taken else { return live }
        return live.filter { !names.contains($0.key) && !(urlNames.contains($0.key) && $0.value.contains("://")) }
            .merging(values) { _, kept in kept }
    }
}
