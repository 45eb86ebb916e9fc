// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelABIGrown
import Foundation
import KeelLoader
import Testing

/// The growth rule, from the host's side: a later 1.x host declares a struct with more fields at its end, and must
/// still accept a 1.0 plugin's shorter struct, reading only the bytes the plugin's struct_size covers.
@Suite("ABI growth: reading only struct_size bytes", .scheduled)
struct ABIGrowthTests {
    /// A 1.0 route placed at the very end of a readable page, followed by a page that may not be touched: a reader
    /// that copies its own (longer) declaration crashes the test run.
    @Test("a 1.0 route read by a host whose keel_route has grown: accepted, its fields intact, the new field zero, no byte past it read")
    func oldStructInGrownHost() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let base = mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else {
            throw TestFailure("mmap failed")
        }
        defer { munmap(base, 2 * page) }
        #expect(mprotect(base + page, page, PROT_NONE) == 0)
        let size = MemoryLayout<keel_route>.size
        let at = base + page - size
        let method = StaticString("GET"), path = StaticString("/items")
        let route = keel_route(struct_size: UInt32(size),
                               method: keel_str(ptr: UnsafeRawPointer(method.utf8Start).assumingMemoryBound(to: CChar.self), len: 3),
                               path: keel_str(ptr: UnsafeRawPointer(path.utf8Start).assumingMemoryBound(to: CChar.self), len: 6),
                               handler: nil, user_data: UnsafeMutableRawPointer(bitPattern: 0x1234))
        at.storeBytes(of: route, as: keel_route.self)

        let minimum = GrowableStruct.minimumSize(of: keel_route.self)
        #expect(minimum == 56)
        let read = try #require(GrowableStruct.read(UnsafeRawPointer(at), as: keel_route_grown.self, minimum: minimum))
        #expect(read.size == 56)
        #expect(read.value.method.len == 3 && read.value.path.len == 6)
        #expect(read.value.user_data == UnsafeMutableRawPointer(bitPattern: 0x1234))
        #expect(read.value.added_in_a_later_minor == 0)
    }

    @Test("a struct from a newer plugin is read up to this host's declaration; one shorter than 1.0 is refused")
    func newerAndTooShort() throws {
        var grown = keel_route_grown()
        grown.struct_size = UInt32(MemoryLayout<keel_route_grown>.size)
        grown.path.len = 6
        grown.added_in_a_later_minor = 7
        let read = try #require(withUnsafeBytes(of: &grown) {
            GrowableStruct.read($0.baseAddress!, as: keel_route.self, minimum: GrowableStruct.minimumSize(of: keel_route.self))
        })
        #expect(read.size == 64 && read.value.path.len == 6)

        var short = keel_route()
        short.struct_size = 40
        #expect(withUnsafeBytes(of: &short) {
            GrowableStruct.read($0.baseAddress!, as: keel_route.self, minimum: GrowableStruct.minimumSize(of: keel_route.self))
        } == nil)
    }
}
