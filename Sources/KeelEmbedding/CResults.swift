// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelABI.Embed
import Glibc
import Keel

/// Results handed to C, in C's own memory (malloc): the caller owns them and frees each with its one destructor
/// (`keel_response_free`, `keel_plugin_list_free`), which releases every part. Stateless.
enum CResults {
    static func response(_ r: PluginResponse) -> UnsafeMutablePointer<keel_response> {
        let headers = UnsafeMutablePointer<keel_header>.allocate(capacity: max(1, r.headers.count))
        for (i, h) in r.headers.enumerated() {
            headers[i] = keel_header(name: UnsafePointer(strdup(h.name)), value: UnsafePointer(strdup(h.value)))
        }
        let body = UnsafeMutablePointer<UInt8>.allocate(capacity: r.body.count + 1)
        r.body.withUnsafeBufferPointer { if let base = $0.baseAddress { body.initialize(from: base, count: r.body.count) } }
        body[r.body.count] = 0
        let out = UnsafeMutablePointer<keel_response>.allocate(capacity: 1)
        out.initialize(to: keel_response(status: Int32(r.status), headers: UnsafePointer(headers), header_count: r.headers.count,
                                         body: UnsafePointer(body), body_len: r.body.count))
        return out
    }

    static func free(_ response: UnsafeMutablePointer<keel_response>?) {
        guard let response else { return }
        let r = response.pointee
        if let headers = r.headers {
            for i in 0..<r.header_count {
                Glibc.free(UnsafeMutableRawPointer(mutating: headers[i].name))
                Glibc.free(UnsafeMutableRawPointer(mutating: headers[i].value))
            }
            UnsafeMutablePointer(mutating: headers).deallocate()
        }
        r.body.map { UnsafeMutablePointer(mutating: $0).deallocate() }
        response.deallocate()
    }

    static func pluginList(_ records: [PluginRecord]) -> UnsafeMutablePointer<keel_plugin_list> {
        let items = UnsafeMutablePointer<keel_plugin_info>.allocate(capacity: max(1, records.count))
        for (i, p) in records.enumerated() {
            items[i] = keel_plugin_info(id: UnsafePointer(strdup(p.id)), name: UnsafePointer(strdup(p.name)),
                                        version: UnsafePointer(strdup(p.version)), status: UnsafePointer(strdup(p.status.rawValue)),
                                        enabled: p.enabled ? 1 : 0, reason: p.reason.map { UnsafePointer(strdup($0)) })
        }
        let out = UnsafeMutablePointer<keel_plugin_list>.allocate(capacity: 1)
        out.initialize(to: keel_plugin_list(count: records.count, items: UnsafePointer(items)))
        return out
    }

    static func free(_ list: UnsafeMutablePointer<keel_plugin_list>?) {
        guard let list else { return }
        let l = list.pointee
        if let items = l.items {
            for i in 0..<l.count {
                for text in [items[i].id, items[i].name, items[i].version, items[i].status, items[i].reason] {
                    Glibc.free(UnsafeMutableRawPointer(mutating: text))
                }
            }
            UnsafeMutablePointer(mutating: items).deallocate()
        }
        list.deallocate()
    }
}
