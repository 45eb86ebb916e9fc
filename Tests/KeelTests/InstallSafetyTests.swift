// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Testing

/// Installs never make two bundles claim one id, and a signature status belongs to the bytes that were installed.
extension ExtensionStoreTests {
    /// A repository with hello (signed by acme) and greeter (unsigned), added to `f` with acme trusted.
    func trustedRepository(_ f: KernelFixture) throws {
        let repo = TestEnvironment.makeTemporaryDirectory("repo")
        let keyFile = TestEnvironment.makeTemporaryDirectory("key") + "/acme.key"
        let publicKey = try TestEnvironment.run(keel, ["trust", "keygen", keyFile]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try makeRepository(repo, key: keyFile)
        try run(["repo", "add", "main", repo], f)
        try run(["trust", "add", "acme", publicKey], f)
    }

    /// The folders in `f`'s plugin folder whose manifest declares `id`.
    func folders(declaring id: String, _ f: KernelFixture) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: f.plugins).sorted().filter { name in
            let text = (try? String(contentsOfFile: f.plugins + "/" + name + "/plugin.yaml", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "id: \(id)" }
        }
    }

    @Test("installing an id already present in another folder is refused; a dependency there counts as present")
    func noDuplicateInstall() throws {
        let f = KernelFixture()
        try trustedRepository(f)
        try TestEnvironment.stageExamples(into: f.plugins) // hello in hello-c, greeter in greeter-swift

        let greeter = try run(["install", "greeter", "--allow-unsigned"], f, ok: false)
        #expect(greeter.status == 1)
        #expect(greeter.stderr == "keel: error: \"greeter\" is already installed (folder \"greeter-swift\"); use `keel upgrade greeter` to change its version\n",
                "\(greeter.stderr)")
        let hello = try run(["install", "hello"], f, ok: false)
        #expect(hello.status == 1 && hello.stderr.contains("already installed (folder \"hello-c\")"), "\(hello.stderr)")

        // Without greeter, installing it finds its dependency hello in hello-c and installs greeter alone.
        try FileManager.default.removeItem(atPath: f.plugins + "/greeter-swift")
        let alone = try run(["install", "greeter", "--allow-unsigned"], f)
        #expect(alone.stdout.contains("plan: greeter 1.0.0 from main\n"), "\(alone.stdout)")
        #expect(try folders(declaring: "hello", f) == ["hello-c"])
        #expect(try folders(declaring: "greeter", f) == ["greeter"])
    }

    @Test("upgrade replaces the bundle in the folder it was found in, whatever that folder is called")
    func upgradeInPlace() throws {
        let f = KernelFixture()
        let repo = TestEnvironment.makeTemporaryDirectory("uprepo")
        for version in ["1.0.0", "1.1.0"] {
            let lib = try TestEnvironment.buildFixture("mv-\(version)", ["PLUGIN_ID=\"mv\"", "PLUGIN_VERSION=\"\(version)\""])
            let staging = TestEnvironment.makeTemporaryDirectory("upstage")
            try TestEnvironment.makeBundle(in: version == "1.0.0" ? f.plugins : staging, folder: "mv-src",
                                           manifest: TestEnvironment.manifest(id: "mv", version: version, library: "libmv.so"),
                                           library: lib, libraryName: "libmv.so")
            if version == "1.1.0" { #expect(try TestEnvironment.run(keel, ["pack", staging + "/mv-src", "--out", repo]).status == 0) }
        }
        #expect(try TestEnvironment.run(keel, ["repo", "index", repo]).status == 0)
        try run(["repo", "add", "main", repo], f)
        let upgraded = try run(["upgrade", "mv", "--allow-unsigned"], f)
        #expect(upgraded.stdout == "upgraded mv to 1.1.0\n")
        #expect(try folders(declaring: "mv", f) == ["mv-src"])
        #expect(try String(contentsOfFile: f.plugins + "/mv-src/plugin.yaml", encoding: .utf8).contains("version: 1.1.0"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.plugins) == ["mv-src"])
    }

    @Test("a signature status shows only while the installed library is there; uninstall clears it")
    func signatureFollowsBytes() throws {
        let f = KernelFixture()
        try trustedRepository(f)
        try run(["install", "hello"], f)
        #expect(try run(["plugins", "list"], f).stdout.contains("signature: signed by acme"))

        // The library replaced by other bytes: no longer the signed one.
        let library = try #require(FileHandle(forWritingAtPath: f.plugins + "/hello/libhello-c.so"))
        library.seekToEndOfFile()
        library.write(Data([0]))
        library.closeFile()
        let changed = try run(["plugins", "list"], f).stdout
        #expect(changed.contains("hello 1.0.0") && !changed.contains("signature:"), "\(changed)")

        // Uninstalled, then an unsigned bundle with the same id (the very bytes once signed) dropped in by hand.
        try run(["uninstall", "hello"], f)
        let staging = TestEnvironment.makeTemporaryDirectory("staging")
        try TestEnvironment.stageExamples(into: staging)
        try FileManager.default.copyItem(atPath: staging + "/hello-c", toPath: f.plugins + "/hello-c")
        let dropped = try run(["plugins", "list"], f).stdout
        #expect(dropped.contains("hello 1.0.0") && !dropped.contains("signature:"), "\(dropped)")
    }
}
