// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import Synchronization

/// The checks of `keel plugins validate` that probe struct sizes and a reload under calls.
extension Validator {
    /// Reloads during the reload-under-calls check.
    public static let reloads = 3

    static func descriptorSize(_ library: PluginLibrary) -> ValidationCheck {
        let (passed, detail) = library.descriptorSizeCheck()
        return ValidationCheck(name: Check.descriptor.name, passed: passed, detail: detail)
    }

    /// One activation with the host's refusals collected: a registration (route, menu entry, hook, service table)
    /// whose `struct_size` the host refused fails the check, even when the plugin ignored the status it got back.
    /// Larger sizes than the host knows are accepted by the growth rule and cannot be told from the host side.
    static func hostStructSizes(_ library: PluginLibrary, _ manifest: Manifest, config: String) -> ValidationCheck {
        let name = Check.hostSizes.name
        let refusals = Mutex<[String]>([])
        // The host's refusals for a size, not any line that names struct_size (a plugin's own log of an error it
        // handled).
        let activated = onActivation(name, library, manifest, config: config, log: { record in
            if SizeRefusal.isRefusal(record.message) { refusals.withLock { $0.append(record.message) } }
        }) { _ in ValidationCheck(name: name, passed: true, detail: "") }
        guard activated.passed else { return activated }
        let refused = refusals.withLock { $0 }
        guard let first = refused.first else { return ValidationCheck(name: name, passed: true, detail: "no registration refused for its size") }
        return ValidationCheck(name: name, passed: false,
                               detail: "\(refused.count) registration(s) refused, e.g. \(first) (set struct_size = sizeof the struct)")
    }

    /// One activation, and the tables it provided checked against plugin.yaml's `functions:` (see
    /// `PluginLibrary.tableCheck`): every declared function present, none NULL or pointing nowhere, `() -> str`
    /// getters answering valid text.
    static func providedTables(_ library: PluginLibrary, _ manifest: Manifest, config: String) -> ValidationCheck {
        let name = Check.tables.name
        return onActivation(name, library, manifest, config: config) { c in
            let (passed, detail) = library.tableCheck(c.services)
            return ValidationCheck(name: name, passed: passed, detail: detail)
        }
    }

    /// Every declared command's symbol exported and callable with its signature (as enable requires), and each
    /// `probe:` call answering without an error (as the load-time probe requires).
    static func commands(_ library: PluginLibrary, _ manifest: Manifest, config: String) -> ValidationCheck {
        let name = Check.commands.name
        guard !manifest.commands.isEmpty else { return ValidationCheck(name: name, passed: true, detail: "no commands") }
        return onActivation(name, library, manifest, config: config, commands: true) { c in
            for command in c.commands {
                if let error = command.probeFailure() {
                    return ValidationCheck(name: name, passed: false, detail: "command \"\(command.name)\" failed its probe call: \(error.message)")
                }
            }
            let probed = c.commands.filter { $0.declaration.probe != nil }.count
            return ValidationCheck(name: name, passed: true, detail: "\(c.commands.count) command(s), \(probed) probe call(s) answered")
        }
    }

    /// Generation after generation, as the kernel reloads: a fresh copy of the library is opened and activated while
    /// the current one serves, swapped in, and the old one drained and deactivated, `reloads` times, while
    /// `threads` threads keep calling every route. A call the old generation refuses because it is stopping is sent
    /// again to the new one (as the HTTP server does); any other failure, a failed activation or deactivation fails.
    static func reloadUnderCalls(_ library: PluginLibrary, _ manifest: Manifest, config: String, libraryPath: String) -> ValidationCheck {
        let name = Check.reload.name
        let first = makeContext(manifest, grants: manifest.capabilities, config: config)
        let c: Contributions
        do { c = try library.activate(first, seed: seed(manifest)) } catch {
            return ValidationCheck(name: name, passed: false, detail: error.description)
        }
        guard c.routes.contains(where: { !$0.absolute }) else {
            library.deactivate(first, drainTimeout: 5)
            return ValidationCheck(name: name, passed: true, detail: "no routes")
        }
        let serving = Serving(Generation(number: 1, library: library, context: first, routes: c.routes.filter { !$0.absolute }))
        let failures = Failures(), calls = Mutex(0)
        let copies = NSTemporaryDirectory() + "keel-validate-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: copies) }
        // The reloads run on a thread of their own: concurrentPerform may run its iterations one after another.
        let reloader = Thread {
            defer { serving.finish() }
            for n in 2...(reloads + 1) {
                if let problem = reload(n, libraryPath, manifest, config: config, copies: copies, serving: serving) {
                    return failures.add("reload \(n - 1): \(problem)")
                }
            }
        }
        reloader.start()
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            var i = 0
            while i < callsPerThread || !serving.finished {
                defer { i += 1 }
                var attempt = 0
                while true {
                    let generation = serving.current
                    guard !generation.routes.isEmpty else { failures.add("generation \(generation.number) registered no route"); break }
                    let route = generation.routes[i % generation.routes.count]
                    let (path, parameters) = samplePath(route.pattern)
                    let method = route.method == "*" ? "GET" : route.method
                    let request = PluginRequest(method: method, path: "/ext/\(manifest.id)" + path, routePath: path, parameters: parameters)
                    let result = route.handler.handle(request)
                    calls.withLock { $0 += 1 }
                    guard case let .failure(error) = result else { break }
                    if error.status == StatusCode.unavailable, serving.current.number != generation.number, attempt < 3 {
                        attempt += 1
                        continue
                    }
                    failures.add("generation \(generation.number), \(method) \(route.pattern): \(error.message.isEmpty ? StatusCode.name(error.status) : error.message)")
                    break
                }
            }
        }
        let last = serving.current
        if let problem = last.library.deactivate(last.context, drainTimeout: 5) { failures.add("generation \(last.number): \(problem)") }
        let (count, message) = failures.summary
        let total = calls.withLock { $0 }
        guard count == 0 else {
            return ValidationCheck(name: name, passed: false, detail: "\(count) failure(s) in \(total) calls, e.g. \(message ?? "")")
        }
        return ValidationCheck(name: name, passed: true, detail: "\(total) calls across \(reloads + 1) generations, none failed")
    }

    /// Opens generation `n` from its own copy of the library (glibc hands back a loaded library for a path it has
    /// open), activates it beside the serving one, swaps it in, then drains and deactivates the old one.
    /// - Returns: what went wrong, or nil.
    private static func reload(_ n: Int, _ libraryPath: String, _ manifest: Manifest, config: String, copies: String, serving: Serving) -> String? {
        let copy = copies + "/g\(n)-" + URL(fileURLWithPath: libraryPath).lastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: copies, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: libraryPath, toPath: copy)
        } catch { return "cannot copy the library to \(copy)" }
        let library: PluginLibrary
        do { library = try PluginLibrary.open(path: copy, expectedID: manifest.id, reportAs: libraryPath) } catch { return error.description }
        let context = makeContext(manifest, grants: manifest.capabilities, config: config)
        let c: Contributions
        do { c = try library.activate(context, seed: seed(manifest)) } catch {
            return "activating a new copy while the old one serves failed: \(error.description)"
        }
        let old = serving.swap(Generation(number: n, library: library, context: context, routes: c.routes.filter { !$0.absolute }))
        if let problem = old.library.deactivate(old.context, drainTimeout: 5) { return "deactivating generation \(old.number): \(problem)" }
        return nil
    }
}

/// One activation of the library during the reload check.
private struct Generation: Sendable {
    var number: Int
    var library: PluginLibrary
    var context: ActivationContext
    var routes: [RouteRegistration]
}

/// The generation calls go to, swapped by the reloading thread; and whether it is done.
private final class Serving: Sendable {
    private let state: Mutex<(generation: Generation, finished: Bool)>

    init(_ generation: Generation) { state = Mutex((generation, false)) }

    var current: Generation { state.withLock { $0.generation } }
    var finished: Bool { state.withLock { $0.finished } }
    func finish() { state.withLock { $0.finished = true } }

    /// Makes `next` the serving generation and returns the one it replaces.
    func swap(_ next: Generation) -> Generation {
        state.withLock { s in
            defer { s.generation = next }
            return s.generation
        }
    }
}
