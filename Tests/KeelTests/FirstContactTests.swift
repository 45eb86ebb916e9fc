// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState
import Testing

/// What a new user meets first: the README's first command, error messages, exit codes, global options, JSON output,
/// terminal extras and completion. Every test runs the real `keel` binary.
@Suite("first contact with keel", .scheduled)
struct FirstContactTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    /// Runs keel (or `executable`) and kills it after `timeout` seconds (status then is the signal's), so a command
    /// that wrongly keeps running fails the test instead of hanging it.
    func run(_ arguments: [String], executable: String? = nil, environment: [String: String] = [:],
             timeout: Double = 60, in folder: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable ?? keel)
        if let folder { process.currentDirectoryURL = URL(fileURLWithPath: folder) }
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let stdout = LockedText(), stderr = LockedText()
        try process.run()
        let drains = [PipeDrain(out.fileHandleForReading, into: stdout), PipeDrain(err.fileHandleForReading, into: stderr)]
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        // After a kill, a grandchild may still hold the pipes open: take only what arrived by then.
        for drain in drains { drain.wait(seconds: timedOut ? 1 : 30) }
        return (process.terminationStatus, stdout.value, stderr.value)
    }

    /// A fixture with the example bundles staged, hello granted and enabled.
    func examples() throws -> (KernelFixture, [String]) {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let common = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        return (f, common)
    }

    @Test("Scripts/examples.sh --check builds nothing with KEEL_BIN, serves the examples, answers, and stops")
    func examplesScriptServes() throws {
        let f = KernelFixture()
        let r = try run(["--check"], executable: TestEnvironment.repository.path + "/Scripts/examples.sh",
                        environment: ["KEEL_BIN": TestEnvironment.binPath, "KEEL_PLUGINS_DIR": f.plugins, "KEEL_STATE": f.state],
                        timeout: 120)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("enabled greeter 1.0.0"), "\(r.stdout)")
        #expect(r.stdout.contains("listening on http://127.0.0.1:"), "\(r.stdout)")
        #expect(r.stdout.contains("console: http://127.0.0.1:"), "\(r.stdout)")
        // The check serves with a token from the environment: the one to show is left for the first real run.
        #expect(!r.stdout.contains("admin token (shown once"), "\(r.stdout)")
        #expect(try StateStore(path: f.state).adminTokenDigest() == nil, "a check run stores no admin token")
        #expect(r.stdout.contains("/ext/hello/greet/ci -> hello, ci"), "\(r.stdout)")
        #expect(r.stdout.contains("check passed"))
    }

    @Test("pack makes its --out folder; repo index of a missing folder is one line naming it; no Foundation text")
    func packAndIndexFolders() throws {
        let (f, _) = try examples()
        let dir = TestEnvironment.makeTemporaryDirectory("pack")
        let pack = try run(["pack", f.plugins + "/hello-c", "--out", dir + "/repo/sub"])
        #expect(pack.status == 0, "\(pack.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/repo/sub/hello-1.0.0.keelpkg"))

        let index = try run(["repo", "index", dir + "/missing"])
        #expect(index.status == 1)
        #expect(index.stderr.hasPrefix("keel: error: \(dir)/missing: no such folder"), "\(index.stderr)")
        #expect(index.stderr.split(separator: "\n").count == 1)

        try "x".write(toFile: dir + "/file", atomically: true, encoding: .utf8)
        let notFolder = try run(["pack", f.plugins + "/hello-c", "--out", dir + "/file"])
        #expect(notFolder.status == 1)
        #expect(notFolder.stderr == "keel: error: \(dir)/file: not a folder\n")

        let keyInMissingFolder = try run(["trust", "keygen", dir + "/nope/key"])
        #expect(keyInMissingFolder.status == 1)
        #expect(keyInMissingFolder.stderr == "keel: error: \(dir)/nope/key: no such file or folder\n", "\(keyInMissingFolder.stderr)")

        let badKey = try run(["pack", f.plugins + "/hello-c", "--out", dir + "/repo", "--key", dir + "/no-such.key"])
        #expect(badKey.status == 1)
        #expect(badKey.stderr.hasPrefix("keel: error: "), "\(badKey.stderr)")
        // A refused key leaves no archive behind (an index would have listed it unsigned).
        #expect(!FileManager.default.fileExists(atPath: dir + "/repo/hello-1.0.0.keelpkg"))
        // An unsigned pack over a signed one of the same version leaves no signature of the old archive beside it.
        let key = dir + "/k.key"
        #expect(try run(["trust", "keygen", key]).status == 0)
        #expect(try run(["pack", f.plugins + "/hello-c", "--out", dir + "/signed", "--key", key, "--signer", "me"]).status == 0)
        #expect(FileManager.default.fileExists(atPath: dir + "/signed/hello-1.0.0.keelpkg.sig"))
        #expect(try run(["pack", f.plugins + "/hello-c", "--out", dir + "/signed"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: dir + "/signed/hello-1.0.0.keelpkg.sig"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/signed/hello-1.0.0.keelpkg.signer"))
        // A state file whose folder cannot be made: the library's message embeds Foundation's text, put in plain words.
        let noState = try run(["plugins", "list", "--state", "/proc/keel-nope/state.db", "--plugins", dir])
        #expect(noState.status == 1)
        #expect(noState.stderr.hasPrefix("keel: error: /proc/keel-nope/state.db: "), "\(noState.stderr)")
        for text in [index.stderr, notFolder.stderr, keyInMissingFolder.stderr, badKey.stderr, noState.stderr] {
            #expect(!text.contains("Error Domain") && !text.contains("NSCocoaErrorDomain") && !text.contains("could not be completed"), "\(text)")
            #expect(text.split(separator: "\n").count == 1, "\(text)")
        }
    }

    @Test("serve refuses a port outside 0...65535 as bad usage (64), and names a port in use with the fix")
    func ports() throws {
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        let tooBig = try run(["serve", "--port", "99999"] + common, timeout: 20)
        #expect(tooBig.status == 64, "\(tooBig.stdout)")
        #expect(tooBig.stderr.hasPrefix("keel: error: --port 99999 is not a port"), "\(tooBig.stderr)")
        #expect(tooBig.stderr.contains("Usage: keel serve"))
        let negative = try run(["serve", "--port=-1"] + common, timeout: 20)
        #expect(negative.status == 64, "\(negative.stderr)")

        let running = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { running.stop() }
        let other = KernelFixture()
        let busy = try run(["serve", "--port", "\(running.port)", "--plugins", other.plugins, "--state", other.state], timeout: 30)
        #expect(busy.status == 1)
        #expect(busy.stderr == "keel: error: port \(running.port) on 127.0.0.1 is in use; pass --port N (or --port 0 for a free one)\n",
                "\(busy.stderr)")
        #expect(!busy.stdout.contains("admin token"), "nothing is started or made before the port is known to be free")

        // A --host that is not this machine's, or no name at all: one line, before any plugin loads or the one-time
        // admin token is made (the next start with a good --host shows it).
        let fresh = KernelFixture()
        let freshCommon = ["--plugins", fresh.plugins, "--state", fresh.state, "--port", "0"]
        let foreign = try run(["serve", "--host", "203.0.113.7"] + freshCommon, environment: ["KEEL_ADMIN_TOKEN": ""], timeout: 30)
        #expect(foreign.status == 1)
        #expect(foreign.stderr == "keel: error: cannot serve on 203.0.113.7:0: 203.0.113.7 is not an address of this machine (pass --host with one of its addresses, e.g. 127.0.0.1 or 0.0.0.0)\n",
                "\(foreign.stderr)")
        let unknown = try run(["serve", "--host", "no-such-host.invalid"] + freshCommon, environment: ["KEEL_ADMIN_TOKEN": ""], timeout: 30)
        #expect(unknown.status == 1)
        #expect(unknown.stderr.hasPrefix("keel: error: cannot serve on no-such-host.invalid:0: --host no-such-host.invalid is not an address or a name this machine resolves ("),
                "\(unknown.stderr)")
        #expect(!(foreign.stdout + unknown.stdout).contains("admin token"), "\(foreign.stdout)\(unknown.stdout)")
        let good = try ServerProcess(plugins: fresh.plugins, state: fresh.state, extraArguments: ["--no-watch"], environment: ["KEEL_ADMIN_TOKEN": ""])
        defer { good.stop() }
        #expect(good.output.value.contains("admin token (shown once"), "\(good.output.value)")
    }

    @Test("a server that stops leaves one complete state file: its write-ahead log folded in, so a copy of state.db alone holds every change")
    func stoppedServerLeavesOneFile() async throws {
        let (f, common) = try examples()
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        for (id, command) in [("hello", "enable"), ("hello", "disable"), ("hello", "enable"), ("hello", "disable")] {
            let r = try await server.request("POST", "/api/v1/plugins/\(id)/\(command)", admin: true)
            #expect(r.status == 200, "\(command) \(id): \(r.text)")
        }
        #expect(try run(["tenants", "create", "acme"] + common).status == 0)
        #expect(server.stop() == 0)
        let wal = (try? FileManager.default.attributesOfItem(atPath: f.state + "-wal")[.size] as? Int) ?? 0
        // Empty, or its 32-byte header alone: no frame holds a change the main file lacks.
        #expect(wal <= 32, "the log still holds \(wal) bytes")
        // The one file alone, as a backup would copy it.
        let copy = TestEnvironment.makeTemporaryDirectory("backup") + "/state.db"
        try FileManager.default.copyItem(atPath: f.state, toPath: copy)
        let audit = try run(["audit", "--json", "--since", "1h", "--state", copy, "--plugins", f.plugins])
        let rows = try JSONSerialization.jsonObject(with: Data(audit.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(rows.filter { $0["command"] as? String == "disable" }.count == 2, "\(audit.stdout)")
        #expect(rows.contains { $0["command"] as? String == "create-tenant" }, "\(audit.stdout)")
    }

    @Test("usage errors are `keel: error:` with the usage and exit 64")
    func usageStyle() throws {
        let missing = try run(["plugins", "enable"])
        #expect(missing.status == 64)
        #expect(missing.stderr.hasPrefix("keel: error: Missing expected argument '<id> ...'"), "\(missing.stderr)")
        #expect(missing.stderr.contains("Usage: keel plugins enable"))
        let unknown = try run(["plugins", "frobnicate"])
        #expect(unknown.status == 64)
        #expect(unknown.stderr.hasPrefix("keel: error: "), "\(unknown.stderr)")
        #expect(!unknown.stderr.contains("\nError:") && !unknown.stderr.hasPrefix("Error:"))
        // A mistyped command word is named as the mistake, with the nearest command or the list of them.
        let singular = try run(["plugin", "list"])
        #expect(singular.status == 64)
        #expect(singular.stderr.hasPrefix("keel: error: \"keel plugin\" is not a command; did you mean \"keel plugins\"?\n"), "\(singular.stderr)")
        let info = try run(["plugins", "info", "counter"])
        #expect(info.status == 64)
        #expect(info.stderr.hasPrefix("keel: error: \"keel plugins info\" is not a command; the commands of \"keel plugins\" are: list, inspect,"), "\(info.stderr)")
        #expect(try run(["-v", "--state", "x.db", "plugns", "list"]).stderr.hasPrefix("keel: error: \"keel plugns\" is not a command; did you mean \"keel plugins\"?"))
        #expect(try run(["tenants", "lst"]).stderr.hasPrefix("keel: error: \"keel tenants lst\" is not a command; did you mean \"keel tenants list\"?"))
        let help = try run(["help", "plugins", "list"])
        #expect(help.status == 0 && help.stdout.contains("OVERVIEW: Show every plugin"), "\(help.stderr)")
    }

    @Test("-v, --plugins and --state work before or after the subcommand, on every command")
    func globalOptionsAnywhere() throws {
        let (f, common) = try examples()
        let before = try run(["-v"] + common + ["plugins", "list", "--json"])
        #expect(before.status == 0, "\(before.stderr)")
        #expect(before.stdout.contains("\"id\" : \"hello\""), "\(before.stdout)")
        let between = try run(["plugins", "--state", f.state, "list", "--plugins", f.plugins])
        #expect(between.status == 0, "\(between.stderr)")
        #expect(between.stdout.contains("hello 1.0.0"))
        let inspect = try run(["plugins", "inspect"] + common + [f.plugins + "/hello-c"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let dir = TestEnvironment.makeTemporaryDirectory("globals")
        for arguments in [["pack", f.plugins + "/hello-c", "--out", dir] + common, ["repo", "index", dir, "-v"] + common,
                          common + ["trust", "keygen", dir + "/k"], ["token", "reset"] + common] {
            let r = try run(arguments)
            #expect(r.status == 0, "\(arguments): \(r.stderr)")
        }
    }

    @Test("an empty list prints [] as JSON; keygen's help shows no state or plugin options, which it still accepts")
    func emptyJSONAndQuietHelp() throws {
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        let keys = try run(["trust", "list", "--json"] + common)
        #expect(keys.status == 0, "\(keys.stderr)")
        #expect(keys.stdout == "[]\n", "\(keys.stdout.debugDescription)")
        let help = try run(["trust", "keygen", "--help"])
        #expect(help.stdout.contains("<file>") && help.stdout.contains("--force"), "\(help.stdout)")
        for option in ["--state", "--plugins", "--host-dir"] { #expect(!help.stdout.contains(option), "\(help.stdout)") }
    }

    @Test("tenants and roles list --json are real objects and arrays")
    func directoryJSON() throws {
        let (_, common) = try examples()
        for step in [["tenants", "create", "acme"], ["roles", "create", "editor"], ["tenants", "add-member", "acme", "alice", "editor"],
                     ["roles", "grant", "editor", "greeter.greetings:view"]] {
            let r = try run(step + common)
            #expect(r.status == 0, "\(step): \(r.stderr)")
        }
        let tenants = try run(["tenants", "list", "--json"] + common)
        let list = try JSONSerialization.jsonObject(with: Data(tenants.stdout.utf8)) as? [[String: Any]]
        let acme = list?.first { $0["name"] as? String == "acme" }
        let members = acme?["members"] as? [[String: Any]]
        #expect(members?.first?["principal"] as? String == "alice", "\(tenants.stdout)")
        #expect(members?.first?["roles"] as? [String] == ["editor"])
        #expect(acme?["plugins"] as? [String] == [])
        let roles = try run(["roles", "list", "--json"] + common)
        let roleList = try JSONSerialization.jsonObject(with: Data(roles.stdout.utf8)) as? [[String: Any]]
        let editor = roleList?.first { $0["name"] as? String == "editor" }
        #expect(editor?["permissions"] as? [String] == ["greeter.greetings:view"], "\(roles.stdout)")
        #expect(editor?["grantsEverything"] as? Bool == false)
        #expect(roleList?.first { $0["name"] as? String == "admin" }?["grantsEverything"] as? Bool == true)
        for arguments in [["repo", "list", "--json"], ["trust", "list", "--json"], ["search", "--json"]] {
            let r = try run(arguments + common)
            #expect(r.status == 0, "\(arguments): \(r.stderr)")
            #expect((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) is [Any], "\(arguments): \(r.stdout)")
        }
        let config = try run(["plugins", "config", "hello", "--json"] + common)
        let object = try JSONSerialization.jsonObject(with: Data(config.stdout.utf8)) as? [String: Any]
        #expect(object?["id"] as? String == "hello", "\(config.stdout)")
        #expect(object?["config"] is NSNull)
    }

    @Test("exit codes: an up-to-date upgrade is 0 with a message (alone, through a running server, and in the admin API's answer), config of an unknown plugin is 1")
    func exitCodes() async throws {
        let (f, common) = try examples()
        let unknown = try run(["plugins", "config", "nosuch"] + common)
        #expect(unknown.status == 1)
        #expect(unknown.stderr == "keel: error: no plugin \"nosuch\" in \(f.plugins)\n", "\(unknown.stderr)")

        let repo = TestEnvironment.makeTemporaryDirectory("uptodate")
        for step in [["pack", f.plugins + "/hello-c", "--out", repo], ["repo", "index", repo], ["repo", "add", "main", repo]] {
            let r = try run(step + common)
            #expect(r.status == 0, "\(step): \(r.stderr)")
        }
        let upgrade = try run(["upgrade", "hello"] + common)
        #expect(upgrade.status == 0, "\(upgrade.stderr)")
        #expect(upgrade.stdout.hasPrefix("hello 1.0.0 is up to date"), "\(upgrade.stdout)")
        // Audited as what it was: nothing to do, not a failure.
        let audit = try run(["audit", "--json"] + common)
        let rows = try JSONSerialization.jsonObject(with: Data(audit.stdout.utf8)) as? [[String: Any]]
        let row = rows?.last { $0["command"] as? String == "upgrade" }
        #expect(row?["outcome"] as? String == "ok", "\(audit.stdout)")

        // The same through a running server: its note comes back through the command queue, never "upgraded".
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        let remote = try run(["upgrade", "hello"] + common)
        #expect(remote.status == 0, "\(remote.stderr)")
        #expect(remote.stdout.hasPrefix("hello 1.0.0 is up to date"), "\(remote.stdout)")
        let same = try run(["upgrade", "hello", "--to", "1.0.0"] + common)
        #expect(same.status == 0 && same.stdout.hasPrefix("hello 1.0.0 is up to date (the version asked for)"), "\(same.stdout)\(same.stderr)")
        let api = try await server.request("POST", "/api/v1/plugins/hello/upgrade", admin: true)
        let body = api.json as? [String: Any]
        #expect(api.status == 200 && body?["id"] as? String == "hello", "\(api.text)")
        #expect((body?["note"] as? String)?.hasPrefix("\"hello\" 1.0.0 is up to date") == true, "\(api.text)")

        // An install beside the server is made by the server: its view holds the install when the CLI returns.
        #expect(try run(["uninstall", "hello"] + common).status == 0)
        let installed = try run(["install", "hello", "--allow-unsigned"] + common)
        #expect(installed.status == 0 && installed.stdout.contains("installed hello 1.0.0"), "\(installed)")
        let listed = try run(["plugins", "list", "--json"] + common)
        let hello = (try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])?.first { $0["id"] as? String == "hello" }
        #expect(hello?["signature"] as? String == "unsigned (allowed by the operator)", "\(listed.stdout)")
    }

    @Test("add-member with an unknown role says how to create it; granting an undeclared permission needs --force")
    func rolesHelp() throws {
        let (_, common) = try examples()
        #expect(try run(["tenants", "create", "acme"] + common).status == 0)
        let noRole = try run(["tenants", "add-member", "acme", "alice", "editor"] + common)
        #expect(noRole.status == 1)
        #expect(noRole.stderr == "keel: error: unknown role \"editor\"; create it with `keel roles create editor`\n", "\(noRole.stderr)")
        #expect(try run(["roles", "create", "editor"] + common).status == 0)
        let undeclared = try run(["roles", "grant", "editor", "nosuch:view"] + common)
        #expect(undeclared.status == 1)
        #expect(undeclared.stderr.contains("no plugin declares \"nosuch:view\""), "\(undeclared.stderr)")
        #expect(undeclared.stderr.contains("greeter.greetings:view"), "\(undeclared.stderr)")
        let badAction = try run(["roles", "grant", "editor", "greeter.greetings:delete"] + common)
        #expect(badAction.status == 1)
        let forced = try run(["roles", "grant", "editor", "nosuch:view", "--force"] + common)
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(try run(["roles", "grant", "editor", "greeter.greetings:*"] + common).status == 0)
    }

    @Test("README's tenant example runs as written")
    func readmeTenantExample() throws {
        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        let create = try #require(readme.range(of: "`keel roles create editor`"))
        let add = try #require(readme.range(of: "`keel tenants add-member acme alice editor`"))
        #expect(create.lowerBound < add.lowerBound)
        let (_, common) = try examples()
        for step in [["tenants", "create", "acme"], ["roles", "create", "editor"], ["tenants", "add-member", "acme", "alice", "editor"]] {
            let r = try run(step + common)
            #expect(r.status == 0, "\(step): \(r.stderr)")
        }
    }

    @Test("keygen never overwrites: an existing file needs --force, a FIFO or device is never replaced")
    func keygenSafety() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("keygen")
        let key = dir + "/acme.key"
        let first = try run(["trust", "keygen", key])
        #expect(first.status == 0, "\(first.stderr)")
        let original = try String(contentsOfFile: key, encoding: .utf8)
        let mode = try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let again = try run(["trust", "keygen", key])
        #expect(again.status == 1)
        #expect(again.stderr == "keel: error: \(key): already exists; pass --force to replace it (the key in it is lost)\n", "\(again.stderr)")
        #expect(try String(contentsOfFile: key, encoding: .utf8) == original)
        let forced = try run(["trust", "keygen", key, "--force"])
        #expect(forced.status == 0)
        #expect(try String(contentsOfFile: key, encoding: .utf8) != original)

        let fifo = dir + "/fifo"
        #expect(mkfifo(fifo, 0o644) == 0)
        for arguments in [["trust", "keygen", fifo], ["trust", "keygen", fifo, "--force"]] {
            let r = try run(arguments, timeout: 20)
            #expect(r.status == 1)
            #expect(r.stderr == "keel: error: \(fifo): not a regular file (a FIFO); refusing to replace it\n", "\(r.stderr)")
            var info = stat()
            #expect(lstat(fifo, &info) == 0 && info.st_mode & S_IFMT == S_IFIFO)
        }
        let null = try run(["trust", "keygen", "/dev/null", "--force"])
        #expect(null.status == 1 && null.stderr.contains("not a regular file (a character device)"))
    }

    @Test("progress and colour only on a terminal; plain output through a pipe and with NO_COLOR")
    func terminalExtras() throws {
        let (_, common) = try examples()
        #expect(try run(["plugins", "enable", "hello"] + common).status == 0)
        let piped = try run(["plugins", "inspect", try TestEnvironment.builtLibrary("libhello-c.so")])
        #expect(piped.status == 0 && piped.stderr.isEmpty, "\(piped.stderr)")
        let plainList = try run(["plugins", "list"] + common)
        #expect(!plainList.stdout.contains("\u{1B}["))

        // `script` runs the command on a pseudo-terminal.
        func onTerminal(_ arguments: [String], noColor: Bool = false) throws -> String {
            let line = ([keel] + arguments).map { "'\($0)'" }.joined(separator: " ")
            var environment = ProcessInfo.processInfo.environment
            environment["NO_COLOR"] = nil
            if noColor { environment["NO_COLOR"] = "1" }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
            process.arguments = ["-qec", line, "/dev/null"]
            process.environment = environment
            let out = Pipe()
            process.standardOutput = out
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
        let inspect = try onTerminal(["plugins", "inspect", try TestEnvironment.builtLibrary("libhello-c.so")])
        #expect(inspect.contains("probing "), "\(inspect)")
        let coloured = try onTerminal(["plugins", "list"] + common)
        #expect(coloured.contains("\u{1B}[32menabled\u{1B}[0m"), "\(coloured)")
        let noColor = try onTerminal(["plugins", "list"] + common, noColor: true)
        #expect(noColor.contains("hello 1.0.0  enabled") && !noColor.contains("\u{1B}[32m"), "\(noColor)")
    }

    @Test("completion scripts are generated and complete plugin ids, tenants and roles")
    func completion() throws {
        let (f, common) = try examples()
        #expect(try run(["tenants", "create", "acme"] + common).status == 0)
        #expect(try run(["roles", "create", "editor"] + common).status == 0)
        let script = try run(["--generate-completion-script", "bash"])
        #expect(script.status == 0 && script.stdout.contains("---completion"), "\(script.stderr)")
        // `keel plugins grant|revoke ID <TAB>` offers every capability there is, the sensitive ones included.
        let offered = "'routes'$'\\n''menus'$'\\n''authenticate'$'\\n''authorize'$'\\n''proxy-remote'$'\\n''console-write'$'\\n''console-read'$'\\n''network'"
        #expect(script.stdout.components(separatedBy: offered).count == 3, "grant and revoke complete every capability")
        // What the bash script runs: ---completion PATH -- ARGUMENT WORD-INDEX CURSOR-INDEX WORDS...
        func complete(_ path: [String], _ argument: String, _ words: [String]) throws -> [String] {
            let r = try run(["---completion"] + path + ["--", argument, "\(words.count - 1)", "\(words.last?.count ?? 0)"] + words)
            #expect(r.status == 0, "\(r.stderr)")
            return r.stdout.split(separator: "\n").map(String.init)
        }
        let located = ["--plugins", f.plugins, "--state", f.state]
        #expect(try complete(["plugins", "enable"], "positional@0", ["keel", "plugins", "enable"] + located + [""]) == ["greeter", "hello"])
        #expect(try complete(["plugins", "enable"], "positional@0", ["keel", "plugins", "enable"] + located + ["he"]) == ["hello"])
        #expect(try complete(["plugins", "enable"], "--tenant", ["keel", "plugins", "enable", "hello"] + located + ["--tenant", "a"]) == ["acme"])
        #expect(try complete(["tenants", "add-member"], "positional@2", ["keel", "tenants", "add-member", "acme", "alice"] + located + [""])
                == ["admin", "editor"])
        #expect(try complete(["roles", "grant"], "positional@1", ["keel", "roles", "grant", "editor"] + located + ["greeter."])
                == ["greeter.greetings:*", "greeter.greetings:send", "greeter.greetings:view"])
    }

    @Test("keel serve whose stdout reader went away (| head -1) stops on SIGTERM as usual: no crash, status 0")
    func serveOutlivesClosedStdout() throws {
        let f = KernelFixture()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: keel)
        process.arguments = ["serve", "--port", "0", "--no-watch", "--plugins", f.plugins, "--state", f.state]
        process.environment = ProcessInfo.processInfo.environment.merging(["KEEL_ADMIN_TOKEN": ServerProcess.token]) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let errors = LockedText()
        try process.run()
        let drain = PipeDrain(err.fileHandleForReading, into: errors)
        // Read up to the line with the port, as `| grep -m1 listening` does, then close the pipe's only reader.
        var seen = Data()
        let reader = out.fileHandleForReading
        while !String(decoding: seen, as: UTF8.self).contains("listening on") {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            seen += chunk
        }
        #expect(String(decoding: seen, as: UTF8.self).contains("listening on"))
        try reader.close()
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        drain.wait(seconds: 10)
        #expect(process.terminationReason == .exit && process.terminationStatus == 0,
                "keel serve ended by \(process.terminationReason == .exit ? "status" : "signal") \(process.terminationStatus): \(errors.value)")
        #expect(!errors.value.contains("Fatal error"), "\(errors.value)")
        #expect(!FileManager.default.fileExists(atPath: f.state + ".crash"), "a crash was recorded")
    }

    @Test("a --plugins folder that does not exist, on a state with plugins enabled: keel serve refuses in one line and makes nothing")
    func servePluginFolderTypo() throws {
        let (f, common) = try examples()
        #expect(try run(["plugins", "enable", "hello"] + common).status == 0)
        let typo = f.plugins + "-typo"
        let r = try run(["serve", "--port", "0", "--plugins", typo, "--state", f.state], environment: ["KEEL_ADMIN_TOKEN": ServerProcess.token])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr == "keel: error: \(typo): no such plugin folder, but the state \(f.state) has 1 plugin(s) enabled (hello), last found in \(f.plugins); pass --plugins with their folder, or make this one (mkdir) to serve without them\n", "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: typo))
        // Nothing recorded: hello is still enabled and not missing.
        let listed = try run(["plugins", "list"] + common)
        #expect(listed.stdout.contains("hello") && !listed.stdout.contains("missing"), "\(listed.stdout)")
        // A new state starts with the folder made, as before.
        let fresh = KernelFixture()
        let server = try ServerProcess(plugins: fresh.plugins + "/new", state: fresh.state, extraArguments: ["--no-watch"])
        #expect(server.stop() == 0)
    }

    @Test("beside a running server the CLI acts on the server's plugin folder: without --plugins from any folder; another --plugins or $KEEL_PLUGINS_DIR is refused in one line and changes nothing")
    func cliBesideServerFolder() async throws {
        let (f, _) = try examples()
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        let other = TestEnvironment.makeTemporaryDirectory("other-plugins")
        for (arguments, environment) in [(["--plugins", other], [String: String]()), ([], ["KEEL_PLUGINS_DIR": other])] {
            let refused = try run(["plugins", "enable", "hello", "--state", f.state] + arguments, environment: environment)
            #expect(refused.status == 1)
            #expect(refused.stderr.hasPrefix("keel: error: --plugins \(other): the keel server on \(f.state) (pid ")
                    && refused.stderr.hasSuffix(" serves the plugin folder \(f.plugins), and this command goes through it; leave --plugins out (and $KEEL_PLUGINS_DIR), give that folder, or stop the server to use \(other)\n")
                    && refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
        }
        let info = try await server.request("GET", "/api/v1/plugins/hello", admin: true)
        #expect((info.json as? [String: Any])?["enabled"] as? Bool == false, "\(info.text)")
        // The same folder spelled another way is the server's.
        let same = try run(["plugins", "enable", "hello", "--state", f.state, "--plugins", f.plugins + "/./"])
        #expect(same.status == 0, "\(same.stderr)")
        // No --plugins, from another folder: the server's folder, not ./plugins there.
        let elsewhere = try run(["plugins", "config", "nosuch", "--state", f.state], in: other)
        #expect(elsewhere.stderr == "keel: error: no plugin \"nosuch\" in \(f.plugins)\n", "\(elsewhere.stderr)")
        #expect(!FileManager.default.fileExists(atPath: other + "/plugins"))
        // Stopped: the CLI's own default again.
        #expect(server.stop() == 0)
        let alone = try run(["plugins", "config", "nosuch", "--state", f.state], in: other)
        #expect(alone.stderr == "keel: error: no plugin \"nosuch\" in plugins\n", "\(alone.stderr)")
    }

    @Test("grant to a plugin whose plugin.yaml is broken names the file and the fault, not a missing plugin")
    func grantBrokenManifest() throws {
        let (f, common) = try examples()
        try FileManager.default.createDirectory(atPath: f.plugins + "/broken", withIntermediateDirectories: true)
        try "id: broken\nname: [\n".write(toFile: f.plugins + "/broken/plugin.yaml", atomically: true, encoding: .utf8)
        let r = try run(["plugins", "grant", "broken", "authorize"] + common)
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("keel: error: \(f.plugins)/broken/plugin.yaml:2: not valid YAML") && r.stderr.split(separator: "\n").count == 1,
                "\(r.stderr)")
    }

    @Test("reload of a disabled plugin says nothing was loaded; of one whose bundle cannot load, fails with the reason")
    func reloadDisabled() throws {
        let (f, common) = try examples()
        let r = try run(["plugins", "reload", "hello"] + common)
        #expect(r.status == 0 && r.stdout == "hello is disabled: nothing was loaded (`keel plugins enable hello` loads its current build)\n",
                "\(r.stdout)\(r.stderr)")
        try FileManager.default.createDirectory(atPath: f.plugins + "/broken", withIntermediateDirectories: true)
        try "id: broken\nname: [\n".write(toFile: f.plugins + "/broken/plugin.yaml", atomically: true, encoding: .utf8)
        let broken = try run(["plugins", "reload", "broken"] + common)
        #expect(broken.status == 1 && broken.stderr.hasPrefix("keel: error: broken is disabled, and its current build cannot be loaded: ")
                && broken.stderr.contains("plugin.yaml:2: not valid YAML"), "\(broken.stdout)\(broken.stderr)")
        #expect(try run(["plugins", "enable", "hello"] + common).status == 0)
        let enabled = try run(["plugins", "reload", "hello"] + common)
        #expect(enabled.status == 0 && enabled.stdout.hasPrefix("hello 1.0.0: its current build loads and activates, but no server runs"),
                "\(enabled.stdout)\(enabled.stderr)")
        // Its library moved away under a running server: the reload fails, and the failure is in its history like
        // any other.
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let library = f.plugins + "/hello-c/libhello-c.so"
        #expect(rename(library, library + ".away") == 0)
        let gone = try run(["plugins", "reload", "hello"] + common)
        #expect(gone.status == 1, "\(gone.stdout)\(gone.stderr)")
        let history = try run(["plugins", "history", "hello", "--json"] + common)
        let last = (try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]])?.last
        #expect(last?["outcome"] as? String == "failed" && (last?["detail"] as? String)?.contains("libhello-c.so") == true, "\(history.stdout)")
    }

    @Test("a plugin.yaml problem is logged once: a broken one of an enabled plugin at start, an unknown key on a hot reload")
    func problemsLoggedOnce() throws {
        let (f, common) = try examples()
        #expect(try run(["plugins", "enable", "hello"] + common).status == 0)
        try TestEnvironment.grantSensitive("greeter", plugins: f.plugins, state: f.state)
        #expect(try run(["plugins", "enable", "greeter"] + common).status == 0)
        let hello = f.plugins + "/hello-c/plugin.yaml", greeter = f.plugins + "/greeter-swift/plugin.yaml"
        let good = try String(contentsOfFile: hello, encoding: .utf8)
        try (good + "routes: [\n").write(toFile: hello, atomically: true, encoding: .utf8)
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        // A new build of greeter with a misspelt key: the watcher reloads it (a warning, not a failure).
        let manifest = try String(contentsOfFile: greeter, encoding: .utf8)
        try (manifest + "capabilites: [routes]\n").write(toFile: greeter, atomically: true, encoding: .utf8)
        let deadline = Date().addingTimeInterval(30)
        while !server.errors.value.contains("capabilites") && Date() < deadline { usleep(50_000) }
        usleep(1_000_000)  // any second line of the same reload would be out by now
        server.stop()
        let lines = server.errors.value.split(separator: "\n")
        // (The guard's own line, that hello's hooks are not running and every request is denied, names it too.)
        #expect(lines.filter { $0.contains("not valid YAML") && !$0.contains("a guard") }.count == 1, "\(server.errors.value)")
        #expect(lines.filter { $0.contains("capabilites") }.count == 1, "\(server.errors.value)")
    }

    @Test("a negative number given as its own word (--idle-timeout -5) is named as such, with the = form to write")
    func negativeOptionValue() throws {
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        let r = try run(["serve", "--idle-timeout", "-5"] + common)
        #expect(r.status == 64)
        #expect(r.stderr == "keel: error: --idle-timeout -5: a value starting with \"-\" is read as an option; write --idle-timeout=-5\n", "\(r.stderr)")
        let joined = try run(["serve", "--idle-timeout=-5"] + common)
        #expect(joined.status == 64 && joined.stderr.contains("--idle-timeout and --body-timeout take seconds between 0 and 86400"), "\(joined.stderr)")
    }
}
