// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI

/// `keel_status` values on the Swift side. Only this module sees the C constants.
public enum StatusCode {
    public static let ok: Int32 = KEEL_OK
    public static let internalError: Int32 = KEEL_ERR_INTERNAL
    public static let invalidArgument: Int32 = KEEL_ERR_INVALID_ARGUMENT
    public static let conflict: Int32 = KEEL_ERR_CONFLICT
    public static let denied: Int32 = KEEL_ERR_DENIED
    public static let notFound: Int32 = KEEL_ERR_NOT_FOUND
    public static let unsupported: Int32 = KEEL_ERR_UNSUPPORTED
    public static let wrongState: Int32 = KEEL_ERR_WRONG_STATE
    public static let limit: Int32 = KEEL_ERR_LIMIT
    public static let noMemory: Int32 = KEEL_ERR_NO_MEMORY
    public static let unavailable: Int32 = KEEL_ERR_UNAVAILABLE
    /// Host-side only, never passed to or from a plugin: the worker process running the plugin (`isolation:
    /// process`) died while the call was in flight.
    public static let workerCrashed: Int32 = -1001
    /// Host-side only: the call ran past the worker's call budget; the worker was killed.
    public static let workerTimedOut: Int32 = -1002

    /// Whether a plugin's error status refuses the request rather than says the plugin is broken: the caller's
    /// arguments, rights or timing (`INVALID_ARGUMENT`, `DENIED`, `NOT_FOUND`, `CONFLICT`, `UNSUPPORTED`,
    /// `WRONG_STATE`, `LIMIT`) or a passing outage (`UNAVAILABLE`). Such a call is a failed call in the metrics but
    /// no step toward disabling the plugin automatically: anyone allowed to call it could otherwise switch it off
    /// with bad input. `INTERNAL`, `NO_MEMORY`, a status outside the ABI and the host's own failures (a crashed or
    /// timed-out worker) are steps.
    public static func isRefusal(_ status: Int32) -> Bool {
        switch status {
        case KEEL_ERR_INVALID_ARGUMENT, KEEL_ERR_DENIED, KEEL_ERR_NOT_FOUND, KEEL_ERR_CONFLICT, KEEL_ERR_UNSUPPORTED,
             KEEL_ERR_WRONG_STATE, KEEL_ERR_LIMIT, KEEL_ERR_UNAVAILABLE: return true
        default: return false
        }
    }

    /// How the host answers a route handler's error status over HTTP (and through `Kernel.dispatch`): a refusal the
    /// client caused gets its 4xx, a passing outage 503, a handler that does not do what was asked 501, and
    /// everything else, `KEEL_ERR_LIMIT` included (most often the host's own response limit that a handler passed
    /// on), 500. The plugin's message goes to the log, never to the client: before ABI 1.0's hosts answered these,
    /// a plugin wrote it for the operator. A handler that wants its own words in a 4xx answers it itself.
    public static func httpAnswer(_ status: Int32) -> HTTPAnswer {
        switch status {
        case KEEL_ERR_INVALID_ARGUMENT: return HTTPAnswer(400, "bad-request", "the plugin refused the request as malformed")
        case KEEL_ERR_DENIED: return HTTPAnswer(403, "forbidden", "the plugin denied the request")
        case KEEL_ERR_NOT_FOUND: return HTTPAnswer(404, "not-found", "the plugin has no such resource")
        case KEEL_ERR_CONFLICT, KEEL_ERR_WRONG_STATE:
            return HTTPAnswer(409, "conflict", "the request conflicts with the resource's current state")
        case KEEL_ERR_UNSUPPORTED: return HTTPAnswer(501, "not-implemented", "the plugin does not support this request")
        case KEEL_ERR_UNAVAILABLE: return HTTPAnswer(503, "plugin-unavailable", "the plugin cannot handle the request now; retry")
        case workerCrashed: return HTTPAnswer(502, "plugin-crashed", "the plugin's worker process crashed while handling the request")
        case workerTimedOut: return HTTPAnswer(504, "plugin-timeout", "the plugin did not answer within its budget")
        default: return HTTPAnswer(500, "plugin-error", "the plugin failed to handle the request")
        }
    }

    /// The host's answer to a failed route handler: an HTTP status, a stable error code and a fixed message.
    public struct HTTPAnswer: Sendable, Equatable {
        public let status: Int
        public let code: String
        public let message: String
        init(_ status: Int, _ code: String, _ message: String) { self.status = status; self.code = code; self.message = message }
    }

    /// A readable name; unknown codes read as what the host treats them as, an internal error.
    public static func name(_ status: Int32) -> String {
        switch status {
        case KEEL_OK: return "KEEL_OK"
        case KEEL_ERR_INVALID_ARGUMENT: return "KEEL_ERR_INVALID_ARGUMENT"
        case KEEL_ERR_CONFLICT: return "KEEL_ERR_CONFLICT"
        case KEEL_ERR_DENIED: return "KEEL_ERR_DENIED"
        case KEEL_ERR_NOT_FOUND: return "KEEL_ERR_NOT_FOUND"
        case KEEL_ERR_UNSUPPORTED: return "KEEL_ERR_UNSUPPORTED"
        case KEEL_ERR_WRONG_STATE: return "KEEL_ERR_WRONG_STATE"
        case KEEL_ERR_LIMIT: return "KEEL_ERR_LIMIT"
        case KEEL_ERR_NO_MEMORY: return "KEEL_ERR_NO_MEMORY"
        case KEEL_ERR_UNAVAILABLE: return "KEEL_ERR_UNAVAILABLE"
        case KEEL_ERR_INTERNAL: return "KEEL_ERR_INTERNAL"
        case workerCrashed: return "worker crashed"
        case workerTimedOut: return "worker timed out"
        // An HTTP status returned where a keel_status goes (`return 200;` in a handler) is the likely mistake.
        case 100...599: return "KEEL_ERR_INTERNAL (unknown status \(status): an HTTP status? calls return a keel_status such as KEEL_OK; a handler sets the HTTP status with res->set_status)"
        default: return "KEEL_ERR_INTERNAL (unknown status \(status))"
        }
    }

    /// The ABI version this host implements.
    public static let hostABIMajor = Int(KEEL_ABI_VERSION_MAJOR)
    public static let hostABIMinor = Int(KEEL_ABI_VERSION_MINOR)
    public static let hostABIPatch = Int(KEEL_ABI_VERSION_PATCH)
}

/// The words of the host's refusals of a registration for its size, shared by the refusals themselves and
/// `keel plugins validate`, which finds them in the log (and nothing else that merely names `struct_size`).
public enum SizeRefusal {
    /// A growable struct below its ABI 1.0 size (`HostABI`).
    public static let belowABI = "is smaller than its ABI 1.0 size"
    /// An interface table too small to hold its own size (`ActivationContext+Services`).
    public static let table = "the table's struct_size is "

    /// True when `message` is one of those refusals.
    public static func isRefusal(_ message: String) -> Bool { message.contains(belowABI) || message.contains(table) }
}
