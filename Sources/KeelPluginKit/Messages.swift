// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The caller of a request, as the host's auth chain established it. Copied out of the host's borrowed struct.
public struct Caller: Sendable, Hashable {
    public var id: String
    public var displayName: String
    public var tenant: String
    public var roles: [String]
    public var authenticatedBy: String
    public var isAnonymous: Bool

    /// A caller, for a plugin's own tests of its handlers and hooks (the host makes the real ones).
    public init(id: String = "", displayName: String = "", tenant: String = "", roles: [String] = [],
                authenticatedBy: String = "", isAnonymous: Bool = false) {
        self.id = id
        self.displayName = displayName
        self.tenant = tenant
        self.roles = roles
        self.authenticatedBy = authenticatedBy
        self.isAnonymous = isAnonymous
    }

    /// The caller no authenticate hook identified.
    public static let anonymous = Caller(isAnonymous: true)
}

/// A request handed to a route handler, copied out of the host's borrowed data.
public struct Request: Sendable {
    public var method: String
    public var path: String
    /// The path below `/ext/<plugin-id>`.
    public var routePath: String
    public var query: String
    /// Lowercase names, in arrival order.
    public var headers: [(name: String, value: String)]
    public var parameters: [(name: String, value: String)]
    public var body: [UInt8]
    public var caller: Caller
    public var requestID: String
    /// The address of the host's principal for this request, which `PluginHost.call` hands back to the host: valid,
    /// and accepted by the host, only while the handler serving this request runs on its thread (0 when none).
    var principalAddress: UInt = 0

    /// A request, for a plugin's own tests of its handlers and hooks (the host makes the real ones; a test's request
    /// carries no host principal, so `PluginHost.call` with it is denied).
    public init(method: String = "GET", path: String = "/", routePath: String = "/", query: String = "",
                headers: [(name: String, value: String)] = [], parameters: [(name: String, value: String)] = [],
                body: [UInt8] = [], caller: Caller = .anonymous, requestID: String = "") {
        self.method = method
        self.path = path
        self.routePath = routePath
        self.query = query
        self.headers = headers
        self.parameters = parameters
        self.body = body
        self.caller = caller
        self.requestID = requestID
    }

    init(method: String, path: String, routePath: String, query: String, headers: [(name: String, value: String)],
         parameters: [(name: String, value: String)], body: [UInt8], caller: Caller, requestID: String, principalAddress: UInt) {
        self.init(method: method, path: path, routePath: routePath, query: query, headers: headers, parameters: parameters,
                  body: body, caller: caller, requestID: requestID)
        self.principalAddress = principalAddress
    }

    /// The value of path parameter `name` (`:name` in the route), or nil.
    public func parameter(_ name: String) -> String? { parameters.first { $0.name == name }?.value }

    /// The first header called `name` (case-insensitive), or nil.
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// What a handler answers. The kit copies it into the host's response writer.
public struct Response: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int = 200, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(_ text: String, status: Int = 200) -> Response {
        Response(status: status, headers: [("content-type", "text/plain; charset=utf-8")], body: Array(text.utf8))
    }

    public static func html(_ html: String, status: Int = 200) -> Response {
        Response(status: status, headers: [("content-type", "text/html; charset=utf-8")], body: Array(html.utf8))
    }

    /// `json` must already be encoded JSON text.
    public static func json(_ json: String, status: Int = 200) -> Response {
        Response(status: status, headers: [("content-type", "application/json")], body: Array(json.utf8))
    }
}

/// A question for an authorize hook.
public struct AuthorizationQuery: Sendable {
    public var caller: Caller
    public var action: String
    public var resource: String

    /// A question, for a plugin's own tests of its authorize hooks.
    public init(caller: Caller, action: String, resource: String) {
        self.caller = caller
        self.action = action
        self.resource = resource
    }
}

/// An authorize hook's answer.
public enum Decision: Sendable {
    case abstain, allow, deny
}

/// What an authenticate hook establishes.
public struct Identity: Sendable {
    public var id: String
    public var displayName: String
    public var tenant: String
    public var roles: [String]

    public init(id: String, displayName: String = "", tenant: String = "", roles: [String] = []) {
        self.id = id
        self.displayName = displayName
        self.tenant = tenant
        self.roles = roles
    }
}
