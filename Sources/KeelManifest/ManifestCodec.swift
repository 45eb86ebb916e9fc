// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// A compact binary form of a parsed `Manifest`, for the manifest cache (`ManifestCache`). Values whose type has a
// text form of its own (versions, ranges, signatures, interface ids, endpoint grants, proxy upstreams) are stored as
// that text and parsed again, so there is one parser for each. Every encoding is checked by decoding it again and
// comparing with the original (`ManifestCodec.encode` returns nil when they differ): a manifest this codec cannot
// carry exactly is simply not cached, never cached wrong.

import Foundation

/// Encodes and decodes manifests (and their warnings) to bytes. Stateless and thread-safe.
enum ManifestCodec {
    /// The bytes of `manifest` and `warnings`, or nil when they would not decode back to the same values.
    static func encode(_ manifest: Manifest, warnings: [ManifestWarning]) -> [UInt8]? {
        var w = ByteWriter()
        w.manifest(manifest)
        w.count(warnings.count)
        for warning in warnings {
            w.string(warning.file)
            w.optionalInt(warning.line)
            w.string(warning.message)
        }
        guard let back = decode(w.bytes), back.manifest == manifest, back.warnings == warnings else { return nil }
        return w.bytes
    }

    /// The manifest and warnings `encode` wrote, or nil when `bytes` are not such an encoding.
    static func decode(_ bytes: [UInt8]) -> (manifest: Manifest, warnings: [ManifestWarning])? { decode(bytes[...]) }

    /// `decode` of a slice (a cache entry's payload lies in the cache file's bytes).
    static func decode(_ bytes: ArraySlice<UInt8>) -> (manifest: Manifest, warnings: [ManifestWarning])? {
        bytes.withUnsafeBufferPointer { buffer in
            var r = ByteReader(buffer)
            guard let manifest = r.manifest(), let n = r.count() else { return nil }
            var warnings: [ManifestWarning] = []
            for _ in 0..<n {
                guard let file = r.string(), let line = r.optionalInt(), let message = r.string() else { return nil }
                warnings.append(ManifestWarning(file: file, line: line, message: message))
            }
            return r.atEnd ? (manifest, warnings) : nil
        }
    }
}

/// Appends little-endian integers, length-prefixed strings and lists.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func int(_ v: Int) { u64(UInt64(bitPattern: Int64(v))) }
    mutating func count(_ n: Int) { u64(UInt64(n)) }
    mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    mutating func double(_ v: Double) { u64(v.bitPattern) }
    mutating func raw(_ b: [UInt8]) { raw(b[...]) }
    mutating func raw(_ b: ArraySlice<UInt8>) { count(b.count); bytes.append(contentsOf: b) }
    mutating func string(_ s: String) { count(s.utf8.count); bytes.append(contentsOf: s.utf8) }
    mutating func strings(_ list: [String]) { count(list.count); for s in list { string(s) } }
    mutating func optionalString(_ s: String?) { bool(s != nil); if let s { string(s) } }
    mutating func optionalInt(_ v: Int?) { bool(v != nil); if let v { int(v) } }
    mutating func optionalDouble(_ v: Double?) { bool(v != nil); if let v { double(v) } }

    mutating func functions(_ list: [ServiceFunction]) {
        count(list.count)
        for f in list { string(f.name); string(f.signature.description) }
    }

    mutating func menu(_ m: MenuDeclaration) {
        for s in [m.id, m.title, m.parent, m.link] { string(s) }
        int(m.order)
        string(m.icon)
        string(m.permission)
    }

    mutating func manifest(_ m: Manifest) {
        for s in [m.id, m.name, m.version.description, m.description] { string(s) }
        int(m.abi.major)
        int(m.abi.minor)
        optionalString(m.library)
        strings(m.capabilities.map(\.rawValue).sorted())
        count(m.menus.count)
        for menu in m.menus { self.menu(menu) }
        count(m.dependencies.count)
        for d in m.dependencies { string(d.id); string(d.versions.text) }
        optionalString(m.hostVersions?.text)
        strings(m.routePrefixes)
        count(m.permissions.count)
        for p in m.permissions { string(p.key); string(p.description); strings(p.actions) }
        count(m.provides.count)
        for p in m.provides { string(p.interface.description); string(p.version.description); int(p.ranking); functions(p.functions) }
        count(m.consumes.count)
        for c in m.consumes { string(c.interface.description); string(c.versions.text); bool(c.optional); functions(c.functions) }
        count(m.commands.count)
        for c in m.commands {
            for s in [c.name, c.symbol, c.signature.description, c.description, c.permission] { string(s) }
            bool(c.probe != nil)
            if let probe = c.probe { strings(probe) }
        }
        strings(m.calls)
        count(m.proxies.count)
        for p in m.proxies { string(p.prefix); string(p.upstream); double(p.timeout) }
        bool(m.console != nil)
        if let console = m.console {
            count(console.pages.count)
            for page in console.pages {
                for s in [page.path, page.title, page.entry] { string(s) }
                strings(page.styles)
                bool(page.menu != nil)
                if let menu = page.menu { self.menu(menu) }
            }
            strings(console.fetch.map(\.description))
        }
        string(m.activation.rawValue)
        string(m.isolation.rawValue)
        optionalDouble(m.idleTimeout)
    }
}

/// Reads what `ByteWriter` wrote; every read is bounds-checked and returns nil past the end or on a bad value.
struct ByteReader {
    private let buffer: UnsafeBufferPointer<UInt8>
    private var at = 0

    init(_ buffer: UnsafeBufferPointer<UInt8>) { self.buffer = buffer }

    var atEnd: Bool { at == buffer.count }
    var offset: Int { at }

    mutating func u64() -> UInt64? {
        guard buffer.count - at >= 8 else { return nil }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(buffer[at + i]) << (8 * UInt64(i)) }
        at += 8
        return v
    }
    mutating func int() -> Int? { u64().map { Int(truncatingIfNeeded: Int64(bitPattern: $0)) } }
    /// A length or count: never more than the bytes left, so a corrupt count cannot ask for a huge allocation.
    mutating func count() -> Int? {
        guard let v = u64(), v <= UInt64(buffer.count - at) else { return nil }
        return Int(v)
    }
    mutating func bool() -> Bool? {
        guard at < buffer.count, buffer[at] <= 1 else { return nil }
        at += 1
        return buffer[at - 1] == 1
    }
    mutating func double() -> Double? { u64().map(Double.init(bitPattern:)) }
    mutating func raw() -> [UInt8]? {
        rawRange().map { Array(buffer[$0]) }
    }
    /// Where the next length-prefixed bytes lie in the buffer (skipped, not copied).
    mutating func rawRange() -> Range<Int>? {
        guard let n = count() else { return nil }
        defer { at += n }
        return at..<at + n
    }
    mutating func string() -> String? {
        guard let n = count() else { return nil }
        defer { at += n }
        let bytes = UnsafeBufferPointer(rebasing: buffer[at..<at + n])
        // ASCII (ids, versions, paths, nearly every string) has nothing to validate: `String(decoding:)` is the
        // specialized path. `String(validating:)` went through generic code for every string, 40 % of a decode.
        if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        return String(validating: bytes, as: UTF8.self)
    }
    mutating func strings() -> [String]? {
        guard let n = count() else { return nil }
        var out: [String] = []
        out.reserveCapacity(n)
        for _ in 0..<n { guard let s = string() else { return nil }; out.append(s) }
        return out
    }
    // Inlined where used, so each list and optional is specialized: unspecialized, every call looked the metadata
    // of `[T]` or `T?` up at run time (a third of a decode).
    @inline(__always)
    mutating func optional<T>(_ read: (inout ByteReader) -> T?) -> T?? {
        guard let present = bool() else { return nil }
        guard present else { return .some(nil) }
        return read(&self).map { .some($0) }
    }
    mutating func optionalString() -> String?? { optional { $0.string() } }
    mutating func optionalInt() -> Int?? { optional { $0.int() } }
    mutating func optionalDouble() -> Double?? { optional { $0.double() } }
    @inline(__always)
    mutating func list<T>(_ read: (inout ByteReader) -> T?) -> [T]? {
        guard let n = count() else { return nil }
        if n == 0 { return [] }
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { guard let item = read(&self) else { return nil }; out.append(item) }
        return out
    }

    mutating func functions() -> [ServiceFunction]? {
        list { r -> ServiceFunction? in
            guard let name = r.string(), let signature = r.string().flatMap({ try? ServiceSignature(parsing: $0) }) else { return nil }
            return ServiceFunction(name: name, signature: signature)
        }
    }

    mutating func menu() -> MenuDeclaration? {
        guard let id = string(), let title = string(), let parent = string(), let link = string(), let order = int(),
              let icon = string(), let permission = string() else { return nil }
        return MenuDeclaration(id: id, title: title, parent: parent, link: link, order: order, icon: icon, permission: permission)
    }

    mutating func manifest() -> Manifest? {
        guard let id = string(), let name = string(), let version = string().flatMap(Semver.init), let description = string(),
              let major = int(), let minor = int(), let library = optionalString(),
              let capabilities = strings()?.map(Capability.init(rawValue:)), !capabilities.contains(nil),
              let menus = list({ $0.menu() }),
              let dependencies = list({ r in
                  r.string().flatMap { id in r.string().flatMap(VersionRange.init).map { Dependency(id: id, versions: $0) } }
              }),
              let host = optionalString() else { return nil }
        var m = Manifest(id: id, name: name, version: version, description: description, abi: ABIVersion(major, minor),
                         library: library, capabilities: Set(capabilities.compactMap { $0 }), menus: menus,
                         dependencies: dependencies)
        if let host {
            guard let range = VersionRange(host) else { return nil }
            m.hostVersions = range
        }
        guard let prefixes = strings(),
              let permissions = list({ r -> PermissionDeclaration? in
                  guard let key = r.string(), let text = r.string(), let actions = r.strings() else { return nil }
                  return PermissionDeclaration(key: key, description: text, actions: actions)
              }),
              let provides = list({ r -> ProvidedInterface? in
                  guard let interface = r.string().flatMap(InterfaceID.init), let version = r.string().flatMap(Semver.init),
                        let ranking = r.int(), let functions = r.functions() else { return nil }
                  return ProvidedInterface(interface: interface, version: version, ranking: ranking, functions: functions)
              }),
              let consumes = list({ r -> ConsumedInterface? in
                  guard let interface = r.string().flatMap(InterfaceID.init), let versions = r.string().flatMap(VersionRange.init),
                        let optional = r.bool(), let functions = r.functions() else { return nil }
                  return ConsumedInterface(interface: interface, versions: versions, optional: optional, functions: functions)
              }),
              let commands = list({ r -> CommandDeclaration? in
                  guard let name = r.string(), let symbol = r.string(), let text = r.string(),
                        let signature = try? CommandSignature(parsing: text), let description = r.string(),
                        let permission = r.string(), let hasProbe = r.bool() else { return nil }
                  var probe: [String]?
                  if hasProbe { guard let list = r.strings() else { return nil }; probe = list }
                  return CommandDeclaration(name: name, symbol: symbol, signature: signature, description: description,
                                            permission: permission, probe: probe)
              }),
              let calls = strings(),
              let proxies = list({ r -> ProxyDeclaration? in
                  guard let prefix = r.string(), let upstream = r.string(), let timeout = r.double() else { return nil }
                  return try? ProxyDeclaration(prefix: prefix, upstream: upstream, timeout: timeout)
              }),
              let hasConsole = bool() else { return nil }
        m.routePrefixes = prefixes
        m.permissions = permissions
        m.provides = provides
        m.consumes = consumes
        m.commands = commands
        m.calls = calls
        m.proxies = proxies
        if hasConsole {
            guard let pages = list({ r -> ConsolePage? in
                      guard let path = r.string(), let title = r.string(), let entry = r.string(), let styles = r.strings(),
                            let menu = r.optional({ $0.menu() }) else { return nil }
                      return ConsolePage(path: path, title: title, entry: entry, styles: styles, menu: menu)
                  }),
                  let fetch = strings()?.map(EndpointGrant.init), !fetch.contains(nil) else { return nil }
            m.console = ConsoleDeclaration(pages: pages, fetch: fetch.compactMap { $0 })
        }
        guard let activation = string().flatMap(Activation.init(rawValue:)),
              let isolation = string().flatMap(Isolation.init(rawValue:)),
              let idleTimeout = optionalDouble() else { return nil }
        m.activation = activation
        m.isolation = isolation
        m.idleTimeout = idleTimeout
        return m
    }
}
