// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc

/// The id of the HTTP request whose plugin code this thread is running, so that a line a handler or hook logs
/// through `host->log` (and any host line logged on that thread meanwhile) carries the request id in the structured
/// log. Per thread, set and put back around one synchronous stretch of plugin calls; scopes nest.
public enum RequestScope {
    /// One request's id, kept alive by the caller for as long as its scope runs.
    public final class Tag: Sendable {
        public let id: String
        public init(_ id: String) { self.id = id }
    }

    /// Runs `body` with `tag` as this thread's request; puts the outer one back afterwards. [thread-safe]
    /// Inlinable: the dispatcher calls it twice per request, and a generic call across modules would look up the
    /// result type's metadata each time.
    @inlinable
    public static func with<T, E: Error>(_ tag: Tag?, _ body: () throws(E) -> T) throws(E) -> T {
        guard let tag else { return try body() }
        let outer = pthread_getspecific(requestKey)
        pthread_setspecific(requestKey, Unmanaged.passUnretained(tag).toOpaque())
        defer { pthread_setspecific(requestKey, outer) }
        return try withExtendedLifetime(tag) { () throws(E) -> T in try body() }
    }

    /// The id of the request this thread is serving, nil outside a scope. [thread-safe]
    public static var current: String? {
        pthread_getspecific(requestKey).map { Unmanaged<Tag>.fromOpaque($0).takeUnretainedValue().id }
    }

    /// An incoming `X-Request-Id` when it is sane (1 to 128 characters of `A-Z a-z 0-9 - _ . : /`), else nil: an id
    /// that goes into every log line must not carry control characters, quotes or an unbounded length.
    public static func sane(_ given: String?) -> String? {
        guard let given, !given.isEmpty, given.utf8.count <= 128 else { return nil }
        let allowed = given.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == 0x2D || b == 0x5F || b == 0x2E || b == 0x3A || b == 0x2F
        }
        return allowed ? given : nil
    }
}

/// The per-thread slot behind `RequestScope.current` (made once, never destroyed).
@usableFromInline
let requestKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()
