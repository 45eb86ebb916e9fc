// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel
import KeelManifest
import KeelState
import KeelStatePostgres
import KeelSystem

extension KeelCommand {
    struct Pack: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pack a plugin bundle folder into <id>-<version>.keelpkg (signed with --key).",
            discussion: "Packs plugin.yaml, config.schema.yaml, the library and assets/; sources and other files are left out.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The bundle folder (plugin.yaml and its library).") var folder: String
        @Option(help: "Folder to write the archive to.") var out = "."
        @Option(help: "Signing key file made by `keel trust keygen`.") var key: String?
        @Option(help: "The signer name recorded beside the signature (the name operators trust it under).") var signer: String?

        func run() async throws {
            try await reporting {
                try requireFolder(folder, hint: "pass the bundle folder, the one that holds plugin.yaml")
                try refuseProjectForBundle(folder, command: "pack")
                if key == nil, let signer {
                    throw CLIError("--signer \(signer) without --key: nothing would be signed; pass --key with \(signer)'s private key file (keel trust keygen wrote it)")
                }
                let manifest: Manifest
                do { manifest = try ManifestLoader().load(path: folder + "/" + ManifestLoader.fileName).0 } catch { throw CLIError(error) }
                // Only what the bundle needs at run time: a project's sources and build files stay behind.
                let data: Data, leftOut: [String]
                do { (data, leftOut) = try PackageArchive.packBundle(folder: folder, library: manifest.library) } catch { throw CLIError(error) }
                // Signed before anything is written: a key refused leaves no archive behind (an index would list it
                // unsigned).
                var signature: String?
                if let key {
                    // A signer this host trusts: the key must be that signer's (a public key given by mistake is
                    // caught). Only an existing state is asked: a build machine has none, and none is made for it.
                    let name = signer ?? "default"
                    let trusted = PostgresURL.isPostgres(options.stateFile) || FileManager.default.fileExists(atPath: options.stateFile)
                        ? (try? options.openState().trustedKeys()[name]) ?? nil : nil
                    do { signature = try ExtensionStore.sign(data, keyFile: key, trustedPublicKey: trusted, signer: name) } catch {
                        throw CLIError(error)
                    }
                }
                try makeFolder(out)
                let path = out + "/\(manifest.id)-\(manifest.version).\(PackageArchive.fileExtension)"
                try data.write(to: URL(fileURLWithPath: path))
                if let signature {
                    try signature.write(toFile: path + ".sig", atomically: true, encoding: .utf8)
                    try (signer ?? "default").write(toFile: path + ".signer", atomically: true, encoding: .utf8)
                } else {
                    // An earlier pack's signature of the same version is not this archive's.
                    for stale in [path + ".sig", path + ".signer"] { try? FileManager.default.removeItem(atPath: stale) }
                }
                print("packed \(path)\(key == nil ? " (unsigned)" : " (signed)")")
                if !leftOut.isEmpty {
                    print("left out \(leftOut.count) file(s) the bundle does not need: \(leftOut.prefix(8).joined(separator: ", "))"
                          + (leftOut.count > 8 ? ", ..." : ""))
                }
            }
        }
    }

    struct Search: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List what the repositories offer (the recommended version of each).")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Only plugins whose id, name or description contains this.") var word: String?
        @Flag(help: "Print JSON: [{id, version (null: none runs here), repository, signed, signer, trusted, description}].") var json = false

        func run() async throws {
            try await reporting {
                let store = ExtensionStore(state: try options.openState(), pluginsDirectory: options.pluginsDirectory)
                let (offers, problems) = try await store.fetchIndexes()
                for p in problems { SystemFile.say("keel: warning: \(p)\n", to: 2) }
                // Every repository unreadable is a failure, not "nothing found" (which reads as: no such plugin).
                if !problems.isEmpty, problems.count >= (try? store.state.repositories().count) ?? 0 {
                    throw CLIError("no repository could be read (\(problems.count == 1 ? "the warning above says" : "the warnings above say") why)")
                }
                // Grouped by id first: looking each id up among every offer is quadratic in the index's size.
                let byID = Dictionary(grouping: offers, by: \.id)
                let ids = byID.keys.sorted().filter { id in
                    guard let word = word?.lowercased() else { return true }
                    return byID[id, default: []].contains { ($0.id + $0.entry.name + ($0.entry.description ?? "")).lowercased().contains(word) }
                }
                let keySet = (try? store.state.trustedKeySet()) ?? TrustedKeySet()
                if json {
                    try printJSON(ids.map { id in
                        let best = try? store.resolve(id, version: nil, offers: byID[id] ?? [])
                        let trusted = keySet.keys(for: id)
                        // Signed: a signature that is not forged (checked against any trusted key of that name);
                        // trusted: by a key trusted for this id.
                        return SearchJSON(id: id, version: best?.entry.version, repository: best?.repository.name,
                                          signed: best.map { ExtensionStore.showsSigned($0, trusted: keySet.keys) },
                                          signer: best?.entry.signature == nil ? nil : best?.entry.signer.map(ExtensionStore.displayName),
                                          trusted: best.map { ExtensionStore.signedByTrustedKey($0, trusted: trusted) },
                                          description: best.map { $0.entry.description ?? $0.entry.name })
                    })
                    return
                }
                if ids.isEmpty { print("nothing found") }
                for id in ids {
                    do {
                        let best = try store.resolve(id, version: nil, offers: byID[id] ?? [])
                        let mark = ExtensionStore.catalogMark(best, keys: keySet)
                        // The index's text as one line that shows what it is (no control character can redraw the mark away).
                        print("\(id) \(best.entry.version)  [\(best.repository.name)]\(mark)  \(ExtensionStore.displayName(best.entry.description ?? best.entry.name))")
                    } catch {
                        // Why no version is offered, as an install would say it (none runs here, two repositories of
                        // one priority offer it, ...).
                        print("\(id)  (\(ExtensionStore.displayName(ErrorText.describe(error))))")
                    }
                }
            }
        }
    }

    struct Install: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Install a plugin (and the dependencies it is missing) from the repositories: ID or ID@VERSION.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "ID or ID@VERSION.") var spec: String
        @Flag(name: .customLong("allow-unsigned"), help: "Install archives that are unsigned or signed by an untrusted key.")
        var allowUnsigned = false
        @Option(help: "A YAML configuration for the plugin, checked against its schema.") var config: String?
        @OptionGroup var signer: SignerOptions

        func run() async throws {
            try await reporting {
                let parts = spec.split(separator: "@", maxSplits: 1).map(String.init)
                // The configuration is read and parsed before anything is installed; only its check against the
                // schema, which comes in the archive, waits for the install.
                let yaml = try config.map { file in
                    let text = try readText(file)
                    do { _ = try PluginConfig.validate(yaml: text, file: file, schemaPath: nil) } catch { throw CLIError(error) }
                    return text
                }
                // Beside a running server the server installs (into its folder: another one given is refused), so that
                // its view is current when this command returns; else a kernel of this process does.
                let server = try options.throughServer()
                let store = ExtensionStore(state: try options.openState(), pluginsDirectory: options.pluginsDirectory)
                let plan: [ExtensionStore.Offer]
                // Reading the repositories blocks: on a thread of its own, never one of Swift's few pool threads.
                let wanted = parts[0], version = parts.count > 1 ? parts[1] : nil
                let planned = await Kernel.offKernel { Result { try store.plan(wanted, version: version) } }
                do { plan = try planned.get() } catch { throw CLIError(error) }
                print("plan: " + plan.map { "\($0.id) \($0.entry.version) from \($0.repository.name)" }.joined(separator: ", "))
                // The kernel installs (the same command the admin API runs); the plan above is what it will do.
                let result: CommandResult
                do {
                    result = try await withProgress("installing \(plan.map(\.id).joined(separator: ", ")) (fetch, verify, probe)") {
                        let install = KernelCommand.install(id: parts[0], version: parts.count > 1 ? parts[1] : nil,
                                                            allowUnsigned: allowUnsigned, signer: signer.change)
                        return server == nil ? try await executeStored(options, install)
                            : try await throughServerOrKernelResult(options, id: nil, command: install, timeout: .seconds(120)).result
                    }
                } catch {
                    // Say what did get installed before the failure (dependencies come first).
                    for offer in plan where !ExtensionStore.bundles(claiming: offer.id, in: options.pluginsDirectory).isEmpty {
                        print("installed \(offer.id) \(offer.entry.version)")
                    }
                    throw error
                }
                for line in result.installed { print("installed \(line)") }
                if let note = result.note { print(note) }
                if let config, let yaml {
                    let configured: CommandResult
                    do { configured = try await throughServerOrKernelResult(options, id: nil, command: .config(id: parts[0], yaml: yaml, file: config)).result } catch {
                        throw CLIError("\(parts[0]) is installed but not configured: \(ErrorText.describe(error)); fix \(config) and run `keel plugins config \(parts[0]) \(config)`")
                    }
                    print("configured \(parts[0])" + (configured.note.map { ": \($0)" } ?? ""))
                }
            }
        }
    }

    struct Upgrade: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upgrade an installed plugin; the old version keeps running if the new one fails (rollback).")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Option(help: "The version to move to (default: the recommended one, if newer).") var to: String?
        @Flag(name: .customLong("allow-unsigned"), help: "Accept an unsigned or untrusted archive.") var allowUnsigned = false
        @OptionGroup var signer: SignerOptions

        func run() async throws {
            try await reporting {
                let before = (try? options.openState().plugin(id))??.version
                let (info, result) = try await withProgress("upgrading \(id) (fetch, verify, probe, swap)") {
                    try await throughServerOrKernelResult(options, id: id, command: .upgrade(id: id, version: to, allowUnsigned: allowUnsigned,
                                                                                             signer: signer.change),
                                                          timeout: .seconds(120))
                }
                if let note = result.note, note.hasPrefix("\"\(id)\" "), note.contains(" is up to date") {
                    // Nothing newer is offered: a success, not a failure.
                    print(note.replacingOccurrences(of: "\"\(id)\"", with: id))
                    return
                }
                // An older version asked for with --to is a downgrade, and said as one.
                let after = info?.version ?? "?"
                let down = before.flatMap(Semver.init).map { old in Semver(after).map { $0 < old } ?? false } ?? false
                print(down ? "downgraded \(id) from \(before ?? "?") to \(after)" : "upgraded \(id) to \(after)")
                if signer.change != nil { print("signer of \(id): \(info?.signer ?? "none pinned")") }
            }
        }
    }

    struct Uninstall: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable and remove an installed plugin.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The plugin id.", completion: Completion.plugins) var id: String
        @Flag(help: "Also disable the enabled plugins that depend on it.") var cascade = false
        @Flag(name: .customLong("keep-data"), help: "Keep its grants and tenant settings for a later reinstall.") var keepData = false

        func run() async throws {
            try await reporting {
                let result = try await throughServerOrKernelResult(options, id: nil, command: .uninstall(id: id, cascade: cascade, keepData: keepData)).result
                print("uninstalled \(id)" + (result.note.map { " (\($0))" } ?? ""))
            }
        }
    }

    struct Repo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage plugin repositories (a folder, file:// or http:// location with index.yaml and archives).",
            subcommands: [Add.self, List.self, Remove.self, Index.self])

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add a repository.")
            @OptionGroup var options: GlobalOptions
            @Argument(help: "A name for it.") var name: String
            @Argument(help: "Folder, file:// or http:// location.") var location: String
            @Option(help: "Higher wins when two repositories offer the same plugin.") var priority = 0

            func run() async throws {
                try await reporting {
                    // A folder is stored absolute; a URL as given (the kernel refuses a scheme it does not read).
                    let location = location.hasPrefix("http") || location.contains("://") ? location
                        : URL(fileURLWithPath: location).standardizedFileURL.path
                    let result = try await executeStored(options, .addRepository(name: name, location: location, priority: priority))
                    print("added repository \(name) (\(location))" + (result.note.map { "; " + $0 } ?? ""))
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List repositories.")
            @OptionGroup var options: GlobalOptions
            @Flag(help: "Print JSON: [{name, location, priority}].") var json = false
            func run() async throws {
                try await reporting {
                    let options = try self.options.readingState()
                    if json { try printJSON(try options.openState().repositories()); return }
                    for r in try options.openState().repositories() { print("\(r.name)  priority \(r.priority)  \(r.location)") }
                }
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove a repository.")
            @OptionGroup var options: GlobalOptions
            @Argument(help: "Its name.") var name: String
            func run() async throws {
                try await reporting { try await executeStored(options, .removeRepository(name: name)) }
                print("removed repository \(name)")
            }
        }

        struct Index: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Write index.yaml for the archives in a folder.")
            // Accepted anywhere, as on every command, but not shown: an index touches neither the state nor the plugins.
            @OptionGroup(visibility: .hidden) var options: GlobalOptions
            @Argument(help: "The repository folder.") var folder: String
            func run() async throws {
                try await reporting {
                    try requireFolder(folder, hint: "put archives in it with `keel pack BUNDLE --out \(folder)`")
                    do {
                        let index = try ExtensionStore.writeIndex(folder: folder)
                        print("indexed \(index.plugins.values.map(\.count).reduce(0, +)) archive(s) in \(folder)/index.yaml")
                    } catch { throw CLIError(error) }
                }
            }
        }
    }

    struct Trust: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Manage the ed25519 keys whose signatures are trusted.",
                                                        subcommands: [Keygen.self, Add.self, Remove.self, List.self])

        struct Keygen: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Make a signing key: writes the private key file, prints the public key.")
            // Accepted anywhere, as on every command, but not shown: making a key touches neither the state nor the plugins.
            @OptionGroup(visibility: .hidden) var options: GlobalOptions
            @Argument(help: "Where to write the private key (a new file; mode 0600).") var file: String
            @Flag(help: "Replace an existing regular file (its key is lost). Anything else is never replaced.") var force = false
            func run() async throws {
                try await reporting {
                    let (priv, pub) = ExtensionStore.makeKey()
                    try writePrivateFile(file, contents: priv, replacing: force)
                    print(pub)
                }
            }
        }

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Trust signatures by this public key under a name.")
            @OptionGroup var options: GlobalOptions
            @Argument(help: "The signer's name.") var name: String
            @Argument(help: "The public key (base64), as printed by keygen.") var key: String
            @Option(name: .customLong("only"), help: ArgumentHelp(
                "The plugin ids it may sign: an id, or a prefix ending in * (acme-*); repeat or separate with commas. A package it signs for another id is taken as signed by a key not trusted here. Given for a key already trusted, replaces its list.",
                valueName: "IDS"))
            var only: [String] = []
            var patterns: [String]? {
                only.isEmpty ? nil : only.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            }
            func validate() throws {
                guard Data(base64Encoded: key)?.count == 32 else { throw ValidationError("not an ed25519 public key (32 bytes, base64)") }
                if let patterns, let problem = TrustScope.problem(patterns) { throw ValidationError("--only: \(problem)") }
            }
            func run() async throws {
                try await reporting {
                    let result = try await executeStored(options, .trustKey(name: name, publicKey: key, only: patterns))
                    print("trusting \(name)" + (result.note.map { " (" + $0 + ")" } ?? ""))
                }
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Stop trusting a key: packages it signs are no longer installed as signed.",
                discussion: "Plugins pinned to the key stay installed and pinned: their upgrades are refused until a trusted key signs them and `keel upgrade ID --signer NAME` moves them to it.")
            @OptionGroup var options: GlobalOptions
            @Argument(help: "The name the key is trusted under (keel trust list).") var name: String
            func run() async throws {
                try await reporting {
                    let result = try await executeStored(options, .untrustKey(name: name))
                    print("no longer trusting \(name)" + (result.note.map { " (" + $0 + ")" } ?? ""))
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List trusted keys.")
            @OptionGroup var options: GlobalOptions
            @Flag(help: "Print JSON: [{name, publicKey, fingerprint, only}] (only: the ids it may sign, absent for any).") var json = false
            func run() async throws {
                try await reporting {
                    let options = try self.options.readingState()
                    let set = try options.openState().trustedKeySet()
                    let keys = set.keys.sorted(by: { $0.key < $1.key })
                    // The fingerprint is how a pinned signer is shown (`keel plugins list`, refusals).
                    if json {
                        try printJSON(keys.map { TrustJSON(name: $0.key, publicKey: $0.value, fingerprint: ExtensionStore.fingerprint($0.value),
                                                           only: set.scopes[$0.key]) })
                        return
                    }
                    for (n, k) in keys {
                        print("\(n)  \(k)  (key \(ExtensionStore.fingerprint(k)))" + (set.scopes[n].map { "  may sign \(TrustScope.describe($0)) only" } ?? ""))
                    }
                }
            }
        }
    }
}

/// A line of `keel trust list --json`.
struct TrustJSON: Encodable {
    var name: String, publicKey: String, fingerprint: String
    var only: [String]?
}

/// `--signer NAME` / `--no-signer` of `keel install` and `keel upgrade`: the operator's deliberate change of a
/// plugin's pinned signer (`SignerChange`).
struct SignerOptions: ParsableArguments {
    @Option(name: .customLong("signer"),
            help: "Move the plugin to the key trusted under this name: the package must be signed by it, and the plugin is pinned to it.")
    var name: String?
    @Flag(name: .customLong("no-signer"),
          help: "Forget the plugin's pinned signer (an unsigned package still needs --allow-unsigned; a signed one pins its key).")
    var forget = false

    func validate() throws {
        if name != nil && forget { throw ValidationError("--signer and --no-signer exclude each other") }
    }

    var change: SignerChange? { forget ? .forget : name.map { .key($0) } }
}

/// `keel search --json`: one object per plugin id; `version`, `repository`, `signed`, `trusted` and `description`
/// are null when no offered version runs on this host, `signer` also when it is not signed. `signed` and `trusted`
/// as in `GET /api/v1/catalog`.
struct SearchJSON: Encodable {
    var id: String
    var version: String?
    var repository: String?
    var signed: Bool?
    var signer: String?
    var trusted: Bool?
    var description: String?

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(version, forKey: .version)
        try c.encode(repository, forKey: .repository)
        try c.encode(signed, forKey: .signed)
        try c.encode(signer, forKey: .signer)
        try c.encode(trusted, forKey: .trusted)
        try c.encode(description, forKey: .description)
    }
    enum CodingKeys: String, CodingKey { case id, version, repository, signed, signer, trusted, description }
}
