// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// A Keel plugin written in Swift.
///
/// The kit turns it into the C ABI: one `keel_plugin` descriptor, trampolines for every callback, and errors
/// turned into status codes at the boundary (a thrown error never crosses into the host). Export it with:
///
/// ```swift
/// import KeelPluginKit
///
/// final class Greeter: KeelPlugin {
///     static let id = "greeter"          // must match plugin.yaml
///     // No `version`: plugin.yaml's is taken (or state one, which must then match it).
///     init() {}
///     func activate(_ host: PluginHost) throws {
///         try host.route("GET", "/hello/:name") { request in
///             .text("Hello, \(request.parameter("name") ?? "world")!\n")
///         }
///     }
/// }
///
/// @_cdecl("keel_plugin_entry")
/// public func keelPluginEntry() -> UnsafeRawPointer? { PluginExport.descriptor(for: Greeter.self) }
/// ```
///
/// One plugin type per shared object. A new instance is made for every activation; `deactivate` is called on it
/// once no handler of that activation is running or will run again.
public protocol KeelPlugin: AnyObject {
    /// The plugin id, which must equal `id` in plugin.yaml; or "" (the default) to take plugin.yaml's, so that the
    /// id is written in one place (a host before 1.1's id rule refuses an empty id, naming the mismatch).
    static var id: String { get }
    /// The semver version, which must equal `version` in plugin.yaml; or "" (the default) to take plugin.yaml's,
    /// so that the version is written in one place.
    static var version: String { get }

    init()

    /// Registers routes, menu entries and hooks through `host`. Throwing fails the activation: the host discards
    /// everything registered and records the error's description as the reason. [lifecycle]
    func activate(_ host: PluginHost) throws

    /// Stops what `activate` started (threads, timers). The default does nothing. [lifecycle]
    func deactivate()
}

extension KeelPlugin {
    public static var id: String { "" }
    public static var version: String { "" }
    public func deactivate() {}
}

/// A plugin that can tell whether it is able to do its work (its database answers, its upstream is reachable): the
/// host calls `checkHealth` on a schedule, on a thread of its own, under a budget (`keel serve --health-interval`,
/// `--health-budget-ms`), and shows the last result in `keel plugins health ID`, the admin API and the metric
/// `keel_plugin_healthy` (extension "keel.health/1"). A plugin type that does not conform has no check.
public protocol HealthChecking: KeelPlugin {
    /// Returns when healthy; throws to say it is not, with the reason the operator sees (no secrets in it). Never
    /// called before `activate` returned nor once `deactivate` started, never concurrently with another check of the
    /// same activation, but concurrently with its handlers and hooks; it must not block for long.
    func checkHealth() throws
}

/// An error a plugin returns through the ABI: a status code and a message for the host's log.
public struct PluginError: Error, CustomStringConvertible, Sendable {
    public enum Status: Int32, Sendable {
        case internalError = 1, invalidArgument, conflict, denied, notFound, unsupported, wrongState, limit, noMemory,
             unavailable
    }

    public var status: Status
    public var message: String

    public init(_ status: Status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }
}

extension PluginError.Status {
    /// The status in words, for messages: "denied", "not found", ...
    public var words: String {
        switch self {
        case .internalError: "failed inside the host"
        case .invalidArgument: "invalid argument"
        case .conflict: "conflict"
        case .denied: "denied"
        case .notFound: "not found"
        case .unsupported: "not supported"
        case .wrongState: "not allowed now"
        case .limit: "over a limit"
        case .noMemory: "out of memory"
        case .unavailable: "unavailable now; retry"
        }
    }
}
