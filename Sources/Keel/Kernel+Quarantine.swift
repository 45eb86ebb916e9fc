// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState

/// Crash-loop quarantine: a plugin whose activate took the host down is not started again until it changes.
extension Kernel {
    // MARK: crash-loop quarantine

    /// A mark left from the last run means that plugin's activate took the host down: disable it, with the reason.
    func quarantineAfterCrash() {
        guard let mark = activationMark.read() else { return }
        activationMark.clear()
        let parts = mark.split(separator: " ").map(String.init)
        guard parts.count == 3 else { return }
        let (id, generation, checksum) = (parts[0], Int(parts[1]) ?? 0, parts[2])
        let reason = "quarantined: the host went down while activating generation \(generation) (checksum \(checksum.prefix(12))); install a new build or run `keel plugins enable \(id)` to try again"
        try? state.setEnabled(id, false, status: .failed, reason: reason)
        try? state.setQuarantine(id, checksum: checksum)
        record(id, generation, version: bundles[id]?.manifest.map { "\($0.version)" } ?? "", checksum: checksum,
               outcome: "quarantined", detail: "the host went down during activate")
        log(.error, id, reason)
    }

    /// A quarantined plugin whose library changed (a new build) is wanted again.
    func releaseRebuiltQuarantines() {
        for record in (try? state.plugins()) ?? [] {
            guard let quarantined = try? state.quarantinedChecksum(record.id),
                  let path = bundles[record.id]?.libraryPath, let current = GenerationStore.checksum(path),
                  current != quarantined else { continue }
            try? state.setQuarantine(record.id, checksum: nil)
            try? state.setEnabled(record.id, true, status: .installed)
            log(.info, record.id, "new build found: quarantine lifted")
        }
    }
}
