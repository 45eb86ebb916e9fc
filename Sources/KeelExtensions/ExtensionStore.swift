// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
import KeelSystem
import KeelLoader
import KeelManifest
import KeelState

/// Repositories of packed plugins, and installing from them into the plugin folder.
///
/// An install fetches the archive, checks its SHA-256 against the index and its ed25519 signature against the
/// operator's trusted keys (unsigned or badly signed archives are refused unless `allowUnsigned`) and, for a plugin
/// pinned to a key, against that key alone (SignerPinning.swift), unpacks it into a hidden folder beside the others,
/// checks the manifest, and renames it into place in one step, so a half-installed bundle is never seen. Stateless
/// apart from the state store; blocking (disk and network).
public struct ExtensionStore: Sendable {
    public let state: StateStore
    public let pluginsDirectory: String
    /// How repositories are read: time-outs and how many reads at once (see `RepositoryFetcher`).
    public var fetcher = RepositoryFetcher.standard
    /// How big an archive may be (see `PackageArchive.Limits`).
    public var archiveLimits = PackageArchive.Limits.standard

    public init(state: StateStore, pluginsDirectory: String) {
        self.state = state
        self.pluginsDirectory = pluginsDirectory
    }

    public struct StoreError: Error, Sendable, CustomStringConvertible {
        public var reason: String
        /// No repository offers the plugin, or the version asked for: nothing is wrong with a package.
        public var notOffered = false
        public var description: String { reason }
        /// `reason` may quote a repository's index or archive (names, capabilities, ranges): its control and
        /// formatting characters are escaped (`Printable`), as for everything that text reaches.
        init(_ reason: String, notOffered: Bool = false) {
            self.reason = Printable.escapingControls(reason)
            self.notOffered = notOffered
        }
    }

    /// One offered version.
    public struct Offer: Sendable {
        public var id: String
        public var entry: RepositoryIndex.Entry
        public var repository: StateStore.Repository
        public var indexURL: String
    }

    // MARK: fetching

    /// The largest index read.
    static let maxIndexBytes = 16 << 20

    static func join(_ base: String, _ name: String) -> String { base.hasSuffix("/") ? base + name : base + "/" + name }

    /// Checks a repository location when it is added: a folder (or `file://`) must exist and hold a valid `index.yaml`.
    /// An http(s) location is not contacted here; it is checked when it is used.
    /// - Returns: a note for the operator, or nil.
    /// - Throws: `StoreError` naming the location and the reason.
    public static func checkLocation(_ location: String) throws -> String? {
        if RepositoryFetcher.isRemote(location) {
            // A user or password in the URL would never be sent (the client does not use them), but would be shown
            // wherever the location is: the repository list, every warning and error, a failed install's stored reason.
            if let url = URL(string: location), url.user != nil || url.password != nil {
                throw StoreError("\(url.scheme ?? "http")://***@\(url.host ?? ""): a repository location may not hold a user or password "
                                 + "(they would be shown wherever the location is, and are not sent); serve it without, or through a proxy that adds them")
            }
            return "not contacted now: an http(s) repository is checked when it is used (keel search)"
        }
        // A URL of another scheme (ftp://, s3://, git@host:...) is not a folder with a strange name.
        if let colon = location.range(of: "://"), !location.hasPrefix("file://"),
           location[..<colon.lowerBound].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == "." }) {
            throw StoreError("\(location): \(location[..<colon.lowerBound]):// is not a repository location Keel reads (a folder, file://, http:// or https://)")
        }
        let path = RepositoryFetcher.localPath(location)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw StoreError("\(path): no such folder") }
        guard isDirectory.boolValue else { throw StoreError("\(path): not a folder") }
        guard FileManager.default.fileExists(atPath: join(path, "index.yaml")) else {
            throw StoreError("\(path): no index.yaml (write one with keel repo index \(path))")
        }
        // A malformed index is refused now, not found at the first search or install.
        let index = join(path, "index.yaml")
        do { _ = try RepositoryIndex.parse(Data(try SystemFile.read(index, limit: maxIndexBytes + 1)), file: index) } catch let error as ManifestError {
            throw StoreError(error.description)
        } catch let error as SystemFile.ReadError {
            throw StoreError("\(index): \(SystemFile.describe(errno: error.code))")
        }
        return nil
    }

    /// Every repository's index. A repository that cannot be read is reported, not fatal.
    /// Blocking (disk and network, bounded by the fetcher's time-outs): call it from a thread of its own, never
    /// from Swift's cooperative pool; request handlers use `fetchIndexes()` or a `RepositoryCatalog`.
    public func indexes() throws -> (offers: [Offer], problems: [String]) {
        var offers: [Offer] = [], problems: [String] = []
        for repo in try state.repositories() {
            let indexURL = Self.join(repo.location, "index.yaml")
            Self.gather(repo, Result { try RepositoryIndex.parse(try fetcher.data(indexURL, maxBytes: Self.maxIndexBytes), file: indexURL) },
                        into: &offers, &problems)
        }
        return (offers, problems)
    }

    /// Every repository's index, read concurrently without blocking a thread. A repository that cannot be read
    /// is reported (`repository "NAME": reason`), not fatal.
    public func fetchIndexes() async throws -> (offers: [Offer], problems: [String]) {
        let repos = try state.repositories()
        let results = await withTaskGroup(of: (Int, Result<RepositoryIndex, any Error>).self) { group in
            for (i, repo) in repos.enumerated() { group.addTask { (i, await fetchIndex(repo)) } }
            var out: [Int: Result<RepositoryIndex, any Error>] = [:]
            for await (i, r) in group { out[i] = r }
            return out
        }
        var offers: [Offer] = [], problems: [String] = []
        for (i, repo) in repos.enumerated() { if let r = results[i] { Self.gather(repo, r, into: &offers, &problems) } }
        return (offers, problems)
    }

    /// One repository's index, without blocking a thread on the network.
    public func fetchIndex(_ repo: StateStore.Repository) async -> Result<RepositoryIndex, any Error> {
        let indexURL = Self.join(repo.location, "index.yaml")
        do { return .success(try RepositoryIndex.parse(try await fetcher.data(indexURL, maxBytes: Self.maxIndexBytes), file: indexURL)) } catch {
            return .failure(error)
        }
    }

    /// Adds one repository's offers, or its problem.
    static func gather(_ repo: StateStore.Repository, _ result: Result<RepositoryIndex, any Error>, into offers: inout [Offer], _ problems: inout [String]) {
        switch result {
        case .success(let index):
            for (id, entries) in index.plugins.sorted(by: { $0.key < $1.key }) {
                for e in entries { offers.append(Offer(id: id, entry: e, repository: repo, indexURL: repo.location)) }
            }
        case .failure(let error):
            problems.append("repository \"\(repo.name)\": \(error)")
        }
    }

    /// The versions this host can run: same ABI major, minor not newer, host range satisfied.
    static func compatible(_ e: RepositoryIndex.Entry) -> Bool {
        guard let abi = ABIVersion(e.abi), abi.major == StatusCode.hostABIMajor, abi.minor <= StatusCode.hostABIMinor else { return false }
        if let host = e.host, let range = VersionRange(host), let me = Semver(KeelVersion.current) { return range.contains(me) }
        return true
    }

    /// Picks the offer for `id` (`version` or the recommended one: the highest compatible). Repositories are tried
    /// by priority; two repositories of the same priority offering the id are refused, never mixed.
    /// `problems` (repositories that could not be read) are named when no repository offers `id`: one of them may.
    public func resolve(_ id: String, version: String?, offers: [Offer], problems: [String] = []) throws -> Offer {
        let candidates = offers.filter { $0.id == id }
        guard !candidates.isEmpty else {
            throw StoreError("no repository offers \"\(id)\"" + (problems.isEmpty ? "" : " (not read: " + problems.joined(separator: "; ") + ")"),
                             notOffered: true)
        }
        let top = candidates.map(\.repository.priority).max() ?? 0
        let repos = Set(candidates.filter { $0.repository.priority == top }.map(\.repository.name))
        guard repos.count == 1 else {
            throw StoreError("\"\(id)\" is offered by \(repos.sorted().map { "\"\($0)\"" }.joined(separator: " and ")) at the same priority \(top); give one a higher priority (keel repo remove NAME, then keel repo add NAME LOCATION --priority N)")
        }
        let fromTop = candidates.filter { $0.repository.priority == top }
        if let version {
            guard let wanted = Semver(version), let offer = fromTop.first(where: { Semver($0.entry.version) == wanted }) else {
                let known = fromTop.map(\.entry.version).sorted { (Semver($0) ?? Semver(0, 0, 0)) < (Semver($1) ?? Semver(0, 0, 0)) }
                throw StoreError("repository \"\(repos.first ?? "")\" has no \"\(id)\" version \(version) (it offers \(known.joined(separator: ", ")))",
                                 notOffered: true)
            }
            guard Self.compatible(offer.entry) else { throw StoreError("\"\(id)\" \(version) needs ABI \(offer.entry.abi) / keel \(offer.entry.host ?? "any"); this host is \(KeelVersion.current) with ABI \(PluginLibrary.supportedABIText)") }
            return offer
        }
        guard let best = fromTop.filter({ Self.compatible($0.entry) }).max(by: { (Semver($0.entry.version) ?? Semver(0, 0, 0)) < (Semver($1.entry.version) ?? Semver(0, 0, 0)) }) else {
            throw StoreError("no version of \"\(id)\" runs on this host (keel \(KeelVersion.current), ABI \(PluginLibrary.supportedABIText))")
        }
        return best
    }

    /// Plugins to install for `id`, dependencies first: those not in the plugin folder yet (in any folder).
    /// - Throws: when `id` itself is already installed (use upgrade), a dependency cannot be met, or there is a cycle.
    public func plan(_ id: String, version: String?) throws -> [Offer] { try planNoting(id, version: version).offers }

    /// `plan`, with the repositories that could not be read (`indexes`' problems): a higher-priority repository that
    /// is down must not be passed over silently.
    public func planNoting(_ id: String, version: String?) throws -> (offers: [Offer], problems: [String]) {
        if let present = Self.bundles(claiming: id, in: pluginsDirectory).first {
            throw StoreError(Self.alreadyInstalled(id, folder: present.folder))
        }
        let installed = Set(((try? BundleScanner().scan(pluginsDirectory)) ?? []).map(\.id))
        let (offers, problems) = try indexes()
        var plan: [Offer] = [], visiting: [String] = []
        let keySet = (try? state.trustedKeySet()) ?? TrustedKeySet()
        /// The version of `dep` to install for `range`: one signed by a key this host trusts before any other (a
        /// dependency is never installed on the named plugin's --allow-unsigned, so an untrusted one would only fail
        /// the install), the recommended one before a higher one, then the highest that runs here. The recommended
        /// version may lie outside the range: never chosen then. Nil when no version in range runs here.
        func choose(_ dep: String, in range: VersionRange, candidates: [Offer]) -> String? {
            let recommended = try? resolve(dep, version: nil, offers: offers, problems: problems)
            let inRange = recommended.flatMap { Semver($0.entry.version) }.map(range.contains) ?? false
            let trusted = keySet.keys(for: dep)
            if let recommended, inRange, Self.signedByTrustedKey(recommended, trusted: trusted) { return recommended.entry.version }
            let versions = Set(candidates.map(\.entry.version)).sorted { (Semver($0) ?? Semver(0, 0, 0)) > (Semver($1) ?? Semver(0, 0, 0)) }
            var runnable: String?
            for version in versions {
                guard let offer = try? resolve(dep, version: version, offers: offers, problems: problems) else { continue }
                if Self.signedByTrustedKey(offer, trusted: trusted) { return version }
                runnable = runnable ?? version
            }
            return inRange ? recommended?.entry.version : runnable
        }
        func visit(_ id: String, _ version: String?) throws {
            if let cycle = visiting.firstIndex(of: id) {
                throw StoreError("dependency cycle: " + (visiting[cycle...] + [id]).joined(separator: " → "))
            }
            guard !plan.contains(where: { $0.id == id }) else { return }
            if version == nil, installed.contains(id) { return }
            let offer = try resolve(id, version: version, offers: offers, problems: problems)
            visiting.append(id)
            for (dep, range) in (offer.entry.dependencies ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard let r = VersionRange(range) else { throw StoreError("\"\(id)\" has a bad dependency range \"\(range)\" for \"\(dep)\"") }
                let candidates = offers.filter { $0.id == dep && r.contains(Semver($0.entry.version) ?? Semver(0, 0, 0)) }
                if installed.contains(dep) { continue }
                if candidates.isEmpty {
                    throw StoreError("\"\(id)\" needs \"\(dep)\" \(range), which no repository offers")
                }
                // A version in the range (the recommended one may lie outside it).
                guard let chosen = choose(dep, in: r, candidates: candidates) else {
                    throw StoreError("\"\(id)\" needs \"\(dep)\" \(range); the versions offered in it (" + candidates.map(\.entry.version).sorted().joined(separator: ", ")
                                     + ") do not run on this host (keel \(KeelVersion.current), ABI \(PluginLibrary.supportedABIText))")
                }
                try visit(dep, chosen)
            }
            visiting.removeLast()
            plan.append(offer)
        }
        try visit(id, version)
        return (plan, problems)
    }

    /// Fetches, verifies and unpacks one offer into the plugin folder, in a new folder named after the id (`id-2`,
    /// ... when that name is taken by something else). Refused when a bundle already declares the id, in any folder:
    /// two bundles never claim one id. Records installing → installed (or install-failed with the reason; the hidden
    /// work folder `.installing-<id>-<pid>` is removed, so the install can be retried). A plugin still pinned to a
    /// key (uninstalled with `--keep-data`, or installed by another host of a shared state) must come signed by it,
    /// unless `signer` says otherwise; that refusal (`SignerMismatch`) comes before anything is fetched or recorded.
    /// - Returns: what the install did to the plugin's pinned signer (`SignerCheck.note`), for the audit trail.
    @discardableResult
    public func install(_ offer: Offer, allowUnsigned: Bool, signer change: SignerChange? = nil) throws -> String? {
        let id = offer.id
        if let present = Self.bundles(claiming: id, in: pluginsDirectory).first {
            throw StoreError(Self.alreadyInstalled(id, folder: present.folder))
        }
        let check = try checkSigner(offer, change: change, command: "install", allowUnsigned: allowUnsigned)
        try? state.setStatus(id, .installing, reason: nil)
        let work = pluginsDirectory + "/.installing-\(id)-\(getpid())"
        do {
            let manifest = try fetchVerified(offer, into: work, allowUnsigned: allowUnsigned, signer: check)
            // Checked again just before the move: another process may have installed it, or moved its pin, meanwhile.
            if let present = Self.bundles(claiming: id, in: pluginsDirectory).first {
                throw StoreError(Self.alreadyInstalled(id, folder: present.folder))
            }
            try confirmPin(offer, check)
            // The pin first: the bundle never lies in the plugin folder without it (see `recordSignatureBeforeMove`).
            let undo = try recordSignatureBeforeMove(offer, library: work + "/" + (manifest.library ?? ManifestLoader.fileName), check: check)
            let target = freeFolder(for: id)
            guard rename(work, target) == 0 else {
                let reason = String(cString: strerror(errno))
                undo()
                throw StoreError("\"\(id)\": cannot move into the plugin folder: \(reason)")
            }
            try? state.discovered(id: id, name: manifest.name, version: "\(manifest.version)", bundlePath: target)
            try? state.setStatus(id, .installed, reason: nil)
            return check.note
        } catch {
            try? FileManager.default.removeItem(atPath: work)
            try? state.setStatus(id, .installFailed, reason: "\(error)")
            throw error
        }
    }

    /// The bundles in `directory` known by `id`: by the id their manifest declares, or by folder name when the
    /// manifest is unusable (the name the scanner gives them). More than one means the id is claimed twice.
    public static func bundles(claiming id: String, in directory: String) -> [PluginBundle] {
        ((try? BundleScanner().scan(directory)) ?? []).filter { $0.id == id }
    }

    /// The one-line refusal for installing an id that is already there. Names the folder, never a host path.
    package static func alreadyInstalled(_ id: String, folder: String) -> String {
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

    /// What `fetchVerified` appends to the work folder's name for the archive it downloads there: start-up recovery
    /// reads the owner's pid from what comes before it.
    package static let downloadSuffix = ".download"

    /// Fetches `offer`, checks its checksum and its signature (by `signer.offered`, the key `checkSigner` decided on),
    /// and unpacks it into the new folder `work`.
    /// The archive is streamed to a hidden file beside `work` (stopped as soon as it passes
    /// `archiveLimits.maxArchiveBytes`, hashed on the way), then unpacked entry by entry from that file.
    /// - Returns: the unpacked bundle's manifest, checked against the index (id, version, and the capabilities when
    ///   the index records them).
    package func fetchVerified(_ offer: Offer, into work: String, allowUnsigned: Bool, signer: SignerCheck) throws -> Manifest {
        let id = offer.id
        let download = work + Self.downloadSuffix
        defer { try? FileManager.default.removeItem(atPath: download) }
        do {
            let archiveURL = Self.join(offer.indexURL, offer.entry.archive)
            try FileManager.default.createDirectory(atPath: pluginsDirectory, withIntermediateDirectories: true)
            let digest = try fetcher.download(archiveURL, to: download, maxBytes: archiveLimits.maxArchiveBytes)
            let hex = Hex.lowercase(digest)
            guard hex == offer.entry.sha256.lowercased() else {
                throw StoreError("\(archiveURL): sha256 \(hex) does not match the index (\(offer.entry.sha256))")
            }
            try verifySignature(offer, digest: Data(digest), allowUnsigned: allowUnsigned, key: signer.offered)
            try? FileManager.default.removeItem(atPath: work)
            do { try PackageArchive.unpack(file: download, name: archiveURL, into: work, limits: archiveLimits) } catch { throw StoreError("\(error)") }
            let (manifest, _) = try ManifestLoader().load(path: work + "/" + ManifestLoader.fileName)
            guard manifest.id == id, manifest.version == Semver(offer.entry.version) else {
                throw StoreError("\(archiveURL): archive holds \(manifest.id) \(manifest.version), the index says \(id) \(offer.entry.version)")
            }
            if let listed = offer.entry.capabilities, Set(listed) != Set(Self.capabilities(of: manifest)) {
                throw StoreError("\(archiveURL): archive asks for \(Self.capabilities(of: manifest).joined(separator: ", ")), the index says \(listed.sorted().joined(separator: ", ")); refused")
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

    /// The record to store for `offer` installed with its library at `library` and verified against `signer`; nil
    /// when the library cannot be read.
    package func signatureRecord(_ offer: Offer, library: String, signer: StateStore.PinnedSigner?) -> String? {
        guard let sum = FileDigest.sha256(atPath: library),
              let data = try? JSONEncoder().encode(SignatureRecord(library: sum, status: Self.signatureStatus(offer, signer: signer))) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// The signature status to show for a bundle whose library now has checksum `librarySum`: the stored one only
    /// while the library is the one installed; a replaced or foreign library shows none.
    package static func signature(stored: String?, librarySum: String?) -> String? {
        guard let stored, let librarySum,
              let record = try? JSONDecoder().decode(SignatureRecord.self, from: Data(stored.utf8)),
              record.library == librarySum else { return nil }
        return record.status
    }

    /// What a manifest asks for, as the index records it: capabilities and `route-prefix:` entries, sorted.
    static func capabilities(of manifest: Manifest) -> [String] {
        (manifest.capabilities.map(\.rawValue) + manifest.routePrefixes.map(Capability.routePrefix)).sorted()
    }

    /// The status shown for `offer` verified against `signer` (nil: not verified, allowed by the operator).
    static func signatureStatus(_ offer: Offer, signer: StateStore.PinnedSigner?) -> String {
        if let signer { return "signed by \(signer.name)" }
        guard let name = offer.entry.signer, offer.entry.signature != nil else { return "unsigned (allowed by the operator)" }
        return "signed by untrusted \(escaped(name)) (allowed by the operator)"
    }

    /// Checks `offer`'s signature of `digest` against `key`, the trusted key `checkSigner` found for its signer
    /// (nil: unsigned, or its signer is not trusted; accepted only with `allowUnsigned`).
    func verifySignature(_ offer: Offer, digest: Data, allowUnsigned: Bool, key trusted: StateStore.PinnedSigner?) throws {
        guard let signature = offer.entry.signature, let signer = offer.entry.signer else {
            if allowUnsigned { return }
            throw StoreError("\"\(offer.id)\" \(offer.entry.version) is not signed; refused (pass --allow-unsigned to install it anyway)")
        }
        guard let trusted, let key = Self.publicKey(trusted.publicKey) else {
            // A signer trusted for other plugin ids only: its signature is checked all the same, and a forged one
            // refused with any flag (`checkSigner` refuses it from the index already).
            if let held = (try? state.trustedKeySet())?.keys[signer], let key = Self.publicKey(held),
               !(Data(base64Encoded: signature).map { key.isValidSignature($0, for: digest) } ?? false) {
                throw StoreError("\"\(offer.id)\" \(offer.entry.version): bad signature by \"\(Self.escaped(signer))\"; refused")
            }
            if allowUnsigned { return }
            if let keys = try? state.trustedKeySet(), let only = keys.outOfScope(signer, for: offer.id) {
                throw StoreError("\"\(offer.id)\" is signed by \"\(Self.escaped(signer))\", which this host trusts to sign \(TrustScope.describe(only)) only; "
                                 + "refused (keel trust add \(Self.escaped(signer)) KEY --only ... sets what it may sign)")
            }
            throw StoreError("\"\(offer.id)\" is signed by \"\(Self.escaped(signer))\", which is not a trusted key (keel trust add \(Self.escaped(signer)) KEY)")
        }
        guard let sig = Data(base64Encoded: signature), key.isValidSignature(sig, for: digest) else {
            throw StoreError("\"\(offer.id)\" \(offer.entry.version): bad signature by \"\(Self.escaped(signer))\"; refused")
        }
    }

    /// Signs `archive` with a private key file (raw 32 bytes, base64): returns the base64 signature. When
    /// `trustedPublicKey` is given (the key this host trusts under the signer's name), a key file whose public key is
    /// another is refused: most often the public key itself, which has the same form as a private one.
    public static func sign(_ archive: Data, keyFile: String, trustedPublicKey: String? = nil, signer: String = "") throws -> String {
        let bytes: [UInt8]
        do { bytes = try SystemFile.read(keyFile, limit: 4096) } catch {
            throw StoreError("\(keyFile): \(SystemFile.describe(errno: error.code))")
        }
        guard let raw = Data(base64Encoded: String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
            throw StoreError("\(keyFile): not a Keel signing key (make one with keel trust keygen)")
        }
        if let trustedPublicKey, key.publicKey.rawRepresentation.base64EncodedString() != trustedPublicKey {
            throw StoreError(raw.base64EncodedString() == trustedPublicKey
                ? "\(keyFile): is the public key trusted as \"\(escaped(signer))\"; sign with the private key file keel trust keygen wrote"
                : "\(keyFile): does not match the key this host trusts as \"\(escaped(signer))\"; its archives would be refused")
        }
        // A private key is not for everyone to read (keygen writes it 0600; a group, a CI secret's, may read it). A key
        // file anyone may read is most often the public key keygen printed, saved with `> acme.pub`: the two look
        // alike (32 bytes).
        var st = stat()
        if stat(keyFile, &st) == 0, st.st_mode & 0o004 != 0 {
            throw StoreError("\(keyFile): others may read it (mode \(String(st.st_mode & 0o777, radix: 8))), so it is not used as a private "
                             + "signing key: if it is the public key keygen printed, sign with the file keygen wrote (mode 600); "
                             + "if it is the private key, chmod 600 \(keyFile)")
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
            // Every entry is checked (one plugin.yaml, no duplicates), so what is indexed is what installs.
            let manifestData = try PackageArchive.manifestData(file: path, manifestName: ManifestLoader.fileName)
            let (m, _) = try ManifestLoader().parse(manifestData, file: path + "!/plugin.yaml")
            let digest = try RepositoryFetcher.digest(ofFile: path, maxBytes: PackageArchive.Limits.standard.maxArchiveBytes)
            let signature = (try? String(contentsOfFile: path + ".sig", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            let signer = (try? String(contentsOfFile: path + ".signer", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            plugins[m.id, default: []].append(RepositoryIndex.Entry(
                version: "\(m.version)", name: m.name, description: m.description, archive: name,
                sha256: Hex.lowercase(digest), signature: signature, signer: signer,
                abi: "\(m.abi)", host: m.hostVersions?.text,
                dependencies: m.dependencies.isEmpty ? nil : Dictionary(uniqueKeysWithValues: m.dependencies.map { ($0.id, $0.versions.text) }),
                capabilities: capabilities(of: m)))
        }
        let index = RepositoryIndex(plugins: plugins)
        try index.yaml().write(toFile: folder + "/index.yaml", atomically: true, encoding: .utf8)
        return index
    }
}
