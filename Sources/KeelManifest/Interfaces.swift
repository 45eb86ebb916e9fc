// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// An interface's identity: its name and the major version of its table layout, written `gitops.sync/1`.
/// Providers and consumers meet on it; the minor and patch parts of a version only ever add to a table.
public struct InterfaceID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var name: String
    public var major: Int

    public init(name: String, major: Int) {
        self.name = name
        self.major = major
    }

    /// Parses `gitops.sync/1`. Nil when the text is not an interface id with a major version.
    public init?(_ text: String) {
        guard let slash = text.lastIndex(of: "/") else { return nil }
        let name = String(text[..<slash])
        guard InterfaceID.isValidName(name), let major = Semver.number(text[text.index(after: slash)...]) else { return nil }
        self.init(name: name, major: major)
    }

    public var description: String { "\(name)/\(major)" }

    /// 1–128 bytes of lowercase letters, digits, `.`, `-` and `_`, starting with a letter.
    public static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...128).contains(bytes.count), let first = bytes.first, first >= 97 && first <= 122 else { return false }
        return bytes.allSatisfy { Manifest.isLowerAlnum($0) || $0 == 46 || $0 == 45 || $0 == 95 }
    }

    public static func < (lhs: InterfaceID, rhs: InterfaceID) -> Bool { (lhs.name, lhs.major) < (rhs.name, rhs.major) }
}

/// An interface a plugin provides (`provides:` in plugin.yaml): which one, the version it implements, and its
/// preference when the operator chose no provider.
public struct ProvidedInterface: Sendable, Hashable {
    public var interface: InterfaceID
    /// The interface version implemented; its major equals `interface.major`.
    public var version: Semver
    /// Higher serves first when the operator chose none.
    public var ranking: Int
    /// The table's functions in order (`functions:`); empty when undeclared (then the table cannot cross a process
    /// boundary).
    public var functions: [ServiceFunction]

    public init(interface: InterfaceID, version: Semver? = nil, ranking: Int = 0, functions: [ServiceFunction] = []) {
        self.interface = interface
        self.version = version ?? Semver(interface.major, 0, 0)
        self.ranking = ranking
        self.functions = functions
    }
}

/// An interface a plugin consumes (`consumes:` in plugin.yaml): which one, the versions that will do, and whether
/// the plugin can run without it.
public struct ConsumedInterface: Sendable, Hashable {
    /// The name and the one major version (table layout) the plugin binds to.
    public var interface: InterfaceID
    public var versions: VersionRange
    /// True: the plugin activates without a provider and is told when one appears.
    public var optional: Bool
    /// The table's functions the consumer uses, in order (`functions:`); empty when undeclared.
    public var functions: [ServiceFunction]

    public init(interface: InterfaceID, versions: VersionRange? = nil, optional: Bool = false, functions: [ServiceFunction] = []) {
        self.interface = interface
        self.versions = versions ?? VersionRange("^\(interface.major)") ?? VersionRange("*")!
        self.optional = optional
        self.functions = functions
    }

    /// True when a provider of `provided` will do.
    public func accepts(_ provided: ProvidedInterface) -> Bool {
        provided.interface == interface && versions.contains(provided.version)
    }
}

extension Manifest {
    /// The consumed interface `text` names (`gitops.sync` or `gitops.sync/1`), if the manifest declares it.
    public func consumed(_ text: String) -> ConsumedInterface? {
        if let id = InterfaceID(text) { return consumes.first { $0.interface == id } }
        return consumes.first { $0.interface.name == text }
    }
}
