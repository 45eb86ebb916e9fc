// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Hummingbird
import Keel

/// An error answered as JSON: `{"error": {"code": "<stable code>", "message": "<reason>"}}`.
/// Messages never name internals (paths of the host, plugin messages): those go to the log.
public struct APIError: HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// Why the auth chain refused (which hook, which missing permission), for the log and the audit trail; the
    /// response carries it only to the admin token (`Gatekeeper.authorize` puts it in `message` then).
    var denial: String?
    /// The request's id (`X-Request-Id`), answered with the error as with any answer of a plugin route.
    var requestID: String?

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = JSONBody.response(["error": ["code": code, "message": message]], status: status)
        if let requestID { response.headers[Gatekeeper.requestIDHeader] = requestID }
        return response
    }

    static let unauthorized = APIError(.unauthorized, "unauthorized", "authentication required")
    static let forbidden = APIError(.forbidden, "forbidden", "access denied")
    /// A 403 `forbidden` whose reason (`denial`) goes to the log and the audit trail, not to the client.
    static func forbidden(because denial: String) -> APIError {
        var error = forbidden
        error.denial = denial
        return error
    }
    static let notFound = APIError(.notFound, "not-found", "no such resource")
    /// 503 `lifecycle-stalled`: the kernel's lifecycle thread is stuck in plugin code (`Kernel.lifecycleStall`), so
    /// a request that needs the kernel would wait for ever.
    static func stalled(_ stall: LifecycleStall) -> APIError {
        APIError(.serviceUnavailable, "lifecycle-stalled", "the host's lifecycle is stalled: \(stall); \(stall.remedy)")
    }
    static func tooLarge(_ limit: Int) -> APIError {
        APIError(.contentTooLarge, "body-too-large", "request body is over the \(limit)-byte limit")
    }
}

/// JSON responses.
enum JSONBody {
    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        raw((try? Kernel.encoder().encode(value)) ?? Data("{}".utf8), status: status)
    }

    /// A response whose JSON text the caller made (e.g. a command's result, already JSON).
    static func rawResponse(_ json: String, status: HTTPResponse.Status = .ok) -> Response { raw(Data(json.utf8), status: status) }

    private static func raw(_ data: Data, status: HTTPResponse.Status) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}
