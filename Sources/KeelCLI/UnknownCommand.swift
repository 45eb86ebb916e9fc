// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelManifest
import ArgumentParser

/// Names a mistyped subcommand (`keel plugins info`, `keel plugin list`) instead of the parser's
/// "2 unexpected arguments: 'plugin', 'list'", which does not say that the first word is the mistake.
enum UnknownCommand {
    /// The message (one line, then where help is) for `arguments` (already normalized: the subcommand path first) when a word where a
    /// subcommand belongs names none, with the closest name when one is near and the valid ones otherwise; nil when
    /// the arguments fail for another reason. Pure; called on the main thread after a failed parse.
    static func message(for arguments: [String]) -> String? {
        var command: ParsableCommand.Type = KeelCommand.self
        var path = ["keel"]
        var skipValue = false
        for word in arguments {
            // Global options stay in front when the subcommand path is not recognised: `keel -v plugns list`.
            if skipValue { skipValue = false; continue }
            if word == "--plugins" || word == "--state" { skipValue = true; continue }
            if word == "-v" || word == "--verbose" || word.hasPrefix("--plugins=") || word.hasPrefix("--state=") { continue }
            let subcommands = command.configuration.subcommands
            if let sub = subcommands.first(where: { $0._commandName == word }) {
                command = sub
                path.append(word)
                continue
            }
            guard !subcommands.isEmpty, command.configuration.defaultSubcommand == nil, !word.hasPrefix("-") else { return nil }
            let names = subcommands.filter { $0.configuration.shouldDisplay }.map { $0._commandName }
            let here = path.joined(separator: " ")
            let see = "\n  See '\(here) --help' for more information."
            if let near = closest(to: word, in: names) {
                return "\"\(here) \(word)\" is not a command; did you mean \"\(here) \(near)\"?" + see
            }
            return "\"\(here) \(word)\" is not a command; the commands of \"\(here)\" are: \(names.joined(separator: ", "))" + see
        }
        return nil
    }

    /// The message for an option given a negative number as its own word (`--idle-timeout -5`), which the parser
    /// reads as another option and reports as the first one's "missing value"; nil when there is none. Asked only
    /// after a failed parse (a command's own arguments, `keel call ... -5`, parse before this is asked).
    static func negativeValue(in arguments: [String]) -> String? {
        for (option, value) in zip(arguments, arguments.dropFirst())
        where option.hasPrefix("--") && !option.contains("=") && value.count > 1 && value.hasPrefix("-")
            && value.dropFirst().allSatisfy({ $0.isNumber || $0 == "." }) {
            return "\(option) \(value): a value starting with \"-\" is read as an option; write \(option)=\(value)"
        }
        return nil
    }

    /// The name that `word` is a prefix of or extends (`plugin`, `pluginss`), or at most 2 edits from.
    static func closest(to word: String, in names: [String]) -> String? {
        let w = word.lowercased()
        if let prefix = names.first(where: { $0.hasPrefix(w) || w.hasPrefix($0) }), w.count >= 3 { return prefix }
        return Spelling.nearest(w, in: names)
    }

}
