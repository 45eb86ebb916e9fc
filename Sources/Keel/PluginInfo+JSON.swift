// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// `PluginInfo` as JSON text, written by hand: the bytes `Kernel.encoder()` (JSONEncoder, sorted keys, slashes as they
/// are) writes, at a small part of the cost. JSONEncoder was most of what building a command's live view and its
/// admin API answer cost. A field added to `PluginInfo` must be added here too, in key order (the test "plugin info
/// as JSON is JSONEncoder's text" compares the two on a plugin with every field set).
extension PluginInfo {
    public var json: String {
        var w = JSONText()
        w.begin()
        w.key("abi"); w.string(abi)
        w.key("activation"); w.string(activation)
        if let activity { w.key("activity"); w.string(activity) }
        w.key("authenticators"); w.strings(authenticators)
        w.key("authorizers"); w.strings(authorizers)
        w.key("bundlePath"); w.string(bundlePath)
        w.key("capabilities"); w.strings(capabilities)
        w.key("changedAt"); w.string(changedAt)
        w.key("commands"); w.array(commands) { w, c in
            w.begin()
            w.key("description"); w.string(c.description)
            w.key("name"); w.string(c.name)
            w.key("permission"); w.string(c.permission)
            w.key("plugin"); w.string(c.plugin)
            w.key("signature"); w.string(c.signature)
            w.end()
        }
        w.key("consoleFetch"); w.strings(consoleFetch)
        w.key("consumes"); w.strings(consumes)
        w.key("dependencies"); w.begin()
        for (name, versions) in dependencies.sorted(by: { $0.key < $1.key }) { w.key(name); w.string(versions) }
        w.end()
        w.key("description"); w.string(description)
        w.key("enabled"); w.raw(enabled ? "true" : "false")
        w.key("grants"); w.strings(grants)
        w.key("id"); w.string(id)
        w.key("isolation"); w.string(isolation)
        w.key("library"); w.string(library)
        w.key("manifestOnly"); w.raw(manifestOnly ? "true" : "false")
        w.key("menus"); w.strings(menus)
        w.key("name"); w.string(name)
        w.key("pages"); w.strings(pages)
        w.key("permissions"); w.strings(permissions)
        w.key("provides"); w.strings(provides)
        w.key("proxies"); w.strings(proxies)
        if let reason { w.key("reason"); w.string(reason) }
        w.key("routes"); w.strings(routes)
        if let signature { w.key("signature"); w.string(signature) }
        if let signer { w.key("signer"); w.string(signer) }
        w.key("status"); w.string(status.rawValue)
        if let tenants { w.key("tenants"); w.strings(tenants) }
        w.key("version"); w.string(version)
        w.key("warnings"); w.strings(warnings)
        if let workerPID { w.key("workerPID"); w.raw(String(workerPID)) }
        if let workerRestarts { w.key("workerRestarts"); w.raw(String(workerRestarts)) }
        w.end()
        return w.text
    }
}

/// JSON text as JSONEncoder writes it (compact; strings escaped as its writer escapes them, slashes left as they are).
/// Written as UTF-8 bytes and made a `String` once: a `String` appended to piece by piece checks its storage at every
/// piece, which was most of what a plugin's JSON cost.
struct JSONText {
    private var bytes: [UInt8] = []
    /// Whether the next member or element needs a comma before it.
    private var needsComma = false

    init() { bytes.reserveCapacity(1024) }

    var text: String { String(decoding: bytes, as: UTF8.self) }

    mutating func begin() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    mutating func end() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func key(_ name: String) {
        separate()
        quoted(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func string(_ value: String) {
        separate()
        quoted(value)
        needsComma = true
    }

    /// A literal (number, true, false) as it is.
    mutating func raw(_ literal: String) {
        separate()
        bytes.append(contentsOf: literal.utf8)
        needsComma = true
    }

    mutating func strings(_ values: [String]) {
        array(values) { w, s in w.string(s) }
    }

    mutating func array<T>(_ values: [T], _ element: (inout JSONText, T) -> Void) {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
        for value in values { element(&self, value) }
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    /// Escapes are all ASCII (quote, backslash, control characters): the text is escaped byte by byte, and every byte
    /// of a character beyond ASCII is copied as it is.
    private mutating func quoted(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            var plain = true
            for byte in utf8 where byte < 0x20 || byte == 0x22 || byte == 0x5C {
                plain = false
                break
            }
            if plain {
                bytes.append(contentsOf: utf8)
                return
            }
            for byte in utf8 {
                switch byte {
                case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
                case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
                case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
                case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
                case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0x0f)]])
                default: bytes.append(byte)
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
