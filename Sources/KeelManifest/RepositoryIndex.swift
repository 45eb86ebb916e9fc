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

    /// Parses an index; `file` names it in errors.
    /// - Throws: `ManifestError` with the reason.
    public static func parse(_ data: Data, file: String) throws(ManifestError) -> RepositoryIndex {
        guard data.count <= 16 << 20 else { throw ManifestError(file: file, reason: "index over 16 MiB") }
        guard let text = String(validating: data, as: UTF8.self) else { throw ManifestError(file: file, reason: "not valid UTF-8") }
        let index: RepositoryIndex
        do { index = try YAMLDecoder().decode(RepositoryIndex.self, from: text) } catch {
            throw ManifestError(file: file, reason: "malformed index: \(String(describing: error).split(separator: "\n").first ?? "")")
        }
        guard index.apiVersion == 1 else { throw ManifestError(file: file, reason: "index apiVersion \(index.apiVersion) is not supported (1)") }
        for (id, entries) in index.plugins {
            guard Manifest.isValidID(id) else { throw ManifestError(file: file, key: "plugins.\(id)", reason: "not a valid plugin id") }
            for e in entries {
                guard Semver(e.version) != nil else { throw ManifestError(file: file, key: "plugins.\(id)", reason: "version \"\(e.version)\" is not semver") }
                guard ABIVersion(e.abi) != nil else { throw ManifestError(file: file, key: "plugins.\(id)", reason: "abi \"\(e.abi)\" is not an ABI version") }
                guard e.sha256.count == 64 else { throw ManifestError(file: file, key: "plugins.\(id)", reason: "sha256 must be 64 hex digits") }
                guard !e.archive.hasPrefix("/"), !e.archive.split(separator: "/").contains("..") else {
                    throw ManifestError(file: file, key: "plugins.\(id)", reason: "archive \"\(e.archive)\" must be inside the repository")
                }
            }
        }
        return index
    }

    /// The index as YAML.
    public func yaml() throws -> String { try YAMLEncoder().encode(self) }
}
