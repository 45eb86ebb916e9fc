// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import KeelManifest

/// The host's half of "keel.commands/1" (ABI 1.1): a plugin calls another plugin's command by name, with JSON
/// arguments, on behalf of the caller it is serving. See PluginABI/include/keel/commands.h.
extension HostABI {
    nonisolated(unsafe) static let commands: UnsafeMutablePointer<keel_host_commands> = {
        let table = UnsafeMutablePointer<keel_host_commands>.allocate(capacity: 1)
        var c = keel_host_commands()
        c.struct_size = UInt32(MemoryLayout<keel_host_commands>.size)
        c.call = { ctx, plugin, name, args, principal, out, cap, outLength in
            var answeredByCommand = false
            let status: keel_status = {
            guard let context = HostABI.context(ctx), let principal, let outLength, cap == 0 || out != nil else {
                return KEEL_ERR_INVALID_ARGUMENT
            }
            outLength.pointee = 0
            guard let p = plugin.validated(limit: 64), let n = name.validated(limit: 64), let a = args.validated(limit: 1 << 20) else {
                context.setError("commands.call: a plugin id, name or argument text that is not UTF-8 or too long")
                return KEEL_ERR_INVALID_ARGUMENT
            }
            // On behalf of the caller of the request being served, and no one else: a plugin cannot make up a principal,
            // and only the plugin whose handler serves it acts for that caller (not a provider or a command it calls).
            guard let caller = ActivationContext.currentPrincipal(matching: principal, caller: context) else {
                let message = "called \(p).\(n) for a principal that is not the caller of the request it is serving: denied"
                context.logBudgeted(.warn, message)
                context.setError(message)
                return KEEL_ERR_DENIED
            }
            guard context.identity.calls.contains("\(p).\(n)") else {
                let message = "called \(p).\(n), which it does not declare under calls: in plugin.yaml: denied"
                context.logBudgeted(.warn, message)
                context.setError(message)
                return KEEL_ERR_DENIED
            }
            // The host's own principal of the request, not the struct behind the plugin's pointer, which the plugin
            // can write (a role or tenant of its choosing).
            switch context.environment.callCommand(caller: context.pluginID, plugin: p, name: n, arguments: a,
                                                   principal: caller) {
            case let .failure(error):
                context.setError(error.message)
                switch error.code {
                case .unknown, .unavailable: return KEEL_ERR_NOT_FOUND
                case .badArgument: return KEEL_ERR_INVALID_ARGUMENT
                case .forbidden: return KEEL_ERR_DENIED
                case .tooLarge: return KEEL_ERR_LIMIT
                case .failed:
                    answeredByCommand = true
                    return error.status
                }
            case let .success(json):
                let bytes = Array(json.utf8)
                outLength.pointee = bytes.count
                guard bytes.count <= cap else { return KEEL_ERR_LIMIT }
                if let out, !bytes.isEmpty { bytes.withUnsafeBytes { source in UnsafeMutableRawPointer(out).copyMemory(from: source.baseAddress!, byteCount: bytes.count) } }
                return KEEL_OK
            }
            }()
            // The command's own status is its plugin's answer; anything else here is the host's.
            if answeredByCommand { HostRefusal.notRefused() } else { _ = HostRefusal.noted(status) }
            return status
        }
        table.initialize(to: c)
        return table
    }()
}
