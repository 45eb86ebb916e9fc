// swift-deploy: a consumer of gitops.sync/1 in Swift, served by whichever provider the operator chose.

import GitopsSync
import KeelPluginKit
import Synchronization

/// The provider changes heard, one line each ("<tenant or *> -> <provider or none>").
final class Heard: Sendable {
    let lines = Mutex<[String]>([])
}

final class SwiftDeploy: KeelPlugin, HealthChecking {
    /// This activation's host and configuration, set in `activate` (before any check can run).
    private var host: PluginHost?
    private var configuration = ""

    init() {}

    /// Healthy while a region is configured and a provider of gitops.sync/1 serves.
    func checkHealth() throws {
        guard configuration.contains("\"region\"") else { throw PluginError(.wrongState, "no region configured") }
        guard let host else { throw PluginError(.wrongState, "not active") }
        do {
            _ = try host.withService("gitops.sync/1", as: gitops_sync_v1.self) { try $0.info() }
        } catch let error as PluginError {
            throw PluginError(error.status, "no gitops.sync/1 provider serves (\(error.message))")
        }
    }

    func activate(_ host: PluginHost) throws {
        self.host = host
        let heard = Heard()
        try host.listen("gitops.sync/1") { _, tenant, now in
            heard.lines.withLock { $0.append("\(tenant.isEmpty ? "*" : tenant) -> \(now?.providerID ?? "none")") }
        }
        let configuration = try host.configuration()
        self.configuration = configuration

        // GET /sync/:app?rev: one lease for one request, for the caller's tenant; 503 while no provider serves.
        try host.route("GET", "/sync/:app") { request in
            do {
                return try Self.sync(request, host)
            } catch let error as PluginError where error.status == .notFound || error.status == .unavailable {
                return .text("no gitops.sync/1 provider serves now (\(error.message))\n", status: 503)
            }
        }
        // GET /engine: swift-sync's command, called for this request's caller (who needs its permission).
        try host.route("GET", "/engine") { request in
            do {
                return .json(try host.call("swift-sync", "engine", for: request))
            } catch let error as PluginError where error.status == .denied {
                return .text("not allowed: \(error.message)\n", status: 403)
            } catch let error as PluginError where error.status == .notFound || error.status == .unavailable {
                return .text("swift-sync is not serving (\(error.message))\n", status: 503)
            }
        }
        try host.route("GET", "/changes") { _ in
            .text(heard.lines.withLock { $0.map { $0 + "\n" }.joined() })
        }
        try host.route("GET", "/config") { _ in
            .json(configuration.isEmpty ? "{}" : configuration)
        }
    }

    /// Syncs the app named in the path through the provider serving the caller's tenant.
    static func sync(_ request: Request, _ host: PluginHost) throws -> Response {
        try host.withService("gitops.sync/1", as: gitops_sync_v1.self, tenant: request.caller.tenant) { lease in
            let info = try lease.info()
            let app = request.parameter("app") ?? "", revision = request.query.hasPrefix("rev=") ? String(request.query.dropFirst(4)) : ""
            var out = [CChar](repeating: 0, count: 256)
            var length = 0
            let status = app.utf8CString.withUnsafeBufferPointer { a in
                revision.utf8CString.withUnsafeBufferPointer { r in
                    lease.table.pointee.sync(keel_str(ptr: a.baseAddress, len: a.count - 1),
                                             keel_str(ptr: r.baseAddress, len: r.count - 1), &out, out.count, &length)
                }
            }
            guard status == KEEL_OK else { return .text("the provider failed: status \(status)\n", status: 502) }
            let line = String(decoding: out.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .text("\(line) (provider \(info.providerID) \(info.providerVersion) generation \(info.generation), \(info.interface) \(info.version))\n")
        }
    }
}

@_cdecl("keel_plugin_entry")
public func keelPluginEntry() -> UnsafeRawPointer? { PluginExport.descriptor(for: SwiftDeploy.self) }
