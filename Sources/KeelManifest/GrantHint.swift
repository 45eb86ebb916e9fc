// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// How the operator of this host grants a plugin a capability, as the messages that need a grant say it: the CLI's
/// `keel plugins grant ID CAPABILITY` by default; an embedder names its own call (the C API: `keel_grant(...)`), since
/// the CLI cannot reach a kernel's in-memory state. A value type; safe on any thread.
public struct GrantHint: Sendable, Hashable {
    /// The text with `{id}` and `{capability}` where the plugin's id and the capability's name go.
    public var template: String

    public init(_ template: String) { self.template = template }

    /// `keel plugins grant ID CAPABILITY`, in backquotes.
    public static let cli = GrantHint("`keel plugins grant {id} {capability}`")

    /// "grant it with <the template filled in>".
    public func text(id: String, capability: String) -> String {
        "grant it with " + template.replacingOccurrences(of: "{id}", with: id).replacingOccurrences(of: "{capability}", with: capability)
    }
}
