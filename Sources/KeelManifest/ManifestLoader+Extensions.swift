// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Yams

/// The manifest keys of ABI 1.1 and after: interfaces (`provides:`, `consumes:`), commands (`commands:`, `calls:`)
/// and proxied apps (`proxy:`). Same rules as the rest of `NodeReader`: errors name the file, the line and the key.
extension NodeReader {
    /// `commands:`: a list of {name, symbol, signature, description, permission, probe}.
    mutating func commands(_ node: Node?, permissions: [PermissionDeclaration], pluginID: String) throws(ManifestError) -> [CommandDeclaration] {
        guard let node else { return [] }
        guard let seq = node.sequence else {
            throw fail(node, "commands", "expected a list of {name, symbol, signature}, found \(Self.kind(node))")
        }
        var out: [CommandDeclaration] = []
        for (i, item) in seq.enumerated() {
            let path = "commands[\(i)]"
            guard let map = item.mapping else { throw fail(item, path, "expected a mapping with name, symbol and signature, found \(Self.kind(item))") }
            let f = try entries(map, known: Self.commandKeys, path: path + ".")
            let name = try string(f, "name", in: item, prefix: path + ".")
            guard CommandDeclaration.isValidName(name) else {
                throw fail(f["name"], path + ".name", "\"\(name)\" is not a command name (lowercase letters, digits, '-', '_', starting with a letter; at most 64)")
            }
            guard !out.contains(where: { $0.name == name }) else { throw fail(f["name"], path + ".name", "command \"\(name)\" is declared twice") }
            let symbol = try string(f, "symbol", in: item, prefix: path + ".")
            guard CommandDeclaration.isValidSymbol(symbol) else {
                throw fail(f["symbol"], path + ".symbol", "\"\(symbol)\" is not a C function name")
            }
            let text = try string(f, "signature", in: item, prefix: path + ".")
            let signature: CommandSignature
            do { signature = try CommandSignature(parsing: text) } catch {
                throw fail(f["signature"], path + ".signature", error.description)
            }
            let permission = try optionalString(f, "permission", prefix: path + ".") ?? ""
            if !permission.isEmpty {
                let parts = permission.split(separator: ":", maxSplits: 1).map(String.init)
                guard parts.count == 2, permissions.contains(where: { $0.key == parts[0] && $0.actions.contains(parts[1]) }) else {
                    throw fail(f["permission"], path + ".permission", "\"\(permission)\" must be KEY:ACTION of a permission item declared under permissions: in this file")
                }
            }
            var probe: [String]?
            if let p = f["probe"] {
                guard let items = p.sequence, items.count == signature.arguments.count else {
                    throw fail(p, path + ".probe", "expected a list of \(signature.arguments.count) sample argument(s)")
                }
                probe = items.map { $0.scalar?.string ?? "" }
            }
            out.append(CommandDeclaration(name: name, symbol: symbol, signature: signature,
                                          description: try optionalString(f, "description", prefix: path + ".") ?? "",
                                          permission: permission, probe: probe))
        }
        return out
    }

    /// `provides:`: a list of {interface: name/major, version, ranking}; one entry per interface.
    mutating func provides(_ node: Node?) throws(ManifestError) -> [ProvidedInterface] {
        guard let node else { return [] }
        guard let seq = node.sequence else {
            throw fail(node, "provides", "expected a list such as [{interface: gitops.sync/1}], found \(Self.kind(node))")
        }
        var out: [ProvidedInterface] = []
        for (i, item) in seq.enumerated() {
            let path = "provides[\(i)]"
            let f = try interfaceEntry(item, path: path, known: Self.providesKeys)
            let text = try string(f, "interface", in: item, prefix: path + ".")
            guard let id = InterfaceID(text) else {
                throw fail(f["interface"], path + ".interface", "\"\(text)\" is not an interface id like gitops.sync/1 (a name of lowercase letters, digits, '.', '-', '_', then /MAJOR)")
            }
            var version: Semver?
            if let v = try optionalString(f, "version", prefix: path + ".") {
                guard let parsed = Semver(v) else { throw fail(f["version"], path + ".version", "\"\(v)\" is not a semantic version") }
                guard parsed.major == id.major else {
                    throw fail(f["version"], path + ".version", "version \(v) is not in major version \(id.major) of \(id)")
                }
                version = parsed
            }
            var ranking = 0
            if let r = f["ranking"] {
                guard let scalar = r.scalar, let value = Int(scalar.string) else {
                    throw fail(r, path + ".ranking", "expected an integer, found \(Self.kind(r))")
                }
                ranking = value
            }
            guard !out.contains(where: { $0.interface == id }) else {
                throw fail(item, path + ".interface", "\(id) is declared twice: a plugin provides an interface once")
            }
            out.append(ProvidedInterface(interface: id, version: version, ranking: ranking,
                                         functions: try functions(f["functions"], path: path + ".functions")))
        }
        return out
    }

    /// `consumes:`: a list of {interface: name or name/major, version: range within one major, optional}.
    mutating func consumes(_ node: Node?) throws(ManifestError) -> [ConsumedInterface] {
        guard let node else { return [] }
        guard let seq = node.sequence else {
            throw fail(node, "consumes", "expected a list such as [{interface: gitops.sync, version: \"^1\"}], found \(Self.kind(node))")
        }
        var out: [ConsumedInterface] = []
        for (i, item) in seq.enumerated() {
            let path = "consumes[\(i)]"
            let f = try interfaceEntry(item, path: path, known: Self.consumesKeys)
            let text = try string(f, "interface", in: item, prefix: path + ".")
            var range: VersionRange?
            if let v = try optionalString(f, "version", prefix: path + ".") {
                guard let parsed = VersionRange(v) else {
                    throw fail(f["version"], path + ".version", "\"\(v)\" is not a version range (try \"^1\" or \"^1.2\")")
                }
                range = parsed
            }
            let id: InterfaceID
            if let withMajor = InterfaceID(text) {
                id = withMajor
            } else if InterfaceID.isValidName(text) {
                guard let major = range?.lowestMajor else {
                    throw fail(f["interface"], path + ".interface", "\"\(text)\" needs a major version: write \(text)/1, or a range with a lower bound such as version: \"^1\"")
                }
                id = InterfaceID(name: text, major: major)
            } else {
                throw fail(f["interface"], path + ".interface", "\"\(text)\" is not an interface name (lowercase letters, digits, '.', '-', '_', optionally /MAJOR)")
            }
            var optional = false
            if let o = f["optional"] {
                guard let scalar = o.scalar, let value = Bool(scalar.string.lowercased()) else {
                    throw fail(o, path + ".optional", "expected true or false, found \(Self.kind(o))")
                }
                optional = value
            }
            guard !out.contains(where: { $0.interface.name == id.name }) else {
                throw fail(item, path + ".interface", "\(id.name) is declared twice")
            }
            out.append(ConsumedInterface(interface: id, versions: range, optional: optional,
                                         functions: try functions(f["functions"], path: path + ".functions")))
        }
        return out
    }

    /// `functions:` of an interface entry: a list of {name, signature}, the table's functions in order.
    private mutating func functions(_ node: Node?, path: String) throws(ManifestError) -> [ServiceFunction] {
        guard let node else { return [] }
        guard let seq = node.sequence else {
            throw fail(node, path, "expected a list such as [{name: sync, signature: \"(str, str) -> status(buf)\"}], found \(Self.kind(node))")
        }
        guard seq.count <= 64 else { throw fail(node, path, "\(seq.count) functions: at most 64") }
        var out: [ServiceFunction] = []
        for (i, item) in seq.enumerated() {
            let at = "\(path)[\(i)]"
            guard let map = item.mapping else { throw fail(item, at, "expected a mapping with name and signature, found \(Self.kind(item))") }
            let f = try entries(map, known: ["name", "signature"], path: at + ".")
            let name = try string(f, "name", in: item, prefix: at + ".")
            guard CommandDeclaration.isValidName(name) else {
                throw fail(f["name"], at + ".name", "\"\(name)\" is not a function name (lowercase letters, digits, '-', '_', starting with a letter; at most 64)")
            }
            let text = try string(f, "signature", in: item, prefix: at + ".")
            do { out.append(ServiceFunction(name: name, signature: try ServiceSignature(parsing: text))) } catch {
                throw fail(f["signature"], at + ".signature", error.description)
            }
        }
        return out
    }

    private mutating func interfaceEntry(_ item: Node, path: String, known: Set<String>) throws(ManifestError) -> [String: Node] {
        guard let map = item.mapping else {
            throw fail(item, path, "expected a mapping with interface, found \(Self.kind(item))")
        }
        return try entries(map, known: known, path: path + ".")
    }

    /// `calls:`: other plugins' commands this one calls, as `plugin.command`.
    mutating func calls(_ node: Node?) throws(ManifestError) -> [String] {
        guard let node else { return [] }
        var out: [String] = []
            guard let seq = node.sequence else { throw fail(node, "calls", "expected a list such as [calc.add], found \(Self.kind(node))") }
            for (i, item) in seq.enumerated() {
                guard let text = item.scalar?.string, let dot = text.lastIndex(of: "."),
                      Manifest.isValidID(String(text[..<dot])), CommandDeclaration.isValidName(String(text[text.index(after: dot)...])) else {
                    throw fail(item, "calls[\(i)]", "expected PLUGIN.COMMAND such as calc.add, found \(Self.kind(item))")
                }
                out.append(text)
            }
        return out
    }

    /// `proxy:`: upstream apps served under the plugin's prefix.
    mutating func proxies(_ node: Node?) throws(ManifestError) -> [ProxyDeclaration] {
        guard let node else { return [] }
        var out: [ProxyDeclaration] = []
            guard let seq = node.sequence else { throw fail(node, "proxy", "expected a list of {prefix, upstream}, found \(Self.kind(node))") }
            for (i, item) in seq.enumerated() {
                let path = "proxy[\(i)]"
                guard let map = item.mapping else { throw fail(item, path, "expected a mapping with prefix and upstream, found \(Self.kind(item))") }
                let f = try entries(map, known: Self.proxyKeys, path: path + ".")
                let prefix = try string(f, "prefix", in: item, prefix: path + ".")
                if let problem = Capability.problem(withPrefix: "/x" + prefix).map({ $0.replacingOccurrences(of: "\"/x", with: "\"") }) {
                    throw fail(f["prefix"], path + ".prefix", "prefix \(problem)")
                }
                guard !out.contains(where: { $0.prefix == prefix }) else { throw fail(f["prefix"], path + ".prefix", "prefix \(prefix) is declared twice") }
                var timeout = 30.0
                if let t = f["timeout"] {
                    guard let value = t.scalar.flatMap({ Double($0.string) }), value > 0, value <= 3600 else {
                        throw fail(t, path + ".timeout", "expected seconds between 0 and 3600, found \(Self.kind(t))")
                    }
                    timeout = value
                }
                let upstream = try string(f, "upstream", in: item, prefix: path + ".")
                do throws(SignatureError) { out.append(try ProxyDeclaration(prefix: prefix, upstream: upstream, timeout: timeout)) } catch {
                    throw fail(f["upstream"], path + ".upstream", error.description)
                }
            }
        return out
    }
}
