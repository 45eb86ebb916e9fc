// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel

/// The embedding half of `keel sdk install`: libkeel.so and `keel.pc`, so that
/// `cc app.c $(pkg-config --cflags --libs keel)` builds a program that embeds Keel (keel/keel_embed.h is installed
/// with the plugin headers). The library is the one built beside this `keel` (`libkeel-embed.so` in the build
/// folder) or installed beside it (`../lib/libkeel.so`); it is not embedded in the binary. Stateless.
enum EmbeddingSDK {
    static let packageName = "keel"
    private static let pcTemplate = "PluginABI/sdk/keel.pc.in"

    /// Where the libkeel.so this `keel` belongs with may lie, in the order they are looked at: the build folder's
    /// name for it, the installed name beside the binary, and an installed prefix's `lib/`.
    static var candidates: [String] {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let folder = (executable as NSString).deletingLastPathComponent
        return [folder + "/libkeel-embed.so", folder + "/libkeel.so", folder + "/../lib/libkeel.so"]
    }

    /// The libkeel.so this `keel` belongs with, or nil when there is none.
    static var library: String? { candidates.first { FileManager.default.fileExists(atPath: $0) } }

    /// Why nothing was installed for embedding, and how to get the library: for `keel sdk install` to print.
    static var missing: String {
        let looked = candidates.map { ($0 as NSString).standardizingPath }.joined(separator: ", ")
        return "no embedding library beside this keel (looked for \(looked)): libkeel.so and keel.pc are not installed, "
            + "so `pkg-config keel` finds nothing. Build it from a checkout with `swift build --product keel-embed` "
            + "(or Scripts/release-build.sh --product keel-embed) and run this command with the keel of the same build "
            + "folder, or put the library beside this keel as libkeel.so"
    }

    static func pcFile(prefix: String) -> String {
        (EmbeddedFiles.files[pcTemplate] ?? "")
            .replacingOccurrences(of: "@PREFIX@", with: prefix)
            .replacingOccurrences(of: "@KEEL_VERSION@", with: Kernel.embeddingVersion)
    }

    /// Copies libkeel.so to `prefix/lib/libkeel.so` and writes `prefix/lib/pkgconfig/keel.pc`; returns the paths
    /// written, or an empty list when this `keel` has no libkeel.so beside it (the plugin SDK is complete without it).
    /// - Throws: `CLIError` naming the file and the reason.
    static func install(prefix: String) throws -> [String] {
        guard let library else { return [] }
        let target = prefix + "/lib/libkeel.so"
        try makeFolder(prefix + "/lib")
        let temporary = target + ".tmp"
        try? FileManager.default.removeItem(atPath: temporary)
        do {
            try FileManager.default.copyItem(atPath: library, toPath: temporary)
            guard rename(temporary, target) == 0 else { throw CLIError("\(target): cannot be replaced: \(String(cString: strerror(errno)))") }
        } catch let error as CLIError { throw error } catch { throw CLIError(error) }
        let pc = PluginSDK.pcDirectory(prefix: prefix) + "/\(packageName).pc"
        try PluginSDK.writeText(pcFile(prefix: prefix), to: pc)
        var written = [target, pc]
        // The example appliance, so that a program can start from code that builds, outside a checkout.
        for (path, text) in EmbeddedFiles.files where path.hasPrefix(exampleSource) {
            let file = exampleDirectory(prefix: prefix) + "/" + path.dropFirst(exampleSource.count)
            try PluginSDK.writeText(text, to: file)
            written.append(file)
        }
        return written
    }

    private static let exampleSource = "Examples/appliance/"

    /// Where `install` puts the example appliance (`appliance.c`).
    static func exampleDirectory(prefix: String) -> String { prefix + "/share/keel/examples/appliance" }
}
