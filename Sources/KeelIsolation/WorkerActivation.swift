// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest

/// What a worker needs to load and activate a plugin: the `activate` message, sent once after the worker starts.
public struct WorkerActivation: Sendable, Hashable {
    public var pluginID: String
    /// The library to load (the bundle's own file: the worker is a fresh process, so nothing else holds it open).
    public var libraryPath: String
    /// The bundle's plugin.yaml, which the library is checked against.
    public var manifestPath: String
    /// Capability names (`routes`, `authorize`, ...) and foreign route prefixes granted to this activation.
    public var grants: [String]
    public var routePrefixes: [String]
    /// The plugin's configuration as JSON.
    public var config: String
    public var limits: RegistrationLimits
    public var budgets: CallBudgets
    public var version: String
    public var generation: Int
    /// Limits the worker sets on itself before loading the library; 0 is none.
    public var memoryLimitBytes: Int
    public var cpuSeconds: Int
    /// How a refusal for a capability not granted says to grant it (`GrantHint.template`).
    public var grantHint: String

    public init(pluginID: String, libraryPath: String, manifestPath: String, grants: [String], routePrefixes: [String],
                config: String, limits: RegistrationLimits, budgets: CallBudgets, version: String, generation: Int,
                memoryLimitBytes: Int = 0, cpuSeconds: Int = 0, grantHint: String = GrantHint.cli.template) {
        self.pluginID = pluginID
        self.libraryPath = libraryPath
        self.manifestPath = manifestPath
        self.grants = grants
        self.routePrefixes = routePrefixes
        self.config = config
        self.limits = limits
        self.budgets = budgets
        self.version = version
        self.generation = generation
        self.memoryLimitBytes = memoryLimitBytes
        self.cpuSeconds = cpuSeconds
        self.grantHint = grantHint
    }
}

extension WireWriter {
    mutating func activation(_ a: WorkerActivation) {
        string(a.pluginID); string(a.libraryPath); string(a.manifestPath); strings(a.grants); strings(a.routePrefixes)
        string(a.config); int(a.limits.routes); int(a.limits.menus); int(a.limits.hooks)
        double(a.budgets.handler); double(a.budgets.hook); int(a.budgets.failureThreshold)
        string(a.version); int(a.generation); int(a.memoryLimitBytes); int(a.cpuSeconds); string(a.grantHint)
    }
}

extension WireReader {
    mutating func activation() throws(WireError) -> WorkerActivation {
        WorkerActivation(pluginID: try string(), libraryPath: try string(), manifestPath: try string(), grants: try strings(),
                         routePrefixes: try strings(), config: try string(),
                         limits: RegistrationLimits(routes: try int(), menus: try int(), hooks: try int()),
                         budgets: CallBudgets(handler: try double(), hook: try double(), failureThreshold: try int()),
                         version: try string(), generation: try int(), memoryLimitBytes: try int(), cpuSeconds: try int(),
                         grantHint: atEnd ? GrantHint.cli.template : try string())
    }
}
