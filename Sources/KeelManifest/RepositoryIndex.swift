// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Yams

/// A repository's `index.yaml`: every version of every plugin it offers, with the archive, its SHA-256 and
/// (optionally) an ed25519 signature. Written by `keel repo index DIR`.
public struct RepositoryIndex: Codable, Sendable, Hashable {
    public var apiVersion: Int
    public var plugins: [String: [Entry]]

    public struct Entry: Codable, Sendable, Hashable {
        public var version: String
        public var name: String
        public var description: String?
        /// The archive, relative to the index.
        public var archive: String
        public var sha256: String
        /// Base64 ed25519 signature of the archive's SHA-256 digest, by `signer`.
        public var signature: String?
        public var signer: String?
        public var abi: String
        public var host: String?
        public var dependencies: [String: String]?
        /// What the archive's manifest asks for (capabilities and `route-prefix:` entries), when the index records
        /// it; an install refuses an archive whose manifest asks for something else.
        public var capabilities: [String]?

        public init(version: String, name: String, description: String?, archive: String, sha256: String, signature: String?,
                    signer: String?, abi: String, host: String?, dependencies: [String: String]?, capabilities: [String]? = nil) {
            self.version = version
            self.name = name
            self.description = description
            self.archive = archive
            self.sha256 = sha256
            self.signature = signature
            self.signer = signer
            self.abi = abi
            self.host = host
            self.dependencies = dependencies
            self.capabilities = capabilities
        }
    }

    public init(plugins: [String: [Entry]]) {
        apiVersion = 1
        self.plugins = plugins
    }

    /// The largest index, in bytes; it may not hold more values than that once its aliases are expanded.
    public static let maxBytes = 16 << 20
    /// Values (scalars, lists, mappings) an index may hold, its aliases expanded: about 25,000 plugin versions. Parsing
    /// builds a node for each (about 75 bytes), so this bounds the memory a parse takes (a 16 MiB index of 8 million
    /// one-digit values took 1.2 GB, at every catalog refresh).
    public static let maxValues = 1 << 19

    /// The part of an index read as a whole: everything but `plugins`, which is read id by id.
    private struct Head: Decodable { var apiVersion: Int }

    /// Parses an index; `file` names it in errors. Takes time in proportion to its size: aliases may not expand it
    /// past `maxValues` values (`BoundedYAML`), and `plugins` is read id by id (decoding the mapping as a dictionary
    /// looks each key up from the start: quadratic, minutes for a large index).
    /// - Throws: `ManifestError` with the reason.
    public static func parse(_ data: Data, file: String) throws(ManifestError) -> RepositoryIndex {
        guard data.count <= maxBytes else { throw ManifestError(file: file, reason: "index over 16 MiB") }
        guard let text = String(validating: data, as: UTF8.self) else { throw ManifestError(file: file, reason: "not valid UTF-8") }
        func malformed(_ error: Any) -> ManifestError {
            ManifestError(file: file, reason: "malformed index: \(String(describing: error).split(separator: "\n").first ?? "")")
        }
        var index = RepositoryIndex(plugins: [:])
        // Every value but the first takes one of these bytes at least (a line break, `-`, `:`, `,`, a bracket): counted
        // before the tree is built, so that the tree's size is bounded before it costs memory.
        var separators = 0
        for byte in data where byte == 0x0A || byte == 0x2D || byte == 0x3A || byte == 0x2C || byte == 0x5B || byte == 0x7B { separators += 1 }
        guard separators <= 4 * maxValues else {
            throw ManifestError(file: file, reason: "index too large: more than \(maxValues) values")
        }
        do {
            guard let root = try Yams.compose(yaml: text) else { throw malformed("empty") }
            guard BoundedYAML.fits(root, maxValues: maxValues) else {
                throw ManifestError(file: file, reason: "index too large: more than \(maxValues) values once its aliases are expanded")
            }
            index.apiVersion = try YAMLDecoder().decode(Head.self, from: root).apiVersion
            guard case .mapping(let plugins)? = root["plugins"] else { throw malformed("\"plugins\" must be a mapping of ids") }
            for (key, entries) in plugins {
                guard let id = key.string, index.plugins[id] == nil else {
                    throw ManifestError(file: file, key: "plugins.\(key.string ?? "?")", reason: "listed twice, or not a plugin id")
                }
                do { index.plugins[id] = try YAMLDecoder().decode([Entry].self, from: entries) } catch {
                    guard let (key, reason) = DecodingText.describe(error, corrupt: "not a valid index", object: "a mapping") else { throw error }
                    let path = "plugins.\(id)" + (key.map { $0.hasPrefix("[") ? $0 : "." + $0 } ?? "")
                    throw ManifestError(file: file, line: entries.mark?.line, key: path, reason: reason)
                }
            }
        } catch let error as ManifestError {
            throw error
        } catch let error as YamlError {
            throw ManifestLoader.describe(error, file: file)
        } catch {
            guard let (key, reason) = DecodingText.describe(error, corrupt: "not a valid index", object: "a mapping") else { throw malformed(error) }
            throw ManifestError(file: file, key: key, reason: reason)
        }
        guard index.apiVersion == 1 else { throw ManifestError(file: file, reason: "index apiVersion \(index.apiVersion) is not supported (1)") }
        for (id, entries) in index.plugins {
            guard Manifest.isValidID(id) else { throw ManifestError(file: file, key: "plugins.\(id)", reason: "not a valid plugin id") }
            for e in entries {
                guard Semver(e.version) != nil else { throw ManifestError(file: file, key: "plugins.\(id)", reason: "version \"\(e.version)\" is not semver") }
                guard ABIVersion(e.abi) != nil else { throw ManifestError(file: file, key: "plugins.\(id)", reason: "abi \"\(e.abi)\" is not an ABI version") }
                guard e.sha256.count == 64 else { throw ManifestError(file: file, key: "plugins.\(id)", reason: "sha256 must be 64 hex digits") }
                guard !e.archive.hasPrefix("/"), !Manifest.hasDotDotSegment(e.archive) else {
                    throw ManifestError(file: file, key: "plugins.\(id)", reason: "archive \"\(e.archive)\" must be inside the repository")
                }
            }
        }
        return index
    }

    /// The index as YAML.
    public func yaml() throws -> String { try YAMLEncoder().encode(self) }
}
