// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelManifest
import KeelState
import Synchronization

/// The repositories' indexes as the server shows them: cached per repository (name and location) for `ttl`
/// seconds (`KEEL_REPO_CACHE_TTL`, default 60 s; a failure is kept at most 10 s), refreshed in the background.
///
/// A request answers from the cache at once; when an entry is older than its time to live it still answers with it
/// and starts one refresh in the background. Only a repository never read yet makes the request wait, for at most
/// the fetcher's total time-out (a slow or dead repository then shows as a problem line). Concurrent requests share
/// one refresh per repository, and reads never block a thread. Thread-safe.
public final class RepositoryCatalog: Sendable {
    let store: ExtensionStore
    let ttl: Double
    static let failureTTL = 10.0

    struct Slot {
        var result: Result<RepositoryIndex, any Error>?
        var fetchedAt = ContinuousClock.now
        var refresh: Task<Void, Never>?
    }

    private let slots = Mutex<[String: Slot]>([:])

    public init(store: ExtensionStore, ttl: Double? = nil) {
        self.store = store
        self.ttl = ttl ?? ProcessInfo.processInfo.environment["KEEL_REPO_CACHE_TTL"].flatMap(Double.init).flatMap { $0 >= 0 ? $0 : nil } ?? 60
    }

    static func key(_ repo: StateStore.Repository) -> String { repo.name + "\n" + repo.location }

    /// Every repository's offers, and a problem line per repository that could not be read.
    /// - Throws: only when the list of repositories cannot be read from the state store.
    public func indexes() async throws -> (offers: [ExtensionStore.Offer], problems: [String]) {
        let repos = try store.state.repositories()
        let keys = Set(repos.map(Self.key))
        var waits: [Task<Void, Never>] = []
        slots.withLock { slots in
            slots = slots.filter { keys.contains($0.key) || $0.value.refresh != nil }
            for repo in repos {
                let key = Self.key(repo)
                var slot = slots[key] ?? Slot()
                let age = Double((ContinuousClock.now - slot.fetchedAt).components.seconds)
                let limit = (try? slot.result?.get()) == nil ? min(ttl, Self.failureTTL) : ttl
                if slot.refresh == nil && (slot.result == nil || age >= limit) {
                    slot.refresh = Task { [self] in await refresh(repo) }
                }
                if slot.result == nil, let refresh = slot.refresh { waits.append(refresh) }
                slots[key] = slot
            }
        }
        for wait in waits { await wait.value }
        var offers: [ExtensionStore.Offer] = [], problems: [String] = []
        let results = slots.withLock { slots in repos.map { slots[Self.key($0)]?.result } }
        for (repo, result) in zip(repos, results) {
            ExtensionStore.gather(repo, result ?? .failure(ExtensionStore.StoreError("still being read")), into: &offers, &problems)
        }
        return (offers, problems)
    }

    func refresh(_ repo: StateStore.Repository) async {
        let result = await store.fetchIndex(repo)
        slots.withLock { slots in
            slots[Self.key(repo)] = Slot(result: result, fetchedAt: .now, refresh: nil)
        }
    }
}
