// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Hummingbird
import Keel

/// The admin API's part for plugin commands ("keel.commands/1").
///
/// | route | who |
/// |---|---|
/// | `GET /api/v1/commands[?plugin=ID]` | the admin: every declared command with its signature; anyone else: the commands of running plugins they may call |
/// | `POST /api/v1/plugins/<id>/commands/<name>` `{"args": [2, 40]}` → `{"result": 42}` | anyone the auth chain lets through who holds the command's permission (admins for a command without one); `"tenant"`: the host's admin only |
///
/// A call runs in the plugin's lane, like its routes. Errors: 404 `unknown-command`, 400 `bad-argument` (naming the
/// argument), 403 `forbidden` (which permission is missing goes to the log and the audit trail only), `command-failed` (the plugin's status and message, with the HTTP status a route handler's status gets: 400 for KEEL_ERR_INVALID_ARGUMENT, 500 for an internal error), 503 `unavailable` or `busy`.
extension AdminAPI {
    func registerCommands(open: RouterGroup<KeelRequestContext>, admin: RouterGroup<KeelRequestContext>) {
        // Every command for the admin; for anyone else the ones they may call (a role holder could call a command
        // but not learn it was there: 401 until 2026-12-08). Their permission is asked in the host's lane: the
        // authorize hooks are plugin code.
        open.get("commands") { request, context -> Response in
            let all = await kernel.commands(request.uri.queryParameters.get("plugin").map { "\($0)" })
            let caller = context.principal
            if caller.authenticatedBy == "keel", caller.roles.contains("admin") { return JSONBody.response(all) }
            let callable = try await gatekeeper.lanes.run(PluginLanes.host) {
                all.filter { kernel.mayCall($0.plugin, $0.name, permission: $0.permission, as: caller) }
            }
            return JSONBody.response(callable)
        }
        open.post("plugins/:id/commands/:name") { request, context -> Response in
            let id = try context.parameters.require("id"), name = try context.parameters.require("name")
            // The common body (numbers, plain strings, true/false/null) is read directly; anything else, and every
            // error, goes through the decoder and its messages.
            let buffer = try await self.collectBody(request, context)
            let body = try CommandCall(plain: buffer) ?? self.decodeBody(CommandCall.self, buffer) ?? CommandCall(args: [], tenant: nil)
            var caller = context.principal
            let channel = context.channel, gatekeeper = self.gatekeeper
            // The host's admin may act in another tenant (a plugin enabled for some tenants only serves theirs), as
            // `keel call --tenant` does; nobody else may choose a tenant here.
            if let tenant = body.tenant, tenant != caller.tenant {
                guard caller.authenticatedBy == "keel", caller.roles.contains("admin") else {
                    // Logged and audited as any refused call is (in the lane: any client may ask for refusals).
                    let denial = "only the host's admin may call a command in another tenant (asked for \"\(tenant)\")"
                    let refusal = APIError.forbidden(because: denial), asked = caller
                    // The host's lane and a line of the host's: the plugin named in the path is not known to exist yet
                    // (lines filed under made-up ids would push real plugins' lines out of their logs).
                    try await gatekeeper.lanes.run(PluginLanes.host) {
                        gatekeeper.log(LogRecord(level: .info, pluginID: nil, message: "POST \(request.uri.path) denied: \(denial)"))
                        gatekeeper.auditRefusal(request, principal: asked, channel: channel, refusal)
                    }
                    throw refusal
                }
                guard tenant == Principal.defaultTenant || kernel.access.directory.tenants.contains(tenant) else {
                    throw APIError(.notFound, "not-found", "no tenant \"\(tenant)\"")
                }
                caller.tenant = tenant
            }
            let principal = caller
            /// A refusal is logged and written to the audit trail (a durable commit) in the lane, never on one of
            /// Swift's own threads: any client may ask for refusals.
            @Sendable func audited(_ result: Result<CommandValue, CommandError>) -> Result<CommandValue, CommandError> {
                guard case let .failure(error) = result, error.code == .forbidden else { return result }
                // The operator learns which permission (or hook) refused; the client only that it was forbidden.
                gatekeeper.log(LogRecord(level: .info, pluginID: id, message: "POST \(request.uri.path) denied: \(error.message)"))
                gatekeeper.auditRefusal(request, principal: principal, channel: channel, APIError.forbidden(because: error.message))
                return result
            }
            // An idle lazy plugin is woken first, awaited here: `call` would wait for its activation on the thread it
            // runs on, which may be one of Swift's own (inline). Who may wake it is asked in its lane (hooks); a
            // plugin that goes idle after that is woken by `call` itself, after the same checks.
            var refused: CommandError?
            if kernel.isIdle(id) {
                switch try await gatekeeper.lanes.run(id, { kernel.mayWakeForCall(id, name, as: principal).map { audited($0.map { CommandValue.none }) } }) {
                case let .failure(refusal)?: refused = refusal
                case .success?:
                    // As for a request (`wakeIdlePlugin`), once the caller may wake it: a stalled lifecycle would hold
                    // this call behind the stuck one.
                    if kernel.lifecycleStall != nil {
                        throw APIError(.serviceUnavailable, "lifecycle-stalled", "plugin \"\(id)\" cannot be activated now; try again later")
                    }
                    refused = await kernel.wakeForCall(id, as: principal)
                case nil: break
                }
            }
            let outcome: Result<CommandValue, CommandError>
            if let refused {
                outcome = .failure(refused)
            } else {
                outcome = try await gatekeeper.lanes.run(id) { audited(kernel.call(id, name, arguments: body.args, as: principal)) }
            }
            switch outcome {
            case let .success(value):
                return JSONBody.rawResponse("{\"result\":\(value.json)}")
            case let .failure(error) where error.code == .forbidden:
                throw APIError.forbidden(because: error.message)
            case let .failure(error):
                throw APIError(Self.status(of: error), error.code.rawValue, error.message)
            }
        }
    }

    static func status(of error: CommandError) -> HTTPResponse.Status {
        switch error.code {
        case .unknown: .notFound
        case .badArgument: .badRequest
        case .forbidden: .forbidden
        // The command's own refusal is its caller's to fix, as a route handler's is: KEEL_ERR_INVALID_ARGUMENT 400,
        // NOT_FOUND 404, CONFLICT 409 ... (`StatusCode.httpAnswer`); the code stays `command-failed`.
        case .failed: HTTPResponse.Status(code: StatusCode.httpAnswer(error.status).status)
        case .tooLarge: .internalServerError
        case .unavailable: .serviceUnavailable
        }
    }
}

