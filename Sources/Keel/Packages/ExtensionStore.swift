// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KeelLoader
import KeelManifest
import KeelState

/// Repositories of packed plugins, and installing from them into the plugin folder.
///
/// An install fetches the archive, checks its SHA-256 against the index and its ed25519 signature against the
/// operator's trusted keys (unsigned or badly signed archives are refused unless `allowUnsigned`), unpacks it into a
/// hidden folder beside the others, checks the manifest, and renames it into place in one step, so a half-installed
/// bundle is never seen. Stateless apart from the state store; blocking (disk and network).
public struct ExtensionStore: Sendable {
    public let state: StateStore
    public let pluginsDirectory: String

    public init(state: StateStore, pluginsDirectory: String) {
        self.state = state
        self.pluginsDirectory = pluginsDirectory
    }

    public struct StoreError: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
        init(_ reason: String) { self.reason = reason }
    }

    /// One offered version.
    public struct Offer: Sendable {
        public var id: String
        public var entry: RepositoryIndex.Entry
        public var repository: StateStore.Repository
        public var indexURL: String
    }

    // MARK: fetching

    static func fetch(_ location: String) throws -> Data {
        if location.hasPrefix("http://") || location.hasPrefix("https://") {
            guard let url = URL(string: location) else { throw StoreError("\(location): not a URL") }
            let box = FetchBox()
            let semaphore = DispatchSemaphore(value: 0)
            var request = URLRequest(url: url)
            request.timeoutInterval = 30
            URLSession.shared.dataTask(with: request) { data, response, error in
                box.set(data, (response as? HTTPURLResponse)?.statusCode ?? 0, error)
                semaphore.signal()
            }.resume()
            semaphore.wait()
            let (data, status, error) = box.value
            if let error { throw StoreError("\(location): unreachable: \(error.localizedDescription)") }
            guard status == 200, let data else { throw StoreError("\(location): HTTP \(status)") }
            return data
        }
        let path = location.hasPrefix("file://") ? String(location.dropFirst(7)) : location
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StoreError("\(path): \(FileManager.default.fileExists(atPath: path) ? "cannot be read" : "no such file")")
        }
        return data
    }

    static func join(_ base: String, _ name: String) -> String { base.hasSuffix("/") ? base + name : base + "/" + name }

    /// Every repository's index. A repository that cannot be read is reported, not fatal.
    public func indexes() throws -> (offers: [Offer], problems: [String]) {
        var offers: [Offer] = [], problems: [String] = []
        for repo in try state.repositories() {
            let indexURL = Self.join(repo.location, "index.yaml")
            do {
                let index = try RepositoryIndex.parse(try Self.fetch(indexURL), file: indexURL)
                for (id, entries) in index.plugins {
                    for e in entries { offers.append(Offer(id: id, entry: e, repository: repo, indexURL: repo.location)) }
                }
            } catch {
                problems.append("repository \"\(repo.name)\": \(error)")
            }
        }
        return (offers, problems)
    }

    /// The versions this host can run: same ABI major, minor not newer, host range satisfied.
    static func compatible(_ e: RepositoryIndex.Entry) -> Bool {
        guard let abi = ABIVersion(e.abi), abi.major == StatusCode.hostABIMajor, abi.minor <= StatusCode.hostABIMinor else { return false }
        if let host = e.host, let range = VersionRange(host), let me = Semver(Kernel.version) { return range.contains(me) }
        return true
    }

    /// Picks the offer for `id` (`version` or the recommended one: the highest compatible). Repositories are tried
    /// by priority; two repositories of the same priority offering the id are refused, never mixed.
    public func resolve(_ id: String, version: String?, offers: [Offer]) throws -> Offer {
        let candidates = offers.filter { $0.id == id }
        guard !candidates.isEmpty else { throw StoreError("no repository offers \"\(id)\"") }
        let top = candidates.map(\.repository.priority).max() ?? 0
        let repos = Set(candidates.filter { $0.repository.priority == top }.map(\.repository.name))
        guard repos.count == 1 else {
            throw StoreError("\"\(id)\" is offered by \(repos.sorted().map { "\"\($0)\"" }.joined(separator: " and ")) at the same priority \(top); give one a higher priority (keel repo add --priority)")
        }
        let fromTop = candidates.filter { $0.repository.priority == top }
        if let version {
            guard let wanted = Semver(version), let offer = fromTop.first(where: { Semver($0.entry.version) == wanted }) else {
                throw StoreError("repository \"\(repos.first ?? "")\" has no \"\(id)\" version \(version)")
            }
            guard Self.compatible(offer.entry) else { throw StoreError("\"\(id)\" \(version) needs ABI \(offer.entry.abi) / keel \(offer.entry.host ?? "any"); this host is \(Kernel.version) with ABI \(PluginLibrary.supportedABIText)") }
            return offer
        }
        guard let best = fromTop.filter({ Self.compatible($0.entry) }).max(by: { (Semver($0.entry.version) ?? Semver(0, 0, 0)) < (Semver($1.entry.version) ?? Semver(0, 0, 0)) }) else {
            throw StoreError("no version of \"\(id)\" runs on this host (keel \(Kernel.version), ABI \(PluginLibrary.supportedABIText))")
        }
        return best
    }

    /// Plugins to install for `id`, dependencies first: those not in the plugin folder yet (in any folder).
    /// - Throws: when `id` itself is already installed (use upgrade), a dependency cannot be met, or there is a cycle.
    public func plan(_ id: String, version: String?) throws -> [Offer] {
        if let present = Self.bundles(claiming: id, in: pluginsDirectory).first {
            throw StoreError(Self.alreadyInstalled(id, folder: present.folder))
        }
        let installed = Set(((try? BundleScanner().scan(pluginsDirectory)) ?? []).map(\.id))
        let (offers, _) = try indexes()
        var plan: [Offer] = [], visiting: [String] = []
        func visit(_ id: String, _ version: String?) throws {
            if let cycle = visiting.firstIndex(of: id) {
                throw StoreError("dependency cycle: " + (visiting[cycle...] + [id]).joined(separator: " → "))
            }
            guard !plan.contains(where: { $0.id == id }) else { return }
            if version == nil, installed.contains(id) { return }
            let offer = try resolve(id, version: version, offers: offers)
            visiting.append(id)
            for (dep, range) in (offer.entry.dependencies ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard let r = VersionRange(range) else { throw StoreError("\"\(id)\" has a bad dependency range \"\(range)\" for \"\(dep)\"") }
                let candidates = offers.filter { $0.id == dep && r.contains(Semver($0.entry.version) ?? Semver(0, 0, 0)) }
                if !installed.contains(dep) && candidates.isEmpty {
                    throw StoreError("\"\(id)\" needs \"\(dep)\" \(range), which no repository offers")
                }
                try visit(dep, nil)
            }
            visiting.removeLast()
            plan.append(offer)
        }
        try visit(id, version)
        return plan
    }

    /// Fetches, verifies and unpacks one offer into the plugin folder, in a new folder named after the id (`id-2`,
    /// ... when that name is taken by something else). Refused when a bundle already declares the id, in any folder:
    /// two bundles never claim one id. Records installing → installed (or install-failed with the reason; the hidden
    /// work folder `.installing-<id>-<pid>` is removed, so the install can be retried).
    public func install(_ offer: Offer, allowUnsigned: Bool) throws {
        let id = offer.id
        if let present = Self.bundles(claiming: id, in: pluginsDirectory).first {
            throw StoreError(Self.alreadyInstalled(id, folder: present.folder))
        }
        try? state.setStatus(id, .installing, reason: nil)
        let work = pluginsDirectory + "/.installing-\(id)-\(getpid())"
        do {
            let manifest = try fetchVerified(offer, into: work, allowUnsigned: allowUnsigned)
            // Checked again just before the move: another process may have installed it meanwhile.
            if let present = Self.bundles(claiming: id, in: pluginsDirectory).first {
                throw StoreError(Self.alreadyInstalled(id, folder: present.folder))
            }
            let target = freeFolder(for: id)
            guard rename(work, target) == 0 else {
                throw StoreError("\"\(id)\": cannot move into the plugin folder: \(String(cString: strerror(errno)))")
            }
            try? state.discovered(id: id, name: manifest.name, version: "\(manifest.version)", bundlePath: target)
            try? state.setStatus(id, .installed, reason: nil)
            try? state.setSignatureRecord(id, signatureRecord(offer, library: target + "/" + manifest.library))
        } catch {
            try? FileManager.default.removeItem(atPath: work)
            try? state.setStatus(id, .installFailed, reason: "\(error)")
            throw error
        }
    }

    /// The bundles in `directory` known by `id`: by the id their manifest declares, or by folder name when the
    /// manifest is unusable (the name the scanner gives them). More than one means the id is claimed twice.
    public static func bundles(claiming id: String, in directory: String) -> [Bundle] {
        ((try? BundleScanner().scan(directory)) ?? []).filter { $0.id == id }
    }

    /// The one-line refusal for installing an id that is already there. Names the folder, never a host path.
    static func alreadyInstalled(_ id: String, folder: String) -> String {
        "\"\(id)\" is already installed (folder \"\((folder as NSString).lastPathComponent)\"); use `keel upgrade \(id)` to change its version"
    }

    /// `plugins/<id>`, or `plugins/<id>-2`, ... when that name is taken by another bundle or file.
    func freeFolder(for id: String) -> String {
        var candidate = pluginsDirectory + "/" + id, n = 1
        var st = stat()
        while lstat(candidate, &st) == 0 {
            n += 1
            candidate = pluginsDirectory + "/\(id)-\(n)"
        }
        return candidate
    }

    /// Fetches `offer`, checks its checksum and signature, and unpacks it into the new folder `work`.
    /// - Returns: the unpacked bundle's manifest, checked against the index.
    func fetchVerified(_ offer: Offer, into work: String, allowUnsigned: Bool) throws -> Manifest {
        let id = offer.id
        do {
            let archiveURL = Self.join(offer.indexURL, offer.entry.archive)
            let data = try Self.fetch(archiveURL)
            let digest = SHA256.hash(data: data)
            let hex = digest.map { String(format: "%02x", $0) }.joined()
            guard hex == offer.entry.sha256.lowercased() else {
                throw StoreError("\(archiveURL): sha256 \(hex) does not match the index (\(offer.entry.sha256))")
            }
            try verifySignature(offer, digest: Data(digest), allowUnsigned: allowUnsigned)
            try? FileManager.default.removeItem(atPath: work)
            try FileManager.default.createDirectory(atPath: pluginsDirectory, withIntermediateDirectories: true)
            do { try PackageArchive.unpack(data, into: work) } catch { throw StoreError("\(archiveURL): \(error)") }
            let (manifest, _) = try ManifestLoader().load(path: work + "/" + ManifestLoader.fileName)
            guard manifest.id == id, manifest.version == Semver(offer.entry.version) else {
                throw StoreError("\(archiveURL): archive holds \(manifest.id) \(manifest.version), the index says \(id) \(offer.entry.version)")
            }
            return manifest
        } catch {
            try? FileManager.default.removeItem(atPath: work)
            throw error
        }
    }


    /// How an installed plugin was signed, tied to the bytes installed: the SHA-256 of its library.
    struct SignatureRecord: Codable {
        var library: String
        var status: String
    }

    /// The record to store for `offer` installed with its library at `library`; nil when the library cannot be read.
    func signatureRecord(_ offer: Offer, library: String) -> String? {
        guard let sum = GenerationStore.checksum(library),
              let data = try? JSONEncoder().encode(SignatureRecord(library: sum, status: signatureStatus(offer))) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// The signature status to show for a bundle whose library now has checksum `librarySum`: the stored one only
    /// while the library is the one installed; a replaced or foreign library shows none.
    static func signature(stored: String?, librarySum: String?) -> String? {
        guard let stored, let librarySum,
              let record = try? JSONDecoder().decode(SignatureRecord.self, from: Data(stored.utf8)),
              record.library == librarySum else { return nil }
        return record.status
    }

    func signatureStatus(_ offer: Offer) -> String {
        guard let signer = offer.entry.signer, offer.entry.signature != nil else { return "unsigned (allowed by the operator)" }
        return ((try? state.trustedKeys()[signer]) ?? nil) != nil ? "signed by \(signer)" : "signed by untrusted \(signer) (allowed by the operator)"
    }

    func verifySignature(_ offer: Offer, digest: Data, allowUnsigned: Bool) throws {
        guard let signature = offer.entry.signature, let signer = offer.entry.signer else {
            if allowUnsigned { return }
            throw StoreError("\"\(offer.id)\" \(offer.entry.version) is not signed; refused (pass --allow-unsigned to install it anyway)")
        }
        guard let keyText = try state.trustedKeys()[signer], let keyData = Data(base64Encoded: keyText),
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: keyData) else {
            if allowUnsigned { return }
            throw StoreError("\"\(offer.id)\" is signed by \"\(signer)\", which is not a trusted key (keel trust add \(signer) KEY)")
        }
        guard let sig = Data(base64Encoded: signature), key.isValidSignature(sig, for: digest) else {
            throw StoreError("\"\(offer.id)\" \(offer.entry.version): bad signature by \"\(signer)\"; refused")
        }
    }

    /// Signs `archive` with a private key file (raw 32 bytes, base64): returns the base64 signature.
    public static func sign(_ archive: Data, keyFile: String) throws -> String {
        guard let text = FileManager.default.contents(atPath: keyFile), let raw = Data(base64Encoded: String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
            throw StoreError("\(keyFile): not a Keel signing key (make one with keel trust keygen)")
        }
        return try key.signature(for: Data(SHA256.hash(data: archive))).base64EncodedString()
    }

    /// A new signing key: (private key base64, public key base64).
    public static func makeKey() -> (String, String) {
        let key = Curve25519.Signing.PrivateKey()
        return (key.rawRepresentation.base64EncodedString(), key.publicKey.rawRepresentation.base64EncodedString())
    }

    /// Writes `index.yaml` for the archives (and their `.sig`/`.signer` files) in `folder`.
    public static func writeIndex(folder: String) throws -> RepositoryIndex {
        var plugins: [String: [RepositoryIndex.Entry]] = [:]
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix("." + PackageArchive.fileExtension) }.sorted()
        for name in names {
            let path = folder + "/" + name
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let manifestData = try PackageArchive.entries(data).first(where: { $0.path == ManifestLoader.fileName })?.data else {
                throw StoreError("\(path): no plugin.yaml inside")
            }
            let (m, _) = try ManifestLoader().parse(manifestData, file: path + "!/plugin.yaml")
            let signature = (try? String(contentsOfFile: path + ".sig", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            let signer = (try? String(contentsOfFile: path + ".signer", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            plugins[m.id, default: []].append(RepositoryIndex.Entry(
                version: "\(m.version)", name: m.name, description: m.description, archive: name,
                sha256: SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined(), signature: signature, signer: signer,
                abi: "\(m.abi)", host: m.hostVersions?.text,
                dependencies: m.dependencies.isEmpty ? nil : Dictionary(uniqueKeysWithValues: m.dependencies.map { ($0.id, $0.versions.text) })))
        }
        let index = RepositoryIndex(plugins: plugins)
        try index.yaml().write(toFile: folder + "/index.yaml", atomically: true, encoding: .utf8)
        return index
    }
}

final class FetchBox: @unchecked Sendable {
    private let lock = NSLock()
    private var result: (Data?, Int, (any Error)?) = (nil, 0, nil)
    func set(_ d: Data?, _ s: Int, _ e: (any Error)?) { lock.lock(); result = (d, s, e); lock.unlock() }
    var value: (Data?, Int, (any Error)?) { lock.lock(); defer { lock.unlock() }; return result }
}
