// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// `keel dev`, the author's edit-build-reload loop, with the real tools: a `keel new` C project built by `make`
/// with cc and pkg-config, a real `keel serve` (or `keel dev --serve`), and saves made the way an editor makes
/// them (a new file renamed over the old one).
@Suite("keel dev: the author's edit-build-reload loop", .scheduled)
struct DevLoopTests {
    static let id = "devloop"

    /// A `keel new` C project whose hello route answers `greeting` instead of "hello".
    static func makeProject() throws -> (project: String, env: [String: String]) {
        let prefix = try PluginKitTests.sdk.get()
        let project = TestEnvironment.makeTemporaryDirectory("dev") + "/project"
        let created = try TestEnvironment.run(PluginKitTests.keel, ["new", id, "--lang", "c", "--dir", project])
        try #require(created.status == 0, "\(created.stderr)")
        return (project, PluginKitTests.buildEnvironment(prefix: prefix))
    }

    /// Saves src/plugin.c with the route's greeting replaced (and, with `broken`, a missing semicolon; with `logs`,
    /// a log line from activate).
    static func save(_ project: String, greeting: String, broken: Bool = false, logs: String? = nil) throws {
        let path = project + "/src/plugin.c"
        let template = try String(contentsOfFile: project + "/.template.c", encoding: .utf8)
        var text = template.replacingOccurrences(of: "\"hello, %.*s, from", with: "\"\(greeting), %.*s, from")
        if broken { text = text.replacingOccurrences(of: "return http->register_route(ctx, &route);", with: "return http->register_route(ctx, &route)") }
        if let logs {
            let anchor = "    const keel_host_http *http = host->get_service"
            text = text.replacingOccurrences(of: anchor, with: "    host->log(ctx, KEEL_LOG_INFO, keel_cstr(\"\(logs)\"));\n" + anchor)
        }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Asks the route until it answers `text` or `seconds` pass; returns the last answer.
    static func waitForAnswer(_ server: ServerProcess, _ text: String, seconds: Double = 60) async throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        var last = ""
        repeat {
            let reply = try await server.request("GET", "/ext/\(id)/hello/ci")
            last = "\(reply.status) \(reply.text)"
            if reply.status == 200 && reply.text == text { return reply.text }
            try await Task.sleep(for: .milliseconds(50))
        } while Date() < deadline
        // Once more after the deadline (a starved pool can wake this loop only after it).
        let reply = try await server.request("GET", "/ext/\(id)/hello/ci")
        return reply.status == 200 && reply.text == text ? reply.text : last
    }

    /// The save-to-serving figures `keel dev` printed: (total, build, reload) in ms per reload.
    static func figures(_ output: String) -> [(Int, Int, Int)] {
        output.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("reloaded \(id) ") else { return nil }
            let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            // "reloaded devloop 0.1.0 in T ms (build B ms, reload R ms)": the last three numbers.
            guard numbers.count >= 3 else { return nil }
            return (numbers[numbers.count - 3], numbers[numbers.count - 2], numbers[numbers.count - 1])
        }
    }

    @Test("each save is rebuilt and served by the running server; a broken save shows the compiler's error while the last good build serves on")
    func saveBuildReloadAgainstRunningServer() async throws {
        let (project, env) = try Self.makeProject()
        try FileManager.default.copyItem(atPath: project + "/src/plugin.c", toPath: project + "/.template.c")
        let host = TestEnvironment.makeTemporaryDirectory("dev-host")
        try FileManager.default.createDirectory(atPath: host + "/plugins", withIntermediateDirectories: true)
        let server = try ServerProcess(plugins: host + "/plugins", state: host + "/state.db")
        defer { server.stop() }

        // No --plugins, run in the project: the copies go to the running server's folder, not ./plugins here.
        let dev = try ChildProcess(PluginKitTests.keel, ["dev", "--state", host + "/state.db"],
                                   environment: env.merging(["KEEL_ADMIN_TOKEN": ServerProcess.token]) { $1 }, currentDirectory: project)
        defer { dev.stop() }
        // The first build is enabled in the server.
        try await dev.waitFor("watching \(project)")
        #expect(dev.output.value.contains("keel dev: \(Self.id) in \(project) → \(host)/plugins/\(Self.id);"), "\(dev.output.value)")
        #expect(!FileManager.default.fileExists(atPath: project + "/plugins"))
        #expect(dev.output.value.contains("enabled \(Self.id) 0.1.0 in "), "\(dev.output.value)\(dev.errors.value)")
        #expect(try await Self.waitForAnswer(server, "hello, ci, from \(Self.id)\n") == "hello, ci, from \(Self.id)\n")

        // A save: rebuilt, reloaded, served, with the time from the save to serving.
        try Self.save(project, greeting: "howdy", logs: "howdy is active")
        #expect(try await Self.waitForAnswer(server, "howdy, ci, from \(Self.id)\n") == "howdy, ci, from \(Self.id)\n", "\(dev.output.value)")
        try await dev.waitFor("reloaded \(Self.id) 0.1.0 in ")
        #expect(dev.output.value.contains("building \(Self.id) (src/plugin.c changed)"), "\(dev.output.value)")
        // The plugin's log lines, followed from the running server with the admin token.
        try await dev.waitFor("\(Self.id): info  howdy is active", seconds: 10)

        // A broken save: the compiler's error is shown, and the last good build keeps serving.
        try Self.save(project, greeting: "broken", broken: true)
        try await dev.waitFor("build failed (`make` exited with 2 after ")
        let shown = dev.output.value
        // The compiler's own words (gcc quotes with ‘’ in a UTF-8 locale, clang with '').
        #expect(shown.contains("src/plugin.c:") && shown.contains("error: expected ") && shown.contains(";"), "\(shown)")
        #expect(shown.contains("the host keeps serving the last good build; waiting for the next save"))
        #expect(try await Self.waitForAnswer(server, "howdy, ci, from \(Self.id)\n", seconds: 1) == "howdy, ci, from \(Self.id)\n")

        // Fixed: served again.
        try Self.save(project, greeting: "hiya")
        #expect(try await Self.waitForAnswer(server, "hiya, ci, from \(Self.id)\n") == "hiya, ci, from \(Self.id)\n", "\(dev.output.value)")
        try await dev.waitFor("reloaded \(Self.id) 0.1.0 in ", count: 2)
        for (total, build, reload) in Self.figures(dev.output.value) {
            print("keel dev (C, running server): save to serving \(total) ms, build \(build) ms, reload \(reload) ms")
        }

        // Its reloads are audited as keel dev's, with the user who ran it (`refresh`: a build the server's watcher
        // already loaded is not loaded twice).
        let audit = try await server.request("GET", "/api/v1/audit?since=1h", admin: true)
        let rows = try #require(audit.json as? [[String: Any]], "\(audit.text)")
        #expect(rows.contains { $0["actor"] as? String == "dev" && $0["principal"] as? String == NSUserName() && $0["command"] as? String == "refresh" },
                "\(audit.text)")
        #expect(!rows.contains { $0["actor"] as? String == "dev" && $0["command"] as? String == "reload" }, "\(audit.text)")

        // A build that changes another bundle file than the library and plugin.yaml (here an asset, which the
        // template's `make` copies into the bundle) is sent as `reload`: `refresh` compares those two only, and would
        // keep the old activation.
        try FileManager.default.createDirectory(atPath: project + "/assets", withIntermediateDirectories: true)
        try "a note".write(toFile: project + "/assets/note.txt", atomically: true, encoding: .utf8)
        try await dev.waitFor("reloaded \(Self.id) 0.1.0 in ", count: 3)
        let after = try await server.request("GET", "/api/v1/audit?since=1h", admin: true)
        let reloads = try #require(after.json as? [[String: Any]], "\(after.text)").filter {
            $0["actor"] as? String == "dev" && $0["command"] as? String == "reload"
        }
        #expect(reloads.count == 1, "\(after.text)\n\(dev.output.value)")
        #expect(FileManager.default.fileExists(atPath: host + "/plugins/\(Self.id)/assets/note.txt"), "\(dev.output.value)")

        // The server stops: a save says so at once (no wait for the command queue's time-out), and so does one
        // that changes nothing in the bundle (never "still serving").
        #expect(server.stop() == 0)
        try Self.save(project, greeting: "gone")
        try await dev.waitFor("not reloaded: the keel server on \(host)/state.db has stopped; start it again", seconds: 5)
        try "notes".write(toFile: project + "/NOTES.txt", atomically: true, encoding: .utf8)
        try await dev.waitFor("not reloaded: the keel server on \(host)/state.db has stopped; start it again", count: 2, seconds: 10)
        #expect(!dev.output.value.contains("still serving"), "\(dev.output.value)")

        // A server started again (on another port): the next save reloads into it, and its log lines are followed
        // from its own first line (its numbering starts again).
        let again = try ServerProcess(plugins: host + "/plugins", state: host + "/state.db")
        defer { again.stop() }
        try Self.save(project, greeting: "back", logs: "back again")
        #expect(try await Self.waitForAnswer(again, "back, ci, from \(Self.id)\n") == "back, ci, from \(Self.id)\n", "\(dev.output.value)")
        try await dev.waitFor("\(Self.id): info  back again", seconds: 15)

        // Ctrl-C stops it cleanly.
        #expect(dev.interrupt() == 0, "\(dev.output.value)\(dev.errors.value)")
        #expect(dev.output.value.hasSuffix("keel dev: stopped\n"), "\(dev.output.value)")
    }

    @Test("keel dev --serve serves the project in its own process, reloads it on a save and shows the plugin's log lines")
    func serveInProcess() async throws {
        let (project, env) = try Self.makeProject()
        try FileManager.default.copyItem(atPath: project + "/src/plugin.c", toPath: project + "/.template.c")
        // Run inside the project with the default plugin folder (./plugins) and a state file there: the host's
        // files in the project are not sources (no rebuild when the bundle is copied or the state written).
        let dev = try ChildProcess(PluginKitTests.keel, ["dev", "--serve", "--port", "0", "--state", "state.db"],
                                   environment: env.merging(["KEEL_ADMIN_TOKEN": ServerProcess.token, "KEEL_PLUGINS_DIR": ""]) { $1 },
                                   currentDirectory: project)
        defer { dev.stop() }
        try await dev.waitFor("watching \(project)")
        let text = dev.output.value
        let port = try #require(text.range(of: #"serving on http://127\.0\.0\.1:\d+"#, options: .regularExpression)
            .flatMap { Int(text[$0].split(separator: ":").last ?? "") }, "\(text)")
        let answer = try await HTTPProbe.get("http://127.0.0.1:\(port)/ext/\(Self.id)/hello/ci")
        #expect(answer == "hello, ci, from \(Self.id)\n")
        try Self.save(project, greeting: "ahoy", logs: "ahoy is active")
        try await dev.waitFor("reloaded \(Self.id) 0.1.0 in ")
        #expect(try await HTTPProbe.get("http://127.0.0.1:\(port)/ext/\(Self.id)/hello/ci") == "ahoy, ci, from \(Self.id)\n")
        // The plugin's own log lines are shown.
        #expect(dev.errors.value.contains("keel: info: [\(Self.id)] ahoy is active"), "\(dev.errors.value)")
        #expect(FileManager.default.fileExists(atPath: project + "/plugins/\(Self.id)/plugin.yaml"))
        try await Task.sleep(for: .milliseconds(400))
        #expect(dev.output.value.components(separatedBy: "building \(Self.id)").count - 1 == 1, "one save, one build: \(dev.output.value)")
        for (total, build, reload) in Self.figures(dev.output.value) {
            print("keel dev (C, --serve): save to serving \(total) ms, build \(build) ms, reload \(reload) ms")
        }
        // A warning about plugin.yaml names the project's file, which the author edits, not the plugin folder's copy;
        // the kernel's line for the loop's own command is not said beside the loop's.
        let manifest = try String(contentsOfFile: project + "/plugin.yaml", encoding: .utf8)
        try (manifest + "capabilites: [menus]\n").write(toFile: project + "/plugin.yaml", atomically: true, encoding: .utf8)
        try await dev.waitFor("reloaded \(Self.id) 0.1.0 in ", count: 2)
        #expect(dev.errors.value.contains("\(project)/plugin.yaml:"), "\(dev.errors.value)")
        #expect(!dev.errors.value.contains("plugins/\(Self.id)/plugin.yaml") && !dev.errors.value.contains("dev: refresh"), "\(dev.errors.value)")
        #expect(dev.interrupt() == 0, "\(dev.output.value)\(dev.errors.value)")
    }

    @Test("keel dev --serve: a handler that crashes the process is named in one line, not a Swift backtrace; the next keel dev --serve names the crash, and a new build lets the plugin out")
    func serveInProcessCrash() async throws {
        let (project, env) = try Self.makeProject()
        let source = project + "/src/plugin.c"
        let good = try String(contentsOfFile: source, encoding: .utf8)
        let anchor = "static keel_status hello(void *user_data, const keel_http_request *req, keel_http_response *res) {\n"
        try #require(good.contains(anchor))
        try good.replacingOccurrences(of: anchor, with: anchor + "    if (user_data == (void *)1) return KEEL_OK;\n    *(volatile int *)0 = 0;\n")
            .write(toFile: source, atomically: true, encoding: .utf8)
        let environment = env.merging(["KEEL_ADMIN_TOKEN": ServerProcess.token, "KEEL_PLUGINS_DIR": ""]) { $1 }
        var dev = try ChildProcess(PluginKitTests.keel, ["dev", "--serve", "--port", "0", "--state", "state.db"],
                                   environment: environment, currentDirectory: project)
        defer { dev.stop() }
        try await dev.waitFor("watching \(project)")
        let text = dev.output.value
        let port = try #require(text.range(of: #"serving on http://127\.0\.0\.1:\d+"#, options: .regularExpression)
            .flatMap { Int(text[$0].split(separator: ":").last ?? "") }, "\(text)")
        _ = try? await HTTPProbe.get("http://127.0.0.1:\(port)/ext/\(Self.id)/hello/ci")
        #expect(await waitFor(20) { !dev.process.isRunning }, "the crash did not end the process")
        // Until 2026-12-07 a Swift backtrace of every thread (some 300 lines), and no line naming the plugin.
        #expect(dev.errors.value.contains("keel: plugin \"\(Self.id)\" (generation ") && dev.errors.value.contains("crashed the host with SIGSEGV"),
                "\(dev.errors.value.suffix(2000))")
        #expect(!dev.errors.value.contains("Program crashed"), "\(dev.errors.value.suffix(2000))")
        try good.write(toFile: source, atomically: true, encoding: .utf8)
        dev = try ChildProcess(PluginKitTests.keel, ["dev", "--serve", "--port", "0", "--state", "state.db"],
                               environment: environment, currentDirectory: project)
        try await dev.waitFor("watching \(project)")
        #expect(dev.errors.value.contains("[\(Self.id)] crashed the host with SIGSEGV in handler GET"), "\(dev.errors.value)")
        // The loop's first build is another library: the quarantine is lifted and the plugin serves.
        let again = dev.output.value
        let next = try #require(again.range(of: #"serving on http://127\.0\.0\.1:\d+"#, options: .regularExpression)
            .flatMap { Int(again[$0].split(separator: ":").last ?? "") }, "\(again)")
        var answer = ""
        for _ in 0..<100 where !answer.hasPrefix("hello, ci") {
            answer = (try? await HTTPProbe.get("http://127.0.0.1:\(next)/ext/\(Self.id)/hello/ci")) ?? ""
            if !answer.hasPrefix("hello, ci") { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(answer == "hello, ci, from \(Self.id)\n", "\(dev.output.value)\(dev.errors.value)")
        #expect(dev.interrupt() == 0, "\(dev.output.value)\(dev.errors.value)")
    }

    @Test("keel dev builds a save made during a build (make would see its outputs as newer), retries a failed reload when the bundle did not change, and copies nothing when plugin.yaml names another plugin")
    func savesDuringBuildsFailuresAndRenames() async throws {
        let (project, env) = try Self.makeProject()
        try FileManager.default.copyItem(atPath: project + "/src/plugin.c", toPath: project + "/.template.c")
        let host = TestEnvironment.makeTemporaryDirectory("dev-race")
        let built = host + "/built" // made once make is done; the build then waits for `saved` and goes on for 1 s more
        let saved = host + "/saved"
        // A build whose library is written after make read the sources: its time is then newer than a save made during
        // the build, as when a save lands while cc writes its output. It waits for the test's save, however late a
        // loaded machine lets the test make it.
        let build = "make && touch \(built) && while [ ! -e \(saved) ]; do sleep 0.05; done && sleep 1 && touch bundle/\(Self.id)/lib\(Self.id).so"
        _ = FileManager.default.createFile(atPath: saved, contents: Data())
        // Variables in MAKEFLAGS (`make dev CONFIG=debug` running keel dev): the forced rebuild's -B goes before them.
        let dev = try ChildProcess(PluginKitTests.keel, ["dev", project, "--build", build, "--serve", "--port", "0",
                                                         "--plugins", host + "/plugins", "--state", host + "/state.db"],
                                   environment: env.merging(["MAKEFLAGS": "-- KEEL_DEV_TEST=1"]) { $1 })
        defer { dev.stop() }
        try await dev.waitFor("watching \(project)")
        let text = dev.output.value
        let port = try #require(text.range(of: #"serving on http://127\.0\.0\.1:\d+"#, options: .regularExpression)
            .flatMap { Int(text[$0].split(separator: ":").last ?? "") }, "\(text)")
        let url = "http://127.0.0.1:\(port)/ext/\(Self.id)/hello/ci"
        func waitForBuilt() async throws {
            let deadline = Date().addingTimeInterval(60)
            while !FileManager.default.fileExists(atPath: built) && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
            try #require(FileManager.default.fileExists(atPath: built), "no build ran: \(dev.output.value)")
        }

        // A save, and another while its build still runs: the second is what serves, built with every target.
        try FileManager.default.removeItem(atPath: built)
        try FileManager.default.removeItem(atPath: saved)
        try Self.save(project, greeting: "howdy")
        try await waitForBuilt()
        try Self.save(project, greeting: "hiya")
        _ = FileManager.default.createFile(atPath: saved, contents: Data())
        let served = Date().addingTimeInterval(60)
        var answer = ""
        repeat {
            try await Task.sleep(for: .milliseconds(100))
            answer = try await HTTPProbe.get(url)
        } while answer != "hiya, ci, from \(Self.id)\n" && Date() < served
        #expect(answer == "hiya, ci, from \(Self.id)\n", "\(dev.output.value)")
        #expect(dev.output.value.contains("src/plugin.c changed during the last build: every target is rebuilt"), "\(dev.output.value)")
        try await dev.waitFor("reloaded \(Self.id) 0.1.0 in ", count: 2)

        // A build whose activate fails: not served; a save that changes nothing in the bundle tries it again rather
        // than saying all is well.
        let template = try String(contentsOfFile: project + "/.template.c", encoding: .utf8)
        try template.replacingOccurrences(of: "return http->register_route(ctx, &route);", with: "(void)route; return KEEL_ERR_UNSUPPORTED;")
            .write(toFile: project + "/src/plugin.c", atomically: true, encoding: .utf8)
        func failures() -> Int {
            dev.output.value.split(separator: "\n").filter { $0.hasPrefix("reload failed: ") || $0.hasPrefix("\(Self.id) is failed") }.count
        }
        let deadline = Date().addingTimeInterval(60)
        while failures() < 1 && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(failures() == 1, "\(dev.output.value)")
        #expect(try await HTTPProbe.get(url) == "hiya, ci, from \(Self.id)\n", "the last good build serves on")
        try "notes".write(toFile: project + "/NOTES.txt", atomically: true, encoding: .utf8)
        try await dev.waitFor("building \(Self.id) (NOTES.txt changed")
        let again = Date().addingTimeInterval(60)
        while failures() < 2 && Date() < again { try await Task.sleep(for: .milliseconds(50)) }
        #expect(failures() == 2, "\(dev.output.value)")
        #expect(!dev.output.value.contains("still serving"), "\(dev.output.value)")
        // The source put back as the serving build was made: the build is the one serving, and that is said, not
        // "reloaded" (until 2026-12-07 it said reloaded, while nothing was loaded).
        try Self.save(project, greeting: "hiya")
        try await dev.waitFor("\(Self.id): the bundle holds generation ", count: 1)
        #expect(dev.output.value.contains("'s build again (the one that failed to load is gone); nothing was loaded (build "), "\(dev.output.value)")
        #expect(try await HTTPProbe.get(url) == "hiya, ci, from \(Self.id)\n")

        // plugin.yaml names another plugin: nothing is copied over this one's folder, which keeps serving.
        let manifest = project + "/plugin.yaml"
        let yaml = try String(contentsOfFile: manifest, encoding: .utf8)
        try yaml.replacingOccurrences(of: "id: \(Self.id)", with: "id: renamed").write(toFile: manifest, atomically: true, encoding: .utf8)
        try await dev.waitFor("not reloaded: \(manifest) names the plugin \"renamed\", not \"\(Self.id)\", which keel dev follows (nothing was copied")
        let installed = try String(contentsOfFile: host + "/plugins/\(Self.id)/plugin.yaml", encoding: .utf8)
        #expect(installed.contains("id: \(Self.id)") && !installed.contains("id: renamed"), "\(installed)")
        #expect(try await HTTPProbe.get(url) == "hiya, ci, from \(Self.id)\n")
        #expect(dev.interrupt() == 0, "\(dev.output.value)\(dev.errors.value)")
    }

    @Test("a build that writes outside bundle/ (an object file beside its source, a copy of plugin.yaml in an output folder it removes and makes again) rebuilds at most once, not for ever; a folder made with a file in it at once is a save, and so is a file in a folder named like an artifact")
    func buildOutputsDoNotLoop() async throws {
        let (project, env) = try Self.makeProject()
        let host = TestEnvironment.makeTemporaryDirectory("dev-outputs")
        // An object in src/ (an artifact: never a source) and plugin.yaml copied into out/ (the same bytes each time).
        // out/ removed and made again at every build (a clean output folder), as many builds do.
        let build = "cc -c -fPIC $(pkg-config --cflags keel-plugin) -o src/plugin.o src/plugin.c && rm -rf out && mkdir -p out && cp plugin.yaml out/plugin.yaml && make"
        let dev = try ChildProcess(PluginKitTests.keel, ["dev", project, "--build", build, "--serve", "--port", "0",
                                                         "--plugins", host + "/plugins", "--state", host + "/state.db"], environment: env)
        defer { dev.stop() }
        try await dev.waitFor("watching \(project)")
        func builds() -> Int { dev.output.value.split(separator: "\n").filter { $0.hasPrefix("building \(Self.id) (") }.count }
        try await Task.sleep(for: .seconds(4))
        // out/plugin.yaml is new to the watcher once: one build for it, then its bytes are known.
        #expect(builds() <= 1, "\(builds()) builds: \(dev.output.value)")
        let settled = builds()
        try await Task.sleep(for: .seconds(2))
        #expect(builds() == settled, "still building: \(dev.output.value)")
        // A folder made with a file in it at once (before the watcher can watch it): a save.
        try FileManager.default.createDirectory(atPath: project + "/assets", withIntermediateDirectories: true)
        try "a note".write(toFile: project + "/assets/note.txt", atomically: true, encoding: .utf8)
        try await dev.waitFor("building \(Self.id) (assets/note.txt changed")
        // A folder named like an artifact is still a folder of sources.
        try FileManager.default.createDirectory(atPath: project + "/conf.d", withIntermediateDirectories: true)
        try await Task.sleep(for: .milliseconds(300))
        try "a: 1\n".write(toFile: project + "/conf.d/x.yaml", atomically: true, encoding: .utf8)
        try await dev.waitFor("building \(Self.id) (conf.d/x.yaml changed")
        #expect(dev.interrupt() == 0, "\(dev.output.value)\(dev.errors.value)")
    }

    @Test("Ctrl-C during a build ends the build and the processes it started")
    func interruptEndsTheBuild() async throws {
        let (project, env) = try Self.makeProject()
        let host = TestEnvironment.makeTemporaryDirectory("dev-stop")
        // A build that starts a process of its own and waits for it (as make waits for cc).
        let dev = try ChildProcess(PluginKitTests.keel, ["dev", project, "--build", "sleep 30 & echo $! > .sleeper; wait", "--serve", "--port", "0",
                                                         "--plugins", host + "/plugins", "--state", host + "/state.db"], environment: env)
        defer { dev.stop() }
        // Generous: keel dev starts a server first, and the suite's parallel builds can load the machine for seconds.
        let deadline = Date().addingTimeInterval(60)
        var sleeper: Int32?
        // Read once more after the deadline: a loaded suite may resume this task only after it.
        while true {
            sleeper = (try? String(contentsOfFile: project + "/.sleeper", encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if sleeper != nil || Date() >= deadline { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let pid = try #require(sleeper, "the build did not start: \(dev.output.value)\(dev.errors.value)")
        #expect(dev.interrupt() == 0, "\(dev.output.value)\(dev.errors.value)")
        // Gone (or a zombie waiting for its new parent to reap it), well before its 30 s.
        let ended = Date().addingTimeInterval(5)
        func running() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
            return !stat[stat.index(after: close)...].hasPrefix(" Z")
        }
        while running() && Date() < ended { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!running(), "the build's own process \(pid) still runs")
    }

    @Test("keel dev refuses a folder that is not a plugin project, and a state file no server runs on, with one line each")
    func refusesBadInput() throws {
        let empty = TestEnvironment.makeTemporaryDirectory("dev-empty")
        let noProject = try TestEnvironment.run(PluginKitTests.keel, ["dev", empty, "--state", empty + "/state.db"])
        #expect(noProject.status == 1)
        #expect(noProject.stderr == "keel: error: \(empty): no plugin.yaml; `keel dev` runs in a plugin project (`keel new ID --lang c` makes one)\n")
        let (project, _) = try Self.makeProject()
        let noServer = try TestEnvironment.run(PluginKitTests.keel, ["dev", project, "--state", empty + "/state.db", "--plugins", empty + "/plugins"])
        #expect(noServer.status == 1)
        #expect(noServer.stderr == "keel: error: no keel server runs on \(empty)/state.db: start `keel serve` with the same --plugins and --state, or pass --serve to serve in this process\n")
    }
}

/// A child process whose output the test reads while it runs.
final class ChildProcess: Sendable {
    let process = Process()
    let output = LockedText()
    let errors = LockedText()

    init(_ executable: String, _ arguments: [String], environment: [String: String], currentDirectory: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        PipeDrain(out.fileHandleForReading, into: output)
        PipeDrain(err.fileHandleForReading, into: errors)
    }

    /// Waits until the output holds `text` `count` times (at most `seconds`).
    /// Waits for `text` in the output. Looks once more after the deadline: the suite's tests that block on child
    /// processes can hold this process's two-thread cooperative pool past it while the text has long arrived.
    func waitFor(_ text: String, count: Int = 1, seconds: Double = 90) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        func seen() -> Bool { output.value.components(separatedBy: text).count - 1 >= count }
        while Date() < deadline {
            if seen() { return }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        if seen() { return }
        throw TestFailure("no \"\(text)\" (×\(count)) in: \(output.value)\(errors.value)")
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit (at most 15 s, then SIGKILL); returns the exit status.
    func interrupt() -> Int32 {
        kill(process.processIdentifier, SIGINT)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return stop()
    }

    /// Kills it if it still runs; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// One plain GET, for a server the test did not start through `ServerProcess`.
enum HTTPProbe {
    static func get(_ url: String) async throws -> String {
        var request = URLRequest(url: try #require(URL(string: url)))
        request.httpShouldHandleCookies = false
        let (data, _) = try await URLSession.shared.data(for: request)
        return String(decoding: data, as: UTF8.self)
    }
}
