// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation

/// What a plugin bundle's `plugin.yaml` declares. Plain data, checked when parsed (see `ManifestLoader`).
public struct Manifest: Sendable, Hashable {
    /// The declared values, behind one reference (`storage`): a manifest is copied wherever a bundle is looked up or
    /// a plugin's state is kept, and a start with a thousand plugins must not pay a reference count for each of
    /// twenty fields at every copy.
    struct Fields: Sendable, Hashable {
        var id: String
        var name: String
        var version: Semver
        var description: String
        var abi: ABIVersion
        var library: String?
        var capabilities: Set<Capability>
        var menus: [MenuDeclaration]
        var dependencies: [Dependency]
        var hostVersions: VersionRange?
        var routePrefixes: [String] = []
        var permissions: [PermissionDeclaration] = []
        var provides: [ProvidedInterface] = []
        var consumes: [ConsumedInterface] = []
        var commands: [CommandDeclaration] = []
        var calls: [String] = []
        var proxies: [ProxyDeclaration] = []
        var console: ConsoleDeclaration?
        var activation: Activation = .eager
        var isolation: Isolation = .inProcess
        var idleTimeout: Double?
    }

    /// Copy on write: `mutate` copies it first unless this manifest is its only holder. (Each of Manifest, PluginBundle and
    /// PluginRecord has its own box: one generic box in another module made a start with 1,000 plugins 7–12 % slower.)
    /// `@unchecked Sendable`: `fields` is written only through `mutate`, which first makes sure that no other
    /// manifest holds this storage (`isKnownUniquelyReferenced`), so a storage shared between threads is never written.
    private final class Storage: @unchecked Sendable {
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }
    private var storage: Storage

    private mutating func mutate(_ change: (inout Fields) -> Void) {
        if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.fields) }
        change(&storage.fields)
    }

    public static func == (a: Manifest, b: Manifest) -> Bool { a.storage === b.storage || a.storage.fields == b.storage.fields }
    public func hash(into hasher: inout Hasher) { storage.fields.hash(into: &hasher) }

    /// Unique plugin id: lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most 64.
    /// It names the route prefix `/ext/<id>/`.
    public var id: String {
        get { storage.fields.id }
        set { mutate { $0.id = newValue } }
    }
    public var name: String {
        get { storage.fields.name }
        set { mutate { $0.name = newValue } }
    }
    public var version: Semver {
        get { storage.fields.version }
        set { mutate { $0.version = newValue } }
    }
    public var description: String {
        get { storage.fields.description }
        set { mutate { $0.description = newValue } }
    }
    /// The ABI the library was built against, as `major.minor` (for a manifest-only bundle: the host contract its
    /// manifest keys are written for).
    public var abi: ABIVersion {
        get { storage.fields.abi }
        set { mutate { $0.abi = newValue } }
    }
    /// The shared object, relative to the bundle folder (no absolute path, no `..`); nil for a manifest-only bundle,
    /// which runs no code and contributes only what its manifest declares (menus, assets, proxies, permissions).
    public var library: String? {
        get { storage.fields.library }
        set { mutate { $0.library = newValue } }
    }
    public var capabilities: Set<Capability> {
        get { storage.fields.capabilities }
        set { mutate { $0.capabilities = newValue } }
    }
    /// Menu entries shown while the plugin is enabled, without any code running.
    public var menus: [MenuDeclaration] {
        get { storage.fields.menus }
        set { mutate { $0.menus = newValue } }
    }
    /// Other plugins this one needs, by id, with the versions it accepts.
    public var dependencies: [Dependency] {
        get { storage.fields.dependencies }
        set { mutate { $0.dependencies = newValue } }
    }
    /// The host versions this plugin runs in; nil means any.
    public var hostVersions: VersionRange? {
        get { storage.fields.hostVersions }
        set { mutate { $0.hostVersions = newValue } }
    }
    /// Path prefixes outside `/ext/<id>/` the plugin asks to serve (capability `route-prefix:/legacy`). Sensitive:
    /// each needs the operator's grant.
    public var routePrefixes: [String] {
        get { storage.fields.routePrefixes }
        set { mutate { $0.routePrefixes = newValue } }
    }
    /// Permission items the plugin defines (like KubeSphere's RoleTemplate); the operator grants them to roles.
    public var permissions: [PermissionDeclaration] {
        get { storage.fields.permissions }
        set { mutate { $0.permissions = newValue } }
    }
    /// Interfaces the plugin provides to others (ABI 1.1), each with a table registered during activate.
    public var provides: [ProvidedInterface] {
        get { storage.fields.provides }
        set { mutate { $0.provides = newValue } }
    }
    /// Interfaces the plugin consumes from others (ABI 1.1).
    public var consumes: [ConsumedInterface] {
        get { storage.fields.consumes }
        set { mutate { $0.consumes = newValue } }
    }
    /// Plain C functions callable by name (ABI 1.1, "keel.commands/1").
    public var commands: [CommandDeclaration] {
        get { storage.fields.commands }
        set { mutate { $0.commands = newValue } }
    }
    /// Other plugins' commands this plugin calls, as `plugin.command`.
    public var calls: [String] {
        get { storage.fields.calls }
        set { mutate { $0.calls = newValue } }
    }
    /// Existing web apps it brings in under `/ext/<id>/<prefix>/` (`proxy:`).
    public var proxies: [ProxyDeclaration] {
        get { storage.fields.proxies }
        set { mutate { $0.proxies = newValue } }
    }
    /// Console pages and the host endpoints they may call (`console:`); nil when the plugin declares none.
    public var console: ConsoleDeclaration? {
        get { storage.fields.console }
        set { mutate { $0.console = newValue } }
    }
    /// When the library is loaded (`activation:`): at start (eager, the default) or on first use (lazy).
    public var activation: Activation {
        get { storage.fields.activation }
        set { mutate { $0.activation = newValue } }
    }
    /// Where the plugin's code runs (`isolation:`), unless the operator chose otherwise: in the host (the default)
    /// or in a worker process of its own.
    public var isolation: Isolation {
        get { storage.fields.isolation }
        set { mutate { $0.isolation = newValue } }
    }
    /// Seconds a lazy plugin may go unused before it is deactivated again (`idle-timeout:`); nil keeps it loaded.
    public var idleTimeout: Double? {
        get { storage.fields.idleTimeout }
        set { mutate { $0.idleTimeout = newValue } }
    }

    public init(id: String, name: String, version: Semver, description: String = "", abi: ABIVersion,
                library: String?, capabilities: Set<Capability> = [], menus: [MenuDeclaration] = [],
                dependencies: [Dependency] = [], hostVersions: VersionRange? = nil) {
        storage = Storage(Fields(id: id, name: name, version: version, description: description, abi: abi, library: library,
                                 capabilities: capabilities, menus: menus, dependencies: dependencies, hostVersions: hostVersions))
    }

    /// True for a manifest-only bundle: no library, no code.
    public var isManifestOnly: Bool { library == nil }

    /// Ids no plugin may take: the host's own name, which it gives the callers it establishes itself
    /// (`Principal.host`), its own service provisions and its own call lane. A plugin called `keel` would pass for
    /// the host in each.
    public static let reservedIDs: Set<String> = ["keel"]

    /// True when `id` is a valid plugin id: the pattern, and not one of `reservedIDs`.
    public static func isValidID(_ id: String) -> Bool {
        guard !reservedIDs.contains(id) else { return false }
        let bytes = Array(id.utf8)
        guard (1...64).contains(bytes.count), let first = bytes.first, isLowerAlnum(first) else { return false }
        return bytes.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
    }

    static func isLowerAlnum(_ b: UInt8) -> Bool { (b >= 97 && b <= 122) || (b >= 48 && b <= 57) }
}

/// When a plugin's library is loaded and activated.
/// Where a plugin's code runs.
public enum Isolation: String, Sendable, Hashable, CaseIterable, Codable {
    /// In the host process: the fastest calls; a crash in the plugin takes the host down (and is attributed).
    case inProcess = "in-process"
    /// In a `keel worker` child process of its own: a crash fails only the requests in flight in it.
    case process
}

public enum Activation: String, Sendable, Hashable, CaseIterable {
    /// At start, and whenever the plugin is enabled.
    case eager
    /// On first use: a request under `/ext/<id>/`, one of its commands called, or one of its interfaces needed.
    /// Until then the manifest alone shows the plugin (its info and static menu entries); no code is loaded.
    case lazy
}

/// An ABI version as `major.minor`. A plugin of minor M runs in a host of the same major and minor >= M.
public struct ABIVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(_ major: Int, _ minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// Parses `"1.0"` (a patch part, `"1.0.2"`, is accepted and ignored).
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard (2...3).contains(parts.count), let a = Semver.number(parts[0]), let b = Semver.number(parts[1]) else {
            return nil
        }
        if parts.count == 3, Semver.number(parts[2]) == nil { return nil }
        self.init(a, b)
    }

    public var description: String { "\(major).\(minor)" }

    public static func < (lhs: ABIVersion, rhs: ABIVersion) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }
}

extension Manifest {
    /// Whether `path` has a `..` segment, split on the `/` byte: split on characters, `..` followed by a combining
    /// mark (`../\u{301}x`) is one character, not `..` and a name, and passed (as `PackageArchive` splits archive paths).
    public static func hasDotDotSegment(_ path: String) -> Bool {
        path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).contains { $0.elementsEqual("..".utf8) }
    }
}

/// What a plugin may contribute. Registering beyond the granted capabilities is refused.
public enum Capability: String, Sendable, Hashable, CaseIterable, Comparable {
    case routes
    case menus
    case authenticate
    case authorize
    /// Proxying to an upstream that is not on this machine (`proxy:` with a remote upstream). Sensitive.
    case proxyRemote = "proxy-remote"
    /// Console pages whose `console.fetch` names a host endpoint that changes something (anything but GET and HEAD),
    /// which then runs with the rights of whoever views the page. Sensitive.
    case consoleWrite = "console-write"
    /// Console pages whose `console.fetch` names a host endpoint that reads beyond what every page may
    /// (`EndpointGrant.isFreeRead`): another plugin's configuration or logs, the audit trail, tenants, trusted keys,
    /// which the page then reads with the rights of whoever views it. `console-write` covers it. Sensitive.
    case consoleRead = "console-read"
    /// Connecting out (any socket: TCP, UDP, IPv4, IPv6) from a worker process (`isolation: process`); a worker without
    /// it opens no socket. A plugin in the host's process has the host's rights whatever it asks. Sensitive.
    case network
    /// Starting processes (fork, posix_spawn, system) from a worker process (`isolation: process`); a worker without
    /// it starts threads only, so that a fork bomb cannot exhaust the host's user's processes. A plugin in the host's
    /// process has the host's rights whatever it asks. Sensitive.
    case processes

    public static func < (lhs: Capability, rhs: Capability) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Capabilities that see or decide every request: asking for them in plugin.yaml is not enough, the operator
    /// must grant them (`keel plugins grant ID CAPABILITY`).
    public var isSensitive: Bool {
        self == .authenticate || self == .authorize || self == .proxyRemote || self == .consoleWrite || self == .consoleRead
            || self == .network || self == .processes
    }

    /// The capability string for serving a foreign prefix.
    public static func routePrefix(_ prefix: String) -> String { "route-prefix:" + prefix }

    /// Paths no plugin may take: the host's own (the console's page `/` itself is taken too, exactly).
    public static let reservedPrefixes = ["/ext", "/api", "/healthz", "/metrics", "/favicon.ico"]

    /// First path segments no plugin may take however they go on: the console's files (`/console.js`,
    /// `/console-views.js`, ...) and the page bridge (`/keel-page.js`) live there, so a file the console adds later is
    /// the host's without a change here. A plugin script served at such a path would run in the console's origin.
    public static let reservedSegmentStarts = ["console", "keel"]

    /// The reserved prefix that covers `path` (compared without case, by whole segments; the first segment also by
    /// its start, see `reservedSegmentStarts`), or nil.
    public static func reservedPrefix(of path: String) -> String? {
        let lower = path.lowercased()
        if let reserved = reservedPrefixes.first(where: { lower == $0 || lower.hasPrefix($0 + "/") }) { return reserved }
        let first = lower.dropFirst().prefix { $0 != "/" }
        return reservedSegmentStarts.contains { first.hasPrefix($0) } ? "/" + first : nil
    }

    /// Why `prefix` cannot be a plugin's foreign prefix, or nil when it can. A prefix has one spelling only: `/`
    /// followed by segments of letters, digits and `-._~`, separated by single slashes, no `.` or `..` segment, no
    /// trailing slash; so it cannot alias the host's own paths (`//console.js`, `/%63onsole.js`, `/API`).
    public static func problem(withPrefix prefix: String) -> String? {
        guard prefix.hasPrefix("/"), prefix.count > 1, !prefix.hasSuffix("/") else {
            return "\"\(prefix)\" must start with '/', name at least one segment and not end with '/'"
        }
        let segments = prefix.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        let plain = segments.allSatisfy { segment in
            !segment.isEmpty && segment != "." && segment != ".."
                && segment.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-._~".unicodeScalars.contains($0)) }
        }
        guard plain else {
            return "\"\(prefix)\" must be a plain path: segments of letters, digits and -._~ between single slashes (no '..', '.', '//', '%', parameters or '*')"
        }
        if let reserved = reservedPrefix(of: prefix) {
            return "\"\(prefix)\" is inside the host's own \(reserved)"
        }
        return nil
    }
}

/// A static menu entry from the manifest.
public struct MenuDeclaration: Sendable, Hashable {
    public var id: String
    public var title: String
    public var parent: String
    public var link: String
    public var order: Int
    public var icon: String
    public var permission: String

    public init(id: String, title: String, parent: String = "", link: String = "", order: Int = 0, icon: String = "",
                permission: String = "") {
        self.id = id
        self.title = title
        self.parent = parent
        self.link = link
        self.order = order
        self.icon = icon
        self.permission = permission
    }

    /// Why `link` cannot be a menu entry's link, or nil when it can: empty (no link), a console path (`/…`, not
    /// `//…`), or an absolute `http://` / `https://` URL with a host; at most 2,048 bytes, no spaces or control
    /// characters. Anything else — `javascript:`, `data:`, a relative path — would run or resolve in the console's
    /// origin, so it is refused where it is declared (plugin.yaml) or registered (`register_menu`). [pure]
    public static func linkProblem(_ link: String) -> String? {
        let bytes = Array(link.utf8)
        if bytes.isEmpty { return nil }
        guard bytes.count <= 2048 else { return "is over 2,048 bytes" }
        guard !bytes.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else { return "contains a space or a control character" }
        if bytes[0] == UInt8(ascii: "/") {
            return bytes.count > 1 && bytes[1] == UInt8(ascii: "/") ? "starts with \"//\" (a console path starts with one \"/\")" : nil
        }
        let lower = link.lowercased()
        for scheme in ["https://", "http://"] where lower.hasPrefix(scheme) {
            let rest = lower.dropFirst(scheme.count)
            return rest.isEmpty || rest.hasPrefix("/") ? "has no host" : nil
        }
        return "must be a console path starting with \"/\" or an http(s) URL, not \"\(link.prefix(40))\""
    }
}

/// A permission item: `key` (the plugin id or under it, `hello.greetings`), what it is for, and its actions.
/// Granted to roles as `key:action` or `key:*`.
public struct PermissionDeclaration: Sendable, Hashable {
    public var key: String
    public var description: String
    public var actions: [String]

    public init(key: String, description: String = "", actions: [String]) {
        self.key = key
        self.description = description
        self.actions = actions
    }
}

/// A required plugin and the versions of it that will do.
public struct Dependency: Sendable, Hashable {
    public var id: String
    public var versions: VersionRange

    public init(id: String, versions: VersionRange) {
        self.id = id
        self.versions = versions
    }
}
