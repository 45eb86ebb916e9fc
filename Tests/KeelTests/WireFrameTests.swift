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
}
