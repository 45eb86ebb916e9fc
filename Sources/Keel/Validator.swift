// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import KeelRegistry
import Synchronization

/// One check of `keel plugins validate`: its name, whether it passed, and what was found.
public struct ValidationCheck: Sendable, Codable, Hashable {
    public var name: String
    public var passed: Bool
    public var detail: String

    public init(name: String, passed: Bool, detail: String) {
        self.name = name
        self.passed = passed
        self.detail = detail
    }
}

/// A conformance run on a built bundle (`keel plugins validate`, like clap-validator): it loads the library, checks
/// what it exports and its descriptor's struct_size, activates and deactivates it repeatedly, checks the struct sizes
/// it hands the host and the service tables it provides, sends concurrent requests to every route, reloads it while calls run, asks it for an extension
/// it cannot know, and activates it without capabilities. Runs plugin code in the calling process:
/// the CLI runs it in a child process, so that a crash is reported rather than suffered. Touches no state file.
public enum Validator {
    /// Activate/deactivate rounds, and threads × calls per route.
    public static let rounds = 10
    public static let threads = 4
    public static let callsPerThread = 25

    /// Runs every check on the bundle folder at `path`, handing each result to `report` as soon as it is known (a
    /// later check may crash the process). Stops after a check that leaves nothing to test. Every activation is
    /// given `config` (JSON, as the host hands a plugin its configuration; empty: none).
    public static func run(bundle path: String, config: String = "", report: (ValidationCheck) -> Void) {
        // A thread name of its own, which threads the plugin starts inherit: the calling thread may have been
        // started from a Dispatch worker, whose "…-qos" names the thread check leaves out.
        try? Data("keel-validate".utf8).write(to: URL(fileURLWithPath: "/proc/thread-self/comm"))
        let manifestPath = path + "/" + ManifestLoader.fileName
        let manifest: Manifest
        do { manifest = try ManifestLoader().load(path: manifestPath).0 } catch {
            return report(ValidationCheck(name: Check.manifest.name, passed: false, detail: error.description))
        }
        report(ValidationCheck(name: Check.manifest.name, passed: true, detail: "\(manifest.id) \(manifest.version), ABI \(manifest.abi)"))

        guard let libraryName = manifest.library else {
            // A manifest-only bundle runs no code: what plugin.yaml declares is all there is to check.
            return report(ValidationCheck(name: "no library: a manifest-only bundle runs no code", passed: true,
                                          detail: "\(manifest.proxies.count) proxies, \(manifest.menus.count) menu entries"))
        }
        let libraryPath = path + "/" + libraryName
        // A name the folder lacks: said as the host says it (the key, the folder, the likely name), not "no such file".
        if let missing = PluginBundle(folder: path, manifestPath: manifestPath, manifest: manifest, warnings: []).missingLibrary {
            return report(ValidationCheck(name: Check.loads.name, passed: false, detail: missing))
        }
        let library: PluginLibrary
        do {
            library = try PluginLibrary.open(path: libraryPath, expectedID: manifest.id)
            try library.verify(against: manifest, manifestPath: manifestPath)
        } catch {
            return report(ValidationCheck(name: Check.loads.name, passed: false, detail: error.description))
        }
        report(ValidationCheck(name: Check.loads.name, passed: true,
                               detail: "ABI \(library.descriptor.abi), version \(library.descriptor.version.map { "\($0) in the descriptor" } ?? "from plugin.yaml")"))
        report(exportedSymbols(libraryPath, allowed: Set([KEEL_ENTRY_NAME] + manifest.commands.map(\.symbol))))
        report(descriptorSize(library))

        var registered: [String]?
        let threadsBefore = threadIDs()
        var cycle = ValidationCheck(name: Check.cycles.name, passed: true, detail: "")
        for round in 1...rounds {
            let context = makeContext(manifest, grants: manifest.capabilities, config: config)
            do {
                let c = try library.activate(context, seed: seed(manifest))
                // A registration refused while activate went on: the plugin would run without it on a host. (One refused
                // for its struct_size is the struct-size check's, with its own advice.)
                if let refused = c.ignoredRefusal, !SizeRefusal.isRefusal(refused) {
                    library.deactivate(context, drainTimeout: 2)
                    cycle = ValidationCheck(name: cycle.name, passed: false,
                                            detail: "round \(round): " + Contributions.ignoredRefusalNote(refused, running: false))
                    break
                }
                let now = c.routes.map { "\($0.method) \($0.pattern)" } + c.menus.map(\.entry.id) + c.authenticators.map(\.name) + c.authorizers.map(\.name) + c.services.map { "provides \($0.interface)" }
                if let problem = library.deactivate(context, drainTimeout: 2) {
                    cycle = ValidationCheck(name: cycle.name, passed: false, detail: "round \(round): \(problem)")
                    break
                }
                if let registered, registered != now {
                    cycle = ValidationCheck(name: cycle.name, passed: false,
                                            detail: "round \(round) registered \(now) but round 1 registered \(registered)")
                    break
                }
                registered = now
            } catch {
                cycle = ValidationCheck(name: cycle.name, passed: false, detail: "round \(round): \(error.description)")
                break
            }
        }
        if cycle.passed { cycle.detail = "the same \(registered?.count ?? 0) registration(s) each time" }
        report(cycle)
        guard cycle.passed else { return }
        report(threadsStopped(since: threadsBefore))

        report(hostStructSizes(library, manifest, config: config))
        report(providedTables(library, manifest, config: config))
        report(commands(library, manifest, config: config))
        report(concurrentRequests(library, manifest, config: config))
        report(reloadUnderCalls(library, manifest, config: config, libraryPath: libraryPath))
        report(unknownExtension(library))
        report(withoutCapabilities(library, manifest, config: config))
    }

    static let KEEL_ENTRY_NAME = "keel_plugin_entry"

    /// The checks of a run with a library, in the order they run: a crash or hang is named by the check after the
    /// last one reported.
    public enum Check: CaseIterable, Sendable {
        case manifest, loads, exports, descriptor, cycles, threads, hostSizes, tables, commands, concurrent, reload,
             unknownExtension, noCapabilities

        public var name: String {
            switch self {
            case .manifest: "plugin.yaml is valid"
            case .loads: "the library loads and agrees with plugin.yaml"
            case .exports: "exports no C symbol beyond keel_plugin_entry and its commands"
            case .descriptor: "states a sane descriptor struct_size"
            case .cycles: "activate and deactivate \(Validator.rounds) times"
            case .threads: "leaves no thread running after deactivate"
            case .hostSizes: "passes the host struct sizes it accepts"
            case .tables: "provides tables that hold the functions plugin.yaml declares"
            case .commands: "exports the commands plugin.yaml declares, which answer their probe calls"
            case .concurrent: "answers \(Validator.threads) threads × \(Validator.callsPerThread) concurrent requests on every route"
            case .reload: "serves every call while it is reloaded \(Validator.reloads) times"
            case .unknownExtension: "returns NULL for an extension it does not know"
            case .noCapabilities: "activates or refuses cleanly without the capabilities it asks for"
            }
        }

        /// The check that runs after the one named `name` (the first when nil), or nil after the last.
        public static func after(_ name: String?) -> Check? {
            guard let name else { return allCases.first }
            guard let i = allCases.firstIndex(where: { $0.name == name }), i + 1 < allCases.count else { return nil }
            return allCases[i + 1]
        }
    }

    static func makeContext(_ manifest: Manifest, grants: Set<Capability>, config: String,
                            log: @escaping @Sendable (LogRecord) -> Void = KernelConfiguration.silentLog) -> ActivationContext {
        let environment = KernelEnvironment(registry: PluginRegistry(), log: log)
        return ActivationContext(pluginID: manifest.id, grants: grants, routePrefixes: manifest.routePrefixes,
                                 requestedRoutePrefixes: manifest.routePrefixes, requestedCapabilities: manifest.capabilities,
                                 config: config,
                                 identity: ServiceIdentity(version: manifest.version.description, generation: 1,
                                                           provides: manifest.provides, consumes: manifest.consumes,
                                                           calls: manifest.calls),
                                 environment: environment)
    }

    static func seed(_ manifest: Manifest) -> Contributions {
        var seed = Contributions()
        seed.menus = manifest.menus.map { MenuRegistration(entry: $0, fromManifest: true) }
        return seed
    }

    /// The library's dynamic symbols (`nm -D --defined-only`): C-named ones beyond the entry point and the declared
    /// commands fail; the linker's own and language-mangled ones (Swift `$s`, C++/Rust `_Z`, `_R`) are only counted.
    static func exportedSymbols(_ path: String, allowed: Set<String>) -> ValidationCheck {
        let name = Check.exports.name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["nm", "-D", "--defined-only", path]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return ValidationCheck(name: name, passed: true, detail: "skipped: nm cannot be run") }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return ValidationCheck(name: name, passed: true, detail: "skipped: nm failed (install binutils)") }
        let linker: Set<String> = ["_init", "_fini", "_edata", "_end", "__bss_start"]
        var extra: [String] = [], mangled = 0
        for line in text.split(separator: "\n") {
            guard let symbol = line.split(separator: " ").last.map(String.init), !allowed.contains(symbol), !linker.contains(symbol) else { continue }
            if symbol.hasPrefix("$s") || symbol.hasPrefix("_Z") || symbol.hasPrefix("_R") || symbol.hasPrefix("__") { mangled += 1 } else { extra.append(symbol) }
        }
        guard extra.isEmpty else {
            return ValidationCheck(name: name, passed: false, detail: "also exports \(extra.sorted().prefix(10).joined(separator: ", "))"
                                   + (extra.count > 10 ? " and \(extra.count - 10) more" : "") + " (build with -fvisibility=hidden, mark only the entry KEEL_EXPORT)")
        }
        return ValidationCheck(name: name, passed: true, detail: mangled == 0 ? "only the entry point" : "plus \(mangled) language-mangled symbol(s)")
    }

    /// The ids of this process's threads (`/proc/self/task`), without Dispatch's own workers (named after their
    /// queue's quality of service: "…default-qos", "…-qos.overcommit"), which the host's waits may start and which stay idle.
    static func threadIDs() -> Set<String> {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return Set(ids.filter { !threadName($0).contains("-qos") })
    }

    static func threadName(_ id: String) -> String {
        ((try? String(contentsOfFile: "/proc/self/task/\(id)/comm", encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Threads started during the activate/deactivate rounds must be gone once deactivate has returned (given a
    /// second to finish exiting).
    static func threadsStopped(since before: Set<String>) -> ValidationCheck {
        let name = Check.threads.name
        var left = threadIDs().subtracting(before)
        let deadline = Date().addingTimeInterval(1)
        while !left.isEmpty && Date() < deadline {
            usleep(20_000)
            left = threadIDs().subtracting(before)
        }
        guard left.isEmpty else {
            let names = left.sorted().prefix(3).map(threadName)
            return ValidationCheck(name: name, passed: false,
                                   detail: "\(left.count) thread(s) still running after \(rounds) deactivations (\(names.joined(separator: ", "))): stop them in deactivate")
        }
        return ValidationCheck(name: name, passed: true, detail: "none left")
    }

    /// A request path for `pattern`: parameters filled with "x", the rest with "x/y".
    static func samplePath(_ pattern: RoutePattern) -> (path: String, parameters: [(name: String, value: String)]) {
        var parts: [String] = [], parameters: [(name: String, value: String)] = []
        for segment in pattern.segments {
            switch segment {
            case let .literal(text): parts.append(text)
            case let .parameter(name): parts.append("x"); parameters.append((name, "x"))
            case .rest: parts.append("x/y"); parameters.append(("*", "x/y"))
            }
        }
        return ("/" + parts.joined(separator: "/"), parameters)
    }

    /// Check `name` on one activation of the library with every capability it asks for: `body` judges what the
    /// activation registered, then it is deactivated (waiting up to `drain` seconds for calls). A failed activation
    /// fails the check with its reason. With `commands`, the declared commands are prepared first, as enable does
    /// (a symbol not exported fails the check).
    static func onActivation(_ name: String, _ library: PluginLibrary, _ manifest: Manifest, config: String, drain: Double = 2,
                             commands: Bool = false,
                             log: @escaping @Sendable (LogRecord) -> Void = KernelConfiguration.silentLog,
                             _ body: (Contributions) -> ValidationCheck) -> ValidationCheck {
        let context = makeContext(manifest, grants: manifest.capabilities, config: config, log: log)
        var seed = seed(manifest)
        let c: Contributions
        do {
            if commands { seed.commands = try library.prepareCommands(manifest.commands, context: context) }
            c = try library.activate(context, seed: seed)
        } catch {
            return ValidationCheck(name: name, passed: false, detail: error.description)
        }
        defer { library.deactivate(context, drainTimeout: drain) }
        return body(c)
    }

    static func concurrentRequests(_ library: PluginLibrary, _ manifest: Manifest, config: String) -> ValidationCheck {
        let name = Check.concurrent.name
        return onActivation(name, library, manifest, config: config, drain: 5) { c in concurrentRequests(c, name: name, manifest) }
    }

    private static func concurrentRequests(_ c: Contributions, name: String, _ manifest: Manifest) -> ValidationCheck {
        let routes = c.routes.filter { !$0.absolute }
        guard !routes.isEmpty else { return ValidationCheck(name: name, passed: true, detail: "no routes") }
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            for i in 0..<callsPerThread {
                let route = routes[i % routes.count]
                let (path, parameters) = samplePath(route.pattern)
                let method = route.method == "*" ? "GET" : route.method
                let request = PluginRequest(method: method, path: "/ext/\(manifest.id)" + path, routePath: path, parameters: parameters)
                if case let .failure(error) = route.handler.handle(request) { failures.add("\(method) \(route.pattern): \(error.message)") }
            }
        }
        let (count, first) = failures.summary
        guard count == 0 else {
            return ValidationCheck(name: name, passed: false, detail: "\(count) of \(threads * callsPerThread) calls failed, e.g. \(first ?? "")")
        }
        return ValidationCheck(name: name, passed: true, detail: "\(threads * callsPerThread) calls on \(routes.count) route(s), none failed")
    }

    static func unknownExtension(_ library: PluginLibrary) -> ValidationCheck {
        let name = Check.unknownExtension.name
        let table = library.extensionTable("keel.validate.unknown-\(UInt32.random(in: 0...UInt32.max))/1")
        return ValidationCheck(name: name, passed: table == nil, detail: table == nil ? "NULL" : "returned a table for a made-up extension id")
    }

    /// With no capability granted every registration is refused: activate must fail with a message (or succeed
    /// having registered nothing), not crash.
    static func withoutCapabilities(_ library: PluginLibrary, _ manifest: Manifest, config: String) -> ValidationCheck {
        let name = Check.noCapabilities.name
        let context = makeContext(manifest, grants: [], config: config)
        do {
            _ = try library.activate(context, seed: Contributions())
            library.deactivate(context, drainTimeout: 2)
            return ValidationCheck(name: name, passed: true, detail: "activated")
        } catch {
            // The refusal is what passes here: its advice (grant it, ask for it) is for a host, not for this run.
            var why = error.description
            for advice in [" (ask for it under capabilities:", " (grant it with "] {
                guard let start = why.range(of: advice) else { continue }
                // Up to the parenthesis that closes the advice; what follows (the plugin's own words) stays.
                let end = why[start.upperBound...].firstIndex(of: ")").map { why.index(after: $0) } ?? why.endIndex
                why.removeSubrange(start.lowerBound..<end)
            }
            return ValidationCheck(name: name, passed: true, detail: "refused as it should be: \(why)")
        }
    }
}

/// Failed calls of the concurrent-requests check, from several threads: how many, and the first message.
final class Failures: Sendable {
    private let state = Mutex<(count: Int, first: String?)>((0, nil))

    func add(_ message: String) {
        state.withLock { s in
            s.count += 1
            if s.first == nil { s.first = message }
        }
    }

    var summary: (Int, String?) { state.withLock { ($0.count, $0.first) } }
}
