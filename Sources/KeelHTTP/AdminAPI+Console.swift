// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Hummingbird
import Keel
import KeelState
import Synchronization

/// The admin API's part for the console's views (admin token only). Reads answer from the kernel and the state
/// store; every change is a `KernelCommand`, as everywhere else.
///
/// | route | answers |
/// |---|---|
/// | `GET /api/v1/overview` | host version, start time and uptime, plugin counts by state, failures with reasons, the recent change events |
/// | `GET /api/v1/plugins/<id>/config/schema` | `{"schema": <the bundle's config.schema.yaml as JSON, or null>}`; 404 `unknown-plugin`, 422 `bundle` for an unreadable schema |
/// | `PUT /api/v1/plugins/<id>/config` (AdminAPI.swift) | a configuration the schema refuses is 422 `bad-config` with the file, key and reason |
/// | `GET /api/v1/trust`, `POST /api/v1/trust` `{"name", "publicKey"}` | trusted signing keys; a key that is not 32 bytes of base64 is 400 `bad-key` |
/// | `DELETE /api/v1/trust/<name>` | stops trusting a key: `{"deleted", "note"}`, the note naming the key's fingerprint and the plugins pinned to it; 404 when no key has that name |
/// | `DELETE /api/v1/repositories/<name>` | forgets a repository |
extension AdminAPI {
    func registerConsole(admin: RouterGroup<KeelRequestContext>) {
        let kernel = self.kernel
        let recent = RecentEvents(limit: 20)
        recent.follow(kernel.events)
        let started = Date()

        admin.get("overview") { _, _ -> Response in
            let plugins = try await kernel.plugins()
            var counts = Dictionary(uniqueKeysWithValues: PluginStatus.allCases.map { ($0.rawValue, 0) })
            for p in plugins { counts[p.status.rawValue, default: 0] += 1 }
            let failures = plugins.filter { $0.status == .failed || ($0.enabled && $0.status != .enabled) }.map {
                OverviewBody.Failure(id: $0.id, name: $0.name, status: $0.status.rawValue, reason: $0.reason ?? "", since: $0.changedAt)
            }
            return JSONBody.response(OverviewBody(
                version: Kernel.version, startedAt: started.formatted(.iso8601),
                uptimeSeconds: Int(Date().timeIntervalSince(started)), plugins: plugins.count, byState: counts,
                failures: failures, tenants: kernel.access.directory.tenants.count,
                repositories: (try? kernel.state.repositories().count) ?? 0, events: recent.events))
        }
        admin.get("plugins/:id/config/schema") { _, context -> Response in
            let id = try context.parameters.require("id")
            let schema: String?
            do { schema = try await kernel.configSchema(id) } catch { throw Self.apiError(error) }
            return JSONBody.rawResponse("{\"schema\":\(schema ?? "null")}")
        }
        admin.get("trust") { _, _ -> Response in
            let set = try kernel.state.trustedKeySet()
            return JSONBody.response(set.keys.sorted { $0.key < $1.key }.map {
                TrustBody(name: $0.key, publicKey: $0.value, fingerprint: ExtensionStore.fingerprint($0.value), only: set.scopes[$0.key])
            })
        }
        admin.post("trust") { request, context -> Response in
            let body = try await self.body(TrustBody.self, request, context)
            guard Data(base64Encoded: body.publicKey)?.count == 32 else {
                throw APIError(.badRequest, "bad-key", "\"\(body.name)\": not an ed25519 public key (32 bytes, base64)")
            }
            if let only = body.only, let problem = TrustScope.problem(only) { throw APIError(.badRequest, "bad-scope", problem) }
            try await run(.trustKey(name: body.name, publicKey: body.publicKey, only: body.only))
            return JSONBody.response(["name": body.name], status: .created)
        }
        admin.delete("trust/:name") { _, context -> Response in
            let name = try context.parameters.require("name")
            let result = try await run(.untrustKey(name: name))
            return JSONBody.response(["deleted": name] .merging(result.note.map { ["note": $0] } ?? [:]) { $1 })
        }
        admin.delete("repositories/:name") { _, context -> Response in
            let name = try context.parameters.require("name")
            try await run(.removeRepository(name: name))
            return JSONBody.response(["deleted": name])
        }
    }
}

/// The last few kernel change events, newest last, for the overview (the live stream only tells what happens from
/// now on). Thread-safe. It follows one kernel's events for as long as the process lives.
final class RecentEvents: Sendable {
    private let kept = Mutex<[OverviewBody.Event]>([])
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    func follow(_ events: KernelEvents) {
        events.subscribeNow { [self] event in self.add(event) }
    }

    var events: [OverviewBody.Event] { kept.withLock { $0 } }

    private func add(_ event: KernelEvent) {
        let at = Timestamp.now()
        let entry: OverviewBody.Event
        switch event {
        case let .executed(command, actor, failure):
            entry = .init(at: at, kind: "executed", op: command.name, subject: command.subject, actor: actor,
                          ok: failure == nil, failure: failure)
        case .pluginsChanged:
            entry = .init(at: at, kind: "plugins-changed", op: nil, subject: nil, actor: nil, ok: nil, failure: nil)
        }
        kept.withLock { list in
            list.append(entry)
            if list.count > limit { list.removeFirst(list.count - limit) }
        }
    }
}

struct OverviewBody: Encodable {
    struct Failure: Encodable { var id, name, status, reason, since: String }
    struct Event: Encodable, Sendable {
        var at, kind: String
        var op, subject, actor: String?
        var ok: Bool?
        var failure: String?
    }
    var version: String
    var startedAt: String
    var uptimeSeconds: Int
    var plugins: Int
    /// Every `PluginStatus` with its count (0 included).
    var byState: [String: Int]
    /// Plugins that failed, or that the operator enabled and that are not serving.
    var failures: [Failure]
    var tenants: Int
    var repositories: Int
    /// The last 20 change events since the server started, oldest first.
    var events: [Event]
}

/// A trusted key: `POST /api/v1/trust` takes name and publicKey; `GET` adds each key's fingerprint (how a plugin's
/// pinned signer names it).
/// A trusted key; `only`: the plugin ids it may sign (`TrustScope` patterns), absent for any.
struct TrustBody: Codable { var name: String; var publicKey: String; var fingerprint: String?; var only: [String]? }
