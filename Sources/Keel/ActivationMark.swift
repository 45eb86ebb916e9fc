// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc

/// Which plugin the kernel is activating right now, in a small file beside the state file (`<state>.activating`).
/// Written before calling a plugin's activate and emptied after. Writes are not synced: the mark has to survive a
/// crash of this process (the page cache keeps it), and skipping the sync keeps start-up fast. Not thread-safe:
/// only the kernel's lifecycle thread uses it.
final class ActivationMark: @unchecked Sendable {
    let path: String
    private var fd: Int32 = -1

    init(path: String) { self.path = path }

    private func open() -> Bool {
        if fd < 0 { fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        return fd >= 0
    }

    func set(_ text: String) {
        guard open() else { return }
        let bytes = Array(text.utf8)
        ftruncate(fd, 0)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    func clear() {
        guard open() else { return }
        ftruncate(fd, 0)
    }

    /// The mark left behind, or nil when there is none.
    func read() -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? nil : trimmed
    }

    deinit { if fd >= 0 { close(fd) } }
}
