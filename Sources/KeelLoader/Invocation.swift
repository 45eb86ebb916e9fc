// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Who is calling, as the auth chain established it. Crosses the ABI as a borrowed `keel_principal`.
public struct Principal: Sendable, Hashable {
    public var id: String
    public var displayName: String
    public var tenant: String
    public var roles: [String]
    /// The plugin id whose authenticate hook established it, or "keel" for the host's own (e.g. the admin token).
    public var authenticatedBy: String

    public init(id: String, displayName: String = "", tenant: String = Principal.defaultTenant, roles: [String] = [],
                authenticatedBy: String) {
        self.id = id
        self.displayName = displayName
        self.tenant = tenant
        self.roles = roles
        self.authenticatedBy = authenticatedBy
    }

    public static let defaultTenant = "default"
    /// The caller no authenticate hook recognised.
    public static let anonymous = Principal(id: "", authenticatedBy: "keel")
    public var isAnonymous: Bool { id.isEmpty }
}

/// A request as handed to a plugin route handler.
public struct PluginRequest: Sendable {
    public var method: String
    /// The full path, e.g. `/ext/hello/items/42`.
    public var path: String
    /// The part below the plugin prefix, e.g. `/items/42`.
    public var routePath: String
    /// The raw query string without `?`.
    public var query: String
    /// Header names lowercase, in arrival order.
    public var headers: [(name: String, value: String)]
    public var parameters: [(name: String, value: String)]
    public var body: [UInt8]
    public var principal: Principal
    public var requestID: String

    public init(method: String, path: String, routePath: String = "", query: String = "",
                headers: [(name: String, value: String)] = [], parameters: [(name: String, value: String)] = [],
                body: [UInt8] = [], principal: Principal = .anonymous, requestID: String = "") {
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

    public init(pluginID: String, status: Int32, message: String) {
        self.pluginID = pluginID
        self.status = status
        self.message = message
    }

    public var description: String {
        "plugin \"\(pluginID)\": \(StatusCode.name(status))\(message.isEmpty ? "" : ": " + message)"
    }
}
