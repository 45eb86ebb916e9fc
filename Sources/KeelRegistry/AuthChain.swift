// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader

/// The outcome of running the auth chain for a request.
public struct AuthOutcome: Sendable {
    public var principal: Principal
    public var decision: AuthDecision
    /// Why the chain denied, for the log (never for the client): the hook and its error.
    public var denialReason: String?
}

extension Snapshot {
    /// Establishes the caller: the first authenticate hook (in publish order) that names a principal `accept`s wins;
    /// none means anonymous. A hook that fails denies the request (fail closed), reported as `.failure`. Hooks of
    /// plugins `include` refuses (all are asked when nil) are never called: they do not see the request at all.
    /// - Parameter stopped: asked about a hook whose plugin stopped taking calls after this snapshot was taken (a
    ///   reload replaced its generation, or it was disabled): true ends the walk with that `isNotActive` failure, for
    ///   the caller to ask the chain as it is now; false (the default) asks the next hook, as a request arriving a
    ///   moment later would be asked.
    /// [request]
    public func authenticate(_ request: PluginRequest, include: ((String) -> Bool)? = nil,
                             stopped: (AuthenticateHook) -> Bool = { _ in false },
                             accept: (AuthenticateHook, Principal) -> Bool = { _, _ in true }) -> Result<Principal, PluginCallError> {
        for hook in authenticators {
            if let include, !include(hook.pluginID) { continue }
            switch hook.authenticate(request) {
            case let .success(principal?):
                if accept(hook, principal) { return .success(principal) }
            case .success(nil): continue
            // No hook names more than the credentials the client presents: one that stopped names no one, and the
            // next is asked, unless the caller asks the newer chain instead (`stopped`).
            case let .failure(error) where error.isNotActive:
                if stopped(hook) { return .failure(error) }
            case var .failure(error):
                error.hook = hook.name
                return .failure(error)
            }
        }
        return .success(.anonymous)
    }

    /// Asks every authorize hook of the plugins `include` admits (all when nil): any deny (or any failing hook) wins; otherwise allow if some hook allowed,
    /// else abstain. The caller decides what an abstention means (plugin routes: allowed; admin API: denied).
    /// While a guard that `include` admits is missing (`missingGuards`), denies without asking: the host is closed,
    /// as when a hook fails, not open because the plugin whose hooks would have denied is not running. With
    /// `admittedWhileClosed` (the admin API, called with the admin token: the operator's way to act), the hooks
    /// that run are asked as always, and a missing guard does not deny. A hook whose plugin stopped taking calls
    /// after this snapshot was taken denies too, and is named to `stopped`, for the caller to ask the chain as it is
    /// now (`AuthorizeHook.decide`).
    /// [request]
    public func authorize(_ principal: Principal, action: String, resource: String,
                          request: PluginRequest? = nil, prepared: PreparedRequest? = nil,
                          include: ((String) -> Bool)? = nil, admittedWhileClosed: Bool = false,
                          stopped: (AuthorizeHook) -> Void = { _ in }) -> (AuthDecision, String?) {
        if !missingGuards.isEmpty, !admittedWhileClosed, let id = missingGuards.keys.filter({ include?($0) ?? true }).min() {
            return (.deny, "guard \"\(id)\" is not running (\(missingGuards[id] ?? "")): every request is denied until it runs again or the operator disables it")
        }
        if authorizers.isEmpty { return (.abstain, nil) }
        let hooks = include.map { include in authorizers.filter { include($0.pluginID) } } ?? authorizers
        return AuthorizeHook.decide(hooks, principal: principal, action: action,
                                    resource: resource, request: request, prepared: prepared, stopped: stopped)
    }
}
