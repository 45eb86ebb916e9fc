// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Who is calling, as the auth chain established it. Crosses the ABI as a borrowed `keel_principal`.
///
/// A value type whose fields live in one shared box, copied on the first write after a copy (as `PluginRequest`):
/// a request's principal is handed to the hooks, the handler and the request's context, and each copy of its four
/// strings and a list retained and released each one that is reference-counted.
public struct Principal: Sendable, Hashable, CustomDebugStringConvertible {
    /// The fields. `@unchecked Sendable`, and `@exclusivity(unchecked)` (a dynamic check on every access otherwise): a
    /// box is written only through `fields`, while uniquely referenced (else it is copied first), so a box that two
    /// values or threads can reach is never written.
    @usableFromInline final class Fields: @unchecked Sendable {
        @usableFromInline @exclusivity(unchecked) var id: String
        @usableFromInline @exclusivity(unchecked) var displayName: String
        @usableFromInline @exclusivity(unchecked) var tenant: String
        @usableFromInline @exclusivity(unchecked) var roles: [String]
        @usableFromInline @exclusivity(unchecked) var authenticatedBy: String
        @usableFromInline @exclusivity(unchecked) var roleSources: RoleSources?

        @usableFromInline init(id: String, displayName: String, tenant: String, roles: [String], authenticatedBy: String,
                               roleSources: RoleSources? = nil) {
            self.id = id
            self.displayName = displayName
            self.tenant = tenant
            self.roles = roles
            self.authenticatedBy = authenticatedBy
            self.roleSources = roleSources
        }

        @usableFromInline func copy() -> Fields {
            Fields(id: id, displayName: displayName, tenant: tenant, roles: roles, authenticatedBy: authenticatedBy, roleSources: roleSources)
        }
    }

    /// Where a caller's `roles` came from, as the host combined them (`AccessControl.enrich`): what its authenticate
    /// hook gave, and whether the operator's role bindings count for it at all (not for a hook that named a tenant
    /// that does not exist). A caller kept for later (a console page session) is re-derived from these, never by
    /// subtracting bindings read at another moment.
    public struct RoleSources: Sendable, Hashable {
        /// The roles the hook gave (after the host removed what that hook may not hand out).
        public var fromHook: [String]
        /// True when the operator's bindings in the caller's tenant are added to `fromHook`.
        public var bindingsApply: Bool
        /// True when the hook named no tenant and the caller's was taken from its bindings (the first tenant it is
        /// bound in, else `default`): a caller kept for later stands for that tenant only while the bindings still
        /// give it.
        public var tenantFromBindings: Bool
        /// The generation of the plugin whose hook named the caller, when it was named: a console page session issued
        /// for this caller ends with that generation (a reload between the check of the credential and the session's
        /// issue must not bind the session to the new one).
        public var signInGeneration: Int?

        public init(fromHook: [String], bindingsApply: Bool, tenantFromBindings: Bool = false, signInGeneration: Int? = nil) {
            self.fromHook = fromHook
            self.bindingsApply = bindingsApply
            self.tenantFromBindings = tenantFromBindings
            self.signInGeneration = signInGeneration
        }
    }

    @usableFromInline var box: Fields

    /// The box, copied first when another value shares it: the only way to a box that is written.
    @inlinable var fields: Fields {
        mutating get {
            if !isKnownUniquelyReferenced(&box) { box = box.copy() }
            return box
        }
    }

    public var id: String {
        @inlinable _read { yield box.id }
        @inlinable _modify { yield &fields.id }
    }
    public var displayName: String {
        @inlinable _read { yield box.displayName }
        @inlinable _modify { yield &fields.displayName }
    }
    public var tenant: String {
        @inlinable _read { yield box.tenant }
        @inlinable _modify { yield &fields.tenant }
    }
    public var roles: [String] {
        @inlinable _read { yield box.roles }
        @inlinable _modify { yield &fields.roles }
    }
    /// The plugin id whose authenticate hook established it, or "keel" for the host's own (e.g. the admin token).
    public var authenticatedBy: String {
        @inlinable _read { yield box.authenticatedBy }
        @inlinable _modify { yield &fields.authenticatedBy }
    }
    /// How `roles` were made (nil for a caller the host did not combine with bindings: the admin token's, one made
    /// by hand). Not part of equality: two callers with the same fields are the same caller.
    public var roleSources: RoleSources? {
        @inlinable _read { yield box.roleSources }
        @inlinable _modify { yield &fields.roleSources }
    }

    public init(id: String, displayName: String = "", tenant: String = Principal.defaultTenant, roles: [String] = [],
                authenticatedBy: String) {
        box = Fields(id: id, displayName: displayName, tenant: tenant, roles: roles, authenticatedBy: authenticatedBy)
    }

    public static func == (a: Principal, b: Principal) -> Bool {
        a.box === b.box || (a.id == b.id && a.displayName == b.displayName && a.tenant == b.tenant && a.roles == b.roles
                            && a.authenticatedBy == b.authenticatedBy)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(displayName)
        hasher.combine(tenant)
        hasher.combine(roles)
        hasher.combine(authenticatedBy)
    }

    /// The fields, as a struct of them printed (test failures and `dump` would show only the box).
    public var debugDescription: String {
        "Principal(id: \(id.debugDescription), displayName: \(displayName.debugDescription), tenant: \(tenant.debugDescription), "
            + "roles: \(roles), authenticatedBy: \(authenticatedBy.debugDescription))"
    }

    public static let defaultTenant = "default"
    /// `authenticatedBy` of a caller the host itself established (no plugin's hook).
    public static let host = "keel"
    /// The caller no authenticate hook recognised.
    public static let anonymous = Principal(id: "", authenticatedBy: host)
    public var isAnonymous: Bool { id.isEmpty }
}

/// A request as handed to a plugin route handler.
///
/// A value type whose fields live in one shared box, copied on the first write after a copy: the HTTP path hands the
/// request from the auth chain to the handler and back several times, and a copy of up to thirteen reference-counted
/// strings and arrays (the principal's among them) retained and released each; now a copy costs one retain. A plugin
/// request counted about 2 % fewer instructions with both boxes (callgrind, `Scripts/icount.sh`).
public struct PluginRequest: Sendable, CustomDebugStringConvertible {
    /// The fields. `@unchecked Sendable`, and `@exclusivity(unchecked)` (a dynamic check on every access otherwise): a
    /// box is written only through `fields` while uniquely referenced (`isKnownUniquelyReferenced`, else it is copied
    /// first), so a box that two values or threads can reach is never written.
    @usableFromInline final class Fields: @unchecked Sendable {
        @usableFromInline @exclusivity(unchecked) var method: String
        @usableFromInline @exclusivity(unchecked) var path: String
        @usableFromInline @exclusivity(unchecked) var routePath: String
        @usableFromInline @exclusivity(unchecked) var query: String
        @usableFromInline @exclusivity(unchecked) var headers: [(name: String, value: String)]
        @usableFromInline @exclusivity(unchecked) var parameters: [(name: String, value: String)]
        @usableFromInline @exclusivity(unchecked) var body: [UInt8]
        @usableFromInline @exclusivity(unchecked) var principal: Principal
        @usableFromInline @exclusivity(unchecked) var requestID: String

        @usableFromInline init(method: String, path: String, routePath: String, query: String,
                               headers: [(name: String, value: String)], parameters: [(name: String, value: String)],
                               body: [UInt8], principal: Principal, requestID: String) {
            self.method = method
            self.path = path
            self.routePath = routePath
            self.query = query
            self.headers = headers
            self.parameters = parameters
            self.body = body
            self.principal = principal
            self.requestID = requestID
        }

        @usableFromInline func copy() -> Fields {
            Fields(method: method, path: path, routePath: routePath, query: query, headers: headers,
                   parameters: parameters, body: body, principal: principal, requestID: requestID)
        }
    }

    @usableFromInline var box: Fields

    /// The box, copied first when another value shares it: the only way to a box that is written.
    @inlinable var fields: Fields {
        mutating get {
            if !isKnownUniquelyReferenced(&box) { box = box.copy() }
            return box
        }
    }

    public var method: String {
        @inlinable _read { yield box.method }
        @inlinable _modify { yield &fields.method }
    }
    /// The full path, e.g. `/ext/hello/items/42`.
    public var path: String {
        @inlinable _read { yield box.path }
        @inlinable _modify { yield &fields.path }
    }
    /// The part below the plugin prefix, e.g. `/items/42`.
    public var routePath: String {
        @inlinable _read { yield box.routePath }
        @inlinable _modify { yield &fields.routePath }
    }
    /// The raw query string without `?`.
    public var query: String {
        @inlinable _read { yield box.query }
        @inlinable _modify { yield &fields.query }
    }
    /// Header names lowercase, in arrival order.
    public var headers: [(name: String, value: String)] {
        @inlinable _read { yield box.headers }
        @inlinable _modify { yield &fields.headers }
    }
    public var parameters: [(name: String, value: String)] {
        @inlinable _read { yield box.parameters }
        @inlinable _modify { yield &fields.parameters }
    }
    public var body: [UInt8] {
        @inlinable _read { yield box.body }
        @inlinable _modify { yield &fields.body }
    }
    public var principal: Principal {
        @inlinable _read { yield box.principal }
        @inlinable _modify { yield &fields.principal }
    }
    public var requestID: String {
        @inlinable _read { yield box.requestID }
        @inlinable _modify { yield &fields.requestID }
    }

    /// The fields, as a struct of them printed (test failures and `dump` would show only the box).
    public var debugDescription: String {
        "PluginRequest(method: \(method.debugDescription), path: \(path.debugDescription), routePath: \(routePath.debugDescription), "
            + "query: \(query.debugDescription), headers: \(headers), parameters: \(parameters), body: \(body.count) bytes, "
            + "principal: \(principal.debugDescription), requestID: \(requestID.debugDescription))"
    }

    public init(method: String, path: String, routePath: String = "", query: String = "",
                headers: [(name: String, value: String)] = [], parameters: [(name: String, value: String)] = [],
                body: [UInt8] = [], principal: Principal = .anonymous, requestID: String = "") {
        box = Fields(method: method, path: path, routePath: routePath, query: query, headers: headers,
                     parameters: parameters, body: body, principal: principal, requestID: requestID)
    }
}

/// What a plugin handler wrote.
public struct PluginResponse: Sendable, Equatable {
    public var status: Int
    public var headers: [HeaderField]
    public var body: [UInt8]

    public init(status: Int = 200, headers: [HeaderField] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

public struct HeaderField: Sendable, Hashable {
    public var name: String
    public var value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    /// True when `s` holds no CR, LF or NUL: a header name or value a plugin may set (one that does could split the
    /// response, or another header, where an embedding program writes them out itself).
    public static func isSafe(_ s: String) -> Bool { !s.utf8.contains { $0 == 13 || $0 == 10 || $0 == 0 } }
}

/// An authorize hook's answer.
public enum AuthDecision: Sendable, Hashable {
    case abstain
    case allow
    case deny
}

/// Severity of a plugin log line.
public enum LogLevel: Int, Sendable, Comparable {
    case debug = 0, info, warn, error
    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Why a call into a plugin handler or hook did not succeed.
public struct PluginCallError: Error, Sendable, CustomStringConvertible {
    public var pluginID: String
    /// The `keel_status` the plugin returned (or a host-side reason, e.g. the plugin is no longer active).
    public var status: Int32
    /// The plugin's own message from `set_error`, if any.
    public var message: String
    /// The auth hook that failed, when the call was one (for the denial's log line and metrics).
    public var hook: String?
    /// The host refused the call before any plugin code ran, because the activation stopped admitting calls
    /// (`notActive`): the caller may try the plugin's current generation. Never set for a status the plugin returned,
    /// whatever its status and message say.
    public private(set) var refusedByHost = false
    /// A route handler's error status that is the refusal the host had just returned to one of its calls (`HostRefusal`):
    /// the plugin passed it on rather than answered with it. Answered 500, not the refusal's 4xx (`httpAnswer`); it
    /// still counts as a refusal toward the automatic disable (its cause, a provider down or a grant missing, is not
    /// the plugin's code).
    public var passedOn = false
    /// For a refusal passed on: which rule of the host's the refused call broke (`set_status(999): an HTTP status is
    /// 100 to 599`), when the host knows it. Host text, never the plugin's.
    public var hostRefusal: String?

    /// How the host answers this failed route handler over HTTP: `StatusCode.httpAnswer` of its status, or of an
    /// internal error for a refusal it passed on (`UNAVAILABLE` stays 503: retrying may succeed either way).
    public var httpAnswer: StatusCode.HTTPAnswer {
        StatusCode.httpAnswer(passedOn && status != StatusCode.unavailable ? StatusCode.internalError : status)
    }

    /// The log line for a failed route handler answering `method path`, and its level: a warning for the plugin's
    /// "not now" and for a refusal it meant (the client's fault), an error for anything else (a refusal it passed
    /// on, a crashed or timed-out worker, its own failure). One wording for the HTTP server and `Kernel.dispatch`.
    public func handlerLog(method: String, path: String) -> (level: LogLevel, text: String) {
        switch status {
        case StatusCode.unavailable: (.warn, "\(method) \(path): the plugin cannot serve it now: \(self)")
        case StatusCode.workerCrashed, StatusCode.workerTimedOut: (.error, "\(method) \(path) failed: \(message)")
        case _ where passedOn:
            (.error, "\(method) \(path) failed: the handler passed on the host's refusal of its call\(hostRefusal.map { " (\($0))" } ?? ""): \(self)")
        case _ where StatusCode.isRefusal(status): (.warn, "\(method) \(path): the plugin refused it (\(httpAnswer.status)): \(self)")
        default: (.error, "\(method) \(path) failed: \(self)")
        }
    }

    public init(pluginID: String, status: Int32, message: String) {
        self.pluginID = pluginID
        self.status = status
        self.message = message
    }

    public var description: String {
        "plugin \"\(pluginID)\": \(StatusCode.name(status))\(message.isEmpty ? "" : ": " + message)"
    }

    static let notActiveMessage = "plugin is not active"

    /// The host's refusal of a call into a plugin that stopped admitting calls (disabled, or its generation
    /// replaced) after the caller looked it up; never a plugin's own error.
    static func notActive(_ pluginID: String) -> PluginCallError {
        var error = PluginCallError(pluginID: pluginID, status: StatusCode.unavailable, message: notActiveMessage)
        error.refusedByHost = true
        return error
    }

    /// True for `notActive`'s refusal.
    public var isNotActive: Bool { refusedByHost }
}
