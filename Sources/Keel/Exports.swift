// Keel — a microkernel plugin host. Licensed under Apache-2.0.

// What an embedder needs comes with `import Keel`.
@_exported import struct KeelLoader.Principal
@_exported import struct KeelLoader.PluginRequest
@_exported import struct KeelLoader.PluginResponse
@_exported import struct KeelLoader.PreparedRequest
@_exported import struct KeelLoader.HeaderField
@_exported import struct KeelLoader.RegistrationLimits
@_exported import struct KeelLoader.PluginCallError
@_exported import struct KeelLoader.LoadError
@_exported import enum KeelLoader.AuthDecision
@_exported import enum KeelLoader.LogLevel
@_exported import class KeelRegistry.PluginRegistry
@_exported import struct KeelRegistry.Snapshot
@_exported import struct KeelRegistry.MenuNode
@_exported import struct KeelState.PluginRecord
@_exported import enum KeelState.PluginStatus
@_exported import class KeelState.StateStore
@_exported import struct KeelManifest.Manifest
@_exported import struct KeelManifest.Semver
@_exported import enum KeelLoader.StatusCode
@_exported import struct KeelState.StateError
@_exported import struct KeelLoader.CallBudgets
@_exported import struct KeelManifest.RepositoryIndex
@_exported import enum KeelManifest.Capability
@_exported import struct KeelManifest.PluginBundle
@_exported import struct KeelManifest.BundleScanner
@_exported import KeelExtensions
@_exported import enum KeelLoader.CommandArgument
@_exported import enum KeelLoader.CommandValue
@_exported import struct KeelLoader.CommandError
@_exported import struct KeelManifest.ProxyDeclaration
@_exported import enum KeelLoader.RequestScope
@_exported import class KeelLoader.HealthCheck
@_exported import struct KeelIsolation.IsolationPolicy
@_exported import enum KeelManifest.Isolation
@_exported import struct KeelManifest.GrantHint
