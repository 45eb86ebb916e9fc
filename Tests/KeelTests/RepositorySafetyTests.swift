// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Crypto
import Foundation
@testable import KeelExtensions
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Keel
import KeelState
import Synchronization
import Testing

/// Hostile or broken repositories: slow servers, huge archives, duplicate entries, locations that do not exist.
@Suite("repository safety", .serialized, .scheduled)
struct RepositorySafetyTests {
    var keel: String { TestEnvironment.binPath + "/keel" }

    // MARK: helpers

    /// A tar file entry (or folder entry with type "5").
    static func entry(_ name: String, _ contents: String = "", type: Character = "0") -> Data {
        var h = PackageArchiveTestBytes.header(name: name, size: type == "0" ? contents.utf8.count : 0, type: type.asciiValue ?? 0)
        guard type == "0" else { return h }
        h.append(Data(contents.utf8))
        h.append(Data(count: (512 - contents.utf8.count % 512) % 512))
        return h
    }

    static func archive(_ entries: [Data]) -> Data { entries.reduce(Data(), +) + Data(count: 1024) }

    static func sha256(_ data: Data) -> String { SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined() }

    /// A repository folder with a hand-written index offering one archive.
    static func repository(archive name: String, sha256: String, id: String = "demo", capabilities: [String]? = nil) throws -> String {
        let dir = TestEnvironment.makeTemporaryDirectory("safe-repo")
        let caps = capabilities.map { "\n    capabilities: [\($0.joined(separator: ", "))]" } ?? ""
        try """
            apiVersion: 1
            plugins:
              \(id):
              - version: 1.0.0
                name: Demo
                archive: \(name)
                sha256: \(sha256)
                abi: "1.0"\(caps)
            """.write(toFile: dir + "/index.yaml", atomically: true, encoding: .utf8)
        return dir
    }

    static func store(repository: String) throws -> ExtensionStore {
        let dir = TestEnvironment.makeTemporaryDirectory("safe-state")
        let state = try StateStore(path: dir + "/state.db")
        _ = try state.addRepository(StateStore.Repository(name: "main", location: repository, priority: 0))
        return ExtensionStore(state: state, pluginsDirectory: dir + "/plugins")
    }

    /// The process's resident memory (`VmRSS`) or its peak (`VmHWM`), in bytes.
    static func memory(_ field: String = "VmRSS") -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix(field + ":") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// Resets the peak (`VmHWM`) to the current resident memory, so a buffer allocated and freed since shows.
    static func resetPeak() throws {
        try "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    }

    /// A Python HTTP server on 127.0.0.1 whose GET handler is `handler` (Python, indented 8 spaces); it prints
    /// "request" per request it receives.
    final class PythonServer: @unchecked Sendable {
        let process = Process()
        let output = LockedText()
        private(set) var port = 0

        /// Waits `delay` seconds, then answers with an empty index.
        convenience init(delay: Double) throws {
            try self.init(handler: """
                        time.sleep(\(delay))
                        body = b"apiVersion: 1\\nplugins: {}\\n"
                        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
                        self.wfile.write(body)
                """)
        }

        /// Serves the repository folder `folder`, each archive (`.keelpkg`) `archiveDelay` seconds late; prints "got
        /// PATH" per request. `methods` adds handler methods (Python, indented 4 spaces).
        convenience init(serving folder: String, archiveDelay: Double, methods: String = "") throws {
            try self.init(handler: """
                        import os
                        print("got", self.path, flush=True)
                        path = self.path.split("?")[0].lstrip("/")
                        if path.endswith(".keelpkg") and \(archiveDelay) > 0:
                            print("archive", flush=True); time.sleep(\(archiveDelay))
                        try:
                            body = open(os.path.join("\(folder)", path), "rb").read(); code = 200
                        except Exception:
                            body = b""; code = 404
                        self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers()
                        self.wfile.write(body)
                """, methods: methods)
        }

        /// A forward proxy that is its own origin: a `CONNECT` to any port but 443 is accepted and the requests made
        /// through the tunnel are answered from `folder` (the host is never looked up: it need not exist); a
        /// `CONNECT` to 443 is refused with 403. It prints "connect TARGET" and "got PATH" per request.
        convenience init(proxyServing folder: String) throws {
            try self.init(serving: folder, archiveDelay: 0, methods: """
                    def do_CONNECT(self):
                        print("connect", self.path, flush=True)
                        if self.path.endswith(":443"):
                            self.send_response(403); self.send_header("Content-Length", "0"); self.end_headers(); return
                        self.send_response(200); self.end_headers()
                        self.close_connection = False
                """)
        }

        init(handler: String, methods: String = "") throws {
            let script = """
                import http.server, socketserver, sys, time
                class H(http.server.BaseHTTPRequestHandler):
                    def do_GET(self):
                        print("request", flush=True)
                \(handler)
                \(methods)
                    def log_message(self, *a): pass
                s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
                s.daemon_threads = True
                print("port", s.server_address[1], flush=True)
                s.serve_forever()
                """
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", script]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = Pipe()
            try process.run()
            PipeDrain(out.fileHandleForReading, into: output)
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, port == 0 {
                if let line = output.value.split(separator: "\n").first(where: { $0.hasPrefix("port ") }) { port = Int(line.dropFirst(5)) ?? 0 }
                usleep(20_000)
            }
            guard port > 0 else { stop(); throw TestFailure("the python server did not start: \(output.value)") }
        }

        var requests: Int { output.value.split(separator: "\n").filter { $0 == "request" }.count }
        /// The archive requests received so far (`init(serving:archiveDelay:)`).
        var archives: Int { output.value.split(separator: "\n").filter { $0 == "archive" }.count }
        /// SIGKILL: a child of the test process inherits its blocked SIGTERM.
        func stop() { if process.isRunning { kill(process.processIdentifier, SIGKILL) }; process.waitUntilExit() }
    }

    /// A GET that blocks the calling thread (status, body); status 0 when the request failed.
    static func blockingGet(_ url: String, token: String? = nil) -> (Int, String) {
        guard let target = URL(string: url) else { return (0, "bad URL") }
        var request = URLRequest(url: target, timeoutInterval: 60)
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpMaximumConnectionsPerHost = 64
        let session = URLSession(configuration: configuration)
        defer { session.finishTasksAndInvalidate() }
        let done = DispatchSemaphore(value: 0)
        let result = LockedText(), status = Counter()
        session.dataTask(with: request) { data, response, _ in
            status.set((response as? HTTPURLResponse)?.statusCode ?? 0)
            result.append(String(decoding: data ?? Data(), as: UTF8.self))
            done.signal()
        }.resume()
        done.wait()
        return (status.value, result.value)
    }

    @Test("redirects: followed by the host itself, at most five; to this machine or a private network only from a repository there; never to another scheme")
    func redirects() throws {
        // Judged by address: a repository on another machine cannot send the host to its own or private addresses.
        #expect(RedirectPolicy.refusal(from: "https://repo.example/x", to: "http://127.0.0.1:8470/api/v1/audit") != nil)
        #expect(RedirectPolicy.refusal(from: "https://repo.example/x", to: "http://169.254.169.254/latest/meta-data") != nil)
        #expect(RedirectPolicy.refusal(from: "https://repo.example/x", to: "http://[::ffff:10.0.0.1]/") != nil)
        #expect(RedirectPolicy.refusal(from: "https://repo.example/x", to: "http://localhost./") != nil)
        #expect(RedirectPolicy.refusal(from: "https://repo.example/x", to: "https://cdn.example/x.keelpkg") == nil)
        #expect(RedirectPolicy.refusal(from: "http://127.0.0.1:9/x", to: "http://127.0.0.1:9/y") == nil, "a local repository's own")
        #expect(RedirectPolicy.refusal(from: "http://127.0.0.1:9/x", to: "file:///etc/passwd") != nil)
        for address in ["10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1"] {
            #expect(RedirectPolicy.isInternal(address), "\(address)")
        }
        for external in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "repo.example", "127.0.0.1.example"] {
            #expect(!RedirectPolicy.isInternal(external), "\(external)")
        }
        #expect(RedirectPolicy.isInternal("fe80::1%eth0"), "a link-local address as the resolver writes it")
        // A name is judged by every address it resolves to: one of the attacker's that resolves to loopback or to the
        // metadata service is refused as the literal is. The repository's own name is never looked up for this (a
        // hostile one could give it a private address beside its public one and pass for internal): a repository
        // inside a private network that redirects within it is named by its address.
        let names: [String: [String]] = ["rebound.example": ["203.0.113.7", "127.0.0.1"], "meta.example": ["169.254.169.254"],
                                         "repo.corp.example": ["10.0.0.5"], "cdn.example": ["203.0.113.9"]]
        let resolve = { (host: String) in names[host] ?? [] }
        let rebound = RedirectPolicy.refusal(from: "https://repo.example/x", to: "http://rebound.example:8470/api/v1/audit", resolve: resolve)
        #expect(rebound?.contains("(rebound.example is 127.0.0.1), an address of this machine or its private network") == true, "\(rebound ?? "followed")")
        #expect(RedirectPolicy.refusal(from: "https://repo.example/x", to: "http://meta.example/latest/meta-data", resolve: resolve) != nil)
        #expect(RedirectPolicy.refusal(from: "https://repo.example/x", to: "https://cdn.example/x.keelpkg", resolve: resolve) == nil)
        #expect(RedirectPolicy.refusal(from: "https://repo.corp.example/x", to: "http://169.254.169.254/latest/meta-data", resolve: resolve) != nil,
                "a repository name with a private address does not pass for internal")
        #expect(RedirectPolicy.refusal(from: "http://10.0.0.5/x", to: "http://10.0.0.6/x.keelpkg", resolve: resolve) == nil,
                "a repository inside the private network, named by its address")
        #expect(RedirectPolicy.refusal(from: "http://10.0.0.5/x", to: "http://rebound.example/x", resolve: resolve) == nil)
        // The system's resolver, for real: `localhost` through getaddrinfo, and this machine's own name where it
        // resolves to one of its addresses (as /etc/hosts makes it on Debian and in containers).
        #expect(RedirectPolicy.addresses("localhost").contains(where: RedirectPolicy.isInternal), "\(RedirectPolicy.addresses("localhost"))")
        #expect(RedirectPolicy.addresses("no-such-host.invalid").isEmpty)
        let own = ProcessInfo.processInfo.hostName
        if RedirectPolicy.addresses(own).contains(where: RedirectPolicy.isInternal) {
            #expect(RedirectPolicy.refusal(from: "https://repo.example/x", to: "http://\(own):8470/") != nil, "\(own)")
        }
        // End to end, the host following a local repository's redirects itself, and refusing another scheme.
        let server = try PythonServer(handler: """
                    body = b"apiVersion: 1\\nplugins: {}\\n"
                    if self.path.startswith("/moved/"):
                        self.send_response(302); self.send_header("Location", "/real/index.yaml"); self.send_header("Content-Length", "0"); self.end_headers(); return
                    if self.path.startswith("/file/"):
                        self.send_response(302); self.send_header("Location", "file:///etc/passwd"); self.send_header("Content-Length", "0"); self.end_headers(); return
                    if self.path.startswith("/loop/"):
                        self.send_response(302); self.send_header("Location", self.path); self.send_header("Content-Length", "0"); self.end_headers(); return
                    self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            """)
        defer { server.stop() }
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel", at = ["--plugins", f.plugins, "--state", f.state]
        for name in ["moved", "file", "loop"] {
            #expect(try TestEnvironment.run(keel, ["repo", "add", name, "http://127.0.0.1:\(server.port)/\(name)"] + at).status == 0)
        }
        // An http repository is read when it is used.
        let search = try TestEnvironment.run(keel, ["search", "x"] + at)
        #expect(search.stderr.contains("repository \"file\": http://127.0.0.1:\(server.port)/file/index.yaml: redirected to file:///etc/passwd, which is not an http(s) location: not followed"), "\(search.stderr)")
        #expect(search.stderr.contains("repository \"loop\": http://127.0.0.1:\(server.port)/loop/index.yaml: too many redirects"), "\(search.stderr)")
        #expect(!search.stderr.contains("repository \"moved\""), "a redirect within a local repository is followed: \(search.stderr)")
        #expect(server.output.value.contains("request"))
        // A password in the location would never be sent, but shown everywhere: refused, and not echoed.
        let creds = try TestEnvironment.run(keel, ["repo", "add", "creds", "http://alice:S3cretPW@127.0.0.1:\(server.port)/x"] + at)
        #expect(creds.status == 1 && creds.stderr.contains("may not hold a user or password") && !creds.stderr.contains("S3cretPW"), "\(creds.stderr)")
    }

    // MARK: defect 5

    @Test("an install waiting on a slow repository holds no other lifecycle change: an enable asked meanwhile is done first")
    func slowInstallHoldsNothing() async throws {
        let slow = try PythonServer(delay: 4)
        defer { slow.stop() }
        let f = KernelFixture()
        try f.fixtureBundle("quick")
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.execute(.addRepository(name: "slow", location: "http://127.0.0.1:\(slow.port)", priority: 0))
        let install = Task { () -> String in
            do { try await kernel.execute(.install(id: "absent", version: nil, allowUnsigned: false)); return "installed" } catch {
                return "\(error)"
            }
        }
        let deadline = Date().addingTimeInterval(60)
        while slow.requests == 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        try await kernel.execute(.enable(id: "quick", tenant: nil))
        #expect(await install.value.contains("absent"), "the empty index offers nothing")
        // The order the commands finished in, from the audit trail (oldest first).
        let rows = try kernel.auditTrail().map { "\($0.command) \($0.target)" }
        let enabled = rows.firstIndex(of: "enable quick"), installed = rows.firstIndex(of: "install absent")
        #expect(enabled != nil && installed != nil && enabled! < installed!, "the enable waited for the download: \(rows)")
        await kernel.shutdown()
    }

    @Test("an upgrade waiting on a slow download holds no lifecycle change, and a disable made meanwhile is kept (not overwritten by the upgrade)")
    func slowUpgradeKeepsChangesMadeMeanwhile() async throws {
        // InPlaceLoadTests' repository (plugin up 1.0.0 and 1.1.0), served over http with each archive 3 s late.
        let repo = try InPlaceLoadTests().repository()
        let slow = try PythonServer(serving: repo, archiveDelay: 3)
        defer { slow.stop() }
        let f = KernelFixture()
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.execute(.addRepository(name: "slow", location: "http://127.0.0.1:\(slow.port)", priority: 0))
        try await kernel.execute(.install(id: "up", version: "1.0.0", allowUnsigned: true))
        try await kernel.execute(.enable(id: "up", tenant: nil))
        let upgrade = Task { () -> String in
            do { try await kernel.execute(.upgrade(id: "up", version: "1.1.0", allowUnsigned: true)); return "upgraded" } catch {
                return "\(error)"
            }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while try await kernel.plugin("up").status != .upgrading, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        try await kernel.execute(.disable(id: "up", tenant: nil, cascade: false))
        #expect(await upgrade.value == "upgraded")
        let after = try await kernel.plugin("up")
        #expect(after.version == "1.1.0")
        #expect(after.status == .disabled && !after.enabled, "the disable made during the download stands: \(after.status)")
        let rows = try kernel.auditTrail().map { "\($0.command) \($0.target)" }
        let disabled = rows.firstIndex(of: "disable up"), upgraded = rows.firstIndex(of: "upgrade up")
        #expect(disabled != nil && upgraded != nil && disabled! < upgraded!, "the disable waited for the download: \(rows)")
        await kernel.shutdown()
    }

    @Test("downloads go through the proxy the environment names (http_proxy, https_proxy by CONNECT), no_proxy bypasses it, and a bad proxy variable or a refused tunnel is one line naming the proxy")
    func proxyFromEnvironment() throws {
        let repo = try InPlaceLoadTests().repository()
        let proxy = try PythonServer(proxyServing: repo)
        defer { proxy.stop() }
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        // A host that does not resolve: only a proxy can reach it.
        let far = "http://repo.keel.invalid:8080"
        let through = ["http_proxy": "http://127.0.0.1:\(proxy.port)", "no_proxy": "localhost,127.0.0.1"]
        #expect(try TestEnvironment.run(keel, ["repo", "add", "far", far] + common, environment: through).status == 0)
        let installed = try TestEnvironment.run(keel, ["install", "up@1.0.0", "--allow-unsigned"] + common, environment: through)
        #expect(installed.status == 0, "\(installed.stderr)")
        // AsyncHTTPClient tunnels http too (CONNECT host:80), then asks in origin form through the tunnel.
        let seen = proxy.output.value.split(separator: "\n")
        #expect(seen.contains("connect repo.keel.invalid:8080") && seen.contains("got /index.yaml")
                    && seen.contains { $0.hasPrefix("got /") && $0.hasSuffix(".keelpkg") }, "\(proxy.output.value)")
        #expect(try TestEnvironment.run(keel, ["plugins", "list"] + common).stdout.contains("up"))

        // no_proxy names the host (a parent domain of it): the download goes direct, and the host does not resolve.
        let direct = try TestEnvironment.run(keel, ["search", "up"] + common, environment: through.merging(["no_proxy": "keel.invalid"]) { $1 })
        #expect(direct.stderr.contains("\(far)/index.yaml: unreachable: unknown host"), "\(direct.stderr)")
        #expect(!direct.stderr.contains("through the proxy"), "\(direct.stderr)")
        #expect(direct.status == 1 && direct.stderr.hasSuffix("keel: error: no repository could be read (the warning above says why)\n"),
                "every repository unreadable is a failure, not \"nothing found\": \(direct.status) \(direct.stderr)")

        // https goes through CONNECT, which this proxy refuses.
        #expect(try TestEnvironment.run(keel, ["repo", "add", "tls", "https://repo.keel.invalid"] + common).status == 0)
        let tunnel = try TestEnvironment.run(keel, ["search", "up"] + common, environment: ["https_proxy": "127.0.0.1:\(proxy.port)"])
        #expect(proxy.output.value.contains("connect repo.keel.invalid:443"), "\(proxy.output.value)")
        #expect(tunnel.stderr.contains("https://repo.keel.invalid/index.yaml: unreachable through the proxy 127.0.0.1:\(proxy.port) (https_proxy): the proxy refused to open a tunnel"),
                "\(tunnel.stderr)")

        // A variable that names no proxy fails the download with its reason; it never silently goes direct.
        let bad = try TestEnvironment.run(keel, ["search", "up"] + common, environment: ["http_proxy": "ftp://127.0.0.1:\(proxy.port)"])
        #expect(bad.stderr.contains(#"\#(far)/index.yaml: http_proxy="ftp://127.0.0.1:\#(proxy.port)" is not a proxy (the scheme ftp is not supported"#),
                "\(bad.stderr)")
        #expect(bad.stderr.split(separator: "\n").allSatisfy { !$0.contains("NIO") && !$0.contains("HTTPClientError") }, "\(bad.stderr)")
    }

    /// Plugin `up` 1.0.0 installed and enabled, then `keel serve` on it, and `keel upgrade up --to 1.1.0` run while it
    /// serves (the CLI hands the upgrade to the server through the command queue). Once the server is downloading
    /// the archive (2 s late), `stop` is done to the server. Returns what the CLI said ("STATUS\nOUTPUT"), how long it
    /// took after `stop` began, the fixture and the archives the repository served.
    func upgradeThroughServer(_ stop: (ServerProcess) -> Void) throws -> (said: String, after: Double, f: KernelFixture, archives: Int) {
        let repo = try InPlaceLoadTests().repository()
        let slow = try PythonServer(serving: repo, archiveDelay: 2)
        defer { slow.stop() }
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["repo", "add", "slow", "http://127.0.0.1:\(slow.port)"] + common).status == 0)
        let first = try TestEnvironment.run(keel, ["install", "up@1.0.0", "--allow-unsigned"] + common)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "up"] + common).status == 0)
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        let upgraded = LockedText(), upgradeDone = DispatchSemaphore(value: 0)
        Thread { [keel] in
            let r = (try? TestEnvironment.run(keel, ["upgrade", "up", "--to", "1.1.0", "--allow-unsigned"] + common))
                ?? (status: -1, stdout: "", stderr: "did not run")
            upgraded.append("\(r.status)\n\(r.stdout)\(r.stderr)")
            upgradeDone.signal()
        }.start()
        let deadline = Date().addingTimeInterval(60)
        while slow.archives < 2 && Date() < deadline { usleep(10_000) }
        #expect(slow.archives == 2, "the server did not start downloading: \(upgraded.value)")
        let stopped = Date()
        stop(server)
        #expect(upgradeDone.wait(timeout: .now() + 150) == .success)
        return (upgraded.value, Date().timeIntervalSince(stopped), f, slow.archives)
    }

    @Test("keel serve stopped (SIGTERM) while an upgrade it took from the CLI downloads: the stop waits, the upgrade is stored and the CLI told")
    func serveStopsAfterQueuedUpgrade() throws {
        let (said, _, f, archives) = try upgradeThroughServer { server in
            let status = server.stop()
            #expect(status == 0, "keel serve exited with \(status): \(server.errors.value)")
        }
        #expect(said.hasPrefix("0\n") && said.contains("upgraded up to 1.1.0"), "\(said)")
        #expect(archives == 2, "the upgrade was downloaded again")
        let rows = try StateStore(path: f.state).audit(since: nil, limit: 100)
        #expect(rows.contains { $0.command == "upgrade" && $0.target == "up" && $0.outcome == "ok" },
                "\(rows.map { "\($0.command) \($0.target) \($0.outcome)" })")
        let listed = try TestEnvironment.run(keel, ["plugins", "list", "--plugins", f.plugins, "--state", f.state])
        #expect(listed.status == 0 && listed.stdout.contains("1.1.0") && !listed.stdout.contains("1.0.0"), "\(listed.stdout)\(listed.stderr)")
    }

    @Test("keel serve killed while an upgrade it took from the CLI downloads: the CLI says so within seconds, not after its time-out")
    func serveKilledDuringQueuedUpgrade() throws {
        let (said, after, f, _) = try upgradeThroughServer { server in
            kill(server.process.processIdentifier, SIGKILL)
        }
        #expect(said.hasPrefix("1\n") && said.contains("the server stopped while it ran the command, without recording its outcome"), "\(said)")
        #expect(!said.contains("\n\n") && said.split(separator: "\n").count <= 4, "one line of error: \(said)")
        // The CLI's time-out for an upgrade is 120 s (twice, once queued and once taken); it polls the lock each second.
        #expect(after < 20, "the CLI answered \(after) s after the server died")
        let listed = try TestEnvironment.run(keel, ["plugins", "list", "--plugins", f.plugins, "--state", f.state])
        #expect(listed.status == 0 && listed.stdout.contains("1.0.0"), "\(listed.stdout)\(listed.stderr)")
    }

    @Test("keel serve killed before it took a queued CLI command: the CLI cancels it and says so within seconds")
    func serveKilledBeforeTakingCommand() throws {
        let f = KernelFixture()
        try f.fixtureBundle("quick")
        let common = ["--plugins", f.plugins, "--state", f.state]
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"])
        defer { server.stop() }
        // Stopped (SIGSTOP), the server holds its lock but takes nothing from the queue.
        let pid = server.process.processIdentifier
        kill(pid, SIGSTOP)
        let said = LockedText(), done = DispatchSemaphore(value: 0)
        Thread { [keel] in
            let r = (try? TestEnvironment.run(keel, ["plugins", "enable", "quick"] + common)) ?? (status: -1, stdout: "", stderr: "did not run")
            said.append("\(r.status)\n\(r.stdout)\(r.stderr)")
            done.signal()
        }.start()
        // Killed once the CLI has queued the command (a CLI slow to start would otherwise find no server and run it itself).
        let client = try StateStore(path: f.state)
        let queuedBy = Date().addingTimeInterval(60)
        while ((try? client.pendingCommands()) ?? []).isEmpty && Date() < queuedBy { usleep(20_000) }
        #expect(try !client.pendingCommands().isEmpty, "the CLI queued nothing: \(said.value)")
        let killed = Date()
        kill(pid, SIGKILL)
        #expect(done.wait(timeout: .now() + 60) == .success)
        // The CLI waits up to 10 s for a server to take a command: it saw the server go before that.
        #expect(Date().timeIntervalSince(killed) < 8, "the CLI answered \(Date().timeIntervalSince(killed)) s after the server died")
        #expect(said.value.hasPrefix("1\n") && said.value.contains("the server stopped before it took the command; it was cancelled and nothing changed"),
                "\(said.value)")
        let listed = try TestEnvironment.run(keel, ["plugins", "list"] + common)
        #expect(listed.status == 0 && !listed.stdout.contains("enabled"), "\(listed.stdout)")
    }

    @Test("a slow repository never blocks request threads: /healthz and plugin routes answer while catalogs wait; the catalog names it")
    func slowRepository() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try TestEnvironment.grantSensitive("hello", plugins: f.plugins, state: f.state)
        let common = ["--plugins", f.plugins, "--state", f.state]
        #expect(try TestEnvironment.run(keel, ["plugins", "enable", "hello"] + common).status == 0)
        // Generous times: under a loaded machine (the whole suite runs in parallel on 2 cores) the host's own routes
        // must still answer well before the catalog's time-out.
        let slow = try PythonServer(delay: 20)
        defer { slow.stop() }
        let added = try TestEnvironment.run(keel, ["repo", "add", "slow", "http://127.0.0.1:\(slow.port)"] + common)
        #expect(added.status == 0 && added.stdout.contains("checked when it is used"), "\(added.stderr)")
        // Time-outs below the server's delay, so the catalog must give up on it.
        let server = try ServerProcess(plugins: f.plugins, state: f.state, extraArguments: ["--no-watch"],
                                       environment: ["KEEL_REPO_TIMEOUT": "10", "KEEL_REPO_CONNECT_TIMEOUT": "10"])
        defer { server.stop() }

        // More catalog requests than the server's cooperative pool has threads, each on its own connection. The
        // requests are made from threads of their own, so that a busy test process cannot delay them.
        let count = max(8, ProcessInfo.processInfo.activeProcessorCount * 2 + 2)
        let finished = Counter(), bodies = LockedText()
        let catalog = server.base + "/api/v1/catalog"
        for _ in 0..<count {
            Thread {
                let reply = Self.blockingGet(catalog, token: ServerProcess.token)
                bodies.append(reply.1 + "\n")
                finished.add()
            }.start()
        }
        // Once the repository is being read, the host's own routes still answer before any catalog does. Checked from
        // a thread of its own too: the whole suite runs in parallel, and a test task on a busy cooperative pool could
        // be held up longer than the catalog's time-out.
        let checked = LockedText(), checkedDone = DispatchSemaphore(value: 0)
        let statuses = Counter()
        Thread {
            let deadline = Date().addingTimeInterval(10)
            while slow.requests == 0 && Date() < deadline { usleep(10_000) }
            let health = Self.blockingGet(server.base + "/healthz")
            let plugin = Self.blockingGet(server.base + "/ext/hello/greet/world")
            checked.append("\(finished.value)")
            statuses.set(health.0 == 200 && plugin.0 == 200 ? 1 : 0)
            checkedDone.signal()
        }.start()
        #expect(await waitFor(60) { checkedDone.wait(timeout: .now()) == .success })
        let doneWhenAnswered = Int(checked.value) ?? -1
        #expect(statuses.value == 1, "/healthz or the plugin route did not answer 200")
        #expect(doneWhenAnswered == 0, "\(doneWhenAnswered) catalog request(s) finished before /healthz answered")

        #expect(await waitFor(30) { finished.value == count })
        let lines = bodies.value.split(separator: "\n")
        #expect(lines.count == count && lines.allSatisfy { $0.contains("repository \\\"slow\\\"") && $0.contains("time-out") }, "\(lines)")
        // The slow repository was read once for all of them.
        #expect(slow.requests == 1)
    }

    // MARK: defect 9

    @Test("an archive past the size limit is refused as it streams: one line, and memory does not grow by its size")
    func hugeArchive() throws {
        let size = 1 << 30
        let repo = try Self.repository(archive: "big.keelpkg", sha256: String(repeating: "0", count: 64))
        let big = repo + "/big.keelpkg"
        #expect(FileManager.default.createFile(atPath: big, contents: nil))
        #expect(truncate(big, off_t(size)) == 0)  // sparse: costs no disk
        var store = try Self.store(repository: repo)
        store.archiveLimits = PackageArchive.Limits(maxFiles: 100, maxBytes: 2 << 20, maxArchiveBytes: 4 << 20)
        let offer = try #require(try store.indexes().offers.first)

        try Self.resetPeak()
        let before = Self.memory()
        do { try store.install(offer, allowUnsigned: true); Issue.record("installed a 1 GiB archive") } catch {
            let text = "\(error)"
            #expect(text.contains(big) && text.contains("larger than the limit of 4194304 bytes") && !text.contains("\n"), "\(text)")
        }
        let grown = Self.memory("VmHWM") - before
        #expect(grown < size / 8, "resident memory peaked \(grown) bytes higher")
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.pluginsDirectory).isEmpty)

        // Over http the download stops at the limit too.
        // Port 0: the server picks a free port and prints it (a random fixed port could be taken, and a busy machine
        // may take seconds to start python).
        let http = Process()
        http.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        http.arguments = ["python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", repo]
        let served = LockedText(), out = Pipe()
        http.standardOutput = out
        http.standardError = Pipe()
        try http.run()
        PipeDrain(out.fileHandleForReading, into: served)
        defer { kill(http.processIdentifier, SIGKILL); http.waitUntilExit() }
        var port = 0
        for _ in 0..<300 where port == 0 {
            if let range = served.value.range(of: " port ") {
                port = Int(served.value[range.upperBound...].prefix { $0.isNumber }) ?? 0
            }
            if port == 0 { usleep(100_000) }
        }
        #expect(port > 0, "python's http.server did not start: \(served.value)")
        let web = try Self.store(repository: "http://127.0.0.1:\(port)")
        var limited = web
        limited.archiveLimits = store.archiveLimits
        var webOffer: ExtensionStore.Offer?
        for _ in 0..<50 where webOffer == nil {
            webOffer = try limited.indexes().offers.first
            if webOffer == nil { usleep(100_000) }
        }
        let remote = try #require(webOffer)
        do { try limited.install(remote, allowUnsigned: true); Issue.record("installed a 1 GiB archive over http") } catch {
            #expect("\(error)".contains("larger than the limit of 4194304 bytes"), "\(error)")
        }
        // A server that announces no length (HTTP/1.0, close-delimited) is cut off once the limit is passed.
        let endless = try PythonServer(handler: """
                    self.protocol_version = "HTTP/1.0"
                    self.send_response(200); self.end_headers()
                    try:
                        for _ in range(\(size >> 20)): self.wfile.write(bytes(1 << 20))
                    except Exception: pass
            """)
        defer { endless.stop() }
        var streamed = try Self.store(repository: try Self.repository(archive: "big.keelpkg", sha256: String(repeating: "0", count: 64)))
        streamed.archiveLimits = store.archiveLimits
        var cut = try #require(try streamed.indexes().offers.first)
        cut.indexURL = "http://127.0.0.1:\(endless.port)"
        // The body is read with back-pressure: however fast the server sends, the host holds a few chunks beyond the
        // limit, not what the link could deliver before a cancel lands (with FoundationNetworking's delegate queue
        // that was hundreds of MB on loopback).
        try Self.resetPeak()
        let beforeHTTP = Self.memory()
        do { try streamed.install(cut, allowUnsigned: true); Issue.record("installed an endless archive") } catch {
            #expect("\(error)".contains("larger than the limit of 4194304 bytes; download stopped and refused"), "\(error)")
        }
        let grownHTTP = Self.memory("VmHWM") - beforeHTTP
        #expect(grownHTTP < size / 8, "resident memory peaked \(grownHTTP) bytes higher over http")
        print("repository safety: an endless archive over http refused at 4 MiB; resident memory peaked \(grownHTTP >> 20) MiB higher")

        // An archive within the download limit whose files unpack past the limit is stopped at that entry.
        let wide = Self.archive([Self.entry("plugin.yaml", "id: demo\n"), PackageArchiveTestBytes.header(name: "lib.so", size: 3 << 20)
                                 + Data(count: 3 << 20)])
        do { _ = try PackageArchive.entries(wide, name: "wide.keelpkg", limits: store.archiveLimits); Issue.record("accepted") } catch {
            #expect("\(error)" == "wide.keelpkg: unpacks to more than 2097152 bytes")
        }
    }

    // MARK: defect 10

    @Test("duplicate entries, also under other spellings, are refused; the index records what the install checks")
    func duplicateEntries() throws {
        let manifest = "id: demo\nname: Demo\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib.so\ncapabilities: [routes]\n"
        let evil = manifest.replacingOccurrences(of: "[routes]", with: "[routes, authenticate]")
        let cases: [([Data], String)] = [
            ([Self.entry("plugin.yaml", manifest), Self.entry("plugin.yaml", evil)], "entry \"plugin.yaml\": duplicate entry"),
            ([Self.entry("./plugin.yaml", manifest), Self.entry("plugin.yaml", evil)], "entry \"plugin.yaml\": duplicate entry"),
            ([Self.entry("plugin.yaml", manifest), Self.entry(".//./plugin.yaml", evil)], "entry \".//./plugin.yaml\": duplicate entry"),
            ([Self.entry("plugin.yaml", manifest), Self.entry("lib/../plugin.yaml", evil)], "escapes the bundle folder"),
            ([Self.entry("lib", type: "5"), Self.entry("lib/", type: "5")], "entry \"lib/\": duplicate entry"),
            ([Self.entry("lib", "x"), Self.entry("lib/", type: "5")], "entry \"lib/\": duplicate entry"),
            ([Self.entry("lib", "x"), Self.entry("lib/a.so", "y")], "inside \"lib\", which is a file"),
        ]
        for (entries, expected) in cases {
            do { _ = try PackageArchive.entries(Self.archive(entries), name: "dup.keelpkg"); Issue.record("accepted: \(expected)") } catch {
                #expect("\(error)".hasPrefix("dup.keelpkg: ") && "\(error)".contains(expected), "\(error)")
            }
        }

        // `keel repo index` refuses the archive instead of indexing its first plugin.yaml.
        let repo = TestEnvironment.makeTemporaryDirectory("dup-repo")
        try Self.archive(cases[0].0).write(to: URL(fileURLWithPath: repo + "/demo-1.0.0.keelpkg"))
        let index = try TestEnvironment.run(keel, ["repo", "index", repo])
        #expect(index.status == 1 && index.stderr.contains("demo-1.0.0.keelpkg: entry \"plugin.yaml\": duplicate entry"), "\(index.stderr)")
        #expect(index.stderr.split(separator: "\n").count == 1)

        // The index records the capabilities; an install whose manifest asks for others is refused.
        try FileManager.default.removeItem(atPath: repo + "/demo-1.0.0.keelpkg")
        let good = Self.archive([Self.entry("plugin.yaml", manifest), Self.entry("lib.so", "not a library")])
        try good.write(to: URL(fileURLWithPath: repo + "/demo-1.0.0.keelpkg"))
        #expect(try TestEnvironment.run(keel, ["repo", "index", repo]).status == 0)
        #expect(try String(contentsOfFile: repo + "/index.yaml", encoding: .utf8).contains("capabilities:"))
        let bait = Self.archive([Self.entry("plugin.yaml", evil), Self.entry("lib.so", "not a library")])
        let handWritten = try Self.repository(archive: "bait.keelpkg", sha256: Self.sha256(bait), capabilities: ["routes"])
        try bait.write(to: URL(fileURLWithPath: handWritten + "/bait.keelpkg"))
        let store = try Self.store(repository: handWritten)
        do { try store.install(try #require(try store.indexes().offers.first), allowUnsigned: true); Issue.record("installed the bait") } catch {
            #expect("\(error)".contains("archive asks for authenticate, routes, the index says routes; refused"), "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: store.pluginsDirectory + "/demo"))
        // An index's text in the refusal (here a capability holding a terminal escape and a line break) comes out
        // escaped: the terminal and the stored reason never see the escape, the line never breaks.
        let forged = try Self.repository(archive: "bait.keelpkg", sha256: Self.sha256(bait), capabilities: ["routes", #""x\e[33my\nforged: all good""#])
        try bait.write(to: URL(fileURLWithPath: forged + "/bait.keelpkg"))
        let forgedStore = try Self.store(repository: forged)
        do { try forgedStore.install(try #require(try forgedStore.indexes().offers.first), allowUnsigned: true); Issue.record("installed the bait") } catch {
            #expect("\(error)".contains(#"x\u{1B}[33my\nforged: all good"#) && !"\(error)".contains("\u{1B}") && !"\(error)".contains("\n"), "\(error)")
        }
    }

    @Test("a \".\" entry: the folder itself is fine, a file named \".\" is one line naming the archive and the entry")
    func dotEntry() throws {
        let manifest = "id: demo\nname: Demo\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib.so\ncapabilities: [routes]\n"
        let dir = TestEnvironment.makeTemporaryDirectory("dot")
        // What `tar -C bundle -cf x .` writes: "./" first, then "./plugin.yaml".
        let tarStyle = Self.archive([Self.entry("./", type: "5"), Self.entry(".", type: "5"), Self.entry("./plugin.yaml", manifest)])
        try tarStyle.write(to: URL(fileURLWithPath: dir + "/ok.keelpkg"))
        try PackageArchive.unpack(file: dir + "/ok.keelpkg", name: "ok.keelpkg", into: dir + "/ok")
        #expect(FileManager.default.fileExists(atPath: dir + "/ok/plugin.yaml"))

        for name in [".", "./"] {
            try Self.archive([Self.entry(name, "x"), Self.entry("plugin.yaml", manifest)]).write(to: URL(fileURLWithPath: dir + "/bad.keelpkg"))
            do { try PackageArchive.unpack(file: dir + "/bad.keelpkg", name: "bad.keelpkg", into: dir + "/bad-\(name.count)"); Issue.record("accepted \(name)") } catch {
                #expect("\(error)" == "bad.keelpkg: entry \"\(name)\": a file entry without a file name")
            }
        }
    }

    @Test("names with C1 controls (CSI, NEL), bidirectional overrides or bytes that are not UTF-8 are refused, named escaped")
    func hiddenCharacters() throws {
        let manifest = "id: demo\nname: Demo\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib.so\ncapabilities: [routes]\n"
        let dir = TestEnvironment.makeTemporaryDirectory("hidden")
        for (index, (name, shown)) in [("assets/c1-\u{9B}31mCSI", "assets/c1-\\u{009B}31mCSI"), ("assets/nel-\u{85}-x", "assets/nel-\\u{0085}-x"),
                                       ("assets/bidi-\u{202E}txt.exe", "assets/bidi-\\u{202E}txt.exe")].enumerated() {
            try Self.archive([Self.entry("plugin.yaml", manifest), Self.entry(name, "x")]).write(to: URL(fileURLWithPath: dir + "/bad.keelpkg"))
            let into = dir + "/bad-\(index)"
            do { try PackageArchive.unpack(file: dir + "/bad.keelpkg", name: "bad.keelpkg", into: into); Issue.record("accepted \(shown)") } catch {
                #expect("\(error)" == "bad.keelpkg: entry \"\(shown)\": control or invisible formatting characters in the name", "\(error)")
            }
            #expect(!FileManager.default.fileExists(atPath: into + "/" + name))
        }
    }

    @Test("a `/` that Swift reads as part of a combining character is still a `/`: `..` behind it is refused, nothing is written outside")
    func combiningSlash() throws {
        let manifest = "id: demo\nname: Demo\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib.so\ncapabilities: [routes]\n"
        let dir = TestEnvironment.makeTemporaryDirectory("combining")
        // U+0301 after a `/` and U+0600 before one make each pair a single Character, so a split on Characters saw no
        // `..` part; the kernel splits on bytes and walked out of the work folder into its parent.
        let folder = "../\u{301}a\u{600}"
        for entries in [[Self.entry("plugin.yaml", manifest), Self.entry(folder, type: "5"), Self.entry(folder + "/../evil/plugin.yaml", manifest)],
                        [Self.entry("plugin.yaml", manifest), Self.entry("x/\u{301}../../evil/plugin.yaml", manifest)]] {
            try Self.archive(entries).write(to: URL(fileURLWithPath: dir + "/bad.keelpkg"))
            try FileManager.default.createDirectory(atPath: dir + "/work", withIntermediateDirectories: true)
            do {
                try PackageArchive.unpack(file: dir + "/bad.keelpkg", name: "bad.keelpkg", into: dir + "/work/.installing-demo")
                Issue.record("accepted")
            } catch {
                #expect("\(error)".hasPrefix("bad.keelpkg: entry ") && "\(error)".hasSuffix(": a path that escapes the bundle folder"), "\(error)")
            }
            let outside = try FileManager.default.contentsOfDirectory(atPath: dir + "/work").filter { $0 != ".installing-demo" }
            #expect(outside.isEmpty, "written outside the work folder: \(outside)")
            try? FileManager.default.removeItem(atPath: dir + "/work")
        }
        // The same characters inside a name that does not leave the folder are only a name.
        try Self.archive([Self.entry("plugin.yaml", manifest), Self.entry("assets/\u{301}x.txt", "x")])
            .write(to: URL(fileURLWithPath: dir + "/ok.keelpkg"))
        try PackageArchive.unpack(file: dir + "/ok.keelpkg", name: "ok.keelpkg", into: dir + "/ok")
        #expect(FileManager.default.fileExists(atPath: dir + "/ok/assets/\u{301}x.txt"))
    }

    @Test("a FIFO in a local repository (as its index or an archive) is refused at once, not waited on")
    func fifoInRepository() throws {
        /// Runs `body` on a thread of its own and returns what it threw, or nil after 10 s (then it still waits).
        func within10s(_ body: @escaping @Sendable () throws -> Void) -> String? {
            let done = DispatchSemaphore(value: 0), outcome = Mutex<String>("no error")
            Thread {
                do { try body() } catch { outcome.withLock { $0 = "\(error)" } }
                done.signal()
            }.start()
            return done.wait(timeout: .now() + 10) == .success ? outcome.withLock { $0 } : nil
        }
        let repo = try Self.repository(archive: "demo-1.0.0.keelpkg", sha256: String(repeating: "0", count: 64))
        #expect(mkfifo(repo + "/demo-1.0.0.keelpkg", 0o644) == 0)
        let store = try Self.store(repository: repo)
        let offer = try #require(try store.indexes().offers.first)
        let install = within10s { try store.install(offer, allowUnsigned: true) }
        #expect(install?.contains("demo-1.0.0.keelpkg: not a regular file; refused") == true, "\(install ?? "still waiting after 10 s")")
        // Release a reader that still waits, whatever the outcome.
        let writer = open(repo + "/demo-1.0.0.keelpkg", O_WRONLY | O_NONBLOCK)
        if writer >= 0 { close(writer) }

        try FileManager.default.removeItem(atPath: repo + "/index.yaml")
        #expect(mkfifo(repo + "/index.yaml", 0o644) == 0)
        let problems = Mutex<[String]>([])
        let read = within10s { problems.withLock { $0 = (try? store.indexes().problems) ?? ["threw"] } }
        #expect(read != nil, "reading an index that is a FIFO still waits after 10 s")
        #expect(problems.withLock { $0 }.contains { $0.contains("index.yaml") }, "\(problems.withLock { $0 })")
        let writer2 = open(repo + "/index.yaml", O_WRONLY | O_NONBLOCK)
        if writer2 >= 0 { close(writer2) }
    }

    // MARK: 13.3

    @Test("repo add checks a local location; search names the repository it cannot reach")
    func repoAdd() throws {
        let f = KernelFixture()
        let common = ["--plugins", f.plugins, "--state", f.state]
        let missing = try TestEnvironment.run(keel, ["repo", "add", "gone", "/nonexistent/repo"] + common)
        #expect(missing.status == 1 && missing.stderr == "keel: error: repository \"gone\": /nonexistent/repo: no such folder\n", "\(missing.stderr)")
        let empty = TestEnvironment.makeTemporaryDirectory("no-index")
        let noIndex = try TestEnvironment.run(keel, ["repo", "add", "empty", "file://" + empty] + common)
        #expect(noIndex.status == 1 && noIndex.stderr.contains("\(empty): no index.yaml"), "\(noIndex.stderr)")
        #expect(try TestEnvironment.run(keel, ["repo", "list"] + common).stdout.isEmpty)

        let repo = try Self.repository(archive: "x.keelpkg", sha256: String(repeating: "0", count: 64))
        #expect(try TestEnvironment.run(keel, ["repo", "add", "main", repo] + common).status == 0)
        try FileManager.default.removeItem(atPath: repo)
        let search = try TestEnvironment.run(keel, ["search"] + common)
        #expect(search.stderr.contains("repository \"main\": \(repo)/index.yaml: unreachable: no such file"), "\(search.stderr)")
    }
}

/// A shared count. Safe to share: guarded by a mutex.
final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    func set(_ value: Int) { count.withLock { $0 = value } }
    var value: Int { count.withLock { $0 } }
}
