// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelState
import Testing

/// Bad input a newcomer hands the CLI: each is refused in one line that names the file (or the part of a path) at
/// fault and the reason in plain words, never a YAML library's multi-line text, a `DecodingError` dump, Foundation's
/// `NSCocoaErrorDomain`, SQLite's or libcurl's text. Every test runs the real `keel` binary.
@Suite("errors a user meets, in one line", .scheduled)
struct UserErrorTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    func run(_ args: [String], _ f: KernelFixture? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        try TestEnvironment.run("/usr/bin/timeout", ["-s", "KILL", "60", keel] + args + (f.map { ["--plugins", $0.plugins, "--state", $0.state] } ?? []))
    }

    /// One line on stderr, without any of the texts a user must never see.
    func expectOneLine(_ r: (status: Int32, stdout: String, stderr: String), contains: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 1, "\(r)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(contains), "\(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)", sourceLocation: sourceLocation)
        for raw in ["DecodingError", "CodingKeys", "NSCocoaErrorDomain", "error 512", "parser: while", "unable to open database",
                    "Not a directory", "Couldn't connect", "SocketAddressError"] {
            #expect(!r.stderr.contains(raw), "\(r.stderr)", sourceLocation: sourceLocation)
        }
    }

    @Test("a misspelt plugin.yaml key is named with the key it looks like, shown before the failure it causes; inspect takes a bundle's plugin.yaml for its folder")
    func misspeltKey() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let dir = TestEnvironment.makeTemporaryDirectory("typo")
        try FileManager.default.copyItem(atPath: f.plugins + "/hello-c", toPath: dir + "/hello-c")
        let manifest = dir + "/hello-c/plugin.yaml"
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        #expect(text.contains("capabilities:"))
        try text.replacingOccurrences(of: "capabilities:", with: "capabilites:").write(toFile: manifest, atomically: true, encoding: .utf8)
        let r = try run(["plugins", "inspect", dir + "/hello-c"])
        let lines = r.stderr.split(separator: "\n")
        #expect(r.status == 1 && lines.count == 2, "\(r.stderr)")
        #expect(lines.first?.contains(": warning: unknown key \"capabilites\" is ignored (did you mean \"capabilities\"?)") == true, "\(r.stderr)")
        #expect(lines.last?.hasPrefix("keel: error: ") == true && lines.last?.contains("was not granted") == true, "\(r.stderr)")
        // The manifest's path for its folder: the same report as the folder's.
        let folder = try run(["plugins", "inspect", f.plugins + "/hello-c"]), file = try run(["plugins", "inspect", f.plugins + "/hello-c/plugin.yaml"])
        #expect(folder.status == 0 && file.status == 0 && file.stdout == folder.stdout, "\(file.stderr)")
    }

    @Test("an id that is not there names the one it most likely meant: the same but for case, or a letter or two off; a folder's name, what the folder holds")
    func nearID() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        expectOneLine(try run(["plugins", "enable", "Hello"], f), contains: "no plugin \"Hello\" in the plugin folder \(f.plugins) (did you mean \"hello\"?)")
        expectOneLine(try run(["plugins", "reload", "greter"], f), contains: "no plugin \"greter\" in the plugin folder \(f.plugins) (did you mean \"greeter\"?)")
        expectOneLine(try run(["plugins", "disable", "helo"], f), contains: "no plugin \"helo\" is known (did you mean \"hello\"?)")
        let far = try run(["plugins", "enable", "zzz"], f)
        expectOneLine(far, contains: "no plugin \"zzz\" in the plugin folder")
        #expect(!far.stderr.contains("did you mean"), "\(far.stderr)")
        // A folder's name for the id its plugin.yaml declares, and the folder of a duplicate id: named with what it holds.
        expectOneLine(try run(["plugins", "enable", "hello-c"], f),
                      contains: "no plugin \"hello-c\" in the plugin folder (folder \(f.plugins)/hello-c holds plugin \"hello\" (its plugin.yaml's id:); use that id)")
        try FileManager.default.copyItem(atPath: f.plugins + "/hello-c", toPath: f.plugins + "/hello-copy")
        let copy = try run(["plugins", "enable", "hello-copy"], f)
        expectOneLine(copy, contains: "no plugin \"hello-copy\" in the plugin folder (folder \(f.plugins)/hello-copy holds plugin \"hello\" (its plugin.yaml's id:), refused: ")
        #expect(copy.stderr.contains("duplicate plugin id \"hello\""), "\(copy.stderr)")
    }

    @Test("a library plugin.yaml names that is not there: the key and the file, with the name it likely meant, or that the folder is a plugin project and where its bundle is")
    func missingLibrary() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let manifest = f.plugins + "/hello-c/plugin.yaml"
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        try text.replacingOccurrences(of: "library: libhello-c.so", with: "library: libhelo-c.so").write(toFile: manifest, atomically: true, encoding: .utf8)
        expectOneLine(try run(["plugins", "enable", "hello"], f),
                      contains: "\(manifest): key \"library\": libhelo-c.so is not in \(f.plugins)/hello-c (did you mean libhello-c.so?)")
        // `inspect` and `validate`, an author's first commands, say it as the host does (they said "no such file").
        expectOneLine(try run(["plugins", "inspect", f.plugins + "/hello-c"], f),
                      contains: "\(manifest): key \"library\": libhelo-c.so is not in \(f.plugins)/hello-c (did you mean libhello-c.so?)")
        let validated = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "validate", f.plugins + "/hello-c"])
        #expect(validated.status == 1 && validated.stdout.contains("key \"library\": libhelo-c.so is not in \(f.plugins)/hello-c (did you mean libhello-c.so?)"),
                "\(validated.stdout)\(validated.stderr)")
        try text.replacingOccurrences(of: "library: libhello-c.so", with: "library: libhello-c").write(toFile: manifest, atomically: true, encoding: .utf8)
        expectOneLine(try run(["plugins", "enable", "hello"], f), contains: "libhello-c is not in \(f.plugins)/hello-c (did you mean libhello-c.so?)")
        // A name far from any (the `lib` left out and more): the folder's only library is the likely one.
        try text.replacingOccurrences(of: "library: libhello-c.so", with: "library: greeting.so").write(toFile: manifest, atomically: true, encoding: .utf8)
        expectOneLine(try run(["plugins", "enable", "hello"], f), contains: "greeting.so is not in \(f.plugins)/hello-c (did you mean libhello-c.so?)")
        // A project copied where its bundle belongs: its bundle is below it, in bundle/ID.
        try text.write(toFile: manifest, atomically: true, encoding: .utf8)
        let built = f.plugins + "/hello-c/bundle/hello"
        try FileManager.default.createDirectory(atPath: built, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: f.plugins + "/hello-c/libhello-c.so", toPath: built + "/libhello-c.so")
        try text.write(toFile: built + "/plugin.yaml", atomically: true, encoding: .utf8)
        expectOneLine(try run(["plugins", "enable", "hello"], f),
                      contains: "libhello-c.so is not in \(f.plugins)/hello-c (this folder is a plugin project, not its bundle: its build made the bundle in \(built); copy that folder here instead")
    }

    @Test("plugin.yaml asking for an ABI this host lacks says so in the words a library's own does, with what the host supports")
    func manifestABIBeyondHost() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let manifest = f.plugins + "/hello-c/plugin.yaml"
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        let abi = try #require(text.split(separator: "\n").first { $0.hasPrefix("abi:") })
        try text.replacingOccurrences(of: String(abi), with: "abi: \"1.9\"").write(toFile: manifest, atomically: true, encoding: .utf8)
        expectOneLine(try run(["plugins", "enable", "hello"], f),
                      contains: "incompatible plugin \"hello\" (\(f.plugins)/hello-c/libhello-c.so): \(manifest) says abi: \"1.9\", this host supports \(PluginLibrary.supportedABIText)")
    }

    @Test("a configuration that is not YAML, or has a key twice, or is not UTF-8: the file, the line, the problem")
    func configurationYAML() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let dir = TestEnvironment.makeTemporaryDirectory("config")
        try "api_key: [1, 2\n".write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        try "a: 1\na: 2\n".write(toFile: dir + "/dup.yaml", atomically: true, encoding: .utf8)
        try "a: 1\napi_key: [1, 2\nb: 3\n".write(toFile: dir + "/open.yaml", atomically: true, encoding: .utf8)
        try Data([0xff, 0xfe, 0x0a]).write(to: URL(fileURLWithPath: dir + "/bin.yaml"))
        expectOneLine(try run(["plugins", "config", "hello", dir + "/bad.yaml"], f),
                      contains: "bad.yaml:1: not valid YAML: did not find expected ',' or ']' (the file ends inside the [ list that starts on this line)")
        expectOneLine(try run(["plugins", "config", "hello", dir + "/dup.yaml"], f), contains: "dup.yaml:2: duplicate key \"a\" (first on line 1)")
        // A [ left open with more lines after it: the line it opened on (the parser gives up on the next one).
        expectOneLine(try run(["plugins", "config", "hello", dir + "/open.yaml"], f),
                      contains: "open.yaml:2: not valid YAML: the [ list that starts on this line is not closed (line 3: ")
        expectOneLine(try run(["plugins", "config", "hello", dir + "/bin.yaml"], f), contains: "bin.yaml: not UTF-8 text")
    }

    @Test("a broken config.schema.yaml is named as the fault, with its line, and gets no hint to configure")
    func brokenSchema() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let schema = f.plugins + "/hello-c/config.schema.yaml"
        let dir = TestEnvironment.makeTemporaryDirectory("config")
        try "api_key: x\n".write(toFile: dir + "/good.yaml", atomically: true, encoding: .utf8)
        try "type: object\nproperties:\n  api_key: {type: strin}\n".write(toFile: schema, atomically: true, encoding: .utf8)
        expectOneLine(try run(["plugins", "config", "hello", dir + "/good.yaml"], f),
                      contains: "config.schema.yaml: key \"api_key.type\": unknown type \"strin\"")
        try "type: object\nx: [\n".write(toFile: schema, atomically: true, encoding: .utf8)
        let enable = try run(["plugins", "enable", "hello"], f)
        expectOneLine(enable, contains: "its configuration schema is unusable: ")
        #expect(enable.stderr.contains("config.schema.yaml:2: not valid YAML") && !enable.stderr.contains("keel plugins config"), "\(enable.stderr)")
    }

    @Test("a --state under a file, a --state that is a folder, a --plugins that is a file, a bad PostgreSQL URL")
    func badPaths() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("paths")
        try "x\n".write(toFile: dir + "/f", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: dir + "/folder.db", withIntermediateDirectories: true)
        expectOneLine(try run(["plugins", "enable", "hello", "--state", dir + "/f/sub/s.db", "--plugins", dir]),
                      contains: "\(dir)/f/sub/s.db: cannot be made: \(dir)/f: not a folder")
        expectOneLine(try run(["plugins", "list", "--state", dir + "/folder.db"]), contains: "folder.db: is a folder, not a state file")
        expectOneLine(try run(["serve", "--port", "0", "--state", dir + "/f/s.db", "--plugins", dir]),
                      contains: "\(dir)/f/s.db: cannot be used as the state file: \(dir)/f: not a folder")
        expectOneLine(try run(["plugins", "list", "--plugins", dir + "/f", "--state", dir + "/s.db"]),
                      contains: "\(dir)/f: is a file, not a plugin folder")
        expectOneLine(try run(["plugins", "list", "--state", "postgres://u@127.0.0.1:99999/db"]), contains: "port 99999 is not between 1 and 65535")
        // A file that is not a state (SQLite's "file is not a database"): named as such, and left as it was.
        try String(repeating: "not a database ", count: 64).write(toFile: dir + "/notes.db", atomically: true, encoding: .utf8)
        #expect(chmod(dir + "/notes.db", 0o644) == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/notes.db"))
        for args in [["plugins", "list"], ["audit"], ["serve", "--port", "0"]] {
            let r = try run(args + ["--state", dir + "/notes.db", "--plugins", dir + "/plugins"])
            expectOneLine(r, contains: "\(dir)/notes.db: is not a Keel state file (SQLite: not a database); nothing was changed in it")
            #expect(!r.stderr.contains("file is not a database"), "\(r.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/notes.db")) == before)
        #expect(!FileManager.default.fileExists(atPath: dir + "/notes.db.lock"), "keel serve left its lock file beside a file it refused")
        var mode = stat()
        #expect(stat(dir + "/notes.db", &mode) == 0 && mode.st_mode & 0o777 == 0o644, "its mode is left as it was too")
        // Another program's SQLite database: refused, not migrated into a Keel state; a FIFO: not even read.
        let other = try TestEnvironment.run("/usr/bin/python3", ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create table photos (id integer)'); c.commit()", dir + "/photos.db"])
        try #require(other.status == 0, "\(other.stderr)")
        let photos = try Data(contentsOf: URL(fileURLWithPath: dir + "/photos.db"))
        expectOneLine(try run(["plugins", "list", "--state", dir + "/photos.db", "--plugins", dir + "/plugins"]),
                      contains: "\(dir)/photos.db: is an SQLite database of another program, not a Keel state (tables photos); nothing was changed in it")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/photos.db")) == photos)
        // One that keeps a schema version of its own (PRAGMA user_version), readable by others: its mode is kept too.
        let versioned = try TestEnvironment.run("/usr/bin/python3", ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create table songs (id integer)'); c.execute('pragma user_version = 7'); c.commit()", dir + "/songs.db"])
        try #require(versioned.status == 0, "\(versioned.stderr)")
        #expect(chmod(dir + "/songs.db", 0o644) == 0)
        let songs = try Data(contentsOf: URL(fileURLWithPath: dir + "/songs.db"))
        expectOneLine(try run(["plugins", "list", "--state", dir + "/songs.db", "--plugins", dir + "/plugins"]),
                      contains: "\(dir)/songs.db: is an SQLite database of another program, not a Keel state (tables songs); nothing was changed in it")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/songs.db")) == songs)
        #expect(stat(dir + "/songs.db", &mode) == 0 && mode.st_mode & 0o777 == 0o644, "its mode is left as it was")
        #expect(mkfifo(dir + "/pipe.db", 0o600) == 0)
        expectOneLine(try run(["plugins", "list", "--state", dir + "/pipe.db", "--plugins", dir + "/plugins"]),
                      contains: "\(dir)/pipe.db: is not a regular file, so not a state file")
    }

    @Test("a state file or plugin folder on a read-only file system: the path and 'the file system is read-only', not SQLite's or inotify's words",
          .enabled(if: getuid() == 0, "mounting a read-only tmpfs needs root"))
    func readOnlyFileSystem() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("readonly")
        let mounted = try TestEnvironment.run("/bin/mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir])
        try #require(mounted.status == 0, "\(mounted.stderr)")
        defer { _ = try? TestEnvironment.run("/bin/umount", ["-l", dir]) }
        let writable = TestEnvironment.makeTemporaryDirectory("writable")
        expectOneLine(try run(["plugins", "list", "--state", dir + "/state.db", "--plugins", writable]),
                      contains: "\(dir)/state.db: cannot be opened or made: its folder \(dir): the file system is read-only")
        expectOneLine(try run(["serve", "--port", "0", "--state", writable + "/state.db", "--plugins", dir + "/plugins"]),
                      contains: "\(dir)/plugins: cannot be made: the file system is read-only (the plugin folder, to watch)")
        // A good state on a file system mounted read-only since (a backup's copy, a read-only root).
        #expect(try run(["tenants", "create", "acme", "--state", writable + "/state.db", "--plugins", writable]).status == 0)
        let frozen = TestEnvironment.makeTemporaryDirectory("frozen")
        try #require(try TestEnvironment.run("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", frozen]).status == 0)
        defer { _ = try? TestEnvironment.run("/bin/umount", ["-l", frozen]) }
        try FileManager.default.copyItem(atPath: writable + "/state.db", toPath: frozen + "/state.db")
        try #require(try TestEnvironment.run("/bin/mount", ["-o", "remount,ro", frozen]).status == 0)
        for args in [["plugins", "list"], ["audit"]] {
            expectOneLine(try run(args + ["--state", frozen + "/state.db", "--plugins", writable]),
                          contains: "\(frozen)/state.db: cannot be written: the file system is read-only")
        }
    }

    @Test("a malformed repository index is refused when added, by key path; an unreadable one is named when install finds nothing")
    func repositories() throws {
        let f = KernelFixture()
        let repo = TestEnvironment.makeTemporaryDirectory("repo")
        try "apiVersion: 1\nplugins:\n  hello: [{version: 1}]\n".write(toFile: repo + "/index.yaml", atomically: true, encoding: .utf8)
        expectOneLine(try run(["repo", "add", "r", repo], f), contains: "index.yaml:3: key \"plugins.hello[0]\": missing key name")
        try "plugins:\n  hello: []\n".write(toFile: repo + "/index.yaml", atomically: true, encoding: .utf8)
        expectOneLine(try run(["repo", "add", "r", repo], f), contains: "index.yaml: missing key apiVersion")
        try "apiVersion: 1\nplugins:\n  hello: [\n".write(toFile: repo + "/index.yaml", atomically: true, encoding: .utf8)
        expectOneLine(try run(["repo", "add", "r", repo], f), contains: "index.yaml:3: not valid YAML")
        #expect(try run(["repo", "list"], f).stdout.isEmpty, "no malformed repository was added")

        #expect(try run(["repo", "add", "web", "http://127.0.0.1:1/repo"], f).status == 0)
        expectOneLine(try run(["install", "hello"], f),
                      contains: "no repository offers \"hello\" (not read: repository \"web\": http://127.0.0.1:1/repo/index.yaml")
    }

    @Test("typos that used to read as success: a plugin id to keel commands, an interface to services clear, a member never bound, a URL scheme to repo add")
    func typosAreNamed() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        #expect(try run(["tenants", "create", "acme"], f).status == 0)
        expectOneLine(try run(["commands", "helo"], f), contains: "no plugin \"helo\" is known (did you mean \"hello\"?)")
        let none = try run(["commands", "hello"], f)
        #expect(none.status == 0 && none.stdout == "plugin hello declares no command\n", "\(none)")
        expectOneLine(try run(["services", "clear", "gitops.synk/1"], f),
                      contains: "no installed plugin provides or consumes gitops.synk/1, and no choice is stored for it")
        let never = try run(["tenants", "remove-member", "default", "bob", "admin"], f)
        #expect(never.status == 0 && never.stdout == "bob was not admin in default; nothing changed\n", "\(never)")
        expectOneLine(try run(["repo", "add", "mirror", "ftp://example.com/keel"], f),
                      contains: "repository \"mirror\": ftp://example.com/keel: ftp:// is not a repository location Keel reads (a folder, file://, http:// or https://)")
    }

    @Test("plugins list shows why an install failed; pack refuses the public key in place of the private one")
    func installFailureAndKeys() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let store = try StateStore(path: f.state)
        try store.setStatus("ghost", .installFailed, reason: "ghost-1.0.0.keelpkg: sha256 does not match the index")
        let list = try run(["plugins", "list"], f)
        #expect(list.stdout.contains("reason: ghost-1.0.0.keelpkg: sha256 does not match the index"), "\(list.stdout)")

        let keys = TestEnvironment.makeTemporaryDirectory("keys")
        let publicKey = try run(["trust", "keygen", keys + "/acme.key"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try publicKey.write(toFile: keys + "/acme.pub", atomically: true, encoding: .utf8)
        #expect(try run(["trust", "add", "acme", publicKey], f).status == 0)
        let out = TestEnvironment.makeTemporaryDirectory("out")
        let wrong = try run(["pack", f.plugins + "/hello-c", "--out", out, "--key", keys + "/acme.pub", "--signer", "acme"] + ["--state", f.state])
        expectOneLine(wrong, contains: "acme.pub: is the public key trusted as \"acme\"")
        expectOneLine(try run(["pack", f.plugins + "/hello-c", "--out", out, "--key", keys + "/none.key"]), contains: "none.key: no such file or folder")
        // Where no state trusts the signer (a build machine), the public key is still refused: anyone may read it.
        chmod(keys + "/acme.pub", 0o644)
        expectOneLine(try run(["pack", f.plugins + "/hello-c", "--out", out, "--key", keys + "/acme.pub", "--signer", "acme"]),
                      contains: "acme.pub: others may read it (mode 644), so it is not used as a private signing key")
        expectOneLine(try run(["pack", f.plugins + "/hello-c", "--out", out, "--signer", "acme"]),
                      contains: "--signer acme without --key: nothing would be signed")
        expectOneLine(try run(["pack", f.plugins + "/hello-c/plugin.yaml", "--out", out]),
                      contains: "hello-c/plugin.yaml: not a folder (pass the bundle folder, the one that holds plugin.yaml)")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).isEmpty, "a refused pack writes nothing")
        let right = try run(["pack", f.plugins + "/hello-c", "--out", out, "--key", keys + "/acme.key", "--signer", "acme", "--state", f.state])
        #expect(right.status == 0 && right.stdout.contains("(signed)"), "\(right)")
    }
}
