// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Yams

/// Reads and checks `plugin.yaml`.
///
/// Every problem with the file becomes a `ManifestError` naming the file, the line and the key; unknown keys become
/// warnings. Hostile input is bounded before LibYAML sees it: files over `maximumSize`, text that is not UTF-8 and
/// flow collections nested deeper than `maximumDepth` are refused, and aliases are never expanded by the walk.
/// Stateless and thread-safe.
public struct ManifestLoader: Sendable {
    /// The file name inside a bundle folder.
    public static let fileName = "plugin.yaml"
    public var maximumSize: Int
    public var maximumDepth: Int

    public init(maximumSize: Int = 256 * 1024, maximumDepth: Int = 32) {
        self.maximumSize = maximumSize
        self.maximumDepth = maximumDepth
    }

    /// Loads the manifest at `path`.
    /// - Throws: `ManifestError` when the file is missing, unreadable, too large, not UTF-8, not YAML, or does not
    ///   describe a plugin.
    public func load(path: String) throws(ManifestError) -> (Manifest, [ManifestWarning]) {
        try parse(Data(readBytes(path: path)), file: path)
    }

    /// The bytes of the manifest at `path`, at most one byte past `maximumSize` (`parse` refuses that).
    /// - Throws: `ManifestError` when the file is missing (with `missing` as the reason; by default what a bundle
    ///   lacks), unreadable or a directory, or over the limit by its size (for `kind` of file).
    func readBytes(path: String, missing: String = "missing: a plugin bundle needs a \(fileName)",
                   kind: String = "a manifest") throws(ManifestError) -> ArraySlice<UInt8> {
        // O_NONBLOCK: a FIFO in the file's place is refused below instead of holding the caller (the kernel's thread,
        // the folder watcher's rescan) in `open` for ever; a regular file ignores it.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            throw ManifestError(file: path, reason: errno == ENOENT ? missing
                : errno == ELOOP ? "a symbolic link loop" : "cannot be read: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ManifestError(file: path, reason: "cannot be read") }
        guard st.st_mode & S_IFMT != S_IFDIR else { throw ManifestError(file: path, reason: "is a directory, not a file") }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw ManifestError(file: path, reason: "is not a regular file (a FIFO, a device or a socket); it is not read")
        }
        let size = Int(st.st_size)
        guard size <= maximumSize else {
            throw ManifestError(file: path, reason: "\(size) bytes is over the \(maximumSize)-byte limit for \(kind)")
        }
        // Read to the end, at most one byte past the limit (parse refuses that): a file that grows after fstat is
        // neither cut short nor read without bound.
        var bytes = [UInt8](repeating: 0, count: size + 1)
        var count = 0
        while true {
            if count == bytes.count {
                guard bytes.count <= maximumSize else { break }
                bytes.append(contentsOf: repeatElement(0, count: min(bytes.count, maximumSize + 1 - bytes.count)))
            }
            let n = bytes.withUnsafeMutableBytes { buffer in
                buffer.baseAddress.map { read(fd, $0 + count, buffer.count - count) } ?? 0
            }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw ManifestError(file: path, reason: "cannot be read: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            count += n
        }
        return bytes[..<count]
    }

    /// Parses manifest bytes; `file` is used only in messages.
    /// - Throws: `ManifestError`.
    public func parse(_ data: Data, file: String) throws(ManifestError) -> (Manifest, [ManifestWarning]) {
        guard data.count <= maximumSize else {
            throw ManifestError(file: file, reason: "\(data.count) bytes is over the \(maximumSize)-byte limit for a manifest")
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw ManifestError(file: file, reason: "not valid UTF-8")
        }
        if let line = Self.lineExceedingFlowDepth(text, limit: maximumDepth) {
            throw ManifestError(file: file, line: line, reason: "nested deeper than \(maximumDepth) levels")
        }
        let root: Node
        do {
            // Every value is read as text (no implicit typing): the basic resolver skips Yams's regular expressions.
            // UTF-8 named, not Yams's default, which reads the whole process environment on every parse (a third
            // of a cold start's time with a thousand manifests).
            guard let node = try Yams.compose(yaml: text, .basic, .default, .utf8) else {
                throw ManifestError(file: file, reason: "empty: expected a mapping with id, name, version, abi and library")
            }
            root = node
        } catch let error as ManifestError {
            throw error
        } catch let error as YamlError {
            throw Self.describe(error, file: file)
        } catch {
            throw ManifestError(file: file, reason: "not valid YAML: \(error)")
        }
        var reader = NodeReader(file: file)
        let manifest = try reader.manifest(root)
        return (manifest, reader.warnings)
    }

    /// The line at which `[`/`{` nesting first exceeds `limit`, or nil. Quoted text and comments are skipped.
    /// LibYAML itself is iterative, but the tree built from it is walked recursively: this keeps that walk shallow.
    static func lineExceedingFlowDepth(_ text: String, limit: Int) -> Int? {
        var depth = 0, line = 1
        var quote: UInt8? = nil
        var comment = false
        var previous: UInt8 = 10
        for b in text.utf8 {
            defer { previous = b }
            if b == 10 { line += 1; comment = false; if quote == UInt8(ascii: "'") { continue } }
            if comment { continue }
            if let q = quote {
                if b == q { quote = nil }
                continue
            }
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "'"): quote = b
            case UInt8(ascii: "#") where previous == 32 || previous == 10 || previous == 9: comment = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > limit { return line }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth = max(0, depth - 1)
            default: break
            }
        }
        return nil
    }

    /// The line (from 1) where `key` appears again at the indentation of its first appearance at `first`, if any.
    static func repeatLine(of key: String, after first: Mark, in yaml: String) -> Int? {
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
        guard first.line >= 1, first.line <= lines.count else { return nil }
        let indent = first.column - 1
        for index in first.line..<lines.count {
            let line = lines[index], text = line.drop { $0 == " " }
            guard line.count - text.count == indent else { continue }
            if text.hasPrefix(key + ":") || text.hasPrefix("\"\(key)\":") || text.hasPrefix("'\(key)':") { return index + 1 }
        }
        return nil
    }

    static func describe(_ error: YamlError, file: String) -> ManifestError {
        switch error {
        case let .scanner(context, problem, mark, yaml), let .parser(context, problem, mark, yaml), let .composer(context, problem, mark, yaml):
            // Found only at the end of the file (a `[` never closed): the line past the last one means nothing to
            // the reader; the line where the unfinished part starts does.
            let lines = yaml.utf8.count { $0 == 10 } + (yaml.utf8.last == 10 || yaml.isEmpty ? 0 : 1)
            if mark.line > lines, let context, context.mark.line <= lines {
                let what = context.text.contains("flow sequence") ? "the [ list" : context.text.contains("flow mapping") ? "the { mapping"
                    : context.text.contains("quoted scalar") ? "the quoted text" : "what"
                return ManifestError(file: file, line: context.mark.line,
                                     reason: "not valid YAML: \(problem) (the file ends inside \(what) that starts on this line)")
            }
            // A `[` or `{` left open runs on into the next lines, where the parser gives up: the line it opened on is
            // where the mistake is.
            if let context, context.mark.line < mark.line,
               let what = context.text.contains("flow sequence") ? "[ list" : context.text.contains("flow mapping") ? "{ mapping" : nil {
                return ManifestError(file: file, line: context.mark.line,
                                     reason: "not valid YAML: the \(what) that starts on this line is not closed (line \(mark.line): \(problem))")
            }
            if mark.line > lines, lines > 0 {
                return ManifestError(file: file, line: lines, reason: "not valid YAML: \(problem) at the end of the file")
            }
            // A tab where YAML wants spaces: said as such, not as "a character that cannot start any token".
            let lineText = yaml.split(separator: "\n", omittingEmptySubsequences: false).dropFirst(max(0, mark.line - 1)).first
            if problem.contains("cannot start any token"), let lineText,
               lineText.unicodeScalars.dropFirst(max(0, mark.column - 1)).first == "\t" {
                return ManifestError(file: file, line: mark.line, reason: "not valid YAML: a tab at column \(mark.column); YAML indents with spaces only")
            }
            return ManifestError(file: file, line: mark.line, reason: "not valid YAML: \(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            // Yams marks the first of the keys; the second is the one the author just added, most likely.
            let first = context.mark.line
            let again = duplicates.first.flatMap { repeatLine(of: $0, after: context.mark, in: context.text) }
            return ManifestError(file: file, line: again ?? first,
                                 reason: "duplicate key \(duplicates.map { "\"\($0)\"" }.joined(separator: ", "))"
                                    + (again.map { $0 != first ? " (first on line \(first))" : "" } ?? ""))
        default:
            let text = "\(error)".split(whereSeparator: \.isNewline).first.map(String.init) ?? "unknown error"
            return ManifestError(file: file, reason: "not valid YAML: \(text)")
        }
    }
}

/// Walks the composed YAML tree into a `Manifest`, collecting warnings.
struct NodeReader {
    let file: String
    var warnings: [ManifestWarning] = []
    /// The keys that were not known, for the hint a missing required key gets (ManifestLoader+Hints.swift).
    var unknownKeys: [(path: String, key: String, line: Int?)] = []

    static let knownKeys: Set<String> = [
        "id", "name", "version", "description", "abi", "library", "capabilities", "menus", "dependencies", "host",
        "permissions", "provides", "consumes", "commands", "calls", "proxy", "console",
        "activation", "idle-timeout", "isolation",
    ]
    static let proxyKeys: Set<String> = ["prefix", "upstream", "timeout"]
    static let commandKeys: Set<String> = ["name", "symbol", "signature", "description", "permission", "probe"]
    static let providesKeys: Set<String> = ["interface", "version", "ranking", "functions"]
    static let consumesKeys: Set<String> = ["interface", "version", "optional", "functions"]
    static let permissionKeys: Set<String> = ["key", "description", "actions"]
    static let menuKeys: Set<String> = ["id", "title", "parent", "link", "order", "icon", "permission"]

    init(file: String) { self.file = file }

    func fail(_ node: Node?, _ key: String?, _ reason: String) -> ManifestError {
        ManifestError(file: file, line: node?.mark?.line, key: key, reason: reason)
    }

    mutating func manifest(_ root: Node) throws(ManifestError) -> Manifest {
        guard let map = root.mapping else {
            throw fail(root, nil, "expected a mapping with id, name, version, abi and library, found \(Self.kind(root))")
        }
        let fields = try entries(map, known: Self.knownKeys, path: "")

        let id = try string(fields, "id", in: root)
        guard !Manifest.reservedIDs.contains(id) else {
            throw fail(fields["id"], "id", "\"\(id)\" is the host's own name: no plugin may take it")
        }
        guard Manifest.isValidID(id) else {
            throw fail(fields["id"], "id", "\"\(id)\" is not a valid plugin id (lowercase letters, digits, '-', '_', '.'; at most 64; starts with a letter or digit)")
        }
        let name = try string(fields, "name", in: root)
        let versionText = try string(fields, "version", in: root)
        guard let version = Semver(versionText) else {
            throw fail(fields["version"], "version", "expected a semantic version like 1.2.0, found \"\(versionText)\"")
        }
        let description = try optionalString(fields, "description") ?? ""
        let abiText = try string(fields, "abi", in: root)
        guard let abi = ABIVersion(abiText) else {
            throw fail(fields["abi"], "abi", "expected an ABI version like \"1.0\", found \"\(abiText)\"")
        }
        // No `library:` at all: a manifest-only bundle (checked below for declarations that need code).
        let library = try optionalString(fields, "library")
        if let library {
            guard !library.isEmpty, !library.hasPrefix("/"), !Manifest.hasDotDotSegment(library) else {
                throw fail(fields["library"], "library", "\"\(library)\" must be a path inside the bundle folder")
            }
        }

        var capabilities: Set<Capability> = []
        var routePrefixes: [String] = []
        if let node = fields["capabilities"] {
            guard let seq = node.sequence else {
                throw fail(node, "capabilities", "expected a list such as [routes, menus], found \(Self.kind(node))")
            }
            for (i, item) in seq.enumerated() {
                guard let text = item.scalar?.string else {
                    throw fail(item, "capabilities[\(i)]", "expected a capability name, found \(Self.kind(item))")
                }
                if text.hasPrefix("route-prefix:") {
                    let prefix = String(text.dropFirst("route-prefix:".count))
                    if let problem = Capability.problem(withPrefix: prefix) {
                        throw fail(item, "capabilities[\(i)]", "route prefix \(problem)")
                    }
                    routePrefixes.append(prefix)
                    continue
                }
                guard let cap = Capability(rawValue: text) else {
                    let known = Capability.allCases.map(\.rawValue).joined(separator: ", ")
                    throw fail(item, "capabilities[\(i)]", "unknown capability \"\(text)\" (known: \(known), route-prefix:/PATH)")
                }
                capabilities.insert(cap)
            }
        }

        var menus: [MenuDeclaration] = []
        if let node = fields["menus"] {
            guard let seq = node.sequence else {
                throw fail(node, "menus", "expected a list of menu entries, found \(Self.kind(node))")
            }
            for (i, item) in seq.enumerated() {
                menus.append(try menu(item, path: "menus[\(i)]"))
            }
        }

        var dependencies: [Dependency] = []
        if let node = fields["dependencies"] {
            guard let map = node.mapping else {
                throw fail(node, "dependencies", "expected a mapping of plugin id to version range, found \(Self.kind(node))")
            }
            for (keyNode, value) in map {
                guard let depID = keyNode.scalar?.string, Manifest.isValidID(depID) else {
                    throw fail(keyNode, "dependencies", "\(Self.kind(keyNode)) is not a valid plugin id")
                }
                guard let text = value.scalar?.string else {
                    throw fail(value, "dependencies.\(depID)", "expected a version range such as \"^1.2\", found \(Self.kind(value))")
                }
                guard let range = VersionRange(text) else {
                    throw fail(value, "dependencies.\(depID)", "\"\(text)\" is not a version range (try \"^1.2\" or \">=1.0.0 <2.0.0\")")
                }
                guard depID != id else { throw fail(keyNode, "dependencies.\(depID)", "a plugin cannot depend on itself") }
                dependencies.append(Dependency(id: depID, versions: range))
            }
        }

        var hostVersions: VersionRange?
        if let text = try optionalString(fields, "host") {
            guard let range = VersionRange(text) else {
                throw fail(fields["host"], "host", "\"\(text)\" is not a version range")
            }
            hostVersions = range
        }

        var manifest = Manifest(id: id, name: name, version: version, description: description, abi: abi, library: library,
                                capabilities: capabilities, menus: menus, dependencies: dependencies, hostVersions: hostVersions)
        manifest.routePrefixes = routePrefixes
        if let node = fields["permissions"] {
            guard let seq = node.sequence else {
                throw fail(node, "permissions", "expected a list of {key, description, actions}, found \(Self.kind(node))")
            }
            for (i, item) in seq.enumerated() {
                let path = "permissions[\(i)]"
                guard let map = item.mapping else { throw fail(item, path, "expected a mapping with key and actions, found \(Self.kind(item))") }
                let f = try entries(map, known: Self.permissionKeys, path: path + ".")
                let key = try string(f, "key", in: item, prefix: path + ".")
                guard key == id || (key.hasPrefix(id + ".") && MenuDeclaration.isValidID(key)) else {
                    throw fail(f["key"], path + ".key", "\"\(key)\" must be the plugin id or start with \"\(id).\"")
                }
                guard let actionsNode = f["actions"], let actions = actionsNode.sequence, !actions.isEmpty else {
                    throw fail(f["actions"] ?? item, path + ".actions", "expected a non-empty list of actions such as [view, edit]")
                }
                var names: [String] = []
                for (j, a) in actions.enumerated() {
                    guard let text = a.scalar?.string, MenuDeclaration.isValidID(text), !text.contains(":") else {
                        throw fail(a, "\(path).actions[\(j)]", "expected an action name, found \(Self.kind(a))")
                    }
                    names.append(text)
                }
                manifest.permissions.append(PermissionDeclaration(key: key, description: try optionalString(f, "description", prefix: path + ".") ?? "",
                                                                  actions: names))
            }
        }
        manifest.provides = try provides(fields["provides"])
        manifest.consumes = try consumes(fields["consumes"])
        manifest.commands = try commands(fields["commands"], permissions: manifest.permissions, pluginID: id)
        manifest.proxies = try proxies(fields["proxy"])
        manifest.calls = try calls(fields["calls"])
        manifest.console = try console(fields["console"], pluginID: id)
        try readActivation(fields, into: &manifest)
        if library == nil { try requireNoCode(manifest, fields) }
        return manifest
    }

    /// A manifest-only bundle declares nothing that needs code: no route, hook, service or command.
    func requireNoCode(_ m: Manifest, _ fields: [String: Node]) throws(ManifestError) {
        let codeCapabilities = m.capabilities.intersection([.routes, .authenticate, .authorize]).map(\.rawValue).sorted()
            + m.routePrefixes.map(Capability.routePrefix)
        var needsCode: [(key: String, what: String)] = codeCapabilities.map { ("capabilities", "capability \($0)") }
        if !m.provides.isEmpty { needsCode.append(("provides", "provides")) }
        if !m.consumes.isEmpty { needsCode.append(("consumes", "consumes")) }
        if !m.commands.isEmpty { needsCode.append(("commands", "commands")) }
        if !m.calls.isEmpty { needsCode.append(("calls", "calls")) }
        guard let first = needsCode.first else { return }
        throw fail(fields[first.key], first.key,
                   "\(first.what) needs code, and this bundle has no library: add `library:` or declare only proxy, menus, permissions and assets/")
    }

    mutating func menu(_ node: Node, path: String) throws(ManifestError) -> MenuDeclaration {
        guard let map = node.mapping else {
            throw fail(node, path, "expected a mapping with id and title, found \(Self.kind(node))")
        }
        let f = try entries(map, known: Self.menuKeys, path: path + ".")
        let id = try string(f, "id", in: node, prefix: path + ".")
        guard MenuDeclaration.isValidID(id) else {
            throw fail(f["id"], path + ".id", "\"\(id)\" is not a valid menu id (letters, digits, '.', '_', '-'; at most 128)")
        }
        var order = 0
        if let o = f["order"] {
            guard let scalar = o.scalar, let value = Int(scalar.string) else {
                throw fail(o, path + ".order", "expected an integer, found \(Self.kind(o))")
            }
            order = value
        }
        let link = try optionalString(f, "link", prefix: path + ".") ?? ""
        if let problem = MenuDeclaration.linkProblem(link) { throw fail(f["link"], path + ".link", "the link \(problem)") }
        return MenuDeclaration(
            id: id, title: try string(f, "title", in: node, prefix: path + "."),
            parent: try optionalString(f, "parent", prefix: path + ".") ?? "",
            link: link, order: order,
            icon: try optionalString(f, "icon", prefix: path + ".") ?? "",
            permission: try optionalString(f, "permission", prefix: path + ".") ?? "")
    }

    /// The mapping's string keys and values; unknown keys become warnings.
    mutating func entries(_ map: Node.Mapping, known: Set<String>, path: String) throws(ManifestError) -> [String: Node] {
        var out: [String: Node] = [:]
        for (keyNode, value) in map {
            guard let key = keyNode.scalar?.string else {
                throw fail(keyNode, nil, "keys must be plain strings, found \(Self.kind(keyNode))")
            }
            if !known.contains(key) {
                // A misspelt known key (at most two edits away) is named: it is often why the plugin then fails.
                let near = Spelling.nearest(key, in: known.sorted())
                warnings.append(ManifestWarning(file: file, line: keyNode.mark?.line,
                                                message: "unknown key \"\(path)\(key)\" is ignored" + (near.map { " (did you mean \"\(path)\($0)\"?)" } ?? "")))
                unknownKeys.append((path, key, keyNode.mark?.line))
                continue
            }
            out[key] = value
        }
        return out
    }

    func string(_ fields: [String: Node], _ key: String, in parent: Node, prefix: String = "") throws(ManifestError) -> String {
        guard let value = try optionalString(fields, key, prefix: prefix) else {
            throw fail(parent, prefix + key, "required key is missing" + misspelling(of: key, prefix: prefix))
        }
        return value
    }

    func optionalString(_ fields: [String: Node], _ key: String, prefix: String = "") throws(ManifestError) -> String? {
        guard let node = fields[key] else { return nil }
        guard let scalar = node.scalar, !Self.isNull(scalar) else {
            throw fail(node, prefix + key, "expected a string, found \(Self.kind(node))")
        }
        return scalar.string
    }

    static func isNull(_ s: Node.Scalar) -> Bool {
        s.style == .plain && (s.string.isEmpty || s.string == "~" || s.string == "null" || s.string == "Null" || s.string == "NULL")
    }

    static func kind(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case let .scalar(s):
            if isNull(s) { return "null" }
            return "\"\(s.string)\""
        }
    }
}

extension MenuDeclaration {
    /// True when `id` is a valid menu entry id: 1–128 bytes of letters, digits, `.`, `_`, `-`.
    public static func isValidID(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        guard (1...128).contains(bytes.count) else { return false }
        return bytes.allSatisfy {
            ($0 >= 97 && $0 <= 122) || ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) || $0 == 46 || $0 == 95 || $0 == 45
        }
    }
}
