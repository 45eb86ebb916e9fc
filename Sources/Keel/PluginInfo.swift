// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelState

/// Everything `keel plugins list` shows about one plugin: its stored state and, when active, what it registered.
public struct PluginInfo: Sendable, Codable, Hashable {
    public var id: String
    public var name: String
    public var version: String
    public var description: String
    public var abi: String
    public var bundlePath: String
    /// "" for a manifest-only bundle.
    public var library: String
    /// True when the bundle has no library: it runs no code and contributes only what plugin.yaml declares.
    public var manifestOnly: Bool
    /// What the operator asked for.
    public var enabled: Bool
    public var status: PluginStatus
    public var reason: String?
    public var changedAt: String
    /// What plugin.yaml asks for.
    public var capabilities: [String]
    /// What it may use: the requested capabilities that are trusted or granted by the operator.
    public var grants: [String]
    public var dependencies: [String: String]
    /// `METHOD /ext/<id>/path` for each route, when active.
    public var routes: [String]
    /// Menu entry ids, when active.
    public var menus: [String]
    public var authenticators: [String]
    public var authorizers: [String]
    public var warnings: [String]
    /// The tenants it serves; nil means all.
    public var tenants: [String]?
    /// Permission items it declares, as `key:action`.
    public var permissions: [String]
    /// How the installed archive was signed ("signed by acme", "unsigned (allowed by the operator)"); nil when the
    /// bundle was put in place by hand rather than installed from a repository.
    public var signature: String?
    /// The key the plugin is pinned to, as `acme (key 3f2a9c81d4e0b7a2)` (the name it was trusted under and the key's
    /// fingerprint): an upgrade must be signed by it. Nil when none is (never installed from a signed package).
    public var signer: String?
    /// Interfaces it provides, e.g. `gitops.sync/1 1.1.0 ranking 10, serving host-wide (chosen by the operator)`.
    public var provides: [String] = []
    /// Interfaces it consumes, e.g. `gitops.sync/1 ^1 required`.
    public var consumes: [String] = []
    /// Commands it declares (ABI 1.1).
    public var commands: [CommandInfo] = []
    /// Apps it proxies while active, as `/ext/<id>/<prefix>/ → upstream`.
    public var proxies: [String] = []
    /// Its console pages, and the host endpoints they call with the viewer's rights, from plugin.yaml
    /// (`ConsoleDeclaration.fetchText`): what an operator reads before enabling it.
    public var pages: [String] = []
    public var consoleFetch: [String] = []
    /// `eager` or `lazy` (plugin.yaml's `activation:`).
    public var activation: String = "eager"
    /// For an enabled lazy plugin: `idle` (not loaded) or `active`; for an enabled plugin of a host started in safe mode,
    /// `not loaded: safe mode`; nil otherwise. Shown as `enabled (idle)`.
    public var activity: String?
    /// Where its code runs: `in-process` or `process` (the operator's choice, else plugin.yaml's `isolation:`).
    public var isolation: String = "in-process"
    /// While it runs in a worker process: the worker's process id, and how often the worker was restarted after a crash.
    public var workerPID: Int32?
    public var workerRestarts: Int?

    /// The status as `keel plugins list` shows it: `enabled (idle)` / `enabled (active)` for a lazy plugin.
    public var statusText: String { status.rawValue + (activity.map { " (\($0))" } ?? "") }
}
