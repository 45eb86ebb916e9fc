// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import Glibc
import KeelManifest
import Synchronization

/// The host side of one activation of one plugin: what the plugin's `keel_ctx *` points at.
///
/// It checks and collects registrations while `activate` runs, counts handler calls in flight so that
/// deactivation can wait for them, and carries the per-thread error message a plugin sets before failing.
/// Thread-safe. Kept alive for as long as the library is mapped, so a stray late call from a plugin thread finds a
/// closed context instead of freed memory.
public final class ActivationContext: Sendable {
    enum Phase: Sendable, Equatable {
        case created
        case activating(UInt)
        case active
        case draining
        case closed
    }

    public let pluginID: String
    /// Capabilities this activation may use.
    public let grants: Set<Capability>
    /// Foreign path prefixes granted to this activation (`route-prefix:/legacy`).
    public let routePrefixes: [String]
    /// Those the plugin.yaml asks for, granted or not: a refusal for one not granted says to grant it.
    public let requestedRoutePrefixes: [String]
    /// The capabilities the plugin.yaml asks for (nil: not known): a refusal for a sensitive one it does not ask for
    /// says to ask for it first (a grant of it would be refused).
    public let requestedCapabilities: Set<Capability>?
    /// The plugin's configuration as JSON, handed out through "keel.config/1": C text allocated in `init`, valid (as
    /// the ABI says) until deactivate returns. `close` frees it when no call is still running (a context is kept
    /// after it closes, for stray calls: a kept library's contexts would otherwise hold every activation's
    /// configuration, up to 1 MiB each, for the life of the process); a closed context hands out an empty string.
    private let config: Mutex<keel_str>
    var configText: keel_str { config.withLock { $0 } }
    public let limits: RegistrationLimits
    public let budgets: CallBudgets
    /// Who this activation is, as consumers of its services see it, and the interfaces it declares.
    public let identity: ServiceIdentity
    /// How a refusal for a capability not granted says to grant it.
    public let grantHint: GrantHint
    let environment: any PluginEnvironment
    private let consecutiveFailures = Atomic<Int>(0)
    private let reportedMisbehaving = Atomic<Bool>(false)
    private let phase = Mutex(Phase.created)
    /// What activate registered so far (internal: the registration calls in ActivationContext+Services use it too).
    let pending = Mutex(Contributions())
    private let errors = Mutex([UInt: String]())
    /// How many messages `errors` holds, read without its lock.
    let errorsHeld = Atomic<Int>(0)  // internal for the tests
    private let lastRefusal = Mutex<String?>(nil)
    private let inFlight = Atomic<Int>(0)
    /// The calls in `inFlight` that are no use (`enter(use: false)`): the idle time-out does not wait for them.
    private let quietInFlight = Atomic<Int>(0)
    /// True while `drain` waits for this activation's calls on the lifecycle thread (a disable, a stop).
    private let drainingLifecycle = Atomic<Bool>(false)
    /// Service leases this activation holds on other plugins' tables.
    let leases = Atomic<Int>(0)
    /// The lines the plugin writes, and the host's warnings about its calls, per second (`logBudgeted`): budgets of
    /// their own, so that a plugin logging its fill first cannot hide what the host says about it. Each window starts
    /// with its first line.
    private let ownLines = Mutex(LogBudget(now: 0, source: "the plugin wrote"))
    private let hostLines = Mutex(LogBudget(now: 0, source: "of the host's warnings about the plugin's calls"))
    /// True exactly while the phase is `.active`: what `enter` reads on the request path, without the lock.
    private let admitting = Atomic<Bool>(false)
    /// Set by every admitted call, cleared by `takeUsed`: how the kernel tells a lazy plugin nobody uses.
    private let used = Atomic<Bool>(false)

    public init(pluginID: String, grants: Set<Capability>, routePrefixes: [String] = [], requestedRoutePrefixes: [String] = [],
                requestedCapabilities: Set<Capability>? = nil,
                config: String = "", limits: RegistrationLimits = .default, budgets: CallBudgets = .default,
                identity: ServiceIdentity = ServiceIdentity(), grantHint: GrantHint = .cli, environment: any PluginEnvironment) {
        self.requestedRoutePrefixes = requestedRoutePrefixes
        self.requestedCapabilities = requestedCapabilities
        self.config = Mutex(HostABI.staticString(config))
        self.grantHint = grantHint
        self.identity = identity
        self.pluginID = pluginID
        self.grants = grants
        self.routePrefixes = routePrefixes
        self.limits = limits
        self.budgets = budgets
        self.environment = environment
    }

    static var currentThread: UInt { UInt(bitPattern: Int(bitPattern: UInt(pthread_self()))) }

    // MARK: lifecycle (called by PluginLibrary)

    func beginActivation() { phase.withLock { $0 = .activating(Self.currentThread) } }

    /// Ends activate: on success the context goes live and hands over what was registered.
    func endActivation(success: Bool) -> Contributions {
        phase.withLock { $0 = success ? .active : .closed }
        admitting.store(success, ordering: .sequentiallyConsistent)
        return pending.withLock { p in
            defer { p = Contributions() }
            return p
        }
    }

    /// Adds contributions the host makes on the plugin's behalf (its manifest's menus) before activate.
    func seed(_ contributions: Contributions) { pending.withLock { $0 = contributions } }

    /// A manifest-only bundle's activation: no plugin code runs; `seed` (what the host contributes on its behalf:
    /// menus, assets, proxies) goes live at once and is returned as the contributions. [lifecycle]
    public func activateWithoutCode(_ seed: Contributions) -> Contributions {
        self.seed(seed)
        beginActivation()
        return endActivation(success: true)
    }

    /// Closes a manifest-only activation after a drain (`drain` or the caller's own wait) left `running` calls:
    /// there is no deactivate to run. Returns a problem to report, or nil. [lifecycle]
    public func closeWithoutCode(stillRunning running: Int, drainTimeout: Double) -> String? {
        close()
        return running > 0 ? "\(running) host-served call(s) still running after \(drainTimeout)s" : nil
    }

    /// Stops new calls and waits up to `timeout` seconds for calls in flight. Returns the calls still running.
    public func drain(timeout: Double) -> Int {
        stopAdmitting()
        drainingLifecycle.store(true, ordering: .sequentiallyConsistent)
        defer { drainingLifecycle.store(false, ordering: .sequentiallyConsistent) }
        let deadline = Self.now() + timeout
        while inFlight.load(ordering: .sequentiallyConsistent) > 0 && Self.now() < deadline { usleep(1000) }
        return inFlight.load(ordering: .sequentiallyConsistent)
    }

    /// True when the call running on this thread belongs to an activation whose calls the lifecycle thread is waiting
    /// for (`drain`): anything that call asks of the lifecycle (waking an idle plugin) would wait behind the drain,
    /// and the drain for the call, until the drain's time-out. [thread-safe]
    public static var currentCallHoldsLifecycle: Bool {
        currentCall?.drainingLifecycle.load(ordering: .sequentiallyConsistent) ?? false
    }

    /// Stops admitting calls; those already running go on (`callsInFlight` counts them). [thread-safe]
    public func stopAdmitting() {
        phase.withLock { $0 = .draining }
        // Sequentially consistent with `enter`: either a call sees `admitting` false, or this sees it in flight.
        admitting.store(false, ordering: .sequentiallyConsistent)
    }

    /// True when a call was admitted since the last `takeUsed`; clears the mark. [thread-safe]
    public func takeUsed() -> Bool { used.exchange(false, ordering: .relaxed) }

    /// Calls into the plugin running now. [thread-safe]
    public var callsInFlight: Int { inFlight.load(ordering: .sequentiallyConsistent) }

    /// Closes the activation: no call is admitted any more, and leases it still holds on other plugins' services
    /// are released (and logged), so that their providers can be taken down.
    /// - Parameter freeingConfig: free the configuration text (only once the plugin's deactivate has returned).
    func close(freeingConfig: Bool = false) {
        phase.withLock { $0 = .closed }
        admitting.store(false, ordering: .sequentiallyConsistent)
        if freeingConfig && callsInFlight == 0 { config.withLock { Self.free(&$0) } }
        let leftover = LeaseTable.releaseAll(heldBy: self)
        if !leftover.isEmpty {
            let names = Set(leftover.map(\.description)).sorted().joined(separator: ", ")
            environment.log(plugin: pluginID, level: .warn,
                            message: "\(leftover.count) service lease(s) still held after deactivate (\(names)); released by the host")
        }
    }

    public var isActive: Bool { admitting.load(ordering: .sequentiallyConsistent) }

    /// True once `close` ran: a plugin thread that outlived its activation gets nothing more from the host.
    var isClosed: Bool { phase.withLock { $0 == .closed } }

    deinit { config.withLock { Self.free(&$0) } }

    private static func free(_ text: inout keel_str) {
        text.ptr.map { UnsafeMutablePointer(mutating: $0).deallocate() }
        text = keel_str(ptr: nil, len: 0)
    }

    /// Logs a line the plugin's code caused, held to a log budget: its own `log` calls (`byPlugin`) and the host's
    /// warnings about its calls each have `LogBudget.perSecond` lines a second; the rest are dropped, and counted in
    /// one warning with the next line after the second ends. A plugin that logs (or misuses a host call) in a loop
    /// cannot make the host write without bound (480 MB to standard error in 1.4 s, 2026-12-07). [thread-safe]
    func logBudgeted(_ level: LogLevel, _ message: String, generation: Int? = nil, byPlugin: Bool = false) {
        let now = Self.now()
        func take(_ budget: inout LogBudget) -> (pass: Bool, report: String?) {
            let report = budget.tick(now: now)
            return (budget.admit(now: now), report)
        }
        // (A Mutex cannot be chosen by value: each is locked where it lives.)
        let (pass, report) = byPlugin ? ownLines.withLock { take(&$0) } : hostLines.withLock { take(&$0) }
        if let report { environment.log(plugin: pluginID, generation: generation, level: .warn, message: report) }
        if pass { environment.log(plugin: pluginID, generation: generation, level: level, message: message) }
    }

    /// Seconds on a monotonic clock, for call budgets and drain deadlines. The coarse clock (a few milliseconds of
    /// resolution, budgets are hundreds) is read without a system call and costs a fraction of the precise one,
    /// which matters twice per call into a plugin.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    // MARK: calls into the plugin

    /// Admits one call into the plugin; false once the activation is draining or closed.
    /// - Parameter use: whether the call counts as a use for the idle time-out (`takeUsed`); not for what the host
    ///   itself asks (a service-change notice, a health check), which would keep a lazy plugin loaded for nothing.
    func enter(use: Bool = true) -> Bool {
        inFlight.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if admitting.load(ordering: .sequentiallyConsistent) {
            // Read first: the flag's cache line is written once per idle check, not once per call.
            if !use {
                quietInFlight.wrappingAdd(1, ordering: .relaxed)
            } else if !used.load(ordering: .relaxed) {
                used.store(true, ordering: .relaxed)
            }
            return true
        }
        inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        return false
    }

    /// Ends a call `enter` admitted; `use` as it was given to `enter`.
    func leave(use: Bool = true) {
        if !use { quietInFlight.wrappingSubtract(1, ordering: .relaxed) }
        inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }

    /// The calls running now that count as a use (`enter(use:)`): what the idle time-out waits for. [thread-safe]
    public var usesInFlight: Int {
        inFlight.load(ordering: .sequentiallyConsistent) - quietInFlight.load(ordering: .relaxed)
    }

    /// Accounts for a finished auth hook call. Returns the error to deny with: the hook failed, or it ran over its
    /// budget (a hook too slow to trust decides nothing).
    func finishHook(_ what: @autoclosure () -> String, hook: String, started: Double, status: Int32) -> PluginCallError? {
        let message = status == StatusCode.ok ? "" : takeError()
        let budget = budgets.hook
        let late = Self.now() - started > budget
        _ = account(what(), started: started, budget: budget, failed: status != StatusCode.ok || late,
                    detail: StatusCode.name(status) + (message.isEmpty ? "" : " " + message))
        if late {
            environment.hookOverran(plugin: pluginID, hook: hook)
            return PluginCallError(pluginID: pluginID, status: StatusCode.limit,
                                   message: "\(what()) ran over its \(Int(budget * 1000)) ms budget")
        }
        return status == StatusCode.ok ? nil : PluginCallError(pluginID: pluginID, status: status, message: message)
    }

    /// Same as `finishHook(_:hook:started:status:)` for a call that already has its outcome (a hook in a worker process).
    func finishHook(_ what: @autoclosure () -> String, hook: String, started: Double, failure: PluginCallError?) -> PluginCallError? {
        let budget = budgets.hook
        let late = Self.now() - started > budget
        _ = account(what(), started: started, budget: budget, failed: failure != nil || late,
                    detail: failure.map { StatusCode.name($0.status) + ($0.message.isEmpty ? "" : " " + $0.message) } ?? "KEEL_OK")
        if late {
            environment.hookOverran(plugin: pluginID, hook: hook)
            return PluginCallError(pluginID: pluginID, status: StatusCode.limit,
                                   message: "\(what()) ran over its \(Int(budget * 1000)) ms budget")
        }
        return failure
    }

    /// Accounts for a hook call not made (`HookWatch`): counted in the metrics and logged once per episode, never
    /// toward the failures in a row that disable a plugin (see `HookWatch` for why). The error denies the request.
    func refuseHook(_ refusal: (reason: String, first: Bool)) -> PluginCallError {
        environment.callFailed(plugin: pluginID)
        if refusal.first {
            environment.log(plugin: pluginID, level: .warn,
                            message: refusal.reason + "; its requests are denied until fewer are (keel plugins disable \(pluginID) stops asking it)")
        }
        return PluginCallError(pluginID: pluginID, status: StatusCode.unavailable, message: refusal.reason)
    }

    /// Accounts for one finished call: logs it when it ran over `budget`, counts failures in a row, and reports
    /// each failure to the environment (metrics).
    /// - Returns: true when the call ran over its budget.
    /// `what` and `detail` are only built when there is something to report (calls are on the request path).
    func account(_ what: @autoclosure () -> String, started: Double, budget: Double, failed: Bool, declined: Bool = false,
                 detail: @autoclosure () -> String) -> Bool {
        let elapsed = Self.now() - started
        let over = elapsed > budget
        if over {
            environment.log(plugin: pluginID, level: .warn,
                            message: "\(what()) took \(Int(elapsed * 1000)) ms, over its budget of \(Int(budget * 1000)) ms")
        }
        // The plugin said it cannot serve now (KEEL_ERR_UNAVAILABLE: a store it needs is down): a failed call in the
        // metrics, but neither a step toward disabling it (it would stay off once the outage ended) nor a success.
        if declined {
            environment.callFailed(plugin: pluginID)
            return over
        }
        if !failed {
            // Read first: on the common path the shared counter's cache line is not written.
            if consecutiveFailures.load(ordering: .relaxed) != 0 { consecutiveFailures.store(0, ordering: .relaxed) }
            return over
        }
        environment.callFailed(plugin: pluginID)
        let count = consecutiveFailures.wrappingAdd(1, ordering: .relaxed).newValue
        if count >= budgets.failureThreshold, !reportedMisbehaving.exchange(true, ordering: .acquiringAndReleasing) {
            environment.misbehaving(plugin: pluginID, generation: identity.generation, reason: "\(count) calls in a row failed (last: \(what()): \(detail()))")
        }
        return over
    }

    // MARK: the call running on this thread

    /// The activation whose handler or hook this thread is running, so that `set_error(NULL, msg)` from plugin code
    /// that kept no `keel_ctx` reaches the right call. Per thread; calls nest (a handler asking the auth chain runs
    /// other plugins' hooks), so `beginCall` returns the outer one for `endCall` to put back.
    static func beginCall(_ context: ActivationContext) -> UnsafeMutableRawPointer? {
        context.dropStaleError()
        let outer = pthread_getspecific(currentCallKey)
        pthread_setspecific(currentCallKey, Unmanaged.passUnretained(context).toOpaque())
        return outer
    }

    static func endCall(_ outer: UnsafeMutableRawPointer?) { pthread_setspecific(currentCallKey, outer) }

    /// Runs `body` on this thread as a call of `context`'s, without counting it in flight: for a host thread that
    /// serves what a plugin in a worker process asks (a command, a lease), so that while that plugin is being stopped
    /// it is refused a wake of an idle plugin as its in-process calls are (`currentCallHoldsLifecycle`).
    public static func serving<T>(_ context: ActivationContext, _ body: () -> T) -> T {
        let outer = pthread_getspecific(currentCallKey)
        pthread_setspecific(currentCallKey, Unmanaged.passUnretained(context).toOpaque())
        defer { pthread_setspecific(currentCallKey, outer) }
        return body()
    }

    /// The principal the host handed to the route handler running on this thread (nil outside a handler): the only
    /// principal a plugin may act for when it calls another plugin's command, so it cannot name a caller of its own.
    /// Set and put back around each handler call, like `beginCall`, with the handler's own activation (`serving`):
    /// only that plugin acts for the caller, not code it calls in-process (a provider's service function, a command
    /// it calls, whose plugin would otherwise act as the caller with its own `calls:`, with the pointer passed along
    /// or one its authorize hook kept from the same request).
    /// The request's own fields go beside the pointer: what the plugin's pointer points to is plugin-writable memory,
    /// so the principal a call acts for is the host's copy, never read back through it.
    static func beginRequest(_ prepared: PreparedRequest, serving: ActivationContext) -> RequestSlot {
        let outer = RequestSlot(principal: pthread_getspecific(currentPrincipalKey), request: pthread_getspecific(currentRequestKey),
                                serving: pthread_getspecific(currentServingKey))
        pthread_setspecific(currentPrincipalKey, prepared.pointer.pointee.principal.map { UnsafeRawPointer($0) })
        pthread_setspecific(currentRequestKey, Unmanaged.passUnretained(prepared.request.box).toOpaque())
        pthread_setspecific(currentServingKey, Unmanaged.passUnretained(serving).toOpaque())
        return outer
    }

    static func endRequest(_ outer: RequestSlot) {
        pthread_setspecific(currentPrincipalKey, outer.principal)
        pthread_setspecific(currentRequestKey, outer.request)
        pthread_setspecific(currentServingKey, outer.serving)
    }

    /// What `beginRequest` replaced on this thread, for `endRequest` to put back.
    struct RequestSlot {
        let principal: UnsafeMutableRawPointer?, request: UnsafeMutableRawPointer?, serving: UnsafeMutableRawPointer?
    }

    /// The principal of the request the handler running on this thread serves, as the host made it, when `caller` is
    /// that handler's activation and `principal` is the pointer handed to it; nil otherwise (a principal the plugin
    /// made up, or another plugin's code running inside the handler's call).
    static func currentPrincipal(matching principal: UnsafePointer<keel_principal>, caller: ActivationContext) -> Principal? {
        guard pthread_getspecific(currentPrincipalKey) == UnsafeMutableRawPointer(mutating: principal),
              pthread_getspecific(currentServingKey) == Unmanaged.passUnretained(caller).toOpaque(),
              let request = pthread_getspecific(currentRequestKey) else { return nil }
        return Unmanaged<PluginRequest.Fields>.fromOpaque(request).takeUnretainedValue().principal
    }

    /// The activation whose call this thread is running, if any. Valid only during that call.
    static var currentCall: ActivationContext? {
        pthread_getspecific(currentCallKey).map { Unmanaged<ActivationContext>.fromOpaque($0).takeUnretainedValue() }
    }

    // MARK: error channel

    /// Keeps `message` as the reason of the call running on this thread (a handler, hook, command, service listener,
    /// health check, activate or deactivate: see `beginCall`), which reads it when the call returns. A message set on
    /// a thread of the plugin's own is ignored: no call of the host's would ever read it, and it would be held for good
    /// (one entry per such thread) and make every later call look for a stale one.
    func setError(_ message: String) {
        guard pthread_getspecific(currentCallKey) != nil else { return }
        errors.withLock { all in
            if all.updateValue(message, forKey: Self.currentThread) == nil { errorsHeld.add(1, ordering: .relaxed) }
        }
    }

    /// The message the plugin set on this thread for the call that just returned, cleared on read.
    func takeError() -> String {
        errors.withLock { all in
            let message = all.removeValue(forKey: Self.currentThread)
            if message != nil { errorsHeld.subtract(1, ordering: .relaxed) }
            return message
        } ?? ""
    }

    /// Forgets a message left on this thread by an earlier call that did not fail (a `set_error` followed by
    /// `KEEL_OK`, or the host's note of a call the plugin made and handled), so that it never becomes the reason of a
    /// later call, perhaps another caller's. Called as each call begins; one relaxed load while none is held.
    func dropStaleError() {
        guard errorsHeld.load(ordering: .relaxed) > 0 else { return }
        _ = takeError()
    }

    /// The last registration the host refused, for an activation that fails without a message of its own.
    func takeRefusal() -> String? { lastRefusal.withLock { r in defer { r = nil }; return r } }

    // MARK: registrations (called from the C trampolines while activate runs)

    /// A refused registration: logged against the plugin and returned as a status.
    func refuse(_ status: Int32, _ message: String) -> Int32 {
        lastRefusal.withLock { $0 = message }
        logBudgeted(.warn, message)
        return status
    }

    func admitRegistration(_ capability: Capability?, what: String) -> Int32? {
        let state = phase.withLock { $0 }
        guard case let .activating(thread) = state, thread == Self.currentThread else {
            return refuse(StatusCode.wrongState, "\(what): registrations are only accepted during activate, on its thread")
        }
        guard let capability else { return nil }
        guard grants.contains(capability) else {
            let asked = requestedCapabilities?.contains(capability) ?? true
            let fix = capability.isSensitive && asked ? grantHint.text(id: pluginID, capability: capability.rawValue)
                : "ask for it under capabilities: in plugin.yaml" + (capability.isSensitive ? ", then " + grantHint.text(id: pluginID, capability: capability.rawValue) : "")
            return refuse(StatusCode.denied, "\(what): capability \"\(capability.rawValue)\" was not granted (\(fix))")
        }
        return nil
    }
}

/// The per-thread slot behind `ActivationContext.currentCall` (made once, never destroyed).
private let currentCallKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()

/// The per-thread slots behind `ActivationContext.currentPrincipal(matching:caller:)`: the principal pointer handed
/// to the handler, its request's fields and the handler's activation (made once, never destroyed).
private let currentPrincipalKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()
private let currentRequestKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()
private let currentServingKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()
