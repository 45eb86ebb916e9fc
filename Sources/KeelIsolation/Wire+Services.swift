// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader

/// The values of services between plugins on the wire (keel.services/1 across the worker boundary): a call through a
/// table, its answer, and who serves a lease. Same rules as `Wire`: every read is bounds-checked.
extension WireWriter {
    mutating func serviceCall(_ c: ServiceCall) {
        u32(UInt32(c.arguments.count))
        for a in c.arguments {
            switch a {
            case let .scalar(v): u8(0); u64(v)
            case let .bytes(b): u8(1); bytes(b)
            }
        }
        int(c.outCap)
    }

    mutating func serviceAnswer(_ a: ServiceAnswer) {
        u64(a.value); u64(a.length); bytes(a.bytes)
    }
}

extension WireReader {
    mutating func serviceCall() throws(WireError) -> ServiceCall {
        var c = ServiceCall(arguments: [])
        for _ in 0..<(try count(minimumSize: 5)) {
            switch try u8() {
            case 0: c.arguments.append(.scalar(try u64()))
            case 1: c.arguments.append(.bytes(try bytes()))
            default: throw WireError(description: "an unknown service argument")
            }
        }
        c.outCap = try int()
        return c
    }

    mutating func serviceAnswer() throws(WireError) -> ServiceAnswer {
        ServiceAnswer(value: try u64(), length: try u64(), bytes: try bytes())
    }
}

extension WireWriter {
    /// Who serves: version, provider id and version, generation, table size.
    mutating func grant(_ g: RemoteLeaseGrant) {
        u64(g.id); string(g.version); string(g.providerID); string(g.providerVersion); int(g.generation); int(g.tableSize)
    }
}

extension WireReader {
    mutating func grant() throws(WireError) -> RemoteLeaseGrant {
        RemoteLeaseGrant(id: try u64(), version: try string(), providerID: try string(), providerVersion: try string(),
                         generation: try int(), tableSize: try int())
    }
}
