// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
@testable import KeelIsolation
import KeelLoader
import Testing

/// The frames between the host and a worker, through a real socket pair: what `WireWriter` builds, `FrameSource`
/// reads back whole, however the bytes are cut into reads, and a length out of bounds ends the stream.
@Suite("worker wire frames", .scheduled)
struct WireFrameTests {
    /// A socket pair; the test writes on `[1]` and reads on `[0]`.
    func pair() throws -> [Int32] {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw TestFailure("socketpair failed") }
        return fds
    }

    func write(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { b in
            var offset = 0
            while offset < b.count {
                let n = Glibc.write(fd, b.baseAddress! + offset, b.count - offset)
                if n <= 0 { return }
                offset += n
            }
        }
    }

    func frame(_ id: UInt64, text: String) -> [UInt8] {
        var w = WireWriter(.log, id: id)
        w.int(3)
        w.string(text)
        return w.frame
    }

    func read(_ body: [UInt8]) throws -> (id: UInt64, text: String) {
        var r = try WireReader(frame: body)
        _ = try r.int()
        return (r.id, try r.string())
    }

    @Test("many frames in one write, one frame cut byte by byte, and a frame larger than the buffer read back whole")
    func frames() throws {
        let fds = try pair()
        defer { close(fds[0]); close(fds[1]) }
        let source = FrameSource(socket: fds[0])
        let large = String(repeating: "x", count: 300_000)
        let writer = Thread {
            write(fds[1], (1...50).flatMap { frame(UInt64($0), text: "small \($0)") })
            for byte in frame(51, text: "cut") {
                write(fds[1], [byte])
                usleep(100)
            }
            write(fds[1], frame(52, text: large) + frame(53, text: "after"))
            close(fds[1])
        }
        writer.start()
        for i in 1...50 {
            let (id, text) = try read(try #require(source.next()))
            #expect(id == UInt64(i) && text == "small \(i)")
        }
        #expect(try read(try #require(source.next())) == (51, "cut"))
        let big = try read(try #require(source.next()))
        #expect(big.id == 52 && big.text == large)
        #expect(try read(try #require(source.next())) == (53, "after"))
        #expect(source.next() == nil)
        #expect(!source.malformed)
    }

    @Test("a worker's registrations with a service table size no C struct_size can have are malformed (a size near Int.min made the host trap)")
    func tableSizeOutOfRange() throws {
        func read(_ size: Int) throws(WireError) -> RemoteRegistrations {
            var registrations = RemoteRegistrations()
            registrations.services = [.init(interface: "test.echo/1", tableSize: size)]
            var w = WireWriter(.log, id: 1)
            w.registrations(registrations)
            var r = try WireReader(frame: Array(w.frame.dropFirst(4)))
            return try r.registrations()
        }
        #expect(try read(24).services.first?.tableSize == 24)
        for size in [Int.min, Int.min + 7, -1, Int(UInt32.max) + 1, Int.max] {
            #expect(throws: WireError.self, "\(size)") { try read(size) }
        }
    }

    @Test("a length out of bounds is malformed")
    func malformed() throws {
        let fds = try pair()
        defer { close(fds[0]); close(fds[1]) }
        let source = FrameSource(socket: fds[0])
        write(fds[1], frame(1, text: "fine") + [0xff, 0xff, 0xff, 0x7f, 1, 2, 3])
        #expect(try read(try #require(source.next())) == (1, "fine"))
        #expect(source.next() == nil)
        #expect(source.malformed)
    }

    @Test("a worker's host calls: 32 at once, shared by every worker of one plugin's services, and at most 64 MiB of arguments held")
    func hostCallLimits() {
        let services = HostServices.none
        let restarted = services   // the copy a restarted worker's reader gets: the same count
        for _ in 0..<31 { #expect(services.inFlight.admit()) }
        #expect(restarted.inFlight.admit(), "the 32nd")
        #expect(!restarted.inFlight.admit() && !services.inFlight.admit(), "a 33rd is refused, whichever worker asks")
        services.inFlight.end()
        #expect(restarted.inFlight.admit(), "a call that ended gives its place back")
        for _ in 0..<32 { services.inFlight.end() }
        #expect(HostServices.none.inFlight.admit(), "another plugin's services have a count of their own")
        // Bytes: 48 MiB held, a call of 20 MiB more is refused (and takes no place), one of 16 MiB fits.
        #expect(services.inFlight.admit(holding: 48 << 20))
        #expect(!services.inFlight.admit(holding: 20 << 20))
        #expect(services.inFlight.admit(holding: 16 << 20))
        #expect(!services.inFlight.admit(holding: 1))
        services.inFlight.end(holding: 48 << 20)
        #expect(services.inFlight.admit(holding: 40 << 20))
        for _ in 0..<30 { #expect(services.inFlight.admit()) }
        #expect(!services.inFlight.admit(), "32 running: 2 with bytes, 30 without")
    }

    @Test("a principal or response from a worker is refused past its limits before it is read whole")
    func boundedReads() throws {
        func frame(_ kind: Wire.Kind, _ body: (inout WireWriter) -> Void) throws -> WireReader {
            var w = WireWriter(kind, id: 1)
            body(&w)
            return try WireReader(frame: Array(w.frame.dropFirst(4)))
        }
        let within = Principal(id: "ada", displayName: "Ada", tenant: "acme", roles: (0..<64).map { "r\($0)" }, authenticatedBy: "sso")
        var ok = try frame(.checkPermission) { $0.principal(within) }
        #expect(try ok.workerPrincipal() == within)
        for over in [Principal(id: "ada", roles: (0..<65).map { "r\($0)" }, authenticatedBy: ""),
                     Principal(id: String(repeating: "a", count: 257), roles: [], authenticatedBy: ""),
                     Principal(id: "ada", tenant: String(repeating: "t", count: 129), roles: [], authenticatedBy: ""),
                     Principal(id: "ada", roles: [String(repeating: "r", count: 129)], authenticatedBy: "")] {
            var bad = try frame(.checkPermission) { $0.principal(over) }
            #expect(throws: WireError.self) { try bad.workerPrincipal() }
        }
        let headers = (0..<101).map { HeaderField(name: "x-\($0)", value: "v") }
        var many = try frame(.response) { $0.response(PluginResponse(status: 200, headers: headers, body: [])) }
        #expect(throws: WireError.self) { try many.response(headersAtMost: Wire.responseHeaders) }
        var hundred = try frame(.response) { $0.response(PluginResponse(status: 200, headers: Array(headers.prefix(100)), body: [])) }
        #expect(try hundred.response(headersAtMost: Wire.responseHeaders).headers.count == 100)
        #expect(Wire.Kind.response.answers(.handle) && !Wire.Kind.decision.answers(.handle) && Wire.Kind.activationFailed.answers(.activate))
    }
}
