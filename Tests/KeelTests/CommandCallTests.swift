// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import KeelHTTP
import KeelLoader
import NIOCore
import Testing

/// The admin API's command body, read without the decoder when it is plain: the same values as the decoder gives,
/// and every other body left to the decoder (and its error messages).
@Suite("command call bodies", .scheduled)
struct CommandCallTests {
    static func decoded(_ text: String) -> CommandCall? { try? JSONDecoder().decode(CommandCall.self, from: Data(text.utf8)) }
    static func plain(_ text: String) -> CommandCall? { CommandCall(plain: ByteBuffer(string: text)) }

    @Test("plain bodies are read directly, with the decoder's values", arguments: [
        #"{"args": [2, 40]}"#, #"{"args":[]}"#, " {\t\"args\" :\n[ -7 , 0, 123456789012345678 ] } ",
        #"{"args": ["hi", "é ✓", "", true, false, null]}"#, #"{"tenant": "acme", "args": [1]}"#,
        #"{"args": [1], "tenant": null}"#,
    ])
    func plainBodies(body: String) throws {
        let direct = try #require(Self.plain(body), "not read directly: \(body)")
        let decoded = try #require(Self.decoded(body), "the decoder refused \(body)")
        #expect(direct.args == decoded.args && direct.tenant == decoded.tenant, "\(body): \(direct.args) vs \(decoded.args)")
    }

    @Test("anything else is left to the decoder", arguments: [
        #"{"args": [1.5]}"#, #"{"args": [1e3]}"#, #"{"args": [1234567890123456789]}"#, #"{"args": [01]}"#,
        #"{"args": ["a\"b"]}"#, #"{"args": ["\u00e9"]}"#, #"{"args": [[1]]}"#, #"{"args": [{"a": 1}]}"#,
        #"{"args": [1], "args": [2]}"#, #"{"args": [1], "tenat": "x"}"#, #"{"tenant": 5, "args": []}"#, "{}",
        #"{"args": [1]} x"#, #"{"args": [1,]}"#, #"{"args": [truex]}"#, #"{"args": [-]}"#, #"{"args": [1]"#, "",
        "[1, 2]", #"{"args": ["\#u{01}"]}"#,
        // Past 18 digits the number is the decoder's (a 19th digit could overflow Int64 and trap, taking the host down).
        #"{"args": [9999999999999999999]}"#, #"{"args": [-9999999999999999999]}"#,
        "{\"args\": [" + String(repeating: "9", count: 10_000) + "]}",
    ])
    func otherBodies(body: String) {
        #expect(Self.plain(body) == nil, "read directly: \(body)")
    }

    @Test("a string that is not UTF-8 is left to the decoder")
    func notUTF8() {
        var buffer = ByteBuffer(string: #"{"args": [""#)
        buffer.writeBytes([0xFF, 0xFE])
        buffer.writeString(#""]}"#)
        #expect(CommandCall(plain: buffer) == nil)
    }
}
