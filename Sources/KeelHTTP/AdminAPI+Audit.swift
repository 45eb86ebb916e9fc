// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import Hummingbird
import Keel
import KeelManifest
import KeelSystem
import NIOCore

/// The admin API's audit trail.
///
/// | route | who |
/// |---|---|
/// | `GET /api/v1/audit[?since=15m|2026-11-29T09:00:00Z][&limit=N]` | admin token only: the audit rows, oldest first |
///
/// Who is calling reaches `Kernel.execute` through `AuditCaller.current`, which `AuthMiddleware` sets for the
/// request's task: the front end (`console` when the console says so in `X-Keel-Client`, else `admin-api`), the
/// principal and the remote address.
extension AdminAPI {
    func registerAudit(admin: RouterGroup<KeelRequestContext>) {
        admin.get("audit") { request, _ -> Response in
            let q = request.uri.queryParameters
            // A parameter it does not take, or a limit that is no count, is refused: `?lmit=2` and `?limit=abc`
            // answered the whole trail, and `?limit=-1` none, until 2026-12-08.
            for (key, _) in q where key != "since" && key != "limit" {
                let near = Spelling.nearest(String(key), in: ["since", "limit"]).map { " (did you mean \"\($0)\"?)" } ?? ""
                throw APIError(.badRequest, "unknown-key", "unknown query parameter \"\(Printable.escapingControls(String(key)))\"\(near); this endpoint takes since, limit")
            }
            var since: String?
            if let text = q.get("since") {
                guard let time = StateStore.auditTime(text) else {
                    throw APIError(.badRequest, "bad-since", "since: \"\(text)\" is neither a duration (15m, 2h, 7d) nor an ISO 8601 time")
                }
                since = time
            }
            var limit = StateStore.auditCapacity
            if let text = q.get("limit") {
                guard let n = Int(text), n >= 1 else {
                    throw APIError(.badRequest, "bad-limit", "limit: \"\(Printable.escapingControls(String(text)))\" is not a count of rows from 1 up")
                }
                limit = min(n, StateStore.auditCapacity)
            }
            do { return JSONBody.response(try kernel.auditTrail(since: since, limit: limit)) } catch { throw Self.apiError(error) }
        }
    }
}

/// Who is calling the admin API, for the audit trail; set by `AuthMiddleware` for the request's task.
struct AuditCaller: Sendable {
    /// The header the console sends (`X-Keel-Client: console`); informational only, it grants nothing.
    static let clientHeader = HTTPField.Name("x-keel-client")!

    @TaskLocal static var current: AuditCaller?

    var actor: String
    var principal: String?
    /// The connection's remote address, read while the request is served (a channel closed later has none): most
    /// admin calls write no audit row (reads, command calls that succeed), and it is formatted only for one that does.
    private let address: SocketAddress?

    /// The caller's address.
    var origin: String? { address?.ipAddress }

    init(_ request: Request, principal: Principal, channel: (any Channel)?) {
        actor = request.headers[Self.clientHeader] == "console" ? "console" : "admin-api"
        self.principal = principal.isAnonymous ? nil : principal.id
        address = channel?.remoteAddress
    }
}
