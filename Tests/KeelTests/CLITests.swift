// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelState
import Testing

@Suite("the keel command", .scheduled)
struct CLITests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    @Test("a refused registration is named with its fix in the error and the stored reason, also for a plugin whose SDK turns it into an error of its own (Swift)")
    func refusalThroughSDK() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let common = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "hello"] + common).status == 0)
        // greeter (Swift; it needs hello, now running) asks for authorize, not granted.
        let swift = try TestEnvironment.run(keel, ["plugins", "enable", "greeter"] + common)
        #expect(swift.status == 1 && swift.stderr.contains("was not granted (grant it with `keel plugins grant greeter authorize`)"), "\(swift.stderr)")
        let listed = try TestEnvironment.run(keel, ["plugins", "list", "--json"] + common)
        let greeter = (try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])?.first { $0["id"] as? String == "greeter" }
        #expect((greeter?["reason"] as? String)?.contains("grant it with `keel plugins grant greeter authorize`") == true, "\(listed.stdout)")
    }

    @Test("a grant starts the enabled plugin that lacked it; a revoke it cannot run without stops it, says so and succeeds; history names why a plugin never loaded")
    func grantStartsRevokeStops() throws {
        let f = KernelFixture()
        try f.fixtureBundle("gate", defines: ["AUTHZ_MODE=1"], capabilities: ["routes", "authorize"])
        _ = try TestEnvironment.makeBundle(in: f.plugins, folder: "typo", manifest: "id: typo\nversion: [1\n", library: nil)
        let common = ["--plugins", f.plugins, "--state", f.state]
        let refused = try TestEnvironment.run(keel, ["plugins", "enable", "gate"] + common)
        #expect(refused.status == 1 && refused.stderr.contains("grant it with `keel plugins grant gate authorize`"), "\(refused.stderr)")
        let granted = try TestEnvironment.run(keel, ["plugins", "grant", "gate", "authorize"] + common)
        #expect(granted.status == 0 && granted.stdout == "granted authorize to gate: gate starts now (it activated here; `keel serve` runs it)\n",
                "\(granted.stdout) \(granted.stderr)")
        let listed = try TestEnvironment.run(keel, ["plugins", "list"] + common)
        #expect(listed.stdout.contains("gate") && listed.stdout.contains("enabled"), "\(listed.stdout)")
        // The same through a running server, which takes the plugin down on the revoke and up on the grant.
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let revoked = try TestEnvironment.run(keel, ["plugins", "revoke", "gate", "authorize"] + common)
        #expect(revoked.status == 0 && revoked.stdout.hasPrefix("revoked authorize from gate: gate cannot run without it and was stopped (")
                && revoked.stdout.hasSuffix("granting it again starts it; it has auth hooks, so every request is denied until it runs again or is disabled\n"),
                "\(revoked.stdout) \(revoked.stderr)")
        #expect(try TestEnvironment.run(keel, ["plugins", "grant", "gate", "authorize"] + common).stdout == "granted authorize to gate: gate started\n")
        // A revoke of what it never held changes nothing, and says so.
        let nothing = try TestEnvironment.run(keel, ["plugins", "revoke", "gate", "authenticate"] + common)
        #expect(nothing.status == 0 && nothing.stdout == "revoked authenticate from gate: it held no such grant; nothing changed\n", "\(nothing.stdout)")
        // A grant to a plugin that runs changes its grants only.
        let again = try TestEnvironment.run(keel, ["plugins", "grant", "gate", "authorize"] + common)
        #expect(again.status == 0 && again.stdout == "granted authorize to gate\n", "\(again.stdout)")
        // A hook from a plugin whose plugin.yaml does not ask for the capability: asking comes first (a grant
        // alone would be refused: "does not ask for").
        try f.fixtureBundle("unasked", defines: ["AUTH_MODE=1"], capabilities: ["routes"])
        let unasked = try TestEnvironment.run(keel, ["plugins", "enable", "unasked"] + common)
        #expect(unasked.status == 1 && unasked.stderr.contains("capability \"authenticate\" was not granted (ask for it under capabilities: in "
                                                               + "plugin.yaml, then grant it with `keel plugins grant unasked authenticate`)"), "\(unasked.stderr)")
        // A bundle whose plugin.yaml never parsed: its history says why it never loaded.
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "typo"] + common).status == 1)
        let history = try TestEnvironment.run(keel, ["plugins", "history", "typo"] + common)
        #expect(history.status == 0 && history.stdout.hasPrefix("typo: never loaded: ") && history.stdout.contains("plugin.yaml"), "\(history.stdout) \(history.stderr)")
    }

    @Test("enable, list --json and disable on real bundles, state kept between runs")
    func lifecycle() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let common = ["--plugins", f.plugins, "--state", f.state]
        // Without the grant, hello's authenticate hook is refused and its activation fails, saying what to do.
        let ungranted = try TestEnvironment.run(keel, ["plugins", "enable", "hello"] + common)
        #expect(ungranted.status == 1)
        #expect(ungranted.stderr.contains("capability \"authenticate\" was not granted (grant it with `keel plugins grant hello authenticate`)"), "\(ungranted.stderr)")
        let grant = try TestEnvironment.run(keel, ["plugins", "grant", "hello", "authenticate"] + common)
        #expect(grant.status == 0 && grant.stdout == "granted authenticate to hello: hello starts now (it activated here; `keel serve` runs it)\n",
                "\(grant.stdout) \(grant.stderr)")
        let pointless = try TestEnvironment.run(keel, ["plugins", "grant", "hello", "authorize"] + common)
        #expect(pointless.status == 1 && pointless.stderr.contains("does not ask for \"authorize\""))
        let enable = try TestEnvironment.run(keel, ["plugins", "enable", "hello"] + common)
        #expect(enable.status == 0, "\(enable.stderr)")
        #expect(enable.stdout == "enabled hello 1.0.0: 1 route(s), 2 menu entries, 1 auth hook(s)\n")

        let list = try TestEnvironment.run(keel, ["plugins", "list", "--json"] + common)
        #expect(list.status == 0)
        let plugins = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]
        let hello = plugins?.first { $0["id"] as? String == "hello" }
        #expect(hello?["status"] as? String == "enabled")
        #expect(plugins?.first { $0["id"] as? String == "greeter" }?["status"] as? String == "installed")
        // Without a server, listing loads nothing: no plugin code runs, no generation is added, nothing is shown as
        // registered, and a stored failure keeps its reason.
        #expect(hello?["activity"] as? String == "not loaded" && hello?["routes"] as? [String] == [], "\(list.stdout)")
        let generations = try StateStore(path: f.state).lastGeneration("hello")
        let again = try TestEnvironment.run(keel, ["plugins", "list"] + common)
        #expect(again.stdout.contains("hello 1.0.0  enabled (not loaded)") && !again.stdout.contains("routes:"), "\(again.stdout)")
        #expect(again.stdout.contains("(no server runs on this state: nothing is loaded; routes and hooks show while `keel serve` runs)"))
        _ = try TestEnvironment.run(keel, ["services", "list"] + common)
        #expect(try StateStore(path: f.state).lastGeneration("hello") == generations, "list and services list loaded hello")

        let disable = try TestEnvironment.run(keel, ["plugins", "disable", "hello"] + common)
        #expect(disable.status == 0 && disable.stdout == "disabled hello\n")
        let twice = try TestEnvironment.run(keel, ["plugins", "disable", "hello"] + common)
        #expect(twice.status == 0 && twice.stdout == "hello: it was not enabled; nothing changed\n", "\(twice.stdout)")
        let text = try TestEnvironment.run(keel, ["plugins", "list"] + common)
        #expect(text.stdout.contains("hello 1.0.0  disabled"))
    }

    @Test("a registration the host refuses while activate goes on regardless is said by enable and inspect, not only in the server's log")
    func ignoredRefusal() throws {
        let f = KernelFixture()
        try f.fixtureBundle("careless", defines: ["IGNORES_REFUSAL"], capabilities: ["routes"])
        // The path the plugin gave is quoted with its escape written out: nothing of the plugin's drives the terminal.
        let refused = "route: \"no-slash\\u{1B}[2J\" must start with '/'"
        // Until 2026-12-07 both said nothing of it: `routes: none` or `0 route(s)`, exit 0, the reason in the log alone.
        let inspect = try TestEnvironment.run(keel, ["plugins", "inspect", f.plugins + "/careless"])
        #expect(inspect.status == 0 && inspect.stderr.contains("activate went on past a registration the host refused (it would run without it): \(refused)"),
                "\(inspect.stdout)\(inspect.stderr)")
        let enable = try TestEnvironment.run(keel, ["plugins", "enable", "careless", "--plugins", f.plugins, "--state", f.state])
        #expect(enable.status == 0 && enable.stdout.contains("careless: its activate went on past a registration the host refused (it runs without it): \(refused)"),
                "\(enable.stdout)\(enable.stderr)")
        #expect(!(enable.stdout + inspect.stderr).contains("\u{1B}"), "a raw escape reached the terminal")
        // The conformance run fails it (it passed all its checks until 2026-12-07).
        let validate = try TestEnvironment.run(keel, ["plugins", "validate", f.plugins + "/careless"])
        #expect(validate.status == 1 && validate.stdout.contains("FAIL activate and deactivate 10 times: round 1: activate went on past a registration the host refused (it would run without it): \(refused)"),
                "\(validate.stdout)\(validate.stderr)")
        #expect(!validate.stdout.contains("\u{1B}"), "a raw escape reached the terminal")
    }

    @Test("routes that are legal but likely mistakes are said by inspect and enable, not refused")
    func routeMistakes() throws {
        let f = KernelFixture()
        // The three mistakes of a newcomer's first routes: another router's parameter syntax, the plugin's own prefix
        // written out, a parameter named twice. Each is served as registered (a 1.0 plugin may rely on it).
        let cases = [("braces", "/things/{id}", "route GET /things/{id}: \"{id}\" is matched as it is written; a path parameter is written \":id\""),
                     ("doubled", "/ext/doubled/hits/:n", "route GET /ext/doubled/hits/:n: it is served at /ext/doubled/ext/doubled/hits/:n: every route is below /ext/doubled already (register \"/hits/:n\")"),
                     ("twice", "/a/:id/b/:id", "route GET /a/:id/b/:id: the parameter \":id\" is named twice (the handler sees one of them)"),
                     ("esc", "/x/{a\\033[2J}", "route GET /x/{a\\u{1B}[2J}: \"{a\\u{1B}[2J}\" is matched as it is written"),
                     ("fine", "/items/:id", "")]
        for (id, path, _) in cases { try f.fixtureBundle(id, defines: ["ROUTE_PATH=\"\(path)\""], capabilities: ["routes"]) }
        for (id, path, said) in cases {
            let inspect = try TestEnvironment.run(keel, ["plugins", "inspect", f.plugins + "/" + id])
            let shown = path.replacingOccurrences(of: "\\033", with: "\\u{1B}")
            #expect(inspect.status == 0 && inspect.stdout.contains("GET /ext/\(id)\(shown)"), "\(inspect.stdout)\(inspect.stderr)")
            let enable = try TestEnvironment.run(keel, ["plugins", "enable", id, "--plugins", f.plugins, "--state", f.state])
            #expect(enable.status == 0 && enable.stdout.hasPrefix("enabled \(id) 1.0.0: 1 route(s)"), "\(enable.stdout)\(enable.stderr)")
            // A hostile path's control characters are written out, never sent to the operator's terminal.
            #expect(!(inspect.stdout + inspect.stderr + enable.stdout).contains("\u{1B}"), "\(id): a raw escape reached the terminal")
            if said.isEmpty {
                #expect(inspect.stderr.isEmpty && !enable.stdout.contains("route GET"), "\(id): \(inspect.stderr)\(enable.stdout)")
            } else {
                #expect(inspect.stderr.contains(said), "\(id): \(inspect.stderr)")
                #expect(enable.stdout.contains("\(id): \(said)"), "\(id): \(enable.stdout)")
            }
        }
    }

    @Test("a plugin that refuses to start without its configuration: configuring it starts it; inspect and validate take --config")
    func configurationStartsAFailedPlugin() throws {
        let f = KernelFixture()
        try f.fixtureBundle("needy", defines: ["CONFIG_ECHO", "CONFIG_REQUIRED"], capabilities: ["routes"])
        let common = ["--plugins", f.plugins, "--state", f.state]
        let enable = try TestEnvironment.run(keel, ["plugins", "enable", "needy"] + common)
        #expect(enable.status == 1 && enable.stderr.contains("no configuration: it needs one") && enable.stderr.contains("it stays wanted"),
                "\(enable.stdout)\(enable.stderr)")
        // Until 2026-12-07 the probe's trial activation had no configuration: a stored one changed nothing, and an
        // enable after it failed the same way for ever. Now the configuration starts the plugin that stayed wanted.
        let file = f.plugins + "/../needy.yaml"
        try "greeting: hello\n".write(toFile: file, atomically: true, encoding: .utf8)
        let configured = try TestEnvironment.run(keel, ["plugins", "config", "needy", file] + common)
        #expect(configured.status == 0 && configured.stdout.hasPrefix("configured needy: needy starts now"), "\(configured.stdout)\(configured.stderr)")
        let record = try StateStore(path: f.state).plugin("needy")
        #expect(record?.status != .failed && record?.reason == nil, "\(String(describing: record))")
        let history = try TestEnvironment.run(keel, ["plugins", "history", "needy"] + common)
        #expect(history.stdout.split(separator: "\n").last?.contains("activated") == true, "\(history.stdout)")

        // inspect and validate run the plugin without a configuration unless given one.
        let bare = try TestEnvironment.run(keel, ["plugins", "inspect", f.plugins + "/needy"])
        #expect(bare.status == 1 && bare.stderr.contains("no configuration: it needs one") && bare.stderr.contains("--config FILE"), "\(bare.stderr)")
        let inspect = try TestEnvironment.run(keel, ["plugins", "inspect", f.plugins + "/needy", "--config", file])
        #expect(inspect.status == 0 && inspect.stdout.contains("routes:       GET /ext/needy/ping"), "\(inspect.stdout)\(inspect.stderr)")
        let validate = try TestEnvironment.run(keel, ["plugins", "validate", f.plugins + "/needy", "--config", file])
        #expect(validate.status == 0 && validate.stdout.contains("all 13 checks passed"), "\(validate.stdout)\(validate.stderr)")
        // A schema the configuration must meet: checked before any code runs, naming the file and the key.
        try "type: object\nrequired: [greeting]\nproperties:\n  greeting: {type: integer}\n".write(toFile: f.plugins + "/needy/config.schema.yaml", atomically: true, encoding: .utf8)
        let wrong = try TestEnvironment.run(keel, ["plugins", "validate", f.plugins + "/needy", "--config", file])
        #expect(wrong.status == 1 && wrong.stderr.hasPrefix("keel: error: \(file): key \"greeting\"") && wrong.stdout.isEmpty, "\(wrong.stdout)\(wrong.stderr)")
        let none = try TestEnvironment.run(keel, ["plugins", "validate", f.plugins + "/needy"])
        #expect(none.status == 1 && none.stderr.contains("plugin \"needy\" needs a configuration to run") && none.stderr.contains("pass one with --config FILE"),
                "\(none.stdout)\(none.stderr)")
    }

    @Test("a failure is one line on stderr and exit code 1")
    func failures() throws {
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        let unknown = try TestEnvironment.run(keel, ["plugins", "enable", "ghost"] + common)
        #expect(unknown.status == 1)
        #expect(unknown.stderr == "keel: error: no plugin \"ghost\" in the plugin folder \(f.plugins)\n", "\(unknown.stderr)")
        // Several ids: one after another, a failure said on its own line and the rest still done, exit status 1.
        try TestEnvironment.stageExamples(into: f.plugins)
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        let several = try TestEnvironment.run(keel, ["plugins", "enable", "ghost", "hello"] + common)
        #expect(several.status == 1 && several.stderr == unknown.stderr, "\(several.stderr)")
        #expect(several.stdout.hasPrefix("enabled hello 1.0.0: "), "\(several.stdout)")
        #expect(try StateStore(path: f.state).plugin("hello")?.enabled == true)
        let both = try TestEnvironment.run(keel, ["plugins", "disable", "hello", "ghost"] + common)
        #expect(both.status == 1 && both.stdout == "disabled hello\n" && both.stderr.hasPrefix("keel: error: no plugin \"ghost\""), "\(both.stdout)\(both.stderr)")
        #expect(try StateStore(path: f.state).plugin("hello")?.enabled == false)
        let nowhere = TestEnvironment.makeTemporaryDirectory("nowhere") + "/plugins"
        let lost = try TestEnvironment.run(keel, ["plugins", "enable", "hello", "--plugins", nowhere, "--state", nowhere + "-state.db"])
        #expect(lost.status == 1)
        #expect(lost.stderr == "keel: error: no plugin \"hello\" in the plugin folder: the plugin folder \(nowhere) does not exist\n")

        let junk = TestEnvironment.makeTemporaryDirectory("junk") + "/libjunk.so"
        try "not a library".write(toFile: junk, atomically: true, encoding: .utf8)
        let inspect = try TestEnvironment.run(keel, ["plugins", "inspect", junk])
        #expect(inspect.status == 1)
        #expect(inspect.stderr == "keel: error: \(junk): not an ELF shared object (no ELF magic number)\n")
        #expect(inspect.stdout.isEmpty)
    }

    @Test("an argument that is not UTF-8 is refused as bad usage (64), naming its position and first bad byte, before anything runs; it reached commands as U+FFFD before")
    func nonUTF8Argument() throws {
        let f = KernelFixture()
        // A String cannot hold the bytes: the shell's printf makes them.
        let said = try TestEnvironment.run("/bin/sh", ["-c", #"exec "$0" call hello greet "$(printf 'caf\351')" --state "$1" --plugins "$2""#,
                                                        keel, f.state, f.plugins])
        #expect(said.status == 64, "\(said.status) \(said.stderr)")
        #expect(said.stderr == "keel: error: argument 4 is not UTF-8 text (its byte 4 is 0xE9); Keel reads its arguments and KEEL_* variables as UTF-8\n",
                "\(said.stderr)")
        #expect(!FileManager.default.fileExists(atPath: f.state), "the state was made before the arguments were read")
        // A whole multi-byte letter is text; a truncated one is not.
        let fine = try TestEnvironment.run("/bin/sh", ["-c", #"exec "$0" plugins list --plugins "$(printf '/tmp/caf\303\251-none')""#, keel])
        #expect(fine.status != 64 && !fine.stderr.contains("not UTF-8"), "\(fine.stderr)")
        let cut = try TestEnvironment.run("/bin/sh", ["-c", #"exec "$0" plugins list --plugins "$(printf '\303')""#, keel])
        #expect(cut.status == 64 && cut.stderr.contains("argument 4 (after --plugins) is not UTF-8 text (its byte 1 is 0xC3)"), "\(cut.stderr)")
        let joined = try TestEnvironment.run("/bin/sh", ["-c", #"exec "$0" plugins list "--plugins=$(printf 'x\351')""#, keel])
        #expect(joined.status == 64 && joined.stderr.contains("argument 3 (the value of --plugins) is not UTF-8 text (its byte 12 is 0xE9)"),
                "\(joined.stderr)")
        // A KEEL_* variable too (KEEL_STATE's path would have been another file's); other variables are not Keel's.
        let variable = try TestEnvironment.run("/bin/sh", ["-c", #"KEEL_STATE="$(printf '/tmp/s\351.db')" OTHER="$(printf '\351')" exec "$0" plugins list"#, keel])
        #expect(variable.status == 64 && variable.stderr.contains("the environment variable KEEL_STATE is not UTF-8 text (its byte 7 is 0xE9)"),
                "\(variable.stderr)")
        #expect(try TestEnvironment.run("/bin/sh", ["-c", #"OTHER="$(printf '\351')" exec "$0" --version"#, keel]).status == 0)
    }

    @Test("keel serve on a state file that is not there makes it and says so in its log, once started")
    func serveSaysNewState() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("fresh-serve")
        try FileManager.default.createDirectory(atPath: dir + "/plugins", withIntermediateDirectories: true)
        let server = try ServerProcess(plugins: dir + "/plugins", state: dir + "/typo.db", extraArguments: ["--no-watch"])
        defer { server.stop() }
        #expect(try await server.request("GET", "/healthz").status == 200)
        #expect(server.errors.value.contains("keel: warning: \(dir)/typo.db did not exist: a new state was made there"), "\(server.errors.value)")
    }

    @Test("a read-only command on a mistyped --state or --plugins says so and creates nothing")
    func mistypedPaths() throws {
        let root = TestEnvironment.makeTemporaryDirectory("typo")
        let state = root + "/missing/state.db", plugins = root + "/no-plugins"
        let reads = [["plugins", "list"], ["audit"], ["services", "list"], ["tenants", "list"], ["roles", "list"], ["repo", "list"],
                     ["trust", "list"], ["commands"], ["plugins", "history", "hello"]]
        for command in reads {
            let result = try TestEnvironment.run(keel, command + ["--plugins", plugins, "--state", state])
            #expect(result.status == 1, "\(command)")
            #expect(result.stderr == "keel: error: \(state): no state file here, and its folder \(root)/missing does not exist " +
                    "(check --state or $KEEL_STATE; `keel plugins enable` or `keel serve` makes a new state)\n", "\(command)")
        }
        #expect(!FileManager.default.fileExists(atPath: root + "/missing"), "nothing was created")
        // A URL other than postgres:// is refused by a command that would make the state, in the working folder too.
        for url in ["sqlite:///tmp/keel-typo.db", "postgres:/keel"] {
            let made = try TestEnvironment.run("/bin/sh", ["-c", "cd \"$1\" && exec \"$0\" plugins enable hello --plugins \"$2\" --state \"$3\"",
                                                            keel, root, plugins, url])
            #expect(made.status == 1 && made.stderr.hasPrefix("keel: error: \(url): a URL (") && made.stderr.contains("not a file path"),
                    "\(made.stderr)")
            // So by a command that only reads (it said "no state file here, and its folder postgres: does not exist").
            let read = try TestEnvironment.run("/bin/sh", ["-c", "cd \"$1\" && exec \"$0\" plugins list --plugins \"$2\" --state \"$3\"",
                                                            keel, root, plugins, url])
            #expect(read.status == 1 && read.stderr == made.stderr, "\(read.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: root + "/sqlite:") && !FileManager.default.fileExists(atPath: root + "/postgres:"))
        // A command that writes to a state that is not there makes it (a choice may precede the plugins), and says so:
        // a mistyped name would otherwise change a new state without a word, the real one untouched.
        let written = try TestEnvironment.run(keel, ["tenants", "create", "acme", "--plugins", plugins, "--state", root + "/typo.db"])
        #expect(written.status == 0 && written.stderr == "keel: note: \(root)/typo.db did not exist: a new state was made there (check --state or $KEEL_STATE if you meant another)\n", "\(written.stderr)")
        // A missing state in an existing folder is shown as a new host would be, said on stderr, and not made.
        let note = "keel: note: \(root)/state.db does not exist: shown as a new host would be, and nothing was created " +
            "(check --state or $KEEL_STATE; `keel plugins enable` or `keel serve` makes a new state)\n"
        let fresh = try TestEnvironment.run(keel, ["plugins", "list", "--plugins", plugins, "--state", root + "/state.db"])
        #expect(fresh.status == 0)
        #expect(fresh.stdout == "no plugins found: the plugin folder \(plugins) does not exist (--plugins or $KEEL_PLUGINS_DIR)\n")
        #expect(fresh.stderr == note)
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let listed = try TestEnvironment.run(keel, ["plugins", "list", "--plugins", f.plugins, "--state", root + "/state.db"])
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(listed.stdout.contains("hello"), "\(listed.stdout)")
        #expect(listed.stderr == note)
        for command in reads.dropFirst() {
            let read = try TestEnvironment.run(keel, command + ["--plugins", f.plugins, "--state", root + "/state.db"])
            #expect(read.status == (command.contains("history") ? 1 : 0), "\(command): \(read.stderr)")
            #expect(read.stderr.hasPrefix(note), "\(command)")
        }
        #expect(!FileManager.default.fileExists(atPath: root + "/state.db"), "a read made no state")
        #expect((try FileManager.default.contentsOfDirectory(atPath: root)).filter { $0.hasPrefix("state.db") }.isEmpty)
    }

    @Test("inspect prints id, version, ABI and capabilities of a bundle, of a bare .so, and of a plugin named by its id")
    func inspect() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let bundle = try TestEnvironment.run(keel, ["plugins", "inspect", f.plugins + "/greeter-swift"])
        #expect(bundle.status == 0, "\(bundle.stderr)")
        #expect(bundle.stdout.contains("id:           greeter  (Greeter (Swift))"))
        #expect(bundle.stdout.contains("abi:          1.1.0"))
        #expect(bundle.stdout.contains("capabilities: authorize, menus, routes"))
        #expect(bundle.stdout.contains("dependencies: hello ^1.0"))
        #expect(bundle.stdout.contains("runs:         eager, in-process"), "\(bundle.stdout)")
        // When and where it runs, as plugin.yaml says: lazy with its idle time-out, in a worker.
        try f.fixtureBundle("sleepy", capabilities: ["routes"], extra: "activation: lazy\nidle-timeout: 90s\nisolation: process\n")
        let lazy = try TestEnvironment.run(keel, ["plugins", "inspect", f.plugins + "/sleepy"])
        #expect(lazy.stdout.contains("runs:         lazy, idle-timeout 90s, process"), "\(lazy.stdout) \(lazy.stderr)")
        let bare = try TestEnvironment.run(keel, ["plugins", "inspect", "--json", try TestEnvironment.builtLibrary("libhello-c.so")])
        let json = try JSONSerialization.jsonObject(with: Data(bare.stdout.utf8)) as? [String: Any]
        #expect(json?["id"] as? String == "hello")
        #expect(json?["activation"] == nil, "a bare library has no plugin.yaml to say")
        // What it provides (with its ranking) and consumes.
        let s = ServicesFixture()
        try s.provider("ranked", tag: "R", ranking: 10)
        try s.consumer("needy")
        let provider = try TestEnvironment.run(keel, ["plugins", "inspect", s.f.plugins + "/ranked"])
        #expect(provider.stdout.contains("provides:     test.echo/1 1.0.0, ranking 10\n"), "\(provider.stdout) \(provider.stderr)")
        let consumer = try TestEnvironment.run(keel, ["plugins", "inspect", s.f.plugins + "/needy"])
        #expect(consumer.stdout.contains("consumes:     test.echo/1 ^1\n"), "\(consumer.stdout) \(consumer.stderr)")
        #expect(json?["routes"] as? [String] == ["GET /ext/hello/greet/:name"])
        // A plugin's id, as `enable` takes it: the bundle in the plugins folder (its folder is named otherwise).
        let byID = try TestEnvironment.run(keel, ["plugins", "inspect", "greeter", "--plugins", f.plugins])
        #expect(byID.status == 0 && byID.stdout.contains("id:           greeter  (Greeter (Swift))"), "\(byID.stderr)")
        // Named by its id, it is a plugin of this host, where the operator may run it elsewhere (`plugins isolate`).
        #expect(byID.stdout.contains("runs:         eager, in-process (as plugin.yaml says; where it runs on this host: keel plugins list)\n"),
                "\(byID.stdout)")
        let nothing = try TestEnvironment.run(keel, ["plugins", "inspect", "greetr", "--plugins", f.plugins])
        #expect(nothing.status == 1 && nothing.stderr == "keel: error: greetr: no such file or folder, and no plugin \"greetr\" in \(f.plugins) (did you mean greeter?)\n",
                "\(nothing.stderr)")
    }

    @Test("serve loads the enabled plugins and stops cleanly on SIGTERM")
    func serve() throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let common = ["--plugins", f.plugins, "--state", f.state]
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "hello"] + common).status == 0)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: keel)
        process.arguments = ["serve", "--port", "0"] + common
        let out = Pipe()
        process.standardOutput = out
        process.standardError = Pipe()
        try process.run()
        let text = LockedText()
        let drain = PipeDrain(out.fileHandleForReading, into: text)
        let deadline = Date().addingTimeInterval(30)
        while !text.value.contains("press Ctrl-C") && Date() < deadline && process.isRunning { usleep(20_000) }
        #expect(text.value.contains("1 plugin(s) active [hello]"), "\(text.value)")
        process.terminate()
        let exitDeadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < exitDeadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL); Issue.record("serve ignored SIGTERM") }
        process.waitUntilExit()
        drain.wait()
        #expect(process.terminationStatus == 0)
        #expect(text.value.contains("received SIGTERM, shutting down"), "\(text.value)")
    }
}

@Suite("README", .scheduled)
struct ReadmeTests {
    @Test("the 5-minute C walk-through works as written")
    func walkthrough() async throws {
        let readme = try String(contentsOfFile: TestEnvironment.repository.path + "/README.md", encoding: .utf8)
        let section = try #require(readme.range(of: "## Your first plugin in C"))
        let rest = readme[section.upperBound...]
        let open = try #require(rest.range(of: "```sh\n"))
        let close = try #require(rest[open.upperBound...].range(of: "\n```\n"))
        let script = String(rest[open.upperBound..<close.lowerBound])

        // Run it verbatim in a scratch "checkout" that shares the real headers and build folder.
        let dir = TestEnvironment.makeTemporaryDirectory("walkthrough")
        try FileManager.default.createSymbolicLink(atPath: dir + "/PluginABI", withDestinationPath: TestEnvironment.repository.path + "/PluginABI")
        try FileManager.default.createDirectory(atPath: dir + "/.build", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/.build/debug", withDestinationPath: TestEnvironment.binPath)
        try ("set -e\n" + script).write(toFile: dir + "/walk.sh", atomically: true, encoding: .utf8)
        // A home of its own: the walk-through installs the SDK under ~/.local and makes the project in ~/counter.
        let home = TestEnvironment.makeTemporaryDirectory("home")
        let r = try TestEnvironment.run("/bin/bash", [dir + "/walk.sh"], environment: ["KEEL_PLUGINS_DIR": "", "KEEL_STATE": "", "HOME": home],
                                        currentDirectory: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("-I\(home)/.local/include") && !r.stdout.contains("PluginABI"), "built against the installed SDK: \(r.stdout)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/plugins/counter").sorted() == ["libcounter.so", "plugin.yaml"])
        #expect(r.stdout.contains("version:      0.1.0"), "the version is plugin.yaml's")
        #expect(r.stdout.contains("routes:       GET /ext/counter/hits, DELETE /ext/counter/hits"), "\(r.stdout)")
        #expect(r.stdout.contains("enabled counter 0.1.0: 2 route(s), 1 menu entry, 1 auth hook(s)"))
        #expect(r.stdout.contains("counter 0.1.0  enabled (not loaded)  — Hit counter"), "\(r.stdout)")
        #expect(r.stdout.contains("ok: GET /hits counts; an anonymous DELETE under /ext/counter/ is denied, the rest left to others"),
                "make test ran the walk-through's own test")
        // Served, as the README says: GET counts, an anonymous DELETE is the hook's 403, a path with no route 404.
        do {
            let server = try ServerProcess(plugins: dir + "/plugins", state: dir + "/.keel/state.db", extraArguments: ["--no-watch"])
            defer { server.stop() }
            #expect(try await server.request("GET", "/ext/counter/hits").text == "hits: 1\n")
            let denied = try await server.request("DELETE", "/ext/counter/hits")
            #expect(denied.status == 403 && denied.errorCode == "forbidden", "\(denied.status) \(denied.text)")
            #expect(try await server.request("GET", "/ext/counter/hits").text == "hits: 2\n", "the denied DELETE reset nothing")
            #expect(try await server.request("DELETE", "/ext/counter/nothing").status == 404)
            // A caller who is someone (here the operator, by the admin token) resets it.
            #expect(try await server.request("DELETE", "/ext/counter/hits", admin: true).status == 204)
            #expect(try await server.request("GET", "/ext/counter/hits").text == "hits: 1\n")
        }

        // The mistake the README shows gives the message it shows: a descriptor stating 0.1.0, plugin.yaml saying 0.2.0.
        let source = home + "/counter/src/plugin.c"
        let stated = try String(contentsOfFile: source, encoding: .utf8)
            .replacingOccurrences(of: #"KEEL_STR_EMPTY, KEEL_STR_EMPTY, 0, activate"#, with: #"KEEL_STR("counter"), KEEL_STR("0.1.0"), 0, activate"#)
        #expect(stated.contains(#"KEEL_STR("0.1.0")"#))
        try stated.write(toFile: source, atomically: true, encoding: .utf8)
        let rebuilt = try TestEnvironment.run("/usr/bin/env", ["make"], environment: ["PKG_CONFIG_PATH": home + "/.local/lib/pkgconfig"],
                                              currentDirectory: home + "/counter")
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        try FileManager.default.removeItem(atPath: dir + "/plugins/counter/libcounter.so")
        try FileManager.default.copyItem(atPath: home + "/counter/bundle/counter/libcounter.so", toPath: dir + "/plugins/counter/libcounter.so")
        let manifest = dir + "/plugins/counter/plugin.yaml"
        try String(contentsOfFile: manifest, encoding: .utf8).replacingOccurrences(of: "version: 0.1.0", with: "version: 0.2.0")
            .write(toFile: manifest, atomically: true, encoding: .utf8)
        let bad = try TestEnvironment.run(dir + "/.build/debug/keel", ["plugins", "enable", "counter"],
                                          environment: ["KEEL_PLUGINS_DIR": "", "KEEL_STATE": ""], currentDirectory: dir)
        #expect(bad.status == 1)
        #expect(readme.contains(bad.stderr.trimmingCharacters(in: .newlines)), "\(bad.stderr)")
    }
}

@Suite("keel plugins reload and history", .scheduled)
struct ReloadCLITests {
    @Test("reload and history from the command line, with and without a running server")
    func reloadAndHistory() async throws {
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel"
        let a = try TestEnvironment.buildFixture("cliA", ["PLUGIN_ID=\"cli\"", "TAG=\"A\""])
        let b = try TestEnvironment.buildFixture("cliB", ["PLUGIN_ID=\"cli\"", "TAG=\"B\""])
        let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: "cli",
                                                    manifest: TestEnvironment.manifest(id: "cli", library: "libcli.so"),
                                                    library: a, libraryName: "libcli.so")
        let common = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "cli"] + common).status == 0)
        let offline = try TestEnvironment.run(keel, ["plugins", "reload", "cli"] + common)
        // No server: the build is tried, and nothing is said to be reloaded (until 2026-12-07: "reloaded cli").
        #expect(offline.status == 0 && offline.stdout == "cli 1.0.0: its current build loads and activates, but no server runs on this state: "
                + "nothing was reloaded (the next `keel serve` loads it)\n", "\(offline.stdout)\(offline.stderr)")

        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        try install(b, into: bundle, as: "libcli.so")
        let live = try TestEnvironment.run(keel, ["plugins", "reload", "cli"] + common)
        #expect(live.status == 0, "\(live.stderr)")
        #expect(try await server.request("GET", "/ext/cli/ping").text.contains("tag=B"))

        let history = try TestEnvironment.run(keel, ["plugins", "history", "cli"] + common)
        let lines = history.stdout.split(separator: "\n")
        #expect(lines.count >= 5, "\(history.stdout)")
        #expect(lines.contains { $0.contains("activated  replaced generation") && $0.hasSuffix(": reload asked for") }, "\(history.stdout)")
        #expect(lines.first?.contains("g1  1.0.0") == true)
        let unknown = try TestEnvironment.run(keel, ["plugins", "history", "ghost"] + common)
        #expect(unknown.status == 1 && unknown.stderr == "keel: error: no plugin \"ghost\" is known\n")
    }
}
