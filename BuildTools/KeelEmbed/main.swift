// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// Build tool (run by the EmbedSDK plugin): writes a Swift file holding text files of the repository, so that an
// installed `keel` carries the plugin headers and the project templates without Keel's checkout.
//   KeelEmbed OUTPUT.swift ROOT RELATIVE-PATH...
// Each file becomes a string literal keyed by its path relative to ROOT. Only UTF-8 text is accepted.

import Foundation

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("KeelEmbed: usage: KeelEmbed OUTPUT.swift ROOT RELATIVE-PATH...\n".utf8))
    exit(64)
}
let output = arguments[1], root = arguments[2]

/// `text` as a Swift string literal: quotes, backslashes and control characters escaped, the rest verbatim.
func literal(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

var swift = """
    // Generated at build time by BuildTools/KeelEmbed from the files listed below; do not edit.

    /// Text files of Keel's repository, by path relative to its root (the plugin headers, the pkg-config template
    /// and the `keel new` templates), carried in the binary.
    enum EmbeddedFiles {
        static let files: [String: String] = [

    """
for path in arguments.dropFirst(3).sorted() {
    guard let data = FileManager.default.contents(atPath: root + "/" + path) else {
        FileHandle.standardError.write(Data("KeelEmbed: error: \(root)/\(path): cannot be read\n".utf8))
        exit(1)
    }
    guard let text = String(data: data, encoding: .utf8) else {
        FileHandle.standardError.write(Data("KeelEmbed: error: \(root)/\(path): not UTF-8 text\n".utf8))
        exit(1)
    }
    swift += "        \(literal(path)): \(literal(text)),\n"
}
swift += "    ]\n}\n"
do {
    // Rewrite only on a change, so that the target compiling it is not rebuilt for nothing.
    if FileManager.default.contents(atPath: output) != Data(swift.utf8) {
        try Data(swift.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
    }
} catch {
    FileHandle.standardError.write(Data("KeelEmbed: error: \(output): cannot be written\n".utf8))
    exit(1)
}
