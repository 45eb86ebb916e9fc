// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
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

    public init(connectTimeout: Double = 10, totalTimeout: Double = 30) {
        self.connectTimeout = connectTimeout
        self.totalTimeout = totalTimeout
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

    func transferBlocking(_ location: String, maxBytes: Int, sink: @escaping @Sendable (Data) throws -> Void) throws {
        Self.limiter.acquireBlocking()
        defer { Self.limiter.release() }
        let done = DispatchSemaphore(value: 0)
        let result = LockedBox<Result<Void, ExtensionStore.StoreError>?>(nil)
        let transfer = try HTTPTransfer(location: location, fetcher: self, maxBytes: maxBytes, sink: sink) { r in
            result.value = r
            done.signal()
        }
        transfer.start()
        done.wait()
        try (result.value ?? .success(())).get()
    }

    func transfer(_ location: String, maxBytes: Int, sink: @escaping @Sendable (Data) throws -> Void) async throws {
        await Self.limiter.acquire()
        defer { Self.limiter.release() }
        let box = LockedBox<HTTPTransfer?>(nil)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                do {
                    let transfer = try HTTPTransfer(location: location, fetcher: self, maxBytes: maxBytes, sink: sink) { c.resume(with: $0) }
                    box.value = transfer
                    transfer.start()
                } catch {
                    c.resume(throwing: error)
                }
            }
        } onCancel: {
            box.value?.cancel(reason: "cancelled")
        }
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
            let fd = s.fd
            let ok = chunk.withUnsafeBytes { raw -> Bool in
                guard let base = raw.baseAddress else { return true }
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.write(fd, base + offset, raw.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return false }
                    offset += n
                }
                return true
            }
            guard ok else { throw ExtensionStore.StoreError("\(path): cannot be written: \(String(cString: strerror(errno)))") }
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

/// One HTTP GET through URLSession's download API, ending by calling `done` exactly once (success, or a one-line
/// reason). FoundationNetworking writes the body to its own temporary file and counts the bytes as they arrive, but
/// it tells the delegate through a queue without back-pressure (each queued call holds its chunk), so a watchdog
/// polls the count every 5 ms and cancels as soon as it (or the announced length) passes `maxBytes`, or the total
/// time-out passes: what piles up is bounded by the time to cancel, not by the body's size. The finished file is
/// handed to `sink` in chunks, checked against the limit again.
/// `@unchecked Sendable`: the mutable state lives in a mutex; URLSession calls the delegate on its own serial queue,
/// and the watchdog timer's own calls are thread-safe.
final class HTTPTransfer: NSObject, URLSessionDownloadDelegate, @unchecked Sendable {
    let location: String
    let maxBytes: Int
    let fetcher: RepositoryFetcher
    let sink: @Sendable (Data) throws -> Void
    let done: @Sendable (Result<Void, ExtensionStore.StoreError>) -> Void
    private let state = Mutex<(failure: String?, finished: Bool, task: URLSessionDownloadTask?, session: URLSession?, written: Int64)>((nil, false, nil, nil, 0))
    /// Checks the limit and the total time-out (see `start`); its own calls are thread-safe.
    private let watchdog = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
    private let started = Date()

    init(location: String, fetcher: RepositoryFetcher, maxBytes: Int, sink: @escaping @Sendable (Data) throws -> Void,
         done: @escaping @Sendable (Result<Void, ExtensionStore.StoreError>) -> Void) throws {
        guard URL(string: location) != nil else { throw ExtensionStore.StoreError("\(location): not a URL") }
        self.location = location
        self.fetcher = fetcher
        self.maxBytes = maxBytes
        self.sink = sink
        self.done = done
    }

    func start() {
        guard let url = URL(string: location) else {
            watchdog.resume()  // a timer source must not be released while suspended
            return finish(.failure(.init("\(location): not a URL")))
        }
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = fetcher.connectTimeout
        configuration.timeoutIntervalForResource = fetcher.totalTimeout
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let session = URLSession(configuration: configuration, delegate: self, delegateQueue: queue)
        var request = URLRequest(url: url)
        request.timeoutInterval = fetcher.connectTimeout
        let task = session.downloadTask(with: request)
        state.withLock { $0.task = task; $0.session = session }
        // A watchdog on its own queue: FoundationNetworking counts received bytes as they arrive but tells the
        // delegate through a queue that can fall far behind a fast server (every queued call holds its chunk), so
        // the limit and the total time-out are checked here, every 5 ms, and the transfer is cancelled at once.
        let total = fetcher.totalTimeout, limit = Int64(maxBytes)
        watchdog.schedule(deadline: .now() + .milliseconds(5), repeating: .milliseconds(5))
        watchdog.setEventHandler { [weak self, weak task] in
            guard let self, let task else { return }
            if task.countOfBytesExpectedToReceive > limit {
                cancel(reason: "larger than the limit of \(maxBytes) bytes (\(task.countOfBytesExpectedToReceive) announced); refused")
            } else if task.countOfBytesReceived > limit {
                cancel(reason: "larger than the limit of \(maxBytes) bytes; download stopped and refused")
            } else if -started.timeIntervalSinceNow > total {
                cancel(reason: "no complete answer within \(Self.seconds(total)) (the repository time-out)")
            }
        }
        watchdog.resume()
        task.resume()
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : "\(s) s" }

    /// Stops the transfer; `reason` is what `done` reports.
    func cancel(reason: String) {
        let task = state.withLock { s -> URLSessionDownloadTask? in
            guard !s.finished, s.failure == nil else { return nil }
            s.failure = reason
            s.written = max(s.written, s.task?.countOfBytesReceived ?? 0)
            return s.task
        }
        task?.cancel()
    }

    func urlSession(_ session: URLSession, downloadTask: URLSessionDownloadTask, didWriteData bytesWritten: Int64,
                    totalBytesWritten: Int64, totalBytesExpectedToWrite: Int64) {
        state.withLock { $0.written = max($0.written, totalBytesWritten) }
        if totalBytesExpectedToWrite > Int64(maxBytes) {
            cancel(reason: "larger than the limit of \(maxBytes) bytes (\(totalBytesExpectedToWrite) announced); refused")
        } else if totalBytesWritten > Int64(maxBytes) {
            cancel(reason: "larger than the limit of \(maxBytes) bytes; download stopped and refused")
        }
    }

    func urlSession(_ session: URLSession, downloadTask: URLSessionDownloadTask, didFinishDownloadingTo file: URL) {
        defer { try? FileManager.default.removeItem(at: file) }
        guard state.withLock({ $0.failure }) == nil else { return }
        let status = (downloadTask.response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else { return cancel(reason: "HTTP \(status)") }
        do { try RepositoryFetcher.copyLocal(file.path, shownAs: location, maxBytes: maxBytes, sink) } catch {
            state.withLock { if $0.failure == nil { $0.failure = "\(error)" } }
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        let failure = state.withLock { $0.failure }
        if let failure {
            removeAbandonedFile()
            finish(.failure(.init(failure.hasPrefix(location) ? failure : "\(location): \(failure)")))
        } else if let error {
            finish(.failure(.init("\(location): unreachable: \(Self.describe(error, fetcher))")))
        } else {
            finish(.success(()))
        }
    }

    /// FoundationNetworking leaves a cancelled download's file (`<UUID>.tmp` in the temporary folder) behind and does
    /// not say its name. Removes it when exactly one such file was written since the transfer started and holds at
    /// least what was reported written; when that is ambiguous, the file is left for the system's clean-up.
    private func removeAbandonedFile() {
        let written = state.withLock { $0.written }
        guard written > 0 else { return }
        let folder = NSTemporaryDirectory()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        let candidates = names.filter { name in
            guard name.hasSuffix(".tmp"), UUID(uuidString: String(name.dropLast(4))) != nil else { return false }
            var st = stat()
            guard stat(folder + "/" + name, &st) == 0 else { return false }
            return Int64(st.st_size) >= written && Double(st.st_mtim.tv_sec) >= started.timeIntervalSince1970.rounded(.down)
        }
        if candidates.count == 1 { try? FileManager.default.removeItem(atPath: folder + "/" + candidates[0]) }
    }

    private func finish(_ result: Result<Void, ExtensionStore.StoreError>) {
        let (first, session) = state.withLock { s -> (Bool, URLSession?) in
            guard !s.finished else { return (false, nil) }
            s.finished = true
            defer { s.session = nil; s.task = nil }
            return (true, s.session)
        }
        guard first else { return }
        watchdog.cancel()
        session?.finishTasksAndInvalidate()
        done(result)
    }

    /// URL errors as one line, never Foundation's text.
    static func describe(_ error: any Error, _ fetcher: RepositoryFetcher) -> String {
        guard let code = (error as? URLError)?.code else { return "network error" }
        switch code {
        case .timedOut: return "no answer within \(seconds(fetcher.connectTimeout)) (the connect time-out)"
        case .cannotConnectToHost: return "connection refused"
        case .cannotFindHost, .dnsLookupFailed: return "unknown host"
        case .networkConnectionLost: return "the connection was closed early"
        case .notConnectedToInternet: return "no network"
        case .secureConnectionFailed, .serverCertificateUntrusted, .serverCertificateHasBadDate, .serverCertificateNotYetValid,
             .serverCertificateHasUnknownRoot, .clientCertificateRejected:
            return "TLS failed (certificate or handshake)"
        case .badServerResponse: return "not a valid HTTP answer"
        default: return "network error \(code.rawValue)"
        }
    }
}
