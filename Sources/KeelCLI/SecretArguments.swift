// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelSystem

/// Keeps a secret given on the command line (`--token T`) out of what other processes can read about this one.
///
/// `/proc/<pid>/cmdline` is readable by every process on the machine, a plugin's worker included (its file rules
/// let it read `/proc`, which the run-time needs), and `keel logs -f --token T` or `keel dev --token T` run for hours.
/// Once the arguments are copied into Swift strings, `hide()` overwrites the secret's bytes in the process's own
/// argument area, which is what `/proc/<pid>/cmdline` shows; and a process holding the admin token (from there or
/// from `$KEEL_ADMIN_TOKEN`) makes itself not dumpable, which closes its `/proc/<pid>/environ` and memory to other
/// processes of the same user. Call once from `main`, before any thread reads the arguments' C strings.
enum SecretArguments {
    /// The options whose value is a secret.
    static let options = ["--token"]

    /// Overwrites each secret option's value in the process's argument area with `*`; returns whether there was one.
    @discardableResult
    static func hide() -> Bool {
        let argv = CommandLine.unsafeArgv
        var found = false
        var i = 1
        while i < Int(CommandLine.argc) {
            guard let argument = argv[i] else { break }
            let text = String(cString: argument)
            if options.contains(text), i + 1 < Int(CommandLine.argc), let value = argv[i + 1] {
                blank(value, from: 0)
                found = true
                i += 1
            } else if let option = options.first(where: { text.hasPrefix($0 + "=") }) {
                blank(argument, from: option.utf8.count + 1)
                found = true
            }
            i += 1
        }
        return found
    }

    /// Makes this process not dumpable (`Confinement.closeHostToWorkers`) when it holds the admin token: on its
    /// command line (`hide`'s answer) or in its environment.
    static func closeIfHoldingToken(onCommandLine: Bool) {
        guard onCommandLine || HeldSecrets.environment["KEEL_ADMIN_TOKEN"] != nil else { return }
        Confinement.closeHostToWorkers()
    }

    private static func blank(_ string: UnsafeMutablePointer<CChar>, from start: Int) {
        var p = string + start
        while p.pointee != 0 {
            p.pointee = CChar(UInt8(ascii: "*"))
            p += 1
        }
    }
}
