// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelManifest

/// The configuration `keel plugins inspect` and `validate` give a bundle's trial activations, as the host would give
/// it: `file` (YAML, `--config`) checked against the bundle's `config.schema.yaml`; without a file, none, which the
/// schema must then accept (as the host starts a plugin that has no configuration stored). Empty (no configuration)
/// when there is neither a file nor a schema.
/// - Parameters: `folder`: the bundle folder, nil for a bare library (which has no schema); `id`: names the plugin.
/// - Throws: `CLIError` naming the file, the key and the reason, and, without a file, how to pass one.
func trialConfiguration(folder: String?, id: String, file: String?) throws -> String {
    let yaml = try file.map(readText)
    do {
        return try PluginConfig.activationJSON(yaml: yaml, file: file ?? "configuration of \(id) (none given)",
                                               schemaPath: folder.flatMap(PluginConfig.schema(inBundle:)))
    } catch {
        guard file == nil else { throw CLIError(error.description) }
        throw CLIError("plugin \"\(id)\" needs a configuration to run: \(error); pass one with --config FILE, as "
                       + "`keel plugins config \(id) FILE` gives it to the host")
    }
}
