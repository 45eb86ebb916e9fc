// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Hummingbird
import NIOCore
import Keel

/// Per-request state: Hummingbird's core storage plus the caller the auth chain established. Lives for one request.
public struct KeelRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The caller; anonymous until `AuthMiddleware` (or the plugin dispatcher) sets it.
    public var principal: Principal = .anonymous
    /// True when the caller presented the admin token.
    public var isAdmin = false

    /// The connection, to close it when a client is too slow.
    public let channel: (any Channel)?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
