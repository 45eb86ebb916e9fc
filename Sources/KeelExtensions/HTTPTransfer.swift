// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization

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
