// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Reads repository files (indexes and archives) from a folder, `file://` or `http(s)://` location, with limits.
///
/// Network reads have real time-outs: `connectTimeout` (connecting, and any silence of the server: default 10 s) and
/// `totalTimeout` (the whole transfer: default 30 s); the environment variables `KEEL_REPO_CONNECT_TIMEOUT` and
/// `KEEL_REPO_TIMEOUT` (seconds) change them. At most `maxInFlight` network reads run at once in a process; more
/// wait their turn. A read stops as soon as it passes its byte limit. Errors are one line naming the location.
///
/// The `async` methods never block a thread (use them from request handlers); the others block the calling thread
/// until the transfer ends, so call them only from a thread of their own (the kernel's, the CLI's), never from
/// Swift's cooperative pool. Thread-safe.
public struct RepositoryFetcher: Sendable {
    public var connectTimeout: Double
    public var totalTimeout: Double
    public static let maxInFlight = 4

    /// Time-outs are clamped to 1 ms ... 1 day (a value that is not a finite number reads as the default).
    public init(connectTimeout: Double = 10, totalTimeout: Double = 30) {
        func clamped(_ s: Double, _ fallback: Double) -> Double { s.isFinite ? min(max(s, 0.001), 86_400) : fallback }
        self.connectTimeout = clamped(connectTimeout, 10)
        self.totalTimeout = clamped(totalTimeout, 30)
    }

    /// The defaults, changed by `KEEL_REPO_CONNECT_TIMEOUT` and `KEEL_REPO_TIMEOUT`.
    public static let standard: RepositoryFetcher = {
        let env = ProcessInfo.processInfo.environment
        func seconds(_ key: String, _ fallback: Double) -> Double { env[key].flatMap(Double.init).flatMap { $0 > 0 ? $0 : nil } ?? fallback }
        return RepositoryFetcher(connectTimeout: seconds("KEEL_REPO_CONNECT_TIMEOUT", 10), totalTimeout: seconds("KEEL_REPO_TIMEOUT", 30))
    }()

    static let limiter = FetchLimiter(RepositoryFetcher.maxInFlight)

    static func isRemote(_ location: String) -> Bool { location.hasPrefix("http://") || location.hasPrefix("https://") }
    static func localPath(_ location: String) -> String { location.hasPrefix("file://") ? String(location.dropFirst(7)) : location }

    // MARK: whole files (indexes)

    /// The file at `location`, at most `maxBytes`. Blocking.
    public func data(_ location: String, maxBytes: Int) throws -> Data {
        guard Self.isRemote(location) else { return try Self.readLocal(location, maxBytes: maxBytes) }
        let collector = Collector()
        try transferBlocking(location, maxBytes: maxBytes, sink: collector.append)
        return collector.data
    }

    /// The file at `location`, at most `maxBytes`, without blocking a thread on the network.
    public func data(_ location: String, maxBytes: Int) async throws -> Data {
        guard Self.isRemote(location) else { return try Self.readLocal(location, maxBytes: maxBytes) }
        let collector = Collector()
        try await transfer(location, maxBytes: maxBytes, sink: collector.append)
        return collector.data
    }

    static func readLocal(_ location: String, maxBytes: Int) throws -> Data {
        let path = localPath(location)
        var out = Data()
        try copyLocal(path, maxBytes: maxBytes) { out.append($0) }
        return out
    }

    /// Reads `path` in chunks into `sink`, refusing more than `maxBytes`; `shownAs` names it in errors.
    static func copyLocal(_ path: String, shownAs: String? = nil, maxBytes: Int, _ sink: (Data) throws -> Void) throws {
        let shown = shownAs ?? path
        guard FileManager.default.fileExists(atPath: path) else { throw ExtensionStore.StoreError("\(shown): unreachable: no such file") }
        var source: PackageArchive.FileSource
        do { source = try PackageArchive.FileSource(path: path, shownAs: shown) } catch { throw ExtensionStore.StoreError("\(error)") }
        defer { source.close() }
        var total = 0
        while true {
            let chunk: Data
            do { chunk = try source.read(PackageArchive.chunkSize) } catch { throw ExtensionStore.StoreError("\(error)") }
            if chunk.isEmpty { return }
            total += chunk.count
            guard total <= maxBytes else { throw ExtensionStore.StoreError("\(shown): larger than the limit of \(maxBytes) bytes; refused") }
            try sink(chunk)
        }
    }

    // MARK: archives

    /// Copies `location` into the new file `path` (at most `maxBytes`, stopped as soon as it passes), computing its
    /// SHA-256 on the way. Blocking. The caller removes `path`.
    public func download(_ location: String, to path: String, maxBytes: Int) throws -> SHA256.Digest {
        let writer = try DigestWriter(path: path)
        if Self.isRemote(location) {
            try transferBlocking(location, maxBytes: maxBytes, sink: writer.write)
        } else {
            try Self.copyLocal(Self.localPath(location), maxBytes: maxBytes, writer.write)
        }
        return try writer.finish()
    }

    /// The SHA-256 of a local file, read in chunks (at most `maxBytes`).
    public static func digest(ofFile path: String, maxBytes: Int) throws -> SHA256.Digest {
        var hasher = SHA256()
        try copyLocal(path, maxBytes: maxBytes) { hasher.update(data: $0) }
        return hasher.finalize()
    }

    // MARK: transfers

    /// `transfer`, waited for on the calling thread (any thread but one of NIO's event loops).
    func transferBlocking(_ location: String, maxBytes: Int, sink: @escaping @Sendable (Data) throws -> Void) throws {
        Self.limiter.acquireBlocking()
        defer { Self.limiter.release() }
        try HTTPTransfer.wait(location, fetcher: self, maxBytes: maxBytes, sink: sink)
    }

    /// One network read, after waiting for one of the `maxInFlight` slots.
    func transfer(_ location: String, maxBytes: Int, sink: @escaping @Sendable (Data) throws -> Void) async throws {
        await Self.limiter.acquire()
        defer { Self.limiter.release() }
        try await HTTPTransfer.run(location, fetcher: self, maxBytes: maxBytes, sink: sink)
    }
}

/// A value shared between threads. Safe to share: guarded by a mutex.
final class LockedBox<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>
    init(_ value: Value) { storage = Mutex(value) }
    var value: Value {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }
}

/// Bytes collected from a transfer. Safe to share: the data is guarded by a mutex.
final class Collector: Sendable {
    private let buffer = Mutex(Data())
    var data: Data { buffer.withLock { $0 } }
    @Sendable func append(_ chunk: Data) { buffer.withLock { $0.append(chunk) } }
}

/// Writes a download to a new file and hashes it on the way. Safe to share: state is guarded by a mutex, and the
/// sink is called by one transfer at a time.
final class DigestWriter: Sendable {
    private let state: Mutex<(fd: Int32, hasher: SHA256)>
    let path: String

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ExtensionStore.StoreError("\(path): cannot be written: \(String(cString: strerror(errno)))") }
        state = Mutex((fd, SHA256()))
    }

    @Sendable func write(_ chunk: Data) throws {
        let path = self.path
        try state.withLock { s in
            s.hasher.update(data: chunk)
            guard PackageArchive.writeAll(s.fd, chunk) else { throw ExtensionStore.StoreError("\(path): cannot be written: \(String(cString: strerror(errno)))") }
        }
    }

    func finish() throws -> SHA256.Digest {
        state.withLock { s in
            if s.fd >= 0 { close(s.fd); s.fd = -1 }
            return s.hasher.finalize()
        }
    }

    deinit { state.withLock { s in if s.fd >= 0 { close(s.fd) } } }
}

/// Limits how many network reads run at once; waiters (async or blocking) are served in order.
/// Safe to share: the state is guarded by a mutex.
final class FetchLimiter: Sendable {
    enum Waiter { case task(CheckedContinuation<Void, Never>), thread(DispatchSemaphore) }
    private let state: Mutex<(free: Int, waiters: [Waiter])>

    init(_ slots: Int) { state = Mutex((slots, [])) }

    func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.free > 0 { s.free -= 1; return true }
                s.waiters.append(.task(c))
                return false
            }
            if now { c.resume() }
        }
    }

    func acquireBlocking() {
        let semaphore = DispatchSemaphore(value: 0)
        let now = state.withLock { s -> Bool in
            if s.free > 0 { s.free -= 1; return true }
            s.waiters.append(.thread(semaphore))
            return false
        }
        if !now { semaphore.wait() }
    }

    /// Hands the slot to the first waiter, or frees it.
    func release() {
        let next = state.withLock { s -> Waiter? in
            if s.waiters.isEmpty { s.free += 1; return nil }
            return s.waiters.removeFirst()
        }
        switch next {
        case .task(let c)?: c.resume()
        case .thread(let s)?: s.signal()
        case nil: break
        }
    }
}
