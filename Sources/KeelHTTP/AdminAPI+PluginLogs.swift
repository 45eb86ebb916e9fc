// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Hummingbird
import Keel

/// A plugin's recent log lines and its health.
///
/// | route | who |
/// |---|---|
/// | `GET /api/v1/plugins/<id>/logs[?after=SEQ]` | admin token only: `{"plugin", "lines": [{seq, at, level, message}]}`, oldest first |
/// | `GET /api/v1/plugins/<id>/health` | admin token only: state, generation, last error, requests, error rate and p99 over the last minute, the plugin's own check (`check`, null without one) |
extension AdminAPI {
    func registerPluginLogs(admin: RouterGroup<KeelRequestContext>) {
        admin.get("plugins/:id/logs") { request, context -> Response in
            let id = try context.parameters.require("id")
            // Which plugins exist is the kernel's to say; while its lifecycle is stalled it cannot, and the logs are
            // what the operator looks at then (an unknown id has none).
            if kernel.lifecycleStall == nil {
                do { _ = try await kernel.plugin(id) } catch { throw Self.apiError(error) }
            }
            let after = request.uri.queryParameters.get("after").flatMap { Int64($0) } ?? 0
            return JSONBody.response(LogsBody(plugin: id, lines: kernel.logs.lines(id, after: after)))
        }
        admin.get("plugins/:id/health") { _, context -> Response in
            let id = try context.parameters.require("id")
            let info: PluginInfo
            do { info = try await kernel.plugin(id) } catch { throw Self.apiError(error) }
            let lastError = kernel.logs.lines(id).last { $0.level == "error" }
            let window = gatekeeper.metrics?.window(plugin: id).summary()
            return JSONBody.response(HealthDetail(
                plugin: id, state: info.status.rawValue, enabled: info.enabled, generation: await kernel.activeGeneration(id),
                reason: info.reason, lastError: lastError, measured: window != nil, requests: window?.requests ?? 0,
                failed: window?.failed ?? 0,
                errorRate: window.flatMap { $0.requests > 0 ? Double($0.failed) / Double($0.requests) : nil },
                p99Milliseconds: window?.p99Milliseconds, check: gatekeeper.health?.result(id)))
        }
    }
}

struct LogsBody: Encodable {
    var plugin: String
    var lines: [PluginLogs.Line]
}

/// A plugin's health: `requests`, `failed` (5xx), `errorRate` and `p99Milliseconds` cover the last minute, and are
/// measured only while the server measures requests (`measured` false with `--no-metrics`).
struct HealthDetail: Encodable {
    var plugin: String
    var state: String
    var enabled: Bool
    var generation: Int?
    /// Why it failed, when it did (stored with its state).
    var reason: String?
    /// Its last error-level log line, from the host or the plugin.
    var lastError: PluginLogs.Line?
    var measured: Bool
    var requests: Int
    var failed: Int
    var errorRate: Double?
    var p99Milliseconds: Double?
    /// The last result of the plugin's own health check ("keel.health/1"), nil when it has none or it has not run.
    var check: HealthMonitor.Result?

    func encode(to encoder: any Encoder) throws {
        // Explicit nulls: a reader sees every key.
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(plugin, forKey: .plugin); try c.encode(state, forKey: .state); try c.encode(enabled, forKey: .enabled)
        try c.encode(generation, forKey: .generation); try c.encode(reason, forKey: .reason)
        try c.encode(lastError, forKey: .lastError); try c.encode(measured, forKey: .measured)
        try c.encode(requests, forKey: .requests); try c.encode(failed, forKey: .failed)
        try c.encode(errorRate, forKey: .errorRate); try c.encode(p99Milliseconds, forKey: .p99Milliseconds)
        try c.encode(check, forKey: .check)
    }

    enum CodingKeys: String, CodingKey {
        case plugin, state, enabled, generation, reason, lastError, measured, requests, failed, errorRate, p99Milliseconds, check
    }
}
