// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelSystem

/// Which plugin the kernel is activating right now, in a small file beside the state file (`<state>.activating`).
/// Set before calling a plugin's activate and cleared after; a mark left behind names the plugin that took the process
/// down. The file is mapped shared and written through memory: the mark has to survive a crash of this process, not
/// of the machine, and the page cache keeps it then, so setting and clearing it costs no system call (start-up sets
/// it once per plugin). The text ends at the first NUL byte or at the end of the file.
/// Not thread-safe, and not `Sendable`: the kernel actor owns it and uses it only on its lifecycle thread.
final class ActivationMark {
    let path: String
    private let page: SharedPage

    init(path: String) {
        self.path = path
        page = SharedPage(path: path)
    }

    private func memory() -> UnsafeMutableRawBufferPointer? { page.bytes }

    /// Why no mark can be kept (the file is a link or another user's), once a set or clear has tried; nil otherwise.
    var refusal: String? { page.refusal }

    func set(_ text: String) {
        guard let memory = memory() else { return }
        let bytes = Array(text.utf8.prefix(SharedPage.size - 1))
        // Terminate first, so that a crash half-way leaves the old text or a prefix of the new one, never garbage.
        memory[bytes.count] = 0
        bytes.withUnsafeBytes { memory.copyMemory(from: $0) }
    }

    func clear() {
        guard let memory = memory() else { return }
        memory[0] = 0
    }

    /// The mark left behind, or nil when there is none.
    func read() -> String? {
        // Only this user's (see `SharedPage`): another user's would quarantine whatever plugin it named.
        guard let data = try? SystemFile.read(path, limit: 1 << 20, ownedHere: true) else { return nil }
        // Trimmed by bytes (the mark is ASCII): `trimmingCharacters(in:)`'s first use costs a start run-time look-ups.
        var bytes = data.prefix { $0 != 0 }
        let space: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        while let last = bytes.last, space(last) { bytes.removeLast() }
        while let first = bytes.first, space(first) { bytes.removeFirst() }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }
}
