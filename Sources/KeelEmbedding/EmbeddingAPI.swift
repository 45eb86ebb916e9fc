// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import CKeelABI.Embed
import Foundation
import Glibc
import Keel
import KeelStatePostgres
import KeelSystem

// The C embedding API (PluginABI/include/keel/keel_embed.h): every function the header declares, with the same
// contract. No Swift error or trap crosses into C: each function returns a keel_status and leaves a message for
// keel_errmsg. Kernel operations run on the kernel's own thread; the caller's thread waits (`blocking`).

@_cdecl("keel_libversion")
public func keel_libversion() -> UnsafePointer<CChar>? {
    UnsafeRawPointer(Kernel.embeddingVersionText.utf8Start).assumingMemoryBound(to: CChar.self)
}

private let emptyText: StaticString = ""

@_cdecl("keel_errmsg")
public func keel_errmsg() -> UnsafePointer<CChar>? {
    ThreadState.error ?? UnsafeRawPointer(emptyText.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// The longest budget or drain time `keel_open` takes, in seconds (a day).
private let maxBudgetSeconds = 86_400.0

@_cdecl("keel_open")
public func keel_open(_ config: UnsafePointer<keel_config>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> keel_status {
    if let refusal = ThreadState.refusal { return fail(KEEL_MISUSE, refusal) }
    ThreadState.setError(nil)
    out?.pointee = nil
    guard let config, let out else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config and out_kernel must not be NULL") }
    // The size first: nothing past what the caller says it allocated is read.
    let configSize = Int(UnsafeRawPointer(config).loadUnaligned(as: UInt32.self))
    // The 1.0 fields end where `records_crashes` begins: a program built then passes that size, and is served.
    let firstSize = MemoryLayout<keel_config>.offset(of: \keel_config.records_crashes) ?? MemoryLayout<keel_config>.size
    guard configSize >= firstSize else {
        return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.struct_size is \(configSize), expected \(MemoryLayout<keel_config>.size) (start from KEEL_CONFIG_INIT)")
    }
    // Only the bytes the caller allocated are read: the fields past them keep KEEL_CONFIG_INIT's values.
    var c = keel_config()
    withUnsafeMutableBytes(of: &c) { copy in
        copy.copyMemory(from: UnsafeRawBufferPointer(start: config, count: min(configSize, MemoryLayout<keel_config>.size)))
    }
    // Whole fields only: a size that ends inside one (106 cuts `probe` in two) leaves that field as KEEL_CONFIG_INIT
    // has it, never half a pointer (it was followed, and the process died).
    func covered<T>(_ field: KeyPath<keel_config, T>) -> Bool {
        (MemoryLayout<keel_config>.offset(of: field) ?? .max) + MemoryLayout<T>.size <= configSize
    }
    if !covered(\keel_config.records_crashes) { c.records_crashes = 0 }
    if !covered(\keel_config.probe) { c.probe = nil }
    // An empty state is NULL's: in memory (as an empty plugins_dir is none), never a file named "" in the working folder.
    let state = c.state.map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? StateStore.inMemory
    let plugins = c.plugins_dir.map { String(cString: $0) } ?? ""
    // A folder named that is not there (a typo, most likely) would serve nothing and record every enabled plugin
    // missing, without a word: refused, as `keel serve` refuses it.
    if !plugins.isEmpty {
        var isFolder: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: plugins, isDirectory: &isFolder)
        guard exists, isFolder.boolValue else {
            return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.plugins_dir \(plugins): "
                        + (exists ? "not a folder (pass the folder that holds the bundles)" : "no such folder (make it first, or pass NULL for none)"))
        }
    }
    // A state file in a folder that is not there is refused, as plugins_dir is: a typo would otherwise make the
    // folders and start from an empty state. (The keel command makes its default ./.keel; an appliance names its own.)
    if state != StateStore.inMemory, !PostgresURL.isPostgres(state) {
        if let problem = SystemFile.urlLikeProblem(state) { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.state \(state): \(problem)") }
        let folder = (state as NSString).deletingLastPathComponent
        var isFolder: ObjCBool = false
        if !folder.isEmpty, !(FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder) && isFolder.boolValue) {
            return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.state \(state): its folder \(folder) "
                        + (FileManager.default.fileExists(atPath: folder) ? "is not a folder" : "does not exist (make it first)"))
        }
    }
    var configuration = KernelConfiguration(pluginsDirectory: plugins, stateFile: state)
    // A state several hosts share: this host's own files (library copies, the activation mark) go in
    // $KEEL_HOST_DIR, else ./.keel/host, as for the keel command.
    if PostgresURL.isPostgres(state) {
        let hostDirectory = ProcessInfo.processInfo.environment["KEEL_HOST_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? ".keel/host"
        configuration.stateFile = (hostDirectory as NSString).appendingPathComponent("host")
        configuration.openState = { () throws(StateError) in try PostgresStore.open(state) }
    }
    if c.bundle_count > 0 {
        guard let list = c.bundles else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.bundles is NULL with bundle_count \(c.bundle_count)") }
        for i in 0..<c.bundle_count {
            guard let path = list[i] else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.bundles[\(i)] is NULL") }
            let folder = String(cString: path)
            // As plugins_dir: a bundle named that is not a folder is a mistake of the program's, not a plugin's failure.
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
                return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.bundles[\(i)] \(folder): "
                            + (FileManager.default.fileExists(atPath: folder) ? "not a folder (pass a bundle's folder, which holds its plugin.yaml)" : "no such folder"))
            }
            configuration.bundleFolders.append(folder)
        }
    }
    if c.trust_all != 0 { configuration.trustedCapabilities = Set(Capability.allCases) }
    // The CLI cannot reach an embedder's state (in memory by default): a refusal names the C call.
    configuration.grantHint = GrantHint("keel_grant(k, \"{id}\", \"{capability}\")")
    configuration.enableHint = "keel_enable(k, \"{id}\")"
    configuration.useProviderHint = "keel_use_provider(k, \"{interface}\", \"{plugin}\")"
    // Finite and at most a day: an infinite budget passed here, and the conversion to milliseconds trapped later
    // (an auth hook's enable, a reload's drain), taking the process down.
    for (name, seconds) in [("handler_budget_s", c.handler_budget_s), ("hook_budget_s", c.hook_budget_s), ("drain_timeout_s", c.drain_timeout_s)]
    where !(seconds >= 0 && seconds <= maxBudgetSeconds) {
        return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.\(name) is \(seconds): a budget is a number of seconds from 0 (the default) "
                    + "to \(Int(maxBudgetSeconds))")
    }
    guard c.failure_threshold >= 0 else {
        return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.failure_threshold is \(c.failure_threshold): a count from 0 (the default) up")
    }
    if c.handler_budget_s > 0 { configuration.budgets.handler = c.handler_budget_s }
    if c.hook_budget_s > 0 { configuration.budgets.hook = c.hook_budget_s }
    if c.failure_threshold > 0 { configuration.budgets.failureThreshold = Int(c.failure_threshold) }
    if c.drain_timeout_s > 0 { configuration.drainTimeout = c.drain_timeout_s }
    if c.records_crashes != 0 {
        guard state != StateStore.inMemory else {
            return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.records_crashes needs a state file (the record is written beside it)")
        }
        configuration.recordsCrashes = true
    }
    if let probe = c.probe.map({ String(cString: $0) }), !probe.isEmpty {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: probe, isDirectory: &isFolder), !isFolder.boolValue,
              FileManager.default.isExecutableFile(atPath: probe) else {
            return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.probe \(probe): not an executable file (give the path of a keel binary)")
        }
        // Another program (/bin/true) would "pass" nothing and fail every plugin with a reason about the plugin.
        if let problem = probeVersionProblem(probe) {
            return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_open: config.probe \(probe): \(problem)")
        }
        configuration.probe = PluginProbe(executable: probe)
    }
    let gate = c.log.map { LogGate(fn: $0, userData: c.log_user_data) }
    if let gate { configuration.log = { gate.log($0) } }
    do {
        let embedded = try EmbeddedKernel(configuration: configuration, logGate: gate)
        out.pointee = Handles.add(embedded)
        return KEEL_OK
    } catch {
        return fail(KEEL_ERR_INTERNAL, error.description)
    }
}

/// Why `probe` is not a keel of this library's version (`probe --version` must print `Kernel.version`), or nil.
/// The child's output is read with a deadline: a descendant of another thread's fork holding the pipe open cannot
/// keep `keel_open` waiting.
private func probeVersionProblem(_ probe: String) -> String? {
    guard let (readEnd, writeEnd) = SystemFile.pipe() else { return nil }
    defer { close(readEnd) }
    let pid: pid_t
    do {
        pid = try ChildProcess.spawn(probe, arguments: [probe, "--version"],
                                     environment: ChildEnvironment.scrubbed(ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" },
                                     standard: [.null, .descriptor(writeEnd), .null], ownGroup: true)
    } catch {
        close(writeEnd)
        return "cannot be started (\(error))"
    }
    close(writeEnd)
    var said = [UInt8]()
    let deadline = ContinuousClock.now.advanced(by: .seconds(5))
    var bytes = [UInt8](repeating: 0, count: 256)
    while said.count < 256, ContinuousClock.now < deadline {
        var ready = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        guard poll(&ready, 1, 100) >= 0 || errno == EINTR else { break }
        guard ready.revents != 0 else { continue }
        let n = read(readEnd, &bytes, bytes.count)
        if n <= 0 { break }
        said += bytes[..<n]
    }
    // Its output ended (or 5 s passed): a keel exits at once; one still running after 2 s more is not one.
    let ending = ChildProcess.waitKillingGroup(pid, timeout: 2)
    if ending.timedOut { return "`\(probe) --version` did not end within seconds; give the path of a keel binary" }
    let text = String(decoding: said, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    guard text == Kernel.version else {
        let first = text.split(whereSeparator: \.isNewline).first.map { String($0.prefix(60)) } ?? ""
        return "not a keel of this library's version (`--version` printed \"\(Printable.escapingControls(first))\"; this library goes with "
            + "keel \(Kernel.version)); give the path of the keel binary built with it"
    }
    return nil
}

@_cdecl("keel_start")
public func keel_start(_ k: OpaquePointer?) -> keel_status {
    withKernel(k) { e in
        guard !e.started.exchange(true, ordering: .acquiringAndReleasing) else {
            return fail(KEEL_ERR_WRONG_STATE, "keel_start: the kernel is already started")
        }
        let kernel = e.kernel
        blocking { await kernel.start() }
        e.events.post(.refresh)
        return KEEL_OK
    }
}

@_cdecl("keel_enable")
public func keel_enable(_ k: OpaquePointer?, _ id: UnsafePointer<CChar>?) -> keel_status {
    withKernel(k) { e in
        guard let id, id.pointee != 0 else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_enable: id is NULL or empty") }
        return execute(e, .enable(id: String(cString: id), tenant: nil))
    }
}

@_cdecl("keel_disable")
public func keel_disable(_ k: OpaquePointer?, _ id: UnsafePointer<CChar>?, _ cascade: Int32) -> keel_status {
    withKernel(k) { e in
        guard let id, id.pointee != 0 else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_disable: id is NULL or empty") }
        return execute(e, .disable(id: String(cString: id), tenant: nil, cascade: cascade != 0))
    }
}

@_cdecl("keel_reload")
public func keel_reload(_ k: OpaquePointer?, _ id: UnsafePointer<CChar>?) -> keel_status {
    withKernel(k) { e in
        guard let id, id.pointee != 0 else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_reload: id is NULL or empty") }
        return execute(e, .reload(id: String(cString: id)))
    }
}

@_cdecl("keel_grant")
public func keel_grant(_ k: OpaquePointer?, _ id: UnsafePointer<CChar>?, _ capability: UnsafePointer<CChar>?) -> keel_status {
    withKernel(k) { e in
        guard let id, let capability, id.pointee != 0 else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_grant: id and capability must not be NULL, nor the id empty") }
        return execute(e, .grants(id: String(cString: id), grant: [String(cString: capability)], revoke: []))
    }
}

/// Runs `command` through `Kernel.execute` (audit line and events as for every front end) as "embedder".
private func execute(_ e: EmbeddedKernel, _ command: KernelCommand) -> keel_status {
    let kernel = e.kernel
    let outcome = blocking { () async -> Result<CommandResult, KernelError> in
        do throws(KernelError) { return .success(try await kernel.execute(command, actor: "embedder")) } catch { return .failure(error) }
    }
    guard case let .failure(error) = outcome else { return KEEL_OK }
    return fail(status(of: error), error.description)
}

private func status(of error: KernelError) -> keel_status {
    switch error.code {
    case .unknownPlugin: KEEL_ERR_NOT_FOUND
    case .dependency, .conflict: KEEL_ERR_CONFLICT
    case .badGrant, .badConfig: KEEL_ERR_INVALID_ARGUMENT
    default: KEEL_ERR_INTERNAL
    }
}

@_cdecl("keel_plugins")
public func keel_plugins(_ k: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<keel_plugin_list>?>?) -> keel_status {
    out?.pointee = nil  // a bad handle too leaves no stale pointer behind
    return withKernel(k) { e in
        guard let out else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_plugins: out_list is NULL") }
        out.pointee = nil
        let records: [PluginRecord]
        do { records = try e.kernel.state.plugins().sorted { $0.id < $1.id } } catch {
            return fail(KEEL_ERR_INTERNAL, "\(error)")
        }
        out.pointee = CResults.pluginList(records)
        return KEEL_OK
    }
}

@_cdecl("keel_plugin_list_free")
public func keel_plugin_list_free(_ list: UnsafeMutablePointer<keel_plugin_list>?) {
    CResults.free(list)
}

@_cdecl("keel_dispatch")
public func keel_dispatch(_ k: OpaquePointer?, _ request: UnsafePointer<keel_request>?,
                          _ out: UnsafeMutablePointer<UnsafeMutablePointer<keel_response>?>?) -> keel_status {
    out?.pointee = nil  // a bad handle too leaves no stale pointer behind
    return withKernel(k) { e in
        guard let out else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_dispatch: out_response is NULL") }
        out.pointee = nil
        guard let request else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_dispatch: request is NULL") }
        // The size first: nothing past what the caller says it allocated is read.
        let requestSize = UnsafeRawPointer(request).loadUnaligned(as: UInt32.self)
        guard Int(requestSize) >= MemoryLayout<keel_request>.size else {
            return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_dispatch: request.struct_size is \(requestSize), expected \(MemoryLayout<keel_request>.size) (start from KEEL_REQUEST_INIT)")
        }
        let r = request.pointee
        guard let method = r.method, let path = r.path else {
            return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_dispatch: request.method and request.path must not be NULL")
        }
        var headers: [(name: String, value: String)] = []
        if r.header_count > 0 {
            guard let list = r.headers else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_dispatch: request.headers is NULL with header_count \(r.header_count)") }
            for i in 0..<r.header_count {
                guard let name = list[i].name, let value = list[i].value else {
                    return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_dispatch: request.headers[\(i)] has a NULL name or value")
                }
                headers.append((name: String(cString: name), value: String(cString: value)))
            }
        }
        var body: [UInt8] = []
        if r.body_len > 0 {
            guard let bytes = r.body else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_dispatch: request.body is NULL with body_len \(r.body_len)") }
            body = Array(UnsafeRawBufferPointer(start: bytes, count: r.body_len))
        }
        let seen = PluginRequest(method: String(cString: method), path: String(cString: path), headers: headers, body: body)
        let response = e.kernel.dispatch(seen, tenant: r.tenant.map { String(cString: $0) })
        out.pointee = CResults.response(response)
        return KEEL_OK
    }
}

@_cdecl("keel_response_free")
public func keel_response_free(_ response: UnsafeMutablePointer<keel_response>?) {
    CResults.free(response)
}

@_cdecl("keel_command")
public func keel_command(_ k: OpaquePointer?, _ plugin: UnsafePointer<CChar>?, _ name: UnsafePointer<CChar>?, _ argc: Int32,
                         _ argv: UnsafePointer<UnsafePointer<CChar>?>?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> keel_status {
    out?.pointee = nil  // a bad handle too leaves no stale pointer behind
    return withKernel(k) { e in
        guard let out else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_command: out_json is NULL") }
        out.pointee = nil
        guard let plugin, let name else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_command: plugin and name must not be NULL") }
        guard argc >= 0, argc == 0 || argv != nil else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_command: argv is NULL with argc \(argc)") }
        var arguments: [CommandArgument] = []
        for i in 0..<Int(argc) {
            guard let text = argv?[i] else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_command: argv[\(i)] is NULL") }
            arguments.append(.text(String(cString: text)))
        }
        let (pluginID, command) = (String(cString: plugin), String(cString: name))
        let result = e.kernel.call(pluginID, command, arguments: arguments, as: Kernel.operatorPrincipal)
        // In the audit trail as every other command of the embedder is (`keel_enable` goes through `execute`).
        var failed = false
        if case .failure = result { failed = true }
        e.kernel.recordCall(plugin: pluginID, command: command, actor: "embedder", failed: failed)
        switch result {
        case let .success(value):
            e.events.post(.command(name: "call", pluginID: pluginID, failure: nil))
            out.pointee = strdup(value.json)
            return KEEL_OK
        case let .failure(error):
            e.events.post(.command(name: "call", pluginID: pluginID, failure: error.message))
            let status: keel_status = switch error.code {
            case .unknown: KEEL_ERR_NOT_FOUND
            case .badArgument: KEEL_ERR_INVALID_ARGUMENT
            case .forbidden: KEEL_ERR_DENIED
            case .unavailable: KEEL_ERR_UNAVAILABLE
            case .tooLarge: KEEL_ERR_LIMIT
            case .failed: KEEL_ERR_INTERNAL
            }
            return fail(status, error.message)
        }
    }
}

@_cdecl("keel_free")
public func keel_free(_ pointer: UnsafeMutableRawPointer?) {
    free(pointer)
}

@_cdecl("keel_subscribe")
public func keel_subscribe(_ k: OpaquePointer?, _ fn: keel_event_fn?, _ userData: UnsafeMutableRawPointer?,
                           _ token: UnsafeMutablePointer<Int64>?) -> keel_status {
    withKernel(k) { e in
        guard let fn else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_subscribe: fn is NULL") }
        let t = e.events.subscribe(fn, userData)
        token?.pointee = t
        return KEEL_OK
    }
}

@_cdecl("keel_unsubscribe")
public func keel_unsubscribe(_ k: OpaquePointer?, _ token: Int64) -> keel_status {
    withKernel(k) { e in
        e.events.unsubscribe(token) ? KEEL_OK : fail(KEEL_ERR_NOT_FOUND, "keel_unsubscribe: no subscription \(token)")
    }
}

@_cdecl("keel_serve")
public func keel_serve(_ k: OpaquePointer?, _ host: UnsafePointer<CChar>?, _ port: Int32, _ outPort: UnsafeMutablePointer<Int32>?) -> keel_status {
    withKernel(k) { e in
        guard let host, host.pointee != 0 else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_serve: host is NULL or empty") }
        guard (0...65535).contains(port) else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_serve: port \(port) is not 0...65535") }
        switch e.serve(host: String(cString: host), port: Int(port)) {
        case let .success(bound):
            outPort?.pointee = Int32(bound)
            return KEEL_OK
        case let .failure(failure):
            return fail(failure.alreadyServing ? KEEL_ERR_WRONG_STATE : KEEL_ERR_UNAVAILABLE, failure.reason)
        }
    }
}

@_cdecl("keel_provide_service")
public func keel_provide_service(_ k: OpaquePointer?, _ interface: UnsafePointer<CChar>?, _ version: UnsafePointer<CChar>?,
                                 _ table: UnsafeRawPointer?) -> keel_status {
    withKernel(k) { e in
        guard let interface, let table else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_provide_service: interface and table must not be NULL") }
        let (id, v, kernel, host) = (String(cString: interface), version.map { String(cString: $0) }, e.kernel, HostTable(table))
        if let v, Semver(v) == nil { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_provide_service: version \"\(v)\" is not a semantic version") }
        let outcome = blocking { () async -> KernelError? in
            do throws(KernelError) { try await kernel.provide(id, version: v, table: host); return nil } catch { return error }
        }
        guard let error = outcome else { return KEEL_OK }
        return fail(error.reason.contains("already provides") ? KEEL_ERR_CONFLICT : KEEL_ERR_INVALID_ARGUMENT, error.description)
    }
}

@_cdecl("keel_use_provider")
public func keel_use_provider(_ k: OpaquePointer?, _ interface: UnsafePointer<CChar>?, _ provider: UnsafePointer<CChar>?) -> keel_status {
    withKernel(k) { e in
        guard let interface, interface.pointee != 0 else { return fail(KEEL_ERR_INVALID_ARGUMENT, "keel_use_provider: interface is NULL or empty") }
        return execute(e, .useProvider(interface: String(cString: interface), plugin: provider.map { String(cString: $0) }, tenant: nil))
    }
}

@_cdecl("keel_close")
public func keel_close(_ k: OpaquePointer?) -> keel_status {
    if let refusal = ThreadState.refusal { return fail(KEEL_MISUSE, refusal) }
    ThreadState.setError(nil)
    guard k != nil else { return KEEL_OK }
    guard let embedded = Handles.remove(k) else { return fail(KEEL_MISUSE, "keel_close: not an open keel handle (closed, or never opened)") }
    ThreadState.busy { embedded.close() }
    return KEEL_OK
}
