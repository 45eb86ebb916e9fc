// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Synchronization
import Keel
@testable import KeelExtensions
import KeelManifest
import KeelState
import Testing

/// A plugin installed from a signed package stays with the key that signed it: before, any key the operator trusted
/// could replace plugin X with its own code by publishing a higher version of X.
@Suite("signer pinning", .serialized, .scheduled)
struct SignerPinningTests {
    /// A signing key: its private key file, its public key (base64) and its fingerprint as Keel shows it.
    struct Key {
        let file: String
        let publicKey: String
        var fingerprint: String { ExtensionStore.fingerprint(publicKey) }

        init(_ label: String) throws {
            let (privateKey, publicKey) = ExtensionStore.makeKey()
            file = TestEnvironment.makeTemporaryDirectory("key-\(label)") + "/\(label).key"
            try privateKey.write(toFile: file, atomically: true, encoding: .utf8)
            // As keel trust keygen leaves it: pack signs only with a key file its owner alone may read.
            chmod(file, 0o600)
            self.publicKey = publicKey
        }
    }

    /// A repository offering plugin `id` in each of `versions` (version, the tag its /ping answers, the key and the
    /// signer name it is signed with, or nil: unsigned), packed and signed as `keel pack --key --signer` does.
    /// InPlaceLoadTests uses it too. The tests here use `pin`, an id no other test loads in this process (they count
    /// the copies of `up` mapped).
    static func repository(id: String = "pin", _ versions: [(String, String, (Key, String)?)]) throws -> String {
        let repo = TestEnvironment.makeTemporaryDirectory("pin-repo")
        for (version, tag, signer) in versions {
            let lib = try TestEnvironment.buildFixture("\(id)-\(tag)", ["PLUGIN_ID=\"\(id)\"", "PLUGIN_VERSION=\"\(version)\"", "TAG=\"\(tag)\""])
            let staging = TestEnvironment.makeTemporaryDirectory("pin-stage")
            let folder = try TestEnvironment.makeBundle(in: staging, folder: id,
                                                        manifest: TestEnvironment.manifest(id: id, version: version, library: "lib\(id).so"),
                                                        library: lib, libraryName: "lib\(id).so")
            let (archive, _) = try PackageArchive.packBundle(folder: folder, library: "lib\(id).so")
            let path = repo + "/\(id)-\(version).\(PackageArchive.fileExtension)"
            try archive.write(to: URL(fileURLWithPath: path))
            if let (key, name) = signer {
                try ExtensionStore.sign(archive, keyFile: key.file).write(toFile: path + ".sig", atomically: true, encoding: .utf8)
                try name.write(toFile: path + ".signer", atomically: true, encoding: .utf8)
            }
        }
        _ = try ExtensionStore.writeIndex(folder: repo)
        return repo
    }

    /// A started kernel on `f` with `repo` added and each of `keys` trusted under its name.
    static func kernel(_ f: KernelFixture, repo: String, trusting keys: [String: Key]) async throws -> Kernel {
        let kernel = try f.kernel()
        await kernel.start()
        _ = try kernel.state.addRepository(StateStore.Repository(name: "main", location: repo, priority: 0))
        for (name, key) in keys { _ = try kernel.state.trustKey(name: name, publicKey: key.publicKey) }
        return kernel
    }

    /// Runs `command`, expecting a refusal; returns it.
    static func refused(_ kernel: Kernel, _ command: KernelCommand) async -> KernelError? {
        do { try await kernel.execute(command, actor: "test"); Issue.record("\(command) was not refused"); return nil } catch {
            return error
        }
    }

    @Test("a key's scope narrowed while its package downloads: the install is refused before the move, nothing installed or pinned")
    func scopeNarrowedDuringDownload() async throws {
        let vendor = try Key("vendor")
        let repo = try Self.repository([("1.0.0", "one", (vendor, "vendor"))])
        let slow = try RepositorySafetyTests.PythonServer(serving: repo, archiveDelay: 2)
        defer { slow.stop() }
        let f = KernelFixture()
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.execute(.addRepository(name: "slow", location: "http://127.0.0.1:\(slow.port)", priority: 0), actor: "test")
        try await kernel.execute(.trustKey(name: "vendor", publicKey: vendor.publicKey), actor: "test")
        let install = Task { () -> String in
            do { try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test"); return "installed" } catch {
                return "\(error)"
            }
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while (try? kernel.state.plugin("pin"))??.status != .installing, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        try await kernel.execute(.trustKey(name: "vendor", publicKey: vendor.publicKey, only: ["vend-*"]), actor: "test")
        let outcome = await install.value
        #expect(outcome.contains(#"key "vendor" may no longer sign "pin": its trust changed while pin 1.0.0 was fetched; refused"#), "\(outcome)")
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/pin"), "nothing was installed")
        #expect(try kernel.state.pinnedSigner("pin") == nil)
        await kernel.shutdown()
    }

    @Test("a dependency installs at a version in the dependent's range, one signed by a trusted key before a newer untrusted one")
    func dependencyInRange() async throws {
        let acme = try Key("acme"), beta = try Key("beta")
        // pdep 2.0.0 is the highest (out of ^1.0), 1.1.0 the highest in range (signed by beta, not trusted here).
        let repo = try Self.repository(id: "pdep", [("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (beta, "beta")),
                                                    ("2.0.0", "three", (acme, "acme"))])
        let lib = try TestEnvironment.buildFixture("papp", ["PLUGIN_ID=\"papp\"", "PLUGIN_VERSION=\"1.0.0\""])
        let staging = TestEnvironment.makeTemporaryDirectory("papp-stage")
        let folder = try TestEnvironment.makeBundle(in: staging, folder: "papp", manifest: TestEnvironment.manifest(
            id: "papp", library: "libpapp.so", extra: "dependencies:\n  pdep: \"^1.0\"\n"), library: lib, libraryName: "libpapp.so")
        let (archive, _) = try PackageArchive.packBundle(folder: folder, library: "libpapp.so")
        try archive.write(to: URL(fileURLWithPath: repo + "/papp-1.0.0.\(PackageArchive.fileExtension)"))
        _ = try ExtensionStore.writeIndex(folder: repo)
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme])
        let result = try await kernel.execute(.install(id: "papp", version: nil, allowUnsigned: true, signer: nil), actor: "test")
        #expect(result.installed == ["pdep 1.0.0", "papp 1.0.0"], "\(result.installed)")
        #expect(try await kernel.plugin("pdep").version == "1.0.0")
        await kernel.shutdown()
    }

    @Test("an upgrade signed by another trusted key is refused (nothing changes); --signer moves the plugin, audited")
    func anotherKeyIsRefused() async throws {
        let acme = try Key("acme"), beta = try Key("beta")
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (beta, "beta")),
                                        ("1.2.0", "three", nil), ("1.3.0", "four", (acme, "acme"))])
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme, "beta": beta])
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        try await kernel.execute(.enable(id: "pin", tenant: nil), actor: "test")
        try await kernel.execute(.grants(id: "pin", grant: ["authorize"], revoke: []), actor: "test")
        #expect(get(kernel, "/ext/pin/ping")?.1.contains("tag=one") == true)
        var info = try await kernel.plugin("pin")
        #expect(info.signer == "acme (key \(acme.fingerprint))" && info.signature == "signed by acme", "\(String(describing: info.signer))")
        let stored = try #require(try kernel.state.pinnedSigner("pin"))
        #expect(stored.name == "acme" && stored.publicKey == acme.publicKey)

        // 1.1.0 is signed by beta, a key the operator trusts, but not the one pin is pinned to.
        let other = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.1.0", allowUnsigned: false)))
        #expect(other.code == .signerMismatch)
        #expect(other.reason == "\"pin\" is pinned to signer acme (key \(acme.fingerprint)); pin 1.1.0 is signed by beta (key \(beta.fingerprint)); refused (keel upgrade pin --signer beta moves it to that key)",
                "\(other.reason)")
        // An unsigned package, even with --allow-unsigned, and the recommended version: the same.
        let unsigned = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.2.0", allowUnsigned: true)))
        #expect(unsigned.code == .signerMismatch && unsigned.reason.contains("pin 1.2.0 is not signed; refused (keel upgrade pin --no-signer --allow-unsigned"),
                "\(unsigned.reason)")
        // --signer must name the key that signed the package.
        let named = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.1.0", allowUnsigned: false, signer: .key("acme"))))
        #expect(named.code == .signerMismatch && named.reason.contains("not by acme (key \(acme.fingerprint)) as --signer asks"), "\(named.reason)")
        let unknown = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.1.0", allowUnsigned: false, signer: .key("nobody"))))
        #expect(unknown.reason.contains("--signer nobody: no trusted key has that name"), "\(unknown.reason)")

        // Nothing changed: the running version, its status, grants, bundle, signature and pin; no work folder left.
        #expect(get(kernel, "/ext/pin/ping")?.1.contains("tag=one") == true)
        info = try await kernel.plugin("pin")
        #expect(info.version == "1.0.0" && info.status == .enabled && info.reason == nil && info.grants.contains("authorize"))
        #expect(info.signature == "signed by acme" && info.signer == "acme (key \(acme.fingerprint))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.plugins) == ["pin"])
        // Each refusal is in the audit trail with its stable code and the two keys.
        let rows = try kernel.auditTrail().filter { $0.command == "upgrade" }
        #expect(rows.count == 4 && rows.filter { $0.outcome == "signer-mismatch" }.count == 3, "\(rows)")
        #expect(rows.first?.detail?.contains("pinned to signer acme (key \(acme.fingerprint))") == true)

        // The operator moves pin to beta deliberately: allowed, recorded, and beta is the pin from now on.
        try await kernel.execute(.upgrade(id: "pin", version: "1.1.0", allowUnsigned: false, signer: .key("beta")), actor: "test")
        #expect(get(kernel, "/ext/pin/ping")?.1.contains("tag=two") == true)
        info = try await kernel.plugin("pin")
        #expect(info.version == "1.1.0" && info.signer == "beta (key \(beta.fingerprint))" && info.signature == "signed by beta")
        let moved = try #require(try kernel.auditTrail().last)
        #expect(moved.command == "upgrade" && moved.outcome == "ok"
                && moved.detail == "signer of \"pin\" moved by the operator from acme (key \(acme.fingerprint)) to beta (key \(beta.fingerprint))",
                "\(moved)")
        #expect(try await kernel.history("pin").contains { $0.outcome == "activated" })
        // acme, the old signer, can no longer replace it: 1.3.0 (the recommended version) is refused.
        let back = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: nil, allowUnsigned: false)))
        #expect(back.code == .signerMismatch && back.reason.contains("pinned to signer beta (key \(beta.fingerprint)); pin 1.3.0 is signed by acme"),
                "\(back.reason)")
        await kernel.shutdown()
    }

    @Test("a key trusted for some plugin ids only (--only) signs those; a package it signs for another id is taken as signed by an untrusted key: refused, or installed unpinned with --allow-unsigned")
    func scopedKey() async throws {
        let vendor = try Key("vendor")
        let repo = try Self.repository([("1.0.0", "one", (vendor, "vendor")), ("1.1.0", "two", (vendor, "vendor"))])
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: [:])
        let scoped = try await kernel.execute(.trustKey(name: "vendor", publicKey: vendor.publicKey, only: ["vend-*", "vendor.tools"]), actor: "test")
        #expect(scoped.note == "may sign vend-*, vendor.tools only")
        #expect(try kernel.state.trustedKeySet().scopes == ["vendor": ["vend-*", "vendor.tools"]])

        // "pin" is outside the key's scope: as if the key were not trusted, with the reason said.
        let refused = try #require(await Self.refused(kernel, .install(id: "pin", version: "1.0.0", allowUnsigned: false)))
        // Refused before anything is fetched or recorded, as a signer refusal (audited with its reason).
        #expect(refused.code == .signerMismatch && refused.description.contains(
            #"pin 1.0.0 is signed by "vendor", which this host trusts to sign vend-*, vendor.tools only; refused (keel trust add vendor KEY --only ... sets what it may sign; keel install pin --allow-unsigned takes it unpinned)"#),
                "\(refused.description)")
        #expect(try kernel.state.plugin("pin") == nil, "a refused install records nothing")
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/pin"), "nothing was installed")
        let moved = try #require(await Self.refused(kernel, .install(id: "pin", version: "1.0.0", allowUnsigned: false, signer: .key("vendor"))))
        #expect(moved.code == .signerMismatch && moved.description.contains(#"--signer vendor: that key may sign vend-*, vendor.tools only, not "pin"; refused"#),
                "\(moved.description)")
        // A forged signature under the scoped key's name is refused as forged (with any flag), never taken for an
        // out-of-scope (untrusted) one; the catalog says so too.
        let forger = try Key("forger")
        let forgedRepo = try Self.repository(id: "forged", [("1.0.0", "one", (forger, "vendor"))])
        _ = try kernel.state.addRepository(StateStore.Repository(name: "forged", location: forgedRepo, priority: 0))
        let forged = try #require(await Self.refused(kernel, .install(id: "forged", version: "1.0.0", allowUnsigned: true)))
        #expect(forged.description.contains(#"bad signature by "vendor""#), "\(forged.description)")
        let store = ExtensionStore(state: kernel.state, pluginsDirectory: f.plugins)
        let offers = try store.indexes().offers
        let keySet = try kernel.state.trustedKeySet()
        #expect(ExtensionStore.catalogMark(try #require(offers.first { $0.id == "forged" }), keys: keySet) == " bad signature")
        #expect(ExtensionStore.catalogMark(try #require(offers.first { $0.id == "pin" }), keys: keySet)
                    == #" signed by "vendor" (trusted here to sign vend-*, vendor.tools only)"#)
        _ = try kernel.state.removeRepository("forged")
        // The operator's --allow-unsigned takes it as from an untrusted signer: installed, not pinned to the key.
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: true), actor: "test")
        var info = try await kernel.plugin("pin")
        #expect(info.signature == "signed by untrusted vendor (allowed by the operator)" && info.signer == nil, "\(String(describing: info.signature))")
        #expect(try kernel.state.pinnedSigner("pin") == nil)

        // The operator widens the scope (the same key again with --only): its packages for "pin" are signed now.
        #expect(try await kernel.execute(.trustKey(name: "vendor", publicKey: vendor.publicKey, only: ["pin"]), actor: "test").note == "may sign pin only")
        #expect(try await kernel.execute(.trustKey(name: "vendor", publicKey: vendor.publicKey), actor: "test").note == "already trusted")
        #expect(try kernel.state.trustedKeySet().scopes == ["vendor": ["pin"]], "a trust add without --only keeps the scope")
        try await kernel.execute(.upgrade(id: "pin", version: "1.1.0", allowUnsigned: false), actor: "test")
        info = try await kernel.plugin("pin")
        #expect(info.signature == "signed by vendor" && info.signer == "vendor (key \(vendor.fingerprint))", "\(String(describing: info.signer))")

        // Patterns are ids or prefixes ending in *; anything else is refused and changes nothing.
        for bad in ["*", "Vend-*", "a*b", "", "x y", "keel"] {
            let no = try #require(await Self.refused(kernel, .trustKey(name: "vendor", publicKey: vendor.publicKey, only: [bad])))
            #expect(no.description.contains("\"\(bad)\" is not a plugin id or a prefix of ids ending in *"), "\(no.description)")
        }
        let none = try #require(await Self.refused(kernel, .trustKey(name: "vendor", publicKey: vendor.publicKey, only: [])))
        #expect(none.description.contains("no plugin id given"), "\(none.description)")

        // Narrowed so that it leaves out the plugin pinned to it: the upgrade refusal says to widen it, not that the
        // key is gone.
        _ = try await kernel.execute(.trustKey(name: "vendor", publicKey: vendor.publicKey, only: ["vend-*"]), actor: "test")
        let narrowed = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.0.0", allowUnsigned: false)))
        #expect(narrowed.code == .signerMismatch && narrowed.description.contains("which this host trusts to sign vend-* only; refused (keel trust add vendor KEY --only ... sets what it may sign)"),
                "\(narrowed.description)")
        _ = try await kernel.execute(.trustKey(name: "vendor", publicKey: vendor.publicKey, only: ["pin"]), actor: "test")
        #expect(try kernel.state.trustedKeySet().scopes == ["vendor": ["pin"]])
        let audit = try kernel.auditTrail().filter { $0.command == "trust-key" }.map(\.detail)
        #expect(audit.contains { $0?.contains("may sign vend-*, vendor.tools only") == true }, "\(audit)")
        await kernel.shutdown()

        // The CLI: --only repeated or with commas; the list says what each key may sign.
        let other = try Key("other")
        let keel = TestEnvironment.binPath + "/keel", common = ["--plugins", f.plugins, "--state", f.state]
        let added = try TestEnvironment.run(keel, ["trust", "add", "other", other.publicKey, "--only", "acme-*,billing", "--only", "ops"] + common)
        #expect(added.status == 0 && added.stdout == "trusting other (may sign acme-*, billing, ops only)\n", "\(added.stdout)\(added.stderr)")
        let list = try TestEnvironment.run(keel, ["trust", "list"] + common).stdout
        #expect(list.contains("other  \(other.publicKey)  (key \(other.fingerprint))  may sign acme-*, billing, ops only\n"), "\(list)")
        // A key has one name: under a second one (unscoped, or with another scope) a repository could pick the wider.
        let twice = try TestEnvironment.run(keel, ["trust", "add", "vendor2", vendor.publicKey] + common)
        #expect(twice.status == 1 && twice.stderr.contains(#"this key is already trusted as "vendor""#), "\(twice.stderr)")
        guard case let .refused(why) = try StateStore(path: f.state).trustKey(name: "vendor3", publicKey: vendor.publicKey, only: ["x"]) else {
            Issue.record("the store took a second name for a key"); return
        }
        #expect(why == #"this key is already trusted as "vendor"; a key has one name"#)
        // A host of an earlier keel reads a scoped key as no key at all (fails closed), never as unscoped.
        let raw = try StateStore(path: f.state)
        let stored = try raw.withDatabase { db throws(StateError) in try db.query("SELECT public_key FROM trusted_keys WHERE name = 'other'") }
        #expect(stored.first?["public_key"]?.text == "scoped:" + other.publicKey)
        #expect(try raw.trustedKeys()["other"] == other.publicKey)
        #expect(list.contains("vendor  \(vendor.publicKey)  (key \(vendor.fingerprint))  may sign pin only\n"), "\(list)")
        let badCLI = try TestEnvironment.run(keel, ["trust", "add", "x", vendor.publicKey, "--only", "../etc"] + common)
        #expect(badCLI.status == 64 && badCLI.stderr.contains(#"--only: "../etc" is not a plugin id or a prefix of ids ending in * (acme-*)"#), "\(badCLI.stderr)")
        let control = try TestEnvironment.run(keel, ["trust", "add", "x", vendor.publicKey, "--only", "x\u{1b}[31m"] + common)
        #expect(control.status == 64 && control.stderr.contains(#""x\u{1b}[31m" is not a plugin id"#), "\(control.stderr)")
        let empty = try TestEnvironment.run(keel, ["trust", "add", "x", vendor.publicKey, "--only", ""] + common)
        #expect(empty.status == 64 && empty.stderr.contains("no plugin id given"), "\(empty.stderr)")
    }

    @Test("keel trust remove: the key no longer signs installs or upgrades; plugins pinned to it are named, keep their pin and serve; an unknown name is refused")
    func untrustKey() async throws {
        let acme = try Key("acme"), beta = try Key("beta")
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (acme, "acme"))])
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme, "beta": beta])
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        try await kernel.execute(.enable(id: "pin", tenant: nil), actor: "test")
        try await kernel.execute(.grants(id: "pin", grant: ["authorize"], revoke: []), actor: "test")

        let removed = try await kernel.execute(.untrustKey(name: "acme"), actor: "test")
        #expect(removed.note == "key \(acme.fingerprint); pinned to it: pin, which keep serving; an upgrade of one is refused until a "
                + "package signed by another trusted key moves it (keel upgrade ID --signer NAME)", "\(String(describing: removed.note))")
        #expect(try kernel.state.trustedKeys().keys.sorted() == ["beta"])
        #expect(try kernel.state.pinnedSigner("pin")?.publicKey == acme.publicKey, "the pin stays")
        #expect(get(kernel, "/ext/pin/ping")?.1.contains("tag=one") == true, "the installed plugin keeps serving")
        let upgrade = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.1.0", allowUnsigned: false)))
        #expect(upgrade.code == .signerMismatch)
        #expect(upgrade.reason.hasSuffix("pin 1.1.0 is signed by \"acme\", which is not a trusted key; refused (its key is no longer "
                                         + "trusted; a package signed by another trusted key moves it: keel upgrade pin --signer NAME)"),
                "\(upgrade.reason)")
        #expect(try await kernel.execute(.untrustKey(name: "beta"), actor: "test").note == "key \(beta.fingerprint)", "no plugin was pinned to beta")
        let unknown = try #require(await Self.refused(kernel, .untrustKey(name: "acme")))
        #expect(unknown.reason == "unknown trusted key \"acme\" (keel trust list names them)")
        let rows = try kernel.auditTrail().filter { $0.command == "untrust-key" }
        #expect(rows.map(\.outcome) == ["ok", "ok", unknown.code.description])
        #expect(rows.first?.detail == removed.note, "the audit row names the key and the plugins pinned to it")
        await kernel.shutdown()
    }

    @Test("the pin is the key, not its name: a name given a new key cannot sign for the plugin pinned to the old one")
    func keyNotName() async throws {
        let acme = try Key("acme"), impostor = try Key("impostor")
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (impostor, "acme"))])
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme])
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        // The operator trusts another key under the name acme (a rotation, or a mistake).
        _ = try kernel.state.untrustKey("acme")
        _ = try kernel.state.trustKey(name: "acme", publicKey: impostor.publicKey)
        let refusal = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.1.0", allowUnsigned: false)))
        #expect(refusal.code == .signerMismatch
                && refusal.reason.contains("pinned to signer acme (key \(acme.fingerprint)); pin 1.1.0 is signed by acme (key \(impostor.fingerprint))"),
                "\(refusal.reason)")
        #expect(try await kernel.plugin("pin").version == "1.0.0")
        // Moving it to the key now trusted under that name is the operator's explicit step.
        try await kernel.execute(.upgrade(id: "pin", version: "1.1.0", allowUnsigned: false, signer: .key("acme")), actor: "test")
        #expect(try kernel.state.pinnedSigner("pin")?.publicKey == impostor.publicKey)
        await kernel.shutdown()
    }

    @Test("a name keeps its key (trust add refuses another); a signature its signer's trusted key did not make is refused before the download, with any flag")
    func forgedSignature() async throws {
        let acme = try Key("acme"), beta = try Key("beta")
        // 1.1.0 is signed by beta's key but names acme as its signer.
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (beta, "acme"))])
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme])
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        try await kernel.execute(.enable(id: "pin", tenant: nil), actor: "test")

        let replaced = try #require(await Self.refused(kernel, .trustKey(name: "acme", publicKey: beta.publicKey)))
        #expect(replaced.code == .conflict && replaced.reason == "\"acme\" is already trusted with another key (key \(acme.fingerprint)); "
                + "remove it first (keel trust remove acme) or trust this one under another name", "\(replaced.reason)")
        #expect(try kernel.state.trustedKeys()["acme"] == acme.publicKey)
        #expect(try await kernel.execute(.trustKey(name: "acme", publicKey: acme.publicKey), actor: "test").note == "already trusted")
        // The store itself keeps a name's key (another host on a shared store, racing this one, is refused there).
        guard case .refused = try kernel.state.trustKey(name: "acme", publicKey: beta.publicKey) else {
            Issue.record("the store replaced a trusted name's key"); return
        }
        #expect(try kernel.state.trustedKeys()["acme"] == acme.publicKey)

        // The catalog: a signature that names no signer is no signature to an install, nor to the catalog.
        var entry = RepositoryIndex.Entry(version: "9.0.0", name: "x", description: nil, archive: "x.tar.gz", sha256: String(repeating: "0", count: 64),
                                          signature: "c2ln", signer: nil, abi: "1.0", host: nil, dependencies: nil)
        let offer = { (entry: RepositoryIndex.Entry) in
            ExtensionStore.Offer(id: "x", entry: entry, repository: StateStore.Repository(name: "r", location: "/r", priority: 0), indexURL: "/r/index.yaml")
        }
        #expect(!ExtensionStore.showsSigned(offer(entry), trusted: ["acme": acme.publicKey]))
        #expect(ExtensionStore.catalogMark(offer(entry), trusted: ["acme": acme.publicKey]) == " unsigned")
        entry.signer = "stranger"
        #expect(ExtensionStore.showsSigned(offer(entry), trusted: ["acme": acme.publicKey]), "signed by a key not trusted here")
        #expect(ExtensionStore.catalogMark(offer(entry), trusted: ["acme": acme.publicKey]) == " signed by \"stranger\" (not trusted here)")
        #expect(!ExtensionStore.signedByTrustedKey(offer(entry), trusted: ["acme": acme.publicKey]))
        entry.signer = "acme"
        #expect(!ExtensionStore.showsSigned(offer(entry), trusted: ["acme": acme.publicKey]), "not made by acme's key")
        #expect(ExtensionStore.catalogMark(offer(entry), trusted: ["acme": acme.publicKey]) == " bad signature")
        entry.signature = nil
        #expect(ExtensionStore.catalogMark(offer(entry), trusted: ["acme": acme.publicKey]) == " unsigned")
        // A hostile index's text cannot redraw the line the mark is on: control and non-ASCII characters show escaped.
        #expect(ExtensionStore.displayName("plain text, as is") == "plain text, as is")
        let hostile = ExtensionStore.displayName("ok\r\u{1B}[2K\u{202E}fake trusted")
        #expect(hostile.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7f }, "\(hostile)")
        #expect(hostile.contains("\\r") && hostile.hasSuffix("fake trusted"))
        entry.signature = "c2ln"
        entry.signer = "acme\"\n"
        #expect(ExtensionStore.catalogMark(offer(entry), trusted: [:]) == #" signed by "acme\"\n" (not trusted here)"#)

        for (allow, signer) in [(false, nil), (true, nil), (false, SignerChange.key("acme")), (true, SignerChange.forget)] {
            let refusal = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.1.0", allowUnsigned: allow, signer: signer)))
            #expect(refusal.code == .signerMismatch && refusal.reason == "\"pin\" 1.1.0: bad signature by \"acme\": not made by the key trusted "
                    + "under that name (key \(acme.fingerprint)); refused, with --allow-unsigned too", "\(refusal.reason)")
        }
        // Nothing changed: the running version and its status.
        let info = try await kernel.plugin("pin")
        #expect(info.version == "1.0.0" && info.status == .enabled && info.reason == nil, "\(info)")
        #expect(get(kernel, "/ext/pin/ping")?.1.contains("tag=one") == true)
        await kernel.shutdown()
    }

    @Test("unsigned then signed pins the signer; signed then unsigned is refused unless the operator forgets the pin")
    func unsignedAndSigned() async throws {
        let acme = try Key("acme")
        let repo = try Self.repository([("1.0.0", "one", nil), ("1.1.0", "two", (acme, "acme")), ("1.2.0", "three", nil)])
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme])
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: true), actor: "test")
        #expect(try await kernel.plugin("pin").signer == nil)
        #expect(try kernel.state.pinnedSigner("pin") == nil)

        // A development build replaced by a signed package: it has no signer to continue, so the first key pins.
        let first = try await kernel.execute(.upgrade(id: "pin", version: "1.1.0", allowUnsigned: false), actor: "test")
        #expect(first.note == "\"pin\" pinned to signer acme (key \(acme.fingerprint))")
        #expect(try await kernel.plugin("pin").signer == "acme (key \(acme.fingerprint))")

        // The signed plugin is not silently replaced by an unsigned package, --allow-unsigned or not.
        for allow in [false, true] {
            let refusal = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.2.0", allowUnsigned: allow)))
            #expect(refusal.code == .signerMismatch && refusal.reason.contains("pin 1.2.0 is not signed"), "\(refusal.reason)")
        }
        #expect(try await kernel.plugin("pin").version == "1.1.0")
        // Forgetting the pin alone does not let an unsigned package in: that still takes --allow-unsigned.
        let stillUnsigned = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.2.0", allowUnsigned: false, signer: .forget)))
        #expect(stillUnsigned.code == .bundle || stillUnsigned.code == .loadFailed)
        #expect(stillUnsigned.reason.contains("is not signed; refused (pass --allow-unsigned"), "\(stillUnsigned.reason)")
        #expect(try kernel.state.pinnedSigner("pin") != nil)
        let left = try await kernel.execute(.upgrade(id: "pin", version: "1.2.0", allowUnsigned: true, signer: .forget), actor: "test")
        #expect(left.note == "signer acme (key \(acme.fingerprint)) of \"pin\" unpinned by the operator")
        let info = try await kernel.plugin("pin")
        #expect(info.version == "1.2.0" && info.signer == nil && info.signature == "unsigned (allowed by the operator)")
        #expect(try kernel.auditTrail().last?.detail == left.note)
        await kernel.shutdown()
    }

    @Test("uninstall --keep-data keeps the pin for a reinstall; a full uninstall forgets it")
    func reinstall() async throws {
        let acme = try Key("acme"), beta = try Key("beta")
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (beta, "beta"))])
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme, "beta": beta])
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        try await kernel.execute(.grants(id: "pin", grant: ["authorize"], revoke: []), actor: "test")
        try await kernel.execute(.uninstall(id: "pin", cascade: false, keepData: true), actor: "test")

        // Its kept grants were given to acme's code: beta's package of the same id does not inherit them.
        let refusal = try #require(await Self.refused(kernel, .install(id: "pin", version: "1.1.0", allowUnsigned: true)))
        #expect(refusal.code == .signerMismatch && refusal.reason.contains("keel install pin --signer beta"), "\(refusal.reason)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.plugins).isEmpty)
        #expect(try kernel.state.plugin("pin") == nil, "a refused signer leaves no install-failed record either")
        #expect(try kernel.state.grants("pin") == ["authorize"])
        // acme's own package reinstalls.
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        #expect(try await kernel.plugin("pin").signer == "acme (key \(acme.fingerprint))")

        // A full uninstall forgets the pin with the rest: a later install is a first install.
        try await kernel.execute(.uninstall(id: "pin", cascade: false, keepData: false), actor: "test")
        #expect(try kernel.state.pinnedSigner("pin") == nil)
        try await kernel.execute(.install(id: "pin", version: "1.1.0", allowUnsigned: false), actor: "test")
        #expect(try await kernel.plugin("pin").signer == "beta (key \(beta.fingerprint))")
        await kernel.shutdown()
    }
    /// A package refused for its signer brings nothing in: before, its dependencies (installed first) were in the
    /// plugin folder and recorded by the time the plugin itself was refused.
    @Test("a reinstall refused for its signer installs none of its dependencies either")
    func refusedBringsNoDependency() async throws {
        let acme = try Key("acme"), beta = try Key("beta")
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (beta, "beta"))])
        let deps = try Self.repository(id: "pindep", [("1.0.0", "dep", (beta, "beta"))])
        // beta's pin 1.1.0 needs pindep, which beta publishes too.
        let indexPath = repo + "/index.yaml"
        var index = try RepositoryIndex.parse(Data(contentsOf: URL(fileURLWithPath: indexPath)), file: indexPath)
        index.plugins["pin"] = index.plugins["pin"]?.map { entry in
            var entry = entry
            if entry.version == "1.1.0" { entry.dependencies = ["pindep": ">=1.0.0"] }
            return entry
        }
        try index.yaml().write(toFile: indexPath, atomically: true, encoding: .utf8)
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme, "beta": beta])
        _ = try kernel.state.addRepository(StateStore.Repository(name: "deps", location: deps, priority: 0))
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        try await kernel.execute(.uninstall(id: "pin", cascade: false, keepData: true), actor: "test")

        let refusal = try #require(await Self.refused(kernel, .install(id: "pin", version: "1.1.0", allowUnsigned: false)))
        #expect(refusal.code == .signerMismatch, "\(refusal.reason)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.plugins).isEmpty)
        #expect(try kernel.state.plugin("pindep") == nil && kernel.state.pinnedSigner("pindep") == nil)
        // With the operator's move, both come in.
        try await kernel.execute(.install(id: "pin", version: "1.1.0", allowUnsigned: false, signer: .key("beta")), actor: "test")
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.plugins).sorted() == ["pin", "pindep"])
        await kernel.shutdown()
    }

    /// The signer name is the repository's text: a refusal quoting it stays one line (before, a newline in it wrote a
    /// line of the hostile repository's choosing into the log and the audit row's detail).
    @Test("a repository's signer name with a newline stays one line in the refusal, the audit row and an install failure")
    func hostileSignerName() async throws {
        let acme = try Key("acme"), beta = try Key("beta")
        let forged = "beta\nkeel: info: [pin] upgraded 1.0.0 → 1.1.0"
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (beta, forged))])
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: repo, trusting: ["acme": acme, "beta": beta])
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        let refusal = try #require(await Self.refused(kernel, .upgrade(id: "pin", version: "1.1.0", allowUnsigned: false)))
        #expect(refusal.code == .signerMismatch && !refusal.reason.contains(where: \.isNewline), "\(refusal.reason)")
        #expect(refusal.reason.contains(#"is signed by "beta\nkeel: info: [pin] upgraded 1.0.0 \u{2192} 1.1.0", which is not a trusted key"#), "\(refusal.reason)")
        let row = try #require(try kernel.auditTrail().last)
        #expect(row.outcome == "signer-mismatch" && row.detail?.contains(where: \.isNewline) == false, "\(row)")
        // Unpinned, the signature check says the same in one line.
        try await kernel.execute(.uninstall(id: "pin", cascade: false, keepData: false), actor: "test")
        let failed = try #require(await Self.refused(kernel, .install(id: "pin", version: "1.1.0", allowUnsigned: false)))
        #expect(!failed.reason.contains(where: \.isNewline) && failed.reason.contains(#"beta\nkeel"#), "\(failed.reason)")
        await kernel.shutdown()
    }

    /// Two hosts of one state: host B's install checked the pin (acme) before its slow download; meanwhile the
    /// operator moved the plugin to beta on host A (away from a compromised key, say). Before, B then recorded acme
    /// over the move and ran acme's package; now the pin is checked again just before the bundle goes into place.
    @Test("a pin moved by another host while an install or upgrade downloads is not undone: the install is refused, the upgrade fails")
    func pinMovedDuringDownload() async throws {
        let acme = try Key("acme"), beta = try Key("beta")
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme"))])
        // The archive comes 8 s late (time enough for this task to run even when the suite keeps every pool thread busy).
        let slow = try RepositorySafetyTests.PythonServer(serving: repo, archiveDelay: 8)
        defer { slow.stop() }
        let dir = TestEnvironment.makeTemporaryDirectory("pin-hosts")
        let state = try StateStore(path: dir + "/state.db")
        _ = try state.addRepository(StateStore.Repository(name: "slow", location: "http://127.0.0.1:\(slow.port)", priority: 0))
        _ = try state.trustKey(name: "acme", publicKey: acme.publicKey)
        _ = try state.trustKey(name: "beta", publicKey: beta.publicKey)
        try state.setPinnedSigner("pin", StateStore.PinnedSigner(name: "acme", publicKey: acme.publicKey))
        try FileManager.default.createDirectory(atPath: dir + "/b", withIntermediateDirectories: true)
        let hostB = ExtensionStore(state: state, pluginsDirectory: dir + "/b")
        let offer = try hostB.resolve("pin", version: "1.0.0", offers: hostB.indexes().offers)
        // The install blocks for the download: on a thread of its own, not on Swift's pool (two threads here).
        let installed = Mutex<String?>(nil)
        Thread {
            let result: String
            do { try hostB.install(offer, allowUnsigned: false); result = "installed" } catch { result = "\(error)" }
            installed.withLock { $0 = result }
        }.start()
        // Once B is downloading (its check passed), host A moves the plugin to beta.
        let deadline = ContinuousClock.now + .seconds(30)
        while slow.requests < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        try state.setPinnedSigner("pin", StateStore.PinnedSigner(name: "beta", publicKey: beta.publicKey))
        #expect(await waitFor(60) { installed.withLock { $0 } != nil })
        let outcome = installed.withLock { $0 } ?? "no outcome"
        #expect(outcome.contains("the pinned signer of \"pin\" changed while pin 1.0.0 was fetched"), "\(outcome)")
        #expect(try state.pinnedSigner("pin")?.publicKey == beta.publicKey, "the move stands")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/b").isEmpty)

        // The same for an upgrade: it fails, the old version stays, and so does the pin another host set.
        let slowToo = try RepositorySafetyTests.PythonServer(
            serving: try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (acme, "acme"))]), archiveDelay: 5)
        defer { slowToo.stop() }
        let f = KernelFixture()
        let kernel = try await Self.kernel(f, repo: "http://127.0.0.1:\(slowToo.port)", trusting: ["acme": acme, "beta": beta])
        try await kernel.execute(.install(id: "pin", version: "1.0.0", allowUnsigned: false), actor: "test")
        let upgrade = Task { () -> String in
            do { try await kernel.execute(.upgrade(id: "pin", version: "1.1.0", allowUnsigned: false), actor: "test"); return "upgraded" } catch {
                return "\(error)"
            }
        }
        while try await kernel.plugin("pin").status != .upgrading, ContinuousClock.now < deadline + .seconds(30) {
            try await Task.sleep(for: .milliseconds(10))
        }
        try kernel.state.setPinnedSigner("pin", StateStore.PinnedSigner(name: "beta", publicKey: beta.publicKey))
        #expect(await upgrade.value.contains("the pinned signer of \"pin\" changed while pin 1.1.0 was fetched"))
        #expect(try await kernel.plugin("pin").version == "1.0.0" && kernel.state.pinnedSigner("pin")?.publicKey == beta.publicKey)
        await kernel.shutdown()
    }

    /// The same through the front ends a running server has: `keel upgrade` queued to it (the command's JSON carries
    /// `--signer`), the admin API's `"signer"` field and its stable code, `plugins list`, `trust list` and the audit.
    @Test("under a running server: the CLI and the admin API refuse with signer-mismatch, --signer and \"signer\" move it")
    func throughServer() async throws {
        let keel = TestEnvironment.binPath + "/keel"
        let acme = try Key("acme"), beta = try Key("beta")
        let repo = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (beta, "beta")), ("1.2.0", "three", (acme, "acme"))])
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        func cli(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            try TestEnvironment.run(keel, arguments + common)
        }
        for arguments in [["repo", "add", "main", repo], ["trust", "add", "acme", acme.publicKey], ["trust", "add", "beta", beta.publicKey],
                          ["install", "pin@1.0.0"]] {
            let r = try cli(arguments)
            #expect(r.status == 0, "\(arguments): \(r.stderr)")
        }
        try TestEnvironment.grantSensitive("pin", plugins: f.plugins, state: f.state)
        #expect(try cli(["plugins", "enable", "pin"]).status == 0)
        #expect(try cli(["trust", "list"]).stdout.contains("acme  \(acme.publicKey)  (key \(acme.fingerprint))"))
        #expect(try cli(["plugins", "list"]).stdout.contains("  pinned signer: acme (key \(acme.fingerprint))\n"))
        #expect(try cli(["install", "pin", "--signer", "acme", "--no-signer"]).stderr.contains("--signer and --no-signer exclude each other"))

        // The queue's JSON: a command an earlier keel queued (no "signer") reads as one that keeps the pin.
        let earlier = try JSONDecoder().decode(KernelCommand.self, from: Data(#"{"upgrade":{"id":"pin","allowUnsigned":false}}"#.utf8))
        #expect(earlier == .upgrade(id: "pin", version: nil, allowUnsigned: false, signer: nil))
        let moving = KernelCommand.upgrade(id: "pin", version: "1.1.0", allowUnsigned: false, signer: .key("beta"))
        #expect(try JSONDecoder().decode(KernelCommand.self, from: JSONEncoder().encode(moving)) == moving)

        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        #expect(try await server.request("GET", "/ext/pin/ping").text.contains("tag=one"))
        let refused = try cli(["upgrade", "pin", "--to", "1.1.0"])
        #expect(refused.status == 1 && refused.stderr == "keel: error: \"pin\" is pinned to signer acme (key \(acme.fingerprint)); pin 1.1.0 is signed by beta (key \(beta.fingerprint)); refused (keel upgrade pin --signer beta moves it to that key)\n",
                "\(refused.stderr)")
        let api = try await server.request("POST", "/api/v1/plugins/pin/upgrade", admin: true, body: Data(#"{"version": "1.1.0"}"#.utf8))
        #expect(api.status == 422 && api.errorCode == "signer-mismatch", "\(api.status) \(api.text)")
        #expect(try await server.request("GET", "/ext/pin/ping").text.contains("tag=one"))
        var info = try await server.request("GET", "/api/v1/plugins/pin", admin: true).json as? [String: Any] ?? [:]
        #expect(info["status"] as? String == "enabled" && info["version"] as? String == "1.0.0")
        #expect(info["signer"] as? String == "acme (key \(acme.fingerprint))", "\(info)")

        // Moved deliberately through the queue, then back through the admin API.
        let moved = try cli(["upgrade", "pin", "--to", "1.1.0", "--signer", "beta"])
        #expect(moved.status == 0 && moved.stdout == "upgraded pin to 1.1.0\nsigner of pin: beta (key \(beta.fingerprint))\n", "\(moved.stdout) \(moved.stderr)")
        #expect(try await server.request("GET", "/ext/pin/ping").text.contains("tag=two"))
        let back = try await server.request("POST", "/api/v1/plugins/pin/upgrade", admin: true, body: Data(#"{"version": "1.2.0", "signer": "acme"}"#.utf8))
        #expect(back.status == 200, "\(back.text)")
        info = back.json as? [String: Any] ?? [:]
        #expect(info["version"] as? String == "1.2.0" && info["signer"] as? String == "acme (key \(acme.fingerprint))", "\(info)")
        let audit = try cli(["audit"]).stdout.split(separator: "\n").filter { $0.contains("upgrade pin") }
        #expect(audit.count == 4, "\(audit)")
        #expect(audit.first?.contains("upgrade pin  signer-mismatch  (\"pin\" is pinned to signer acme") == true, "\(audit)")
        #expect(audit.dropFirst(2).first?.hasSuffix("ok  (signer of \"pin\" moved by the operator from acme (key \(acme.fingerprint)) to beta (key \(beta.fingerprint)))") == true, "\(audit)")

        // The console's plugin page shows both (when a browser is there to drive it).
        guard BrowserTests.available else { return }
        let script = TestEnvironment.repository.path + "/Tests/Browser/signer_test.py"
        let page = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token, "--plugin", "pin",
                                                            "--signature", "signed by acme",
                                                            "--signer", "acme (key \(acme.fingerprint)): upgrades must be signed by this key"])
        #expect(page.status == 0 && page.stdout.contains("3 passed, 0 failed"), "\(page.stdout)\(page.stderr)")
    }

    /// The console's catalog, driven in Chromium, against what the server says of each package's signature: a
    /// trusted key's package installs without a question, an untrusted signer's only once the operator accepts, and a
    /// pinned plugin offers no upgrade to a version its key did not sign, even one another trusted key signed (the
    /// server would refuse it whatever the operator said).
    @Test("the console's catalog: trusted installs at once, untrusted asks first, a pinned plugin offers no upgrade its key did not sign",
          .enabled(if: BrowserTests.available, "needs chromium, chromedriver and python3 selenium (CI installs them)"))
    func consoleCatalog() async throws {
        let keel = TestEnvironment.binPath + "/keel"
        // pin's newer version is signed by beta, a key this host trusts too, but not the one pin is pinned to.
        let acme = try Key("acme"), beta = try Key("beta"), gamma = try Key("gamma")
        let pins = try Self.repository([("1.0.0", "one", (acme, "acme")), ("1.1.0", "two", (beta, "beta"))])
        let fresh = try Self.repository(id: "fresh", [("1.0.0", "one", (acme, "acme"))])
        let stranger = try Self.repository(id: "stranger", [("1.0.0", "one", (gamma, "gamma"))])
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        for arguments in [["repo", "add", "main", pins], ["repo", "add", "fresh", fresh], ["repo", "add", "stranger", stranger],
                          ["trust", "add", "acme", acme.publicKey], ["trust", "add", "beta", beta.publicKey], ["install", "pin@1.0.0"]] {
            let r = try TestEnvironment.run(keel, arguments + common)
            #expect(r.status == 0, "\(arguments): \(r.stderr)")
        }
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let script = TestEnvironment.repository.path + "/Tests/Browser/catalog_test.py"
        let r = try TestEnvironment.run("/usr/bin/env", ["python3", script, "--url", server.base, "--token", ServerProcess.token,
                                                         "--trusted", "fresh", "--untrusted", "stranger", "--untrusted-signer", "gamma",
                                                         "--pinned", "pin", "--pinned-signer", "acme (key \(acme.fingerprint))"])
        #expect(r.status == 0 && r.stdout.contains("5 passed, 0 failed"), "\(r.stdout)\(r.stderr)")
        // What the page did is what the server holds: fresh pinned to acme, stranger unsigned by leave, pin unchanged.
        let plugins = try TestEnvironment.run(keel, ["plugins", "list"] + common).stdout
        #expect(plugins.contains("fresh 1.0.0") && plugins.contains("stranger 1.0.0") && plugins.contains("pin 1.0.0"), "\(plugins)")
        #expect(plugins.contains("signed by untrusted gamma (allowed by the operator)"), "\(plugins)")
        // What the page was told: pin is pinned to acme, and beta's 1.1.0 does not match it (the server refuses it).
        let catalog = try await server.request("GET", "/api/v1/catalog", admin: true)
        let offers = (catalog.json as? [String: Any])?["plugins"] as? [[String: Any]] ?? []
        let pin = offers.first { $0["id"] as? String == "pin" } ?? [:]
        #expect(pin["pinned"] as? String == "acme (key \(acme.fingerprint))" && pin["pinMatches"] as? Bool == false && pin["trusted"] as? Bool == true, "\(pin)")
        #expect(try await server.request("POST", "/api/v1/plugins/pin/upgrade", admin: true, body: Data(#"{"version": "1.1.0"}"#.utf8)).errorCode
                == "signer-mismatch")
    }
}
