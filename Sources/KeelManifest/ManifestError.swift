// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Why a manifest could not be used. `description` is one line: `<file>[:line]: [key "k": ]reason`.
public struct ManifestError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The manifest file.
    public var file: String
    /// 1-based line of the offending node, when known.
    public var line: Int?
    /// The key path, e.g. `menus[1].order`, when the problem belongs to one key.
    public var key: String?
    public var reason: String

    public init(file: String, line: Int? = nil, key: String? = nil, reason: String) {
        self.file = file
        self.line = line
        self.key = key
        self.reason = reason
    }

    public var description: String {
        var s = file
        if let line { s += ":\(line)" }
        s += ": "
        if let key { s += "key \"\(key)\": " }
        return s + reason
    }
}

/// A problem that does not stop the plugin from loading, such as an unknown key.
public struct ManifestWarning: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String

    public var description: String {
        line.map { "\(file):\($0): warning: \(message)" } ?? "\(file): warning: \(message)"
    }
}
