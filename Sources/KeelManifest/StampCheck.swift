// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization

/// The check a scan left for later: the cached manifests it used without looking at their files
/// (`BundleScanner.scan(_:bundleFolders:cache:prefetched:deferringChecks:log:)`), each to be compared with one `stat`
/// of its plugin.yaml, as an ordinary scan compares them before use.
///
/// The check runs on a thread of its own (`start()`) while the caller goes on with what it found; `changedFolders()`
/// waits for it. A caller must not let a bundle's code run, or act on its manifest in a way it cannot take back,
/// before the check said its folder is unchanged: a start-up parks idle plugins meanwhile, and scans again (without
/// deferring) when any folder changed.
///
/// Thread-safe: `start()` once, then `changedFolders()` from any thread, any number of times.
public final class StampCheck: Sendable {
    /// One cached manifest used unchecked: its bundle folder, its plugin.yaml relative to `directory` (nil: by its
    /// full path, a bundle folder named one by one), and the identity the cache recorded.
    struct Item: Sendable {
        var folder: String, relative: String?, stamp: ManifestCache.Stamp
    }

    let directory: String
    let items: [Item]
    /// The next item no thread has claimed yet (items are claimed `chunk` at a time).
    private let next = Atomic<Int>(0)
    /// Items not yet checked: whichever thread checks the last ones signals `finished`.
    private let unchecked: Atomic<Int>
    /// The indices of the items found changed so far, in no order.
    private let changedIndices = Mutex<[Int]>([])
    /// The answer, once a caller has waited for it.
    private let answer = Mutex<[String]?>(nil)
    private let finished = DispatchSemaphore(value: 0)
    private static let chunk = 32

    init(directory: String, items: [Item]) {
        self.directory = directory
        self.items = items
        unchecked = Atomic(items.count)
    }

    /// How many manifests the check looks at.
    public var count: Int { items.count }

    /// Starts the check on a global dispatch queue (not Swift's cooperative pool, which it would hold up).
    public func start() {
        DispatchQueue.global().async { [self] in work() }
    }

    /// The bundle folders whose plugin.yaml is not the file the cache recorded (changed, replaced, removed or no
    /// longer a regular file), in the scan's order. The calling thread checks the items the started thread has not
    /// reached yet (so that a caller never waits idle for a busy core), then waits for the ones in its hands.
    public func changedFolders() -> [String] {
        if let done = answer.withLock({ $0 }) { return done }
        guard !items.isEmpty else { return [] }
        work()
        finished.wait()
        finished.signal()  // later callers (and other threads) do not wait again
        let folders = changedIndices.withLock { $0 }.sorted().map { items[$0].folder }
        answer.withLock { $0 = folders }
        return folders
    }

    /// Checks items, a chunk at a time, until none is left unclaimed: one `stat` each, relative to the plugin folder
    /// where it can (a walk of two path components, not the whole path), else by the full path. A folder that cannot
    /// be opened now counts every item in it as changed.
    private func work() {
        guard next.load(ordering: .relaxed) < items.count else { return }
        let directoryFD = items.contains { $0.relative != nil } ? open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1
        defer { if directoryFD >= 0 { close(directoryFD) } }
        while true {
            let begin = next.wrappingAdd(Self.chunk, ordering: .relaxed).oldValue
            guard begin < items.count else { return }
            let end = min(begin + Self.chunk, items.count)
            var found: [Int] = []
            for index in begin..<end {
                let item = items[index]
                let now: ManifestCache.Stamp?
                if let relative = item.relative {
                    now = directoryFD >= 0 ? ManifestCache.Stamp(at: directoryFD, relative) : nil
                } else {
                    now = ManifestCache.Stamp(path: item.folder + "/" + ManifestLoader.fileName)
                }
                if now != item.stamp { found.append(index) }
            }
            if !found.isEmpty { changedIndices.withLock { $0 += found } }
            if unchecked.subtract(end - begin, ordering: .acquiringAndReleasing).newValue == 0 { finished.signal() }
        }
    }
}
