// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KeelSystem
import Testing

/// An attacker's review of a worker's network boundary (README "Process isolation": a plugin in a worker opens no
/// socket unless the operator granted it `network`), with the hostile plugin of `HostileWorkerTests`
/// (Fixtures/plugins/hostile.c): a socket got other than through socket(2), a program it runs, a grant taken back
/// from a running plugin.
@Suite("worker network", .serialized, .scheduled)
struct WorkerNetworkTests {
    /// A datagram socket of the test's at `path` (Unix) or on a port of 127.0.0.1 (UDP, `path` nil), which answers
    /// what it received within 300 ms; the port for UDP.
    final class Receiver {
        let fd: Int32
        var port = 0
        let path: String?

        init(unix path: String? = nil) {
            self.path = path
            fd = socket(path == nil ? AF_INET : AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            if let path {
                var address = sockaddr_un()
                address.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path.utf8.prefix($0.count - 1)) }
                _ = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            } else {
                var address = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: in_addr_t(0x7f00_0001).bigEndian),
                                          sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
                var length = socklen_t(MemoryLayout<sockaddr_in>.size)
                _ = withUnsafeMutablePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
                }
                port = Int(UInt16(bigEndian: address.sin_port))
            }
            var timeout = timeval(tv_sec: 0, tv_usec: 300_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit {
            close(fd)
            if let path { unlink(path) }
        }

        func received() -> String {
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : ""
        }
    }

    func answer(_ server: ServerProcess, _ route: String) async throws -> String {
        try await HostileWorkerTests().answer(server, route)
    }

    @Test("a worker cannot send a datagram to a Unix socket on the file system through a socket pair's end (SOCK_DGRAM or SOCK_RAW): the system log, the journal")
    func noUnixDatagrams() async throws {
        for granted in [false, true] {
            let f = try HostileWorkerTests().stage(network: granted, granted: granted)
            // A datagram service of the user's, as /dev/log or the journal's socket are the system's.
            let receiver = Receiver(unix: (f.state as NSString).deletingLastPathComponent + "/log.sock")
            let server = try ServerProcess(plugins: f.plugins, state: f.state)
            defer { server.stop() }
            let sent = try await answer(server, "dgram?p=" + (receiver.path ?? ""))
            #expect(sent == "refused \(EPERM)", "granted: \(granted): \(sent)")
            #expect(receiver.received() == "", "a datagram reached the Unix socket (granted: \(granted))")
            #expect(try await server.request("GET", "/healthz").status == 200)
        }
    }

    @Test("a worker holds no socket of the host's: none but its own to the host")
    func noInheritedSockets() async throws {
        let f = try HostileWorkerTests().stage()
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        // Traffic first: the host has accepted connections and talked to the worker.
        #expect(try await server.request("GET", "/ext/hostile/items/fine").status == 200)
        #expect(try await answer(server, "fds") == "none")
    }

    @Test("a program a worker runs inherits its filter: bash's /dev/udp sends nothing",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/bash"), "no /bin/bash"))
    func programsInheritTheFilter() async throws {
        let f = try HostileWorkerTests().stage(processes: true)
        let receiver = Receiver()
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        let said = try await answer(server, "bash?p=\(receiver.port)")
        #expect(said.hasPrefix("refused"), "\(said)")
        #expect(receiver.received() == "", "a datagram left bash run by the worker")
    }

    @Test("the limit the README states: granted the network, a worker binds a UDP port (not a TCP one); without it, neither")
    func udpBindOnlyWhenGranted() async throws {
        for granted in [false, true] {
            let f = try HostileWorkerTests().stage(network: granted, granted: granted)
            let server = try ServerProcess(plugins: f.plugins, state: f.state)
            defer { server.stop() }
            let bound = try await answer(server, "udpbind")
            #expect(bound == (granted ? "bound" : "refused \(EPERM)"), "granted: \(granted): \(bound)")
        }
    }

    #if arch(x86_64)
    @Test("a worker cannot open a socket through the x32 system call numbers: the filter ends the worker")
    func noX32Socket() async throws {
        let f = try HostileWorkerTests().stage()
        let receiver = Receiver()
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        let reply = try await server.request("GET", "/ext/hostile/items/x32?p=\(receiver.port)")
        #expect(reply.status >= 500 && reply.text != "sent", "\(reply.status) \(reply.text)")
        #expect(receiver.received() == "", "a datagram left the worker")
        #expect(server.process.isRunning)
        #expect(try await server.request("GET", "/healthz").status == 200)
    }
    #endif

    @Test("a revoke takes the network from a running plugin's worker (its spare and its restarts too); a grant gives it back without a host restart")
    func revokeAndGrantWhileRunning() async throws {
        let f = try HostileWorkerTests().stage(network: true, granted: true)
        let server = try ServerProcess(plugins: f.plugins, state: f.state)
        defer { server.stop() }
        let port = URLComponents(string: server.base)?.port ?? 0
        #expect(try await answer(server, "connect?p=\(port)") == "connected")
        func change(_ key: String) async throws {
            let body = try JSONSerialization.data(withJSONObject: [key: ["network"]])
            let reply = try await server.request("POST", "/api/v1/plugins/hostile/grants", admin: true, body: body)
            #expect(reply.status == 200, "\(key): \(reply.status) \(reply.text)")
        }
        let granted = try await server.request("GET", "/api/v1/plugins/hostile", admin: true).json as? [String: Any]
        let old = (granted?["workerPID"] as? Int).map { pid_t($0) }
        try await change("revoke")
        #expect(try await answer(server, "connect?p=\(port)") == "refused \(EPERM)", "after the revoke")
        // The worker that held the network is gone once drained, and no spare of its generation is left behind.
        for _ in 0..<50 where old.map(HostileWorkerTests.isRunning) == true { try await Task.sleep(for: .milliseconds(100)) }
        #expect(old.map(HostileWorkerTests.isRunning) == false, "the granted worker \(String(describing: old)) still runs")
        #expect(HostileWorkerTests.children(of: server.process.processIdentifier).filter(HostileWorkerTests.isRunning).count <= 2, "more workers than one and its spare")
        // The operator sees it: asked for, not granted (admin API and `keel plugins list`).
        let revoked = try await server.request("GET", "/api/v1/plugins/hostile", admin: true).json as? [String: Any]
        #expect((revoked?["capabilities"] as? [String])?.contains("network") == true)
        #expect((revoked?["grants"] as? [String])?.contains("network") == false)
        let list = try TestEnvironment.run(TestEnvironment.binPath + "/keel", ["plugins", "list", "--plugins", f.plugins, "--state", f.state])
        #expect(list.stdout.contains("network (not granted)"), "\(list.stdout) \(list.stderr)")
        // A crash of the worker that serves: the restart (in the spare worker, started in advance) has no network either.
        let info = try await server.request("GET", "/api/v1/plugins/hostile", admin: true).json as? [String: Any]
        let worker = (info?["workerPID"] as? Int).map { pid_t($0) }
        #expect(worker != nil, "\(String(describing: info))")
        if let worker { kill(worker, SIGKILL) }
        var after = "", tries = 0
        repeat {
            try await Task.sleep(for: .milliseconds(200))
            after = (try? await answer(server, "connect?p=\(port)")) ?? ""
            tries += 1
        } while !after.hasPrefix("refused") && after != "connected" && tries < 25
        #expect(after == "refused \(EPERM)", "after a crash-restart: \(after)")
        let restarted = try await server.request("GET", "/api/v1/plugins/hostile", admin: true).json as? [String: Any]
        #expect((restarted?["workerPID"] as? Int).map { pid_t($0) } != worker, "the worker was not restarted")
        try await change("grant")
        #expect(try await answer(server, "connect?p=\(port)") == "connected", "after the grant")
    }
}
