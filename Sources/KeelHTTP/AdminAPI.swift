// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Hummingbird
import Keel
import KeelManifest
import KeelState
import Synchronization

/// The admin API (JSON) and the health check. Every state change is a `KernelCommand` executed by the kernel, as the
/// CLI's are, and is committed to SQLite (and the live view published) before the response is sent.
///
/// | route | who |
/// |---|---|
/// | `GET /healthz` | anyone |
/// | `GET /api/v1/menus`, `GET /api/v1/session`, `POST /api/v1/session/page` | anyone the auth chain lets through; menus filtered per caller |
/// | `GET /api/v1/plugins[/<id>[/history]]`, `POST /api/v1/plugins/<id>/enable|disable|reload|grants`, `GET /api/v1/routes` | admin token only |
/// | `GET /api/v1/services`, `PUT|DELETE /api/v1/services/<name>/<major>/provider` (AdminAPI+Services.swift) | admin token only |
/// | `GET /api/v1/pages` (AdminAPI+Pages.swift) | anyone; the caller's visible console pages |
/// | `GET /api/v1/commands`; `POST /api/v1/plugins/<id>/commands/<name>` (AdminAPI+Commands.swift) | admin; the command's permission |
/// | `GET /api/v1/overview`, `GET /api/v1/plugins/<id>/config/schema`, `GET|POST /api/v1/trust` (AdminAPI+Console.swift) | admin token only |
/// | `GET /api/v1/audit` (AdminAPI+Audit.swift), `GET /api/v1/plugins/<id>/logs|health` (AdminAPI+PluginLogs.swift) | admin token only |
struct AdminAPI {
    let kernel: Kernel
    let gatekeeper: Gatekeeper
    /// Reads the JSON bodies, within the server's `--body-timeout`.
    let bodies: RequestBodyReader

    func register(on router: Router<KeelRequestContext>) {
        // 503 "closed" while a guard is missing (the auth chain denies every request): a load balancer takes the
        // host out of rotation.
        // 503 "stalled" while plugin code holds the kernel's lifecycle thread past the stall limit: the host serves,
        // but nothing can be enabled, reloaded or stopped cleanly until it is restarted.
        // Anyone may ask, so it names only plugins an anonymous caller (tenant default) may know of: one enabled for
        // other tenants only is left out, as its routes, menus and commands are (a security review, 2026-12-07).
        router.get("/healthz") { _, _ -> Response in
            let missing = kernel.registry.snapshot.missingGuards.keys.sorted()
            let stall = kernel.lifecycleStall
            let status = stall != nil ? "stalled" : missing.isEmpty ? "ok" : "closed"
            let tenants = kernel.access.directory.pluginTenants
            func shown(_ id: String) -> Bool { tenants[id].map { $0.contains(Principal.defaultTenant) } ?? true }
            // The status stays what it is (a load balancer needs it); a plugin of other tenants is not named in it.
            let hiddenGuards = missing.filter { !shown($0) }.count
            let guards = missing.filter(shown) + (hiddenGuards > 0 ? ["\(hiddenGuards) plugin(s) of other tenants"] : [])
            let call = stall == nil ? kernel.lifecycleCall(runningFor: 1) : nil
            return JSONBody.response(HealthBody(status: status, active: kernel.activePlugins.filter(shown),
                                                busy: gatekeeper.lanes.refused.filter { shown($0.key) }, missingGuards: guards.isEmpty ? nil : guards,
                                                stalled: stall.map { shown($0.plugin) ? StallBody($0) : StallBody(hidden: $0) },
                                                lifecycle: call.map { shown($0.plugin) ? $0.description : "a plugin of other tenants: \($0.call) has run for \(Int($0.seconds)) s" },
                                                state: kernel.stateSilentSince.map { "unanswered for \((ContinuousClock.now - $0).components.seconds) s: changes are refused until it answers" }),
                                     status: status == "ok" ? .ok : .serviceUnavailable)
        }

        let open = router.group("api/v1").add(middleware: AuthMiddleware(gatekeeper: gatekeeper, adminOnly: false))
        open.get("menus") { _, context -> Response in
            let snapshot = kernel.registry.snapshot
            let principal = context.principal
            let owners = Dictionary(snapshot.plugins.flatMap { id, c in c.menus.map { ($0.entry.id, id) } }) { a, _ in a }
            // Permissions are decided by the authorize hooks: plugin code, run in the host's lane.
            let tree = try await gatekeeper.lanes.run(PluginLanes.host) {
                snapshot.menuTree { entry in
                    kernel.access.canSee(entry, of: owners[entry.id] ?? "", principal, snapshot: snapshot)
                }
            }
            return JSONBody.response(tree)
        }
        open.get("session") { _, context -> Response in
            let p = context.principal
            return JSONBody.response(SessionBody(id: p.id, displayName: p.displayName, tenant: p.tenant, roles: p.roles,
                                                 anonymous: p.isAnonymous, admin: context.isAdmin))
        }

        // A page session for a plugin page the console opens in its sandboxed frame (see `PageSessions`): the
        // frame's requests to that plugin are then made as this caller, with no credential the page could read.
        open.post("session/page") { request, context -> Response in
            let body = try await self.body(PageBody.self, request, context)
            guard kernel.registry.snapshot.plugins[body.plugin] != nil,
                  kernel.access.isVisible(body.plugin, tenant: context.principal.tenant) else { throw APIError.notFound }
            guard !context.principal.isAnonymous else { return JSONBody.response(["plugin": body.plugin, "session": "none"]) }
            let ticket = gatekeeper.pages.issue(context.principal, pluginID: body.plugin,
                                                adminDigest: context.isAdmin ? gatekeeper.token.digest : nil,
                                                signIn: context.principal.roleSources?.signInGeneration
                                                    ?? Gatekeeper.signInGeneration(context.principal, kernel.registry.snapshot))
            var response = JSONBody.response(["plugin": body.plugin, "session": "cookie"])
            response.headers[.setCookie] = gatekeeper.pages.cookie(ticket, pluginID: body.plugin)
            return response
        }

        let admin = router.group("api/v1").add(middleware: AuthMiddleware(gatekeeper: gatekeeper, adminOnly: true))
        // The plugins' JSON is written without JSONEncoder (the same text, a fraction of the time), the live view's
        // where it is current.
        admin.get("plugins") { _, _ -> Response in
            JSONBody.rawResponse(try await kernel.pluginsJSON())
        }
        admin.get("plugins/:id") { _, context -> Response in
            let id = try context.parameters.require("id")
            do { return JSONBody.rawResponse(try await kernel.pluginJSON(id)) } catch { throw Self.apiError(error) }
        }
        admin.post("plugins/:id/enable") { request, context -> Response in
            let id = try context.parameters.require("id")
            let options = try await self.options(request, context)
            return try await answer(.enable(id: id, tenant: options.tenant), plugin: id)
        }
        admin.post("plugins/:id/disable") { request, context -> Response in
            let id = try context.parameters.require("id")
            let options = try await self.options(request, context)
            return try await answer(.disable(id: id, tenant: options.tenant, cascade: options.cascade ?? false), plugin: id)
        }
        admin.post("plugins/:id/reload") { request, context -> Response in
            let id = try context.parameters.require("id")
            _ = try await self.options(request, context)
            return try await answer(.reload(id: id), plugin: id)
        }
        admin.post("plugins/:id/grants") { request, context -> Response in
            let id = try context.parameters.require("id")
            let change = try await self.body(GrantChange.self, request, context)
            return try await answer(.grants(id: id, grant: change.grant ?? [], revoke: change.revoke ?? []), plugin: id)
        }
        // {"isolation": "process" | "in-process" | "manifest" | null}: where the plugin runs ("manifest" or null: as
        // its manifest asks, as `keel plugins isolate ID manifest` says it).
        admin.put("plugins/:id/isolation") { request, context -> Response in
            let id = try context.parameters.require("id")
            let change = try await self.body(IsolationChange.self, request, context)
            let mode = try change.isolation.flatMap { text throws(APIError) -> Isolation? in
                if text == "manifest" { return nil }
                guard let mode = Isolation(rawValue: text) else {
                    throw APIError(.badRequest, "bad-isolation", "isolation must be in-process, process, manifest or null, not \"\(text)\"")
                }
                return mode
            }
            return try await answer(.isolation(id: id, mode: mode), plugin: id)
        }
        admin.get("plugins/:id/config") { _, context -> Response in
            let id = try context.parameters.require("id")
            // `config` is the object itself (null when none is stored): what a PUT takes back, as JSON is YAML too.
            // `yaml` is the text as it was set (its comments kept), `json` that object as one string.
            // The stored JSON is spliced in as it is (numbers beyond a double's precision stay exact).
            let stored = try kernel.state.config(id)
            func quoted(_ text: String) -> String { (try? Kernel.encoder().encode(text)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\"" }
            let object = stored.map(\.json).flatMap { text in
                (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)) == nil ? nil : text
            } ?? "null"
            return JSONBody.rawResponse(#"{"config":\#(object),"json":\#(quoted(stored?.json ?? "")),"yaml":\#(quoted(stored?.yaml ?? ""))}"#)
        }
        admin.put("plugins/:id/config") { request, context -> Response in
            let id = try context.parameters.require("id")
            let body = try await bodies.collect(request, upTo: 1 << 20, context: context)
            // A configuration the schema (or YAML) refuses is the caller's mistake: 422 bad-config, file, key and reason.
            do throws(KernelError) {
                _ = try await execute(.config(id: id, yaml: String(decoding: body.readableBytesView, as: UTF8.self)))
            } catch { throw Self.apiError(error) }
            return JSONBody.response(try await kernel.plugin(id))
        }
        admin.get("plugins/:id/history") { _, context -> Response in
            let id = try context.parameters.require("id")
            do { return JSONBody.response(try await kernel.history(id)) } catch { throw Self.apiError(error) }
        }
        registerDirectory(on: admin)
        // Extension management: repositories, catalogue, install, upgrade, uninstall.
        let store = ExtensionStore(state: kernel.state, pluginsDirectory: kernel.configuration.pluginsDirectory)
        // Cached, refreshed in the background, never blocking a request thread (see RepositoryCatalog).
        let catalog = RepositoryCatalog(store: store)
        admin.get("repositories") { _, _ -> Response in JSONBody.response(try kernel.state.repositories()) }
        // The hosts sharing this state (PostgreSQL): id, address, version, heartbeat, plugins at their generation.
        admin.get("hosts") { _, _ -> Response in JSONBody.response(try kernel.state.hosts()) }
        admin.post("repositories") { request, context -> Response in
            let body = try await self.body(RepositoryBody.self, request, context)
            try await run(.addRepository(name: body.name, location: body.location, priority: body.priority ?? 0))
            return JSONBody.response(["name": body.name], status: .created)
        }
        admin.get("catalog") { request, _ -> Response in
            let word = request.uri.queryParameters.get("q")?.lowercased()
            let (offers, problems) = try await catalog.indexes()
            // Grouped by id first: resolving each id against every offer is quadratic in the index's size.
            let byID = Dictionary(grouping: offers, by: \.id)
            let keySet = (try? kernel.state.trustedKeySet()) ?? TrustedKeySet(), pins = (try? kernel.state.pinnedSigners()) ?? [:]
            let items = byID.keys.sorted().compactMap { id -> CatalogItem? in
                guard let best = try? store.resolve(id, version: nil, offers: byID[id] ?? []) else { return nil }
                if let word, !(id + best.entry.name + (best.entry.description ?? "")).lowercased().contains(word) { return nil }
                let pin = pins[id], trusted = keySet.keys(for: id)
                return CatalogItem(id: id, version: best.entry.version, repository: best.repository.name,
                                   signed: ExtensionStore.showsSigned(best, trusted: keySet.keys), signer: best.entry.signature == nil ? nil : best.entry.signer.map(ExtensionStore.displayName),
                                   trusted: ExtensionStore.signedByTrustedKey(best, trusted: trusted), description: best.entry.description ?? best.entry.name,
                                   pinned: pin.map(ExtensionStore.describe),
                                   pinMatches: pin.map { ExtensionStore.signedByPinnedKey(best, trusted: trusted, pinned: $0) })
            }
            return JSONBody.response(CatalogBody(plugins: items, problems: problems))
        }
        admin.post("plugins/:id/install") { request, context -> Response in
            let id = try context.parameters.require("id")
            let body = try await self.optionalBody(InstallBody.self, request, context) ?? InstallBody()
            let done = try await run(.install(id: id, version: body.version, allowUnsigned: body.allowUnsigned ?? false, signer: body.signerChange))
            return JSONBody.response(["installed": done.installed], status: .created)
        }
        admin.post("plugins/:id/upgrade") { request, context -> Response in
            let id = try context.parameters.require("id")
            let body = try await self.optionalBody(InstallBody.self, request, context) ?? InstallBody()
            return try await answer(.upgrade(id: id, version: body.version, allowUnsigned: body.allowUnsigned ?? false,
                                             signer: body.signerChange), plugin: id)
        }
        admin.delete("plugins/:id") { request, context -> Response in
            let id = try context.parameters.require("id")
            let q = request.uri.queryParameters
            try await run(.uninstall(id: id, cascade: q.get("cascade") == "true", keepData: q.get("keepData") == "true"))
            return JSONBody.response(["uninstalled": id])
        }
        registerServices(on: admin)
        registerCommands(open: open, admin: admin)
        registerEvents(admin: admin)
        registerPages(open: open)
        registerConsole(admin: admin)
        registerAudit(admin: admin)
        registerPluginLogs(admin: admin)
        admin.get("routes") { _, _ -> Response in
            JSONBody.response(kernel.registry.snapshot.routes.map { RouteBody(plugin: $0.pluginID, method: $0.method, path: $0.path) })
        }
    }

    /// Executes one command for the admin API (audited with the caller `AuthMiddleware` established, as
    /// "admin-api" or "console"); kernel errors become API errors with stable codes.
    @discardableResult
    func run(_ command: KernelCommand) async throws -> CommandResult {
        do { return try await execute(command) } catch { throw Self.apiError(error) }
    }

    /// `Kernel.execute` with the caller of this request (`AuditCaller.current`) for the audit trail.
    func execute(_ command: KernelCommand) async throws(KernelError) -> CommandResult {
        let c = Self.caller
        return try await kernel.execute(command, actor: c.actor, principal: c.principal, origin: c.origin)
    }

    /// `run`, answered with plugin `id`'s info as the command left it, in one visit to the kernel.
    func answer(_ command: KernelCommand, plugin id: String) async throws -> Response {
        let c = Self.caller
        do {
            return JSONBody.rawResponse(try await kernel.execute(command, actor: c.actor, principal: c.principal, origin: c.origin, describing: id))
        } catch {
            throw Self.apiError(error)
        }
    }

    /// The caller of this request for the audit trail (`AuditCaller.current`; "admin-api" when none was set).
    static var caller: (actor: String, principal: String?, origin: String?) {
        let caller = AuditCaller.current
        return (caller?.actor ?? "admin-api", caller?.principal, caller?.origin)
    }

    /// The optional JSON body of enable/disable: `{"cascade": true}`. Empty is fine; malformed is a 400.
    func options(_ request: Request, _ context: KeelRequestContext) async throws -> ChangeOptions {
        try await self.optionalBody(ChangeOptions.self, request, context) ?? ChangeOptions()
    }

    /// An optional JSON body: empty is nil; malformed is a 400; so is a key the body type does not have (a misspelt
    /// `versoin` would otherwise be dropped and the request done without it), named with the nearest key it has.
    /// The body types' stored properties are their keys (no custom `CodingKeys`).
    func optionalBody<T: Decodable>(_ type: T.Type, _ request: Request, _ context: KeelRequestContext) async throws -> T? {
        try decodeBody(type, try await collectBody(request, context))
    }

    /// The request's body, at most 64 KiB (a longer one is a 413).
    func collectBody(_ request: Request, _ context: KeelRequestContext) async throws -> ByteBuffer {
        try await bodies.collect(request, upTo: 64 * 1024, context: context)
    }

    /// `optionalBody` of a collected body.
    func decodeBody<T: Decodable>(_ type: T.Type, _ buffer: ByteBuffer) throws -> T? {
        guard buffer.readableBytes > 0 else { return nil }
        let data = Data(buffer.readableBytesView)
        let body: KeyedBody<T>
        do { body = try JSONDecoder().decode(KeyedBody<T>.self, from: data) } catch {
            // A required key missing because it was misspelt (`plugn`): the misspelling is what to fix.
            if case let DecodingError.keyNotFound(key, _) = error,
               let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
               let typo = object.keys.sorted().first(where: { Spelling.nearest($0, in: [key.stringValue]) != nil }) {
                throw APIError(.badRequest, "unknown-key", "unknown key \"\(typo)\" in the JSON body (did you mean \"\(key.stringValue)\"?)")
            }
            throw APIError(.badRequest, "malformed-json", "malformed JSON body: \(Self.describe(error, in: data))")
        }
        let known = BodyKeys.of(body.value)
        if let unknown = body.keys.sorted().first(where: { !known.contains($0) }) {
            let near = Spelling.nearest(unknown, in: known).map { " (did you mean \"\($0)\"?)" } ?? ""
            throw APIError(.badRequest, "unknown-key", "unknown key \"\(unknown)\" in the JSON body\(near); this endpoint takes \(known.joined(separator: ", "))")
        }
        return body.value
    }

    /// A required JSON body; empty, malformed or missing keys are a 400 with the reason.
    func body<T: Decodable>(_ type: T.Type, _ request: Request, _ context: KeelRequestContext) async throws -> T {
        guard let value = try await self.optionalBody(type, request, context) else {
            throw APIError(.badRequest, "malformed-json", "malformed JSON body: the body is empty")
        }
        return value
    }

    /// What was wrong with a JSON body, in plain words (never Foundation's decoder text): `cascade: expected true or
    /// false`, `missing key plugin`, `not valid JSON (unexpected end of file)`. `data`: the body, to say where JSON
    /// that does not parse goes wrong.
    static func describe(_ error: any Error, in data: Data? = nil) -> String {
        let corrupt = "not valid JSON" + (data.flatMap(Self.syntaxProblem).map { " (\($0))" } ?? "")
        guard let (key, reason) = DecodingText.describe(error, corrupt: corrupt) else { return corrupt }
        return key.map { $0 + ": " + reason } ?? reason
    }

    /// Where `data` stops being JSON, as the parser says it in lower case (`unexpected end of file`, `invalid value
    /// around character 13`); nil when it parses or the parser gives no reason.
    static func syntaxProblem(_ data: Data) -> String? {
        do { _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch let error as NSError {
            guard var text = error.userInfo[NSDebugDescriptionErrorKey] as? String, !text.isEmpty else { return nil }
            if text.hasSuffix(" during JSON parse.") { text.removeLast(" during JSON parse.".count) }
            if text.hasSuffix(".") { text.removeLast() }
            return text.prefix(1).lowercased() + text.dropFirst()
        }
        return nil
    }

    /// Kernel errors as API errors with stable codes.
    static func apiError(_ error: any Error) -> APIError {
        if let error = error as? StateError { return APIError(.serviceUnavailable, "state", error.description) }
        guard let error = error as? KernelError else { return APIError(.internalServerError, "internal", "internal error") }
        switch error.code {
        case .unknownPlugin: return APIError(.notFound, "unknown-plugin", error.description)
        case .notOffered: return APIError(.notFound, "not-offered", error.description)
        case .dependency: return APIError(.conflict, "dependency", error.description)
        case .conflict: return APIError(.conflict, "conflict", error.description)
        // The store cannot be read or written now (a shared PostgreSQL down, a locked file): try again later.
        case .state: return APIError(.serviceUnavailable, "state", error.description)
        // An unknown tenant or role, a malformed name, and a change the directory's state refuses (a name taken, a
        // tenant in use): 404, 400 and 409, with the codes every other endpoint uses (all were 404 or 409
        // `directory` until 2026-12-08).
        case .notFound: return APIError(.notFound, "not-found", error.description)
        case .badRequest: return APIError(.badRequest, "bad-request", error.description)
        case .directory: return APIError(.conflict, "conflict", error.description)
        default: return APIError(.unprocessableContent, error.code.description, error.description)
        }
    }
}

struct GrantChange: Decodable {
    var grant: [String]?
    var revoke: [String]?
}

/// `PUT /api/v1/plugins/<id>/isolation`.
struct IsolationChange: Decodable {
    var isolation: String?
}

struct ChangeOptions: Decodable {
    var cascade: Bool?
    var tenant: String?
}

struct NameBody: Decodable { var name: String }
struct PageBody: Decodable { var plugin: String }
struct RepositoryBody: Decodable { var name: String; var location: String; var priority: Int? }
/// `POST /api/v1/plugins/<id>/install|upgrade`. `signer` moves the plugin to the key trusted under that name ("":
/// forgets its pinned signer); absent, the pinned signer must have signed the package.
struct InstallBody: Decodable {
    var version: String?
    var allowUnsigned: Bool?
    var signer: String?
    var signerChange: SignerChange? { signer.map { $0.isEmpty ? .forget : .key($0) } }
}
/// One plugin of the catalog. `signed`: it carries a signature naming a signer, not one refused against the key
/// trusted under that name; `trusted`: that signature is the trusted key's (an install takes it without
/// `allowUnsigned`); `signer`: the name it gives, when it is signed.
/// One offer of `GET /api/v1/catalog`. `pinned`: the key an installed plugin of this id is pinned to (`acme (key
/// …)`), nil when none; `pinMatches`: whether this offer is signed by that key as far as this host can verify (an
/// upgrade to it needs no `signer`), nil without a pin.
struct CatalogItem: Encodable {
    var id, version, repository: String
    var signed: Bool
    var signer: String?
    var trusted: Bool
    var description: String
    var pinned: String?
    var pinMatches: Bool?
}
struct CatalogBody: Encodable { var plugins: [CatalogItem]; var problems: [String] }

struct HealthBody: Encodable {
    var status: String
    var active: [String]
    /// Calls refused with 503 (`busy`) because the plugin's lane was full, by plugin, since the server started.
    var busy: [String: Int]
    /// Guards the host wants and does not have running: every request is denied meanwhile (`Snapshot.missingGuards`).
    var missingGuards: [String]?
    /// The plugin call that stalls the lifecycle (`Kernel.lifecycleStall`), when one does.
    var stalled: StallBody?
    /// A plugin call that has held the lifecycle for a second or more, not yet a stall: what enables, reloads and
    /// queued commands wait for (`keel plugins enable` quotes it when the server did not take its command).
    var lifecycle: String?
    /// A shared state that does not answer (`Kernel.stateSilentSince`): "unanswered for N s". The status stays `ok`
    /// (the plugins running serve on); changes are refused meanwhile.
    var state: String?
}

struct StallBody: Encodable {
    var plugin: String
    var generation: Int
    var call: String
    var seconds: Int
    var message: String
    init(_ stall: LifecycleStall) {
        plugin = stall.plugin
        generation = stall.generation
        call = stall.call
        seconds = Int(stall.seconds)
        message = "\(stall); \(stall.remedy)"
    }

    /// A stall of a plugin the caller may not know of (enabled for other tenants only): its call and time, not its name.
    init(hidden stall: LifecycleStall) {
        plugin = ""
        generation = 0
        call = stall.call
        seconds = Int(stall.seconds)
        message = "a plugin of other tenants has held the host's lifecycle in \(stall.call) for \(Int(stall.seconds)) s; restart the host"
    }
}

struct SessionBody: Encodable {
    var id: String
    var displayName: String
    var tenant: String
    var roles: [String]
    var anonymous: Bool
    var admin: Bool
}

struct RouteBody: Encodable {
    var plugin: String
    var method: String
    var path: String
}

/// A JSON body decoded as `T`, with the keys its object had: one parse (the keys were read by parsing the body a
/// second time, which with the reflection below cost a command call through the admin API a fifth of its throughput).
struct KeyedBody<T: Decodable>: Decodable {
    let value: T
    let keys: [String]

    init(from decoder: any Decoder) throws {
        value = try T(from: decoder)
        // A closure, not `\.stringValue`: a key path in a generic context is built at run time by mangled name.
        keys = (try? decoder.container(keyedBy: BodyKey.self))?.allKeys.map { $0.stringValue } ?? []
    }
}

/// Any key of a JSON object (outside the generic `KeyedBody`, so that its metadata is not made per `T`).
private struct BodyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// The keys a body type takes: its stored properties' names (the body types have no custom `CodingKeys`), found by
/// reflection once per type. Thread-safe (a lock).
enum BodyKeys {
    private static let known = Mutex<[ObjectIdentifier: [String]]>([:])

    static func of<T>(_ value: T) -> [String] {
        let type = ObjectIdentifier(T.self)
        if let keys = known.withLock({ $0[type] }) { return keys }
        let keys = Mirror(reflecting: value).children.compactMap(\.label).sorted()
        known.withLock { $0[type] = keys }
        return keys
    }
}
