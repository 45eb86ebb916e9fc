// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import NIOCore

/// The body of `POST /api/v1/plugins/<id>/commands/<name>`: `{"args": [2, 40]}`, and `"tenant"` for the host's admin.
struct CommandCall: Decodable {
    var args: [CommandArgument]
    /// The tenant the host's admin calls in (nil: the caller's own).
    var tenant: String?
}

extension CommandCall {
    /// The body read without Foundation's decoder when it is the common shape: an object with `args` (an array of
    /// integers that fit in 64 bits, strings without escapes, true, false, null) and at most a plain-string `tenant`,
    /// each key once. Nil for anything else (fractions, exponents, escapes, nesting, other keys, bad JSON): the
    /// decoder then reads it, with its error messages. Gives the values the decoder would.
    init?(plain buffer: ByteBuffer) {
        var r = PlainJSON(buffer.readableBytesView)
        guard r.take(UInt8(ascii: "{")) else { return nil }
        var args: [CommandArgument]?, tenant: String?, seenTenant = false
        if !r.take(UInt8(ascii: "}")) {
            repeat {
                guard let key = r.string(), r.take(UInt8(ascii: ":")) else { return nil }
                switch key {
                case "args" where args == nil:
                    guard let list = r.arguments() else { return nil }
                    args = list
                case "tenant" where !seenTenant:
                    seenTenant = true
                    if r.literal("null") { tenant = nil } else if let t = r.string() { tenant = t } else { return nil }
                default: return nil
                }
            } while r.take(UInt8(ascii: ","))
            guard r.take(UInt8(ascii: "}")) else { return nil }
        }
        guard r.atEnd, let args else { return nil }
        self.init(args: args, tenant: tenant)
    }
}

/// A reader of the JSON subset `CommandCall(plain:)` takes; whitespace between tokens is skipped.
private struct PlainJSON {
    let bytes: ByteBufferView
    var i: ByteBufferView.Index

    init(_ bytes: ByteBufferView) {
        self.bytes = bytes
        i = bytes.startIndex
    }

    var atEnd: Bool {
        mutating get { skipSpace(); return i == bytes.endIndex }
    }

    mutating func skipSpace() {
        while i < bytes.endIndex, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
    }

    mutating func take(_ byte: UInt8) -> Bool {
        skipSpace()
        guard i < bytes.endIndex, bytes[i] == byte else { return false }
        i += 1
        return true
    }

    mutating func literal(_ word: StaticString) -> Bool {
        skipSpace()
        let n = word.utf8CodeUnitCount
        guard bytes.endIndex - i >= n else { return false }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { return false }
        i += n
        return true
    }

    /// A string without escapes or control characters, as valid UTF-8.
    mutating func string() -> String? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = i
        while i < bytes.endIndex, bytes[i] != UInt8(ascii: "\"") {
            if bytes[i] == UInt8(ascii: "\\") || bytes[i] < 0x20 { return nil }
            i += 1
        }
        guard i < bytes.endIndex else { return nil }
        defer { i += 1 }
        return String(validating: bytes[start..<i], as: UTF8.self)
    }

    /// An integer of at most 18 digits (so within Int64), with no fraction or exponent after it.
    mutating func integer() -> Int64? {
        skipSpace()
        var k = i, negative = false
        if k < bytes.endIndex, bytes[k] == UInt8(ascii: "-") { negative = true; k += 1 }
        let digits = k
        var value: Int64 = 0
        while k < bytes.endIndex, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[k]) {
            // At most 18 digits, checked before the arithmetic: a 19th could overflow Int64, which traps.
            guard k - digits < 18 else { return nil }
            value = value * 10 + Int64(bytes[k] - UInt8(ascii: "0"))
            k += 1
        }
        let count = k - digits
        // No leading zero (JSON has none), no fraction or exponent.
        guard count > 0, !(count > 1 && bytes[digits] == UInt8(ascii: "0")) else { return nil }
        if k < bytes.endIndex, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[k]) { return nil }
        i = k
        return negative ? -value : value
    }

    mutating func arguments() -> [CommandArgument]? {
        guard take(UInt8(ascii: "[")) else { return nil }
        var list: [CommandArgument] = []
        if take(UInt8(ascii: "]")) { return list }
        repeat {
            skipSpace()
            guard i < bytes.endIndex else { return nil }
            switch bytes[i] {
            case UInt8(ascii: "\""): guard let s = string() else { return nil }; list.append(.string(s))
            case UInt8(ascii: "t"): guard literal("true") else { return nil }; list.append(.bool(true))
            case UInt8(ascii: "f"): guard literal("false") else { return nil }; list.append(.bool(false))
            case UInt8(ascii: "n"): guard literal("null") else { return nil }; list.append(.null)
            default: guard let n = integer() else { return nil }; list.append(.int(n))
            }
        } while take(UInt8(ascii: ","))
        return take(UInt8(ascii: "]")) ? list : nil
    }
}
