// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import CKeelABI
import Glibc
import KeelManifest
import KeelSystem
import Synchronization

/// What a library says about itself in its `keel_plugin` descriptor.
public struct PluginDescriptor: Sendable, Hashable {
    /// The descriptor's id, or the manifest's when the descriptor leaves it empty (see `PluginLibrary.open`).
    public var id: String
    /// The descriptor's version, or nil when it leaves it empty: then the bundle's plugin.yaml is the one place the
    /// version is written, and the host takes it from there (`verify(against:manifestPath:)`).
    public var version: String?
    public var abi: ABIVersion
    public var abiPatch: Int
    /// The plugin declares `KEEL_PLUGIN_FLAG_UNLOAD_SAFE`.
    public var unloadSafe: Bool
    /// The plugin declares `KEEL_PLUGIN_FLAG_REACTIVATABLE`: activate may run again on this loaded copy.
    public var reactivatable: Bool = false
}

/// A plugin shared object, opened and checked.
///
/// `open` runs the dynamic loader (RTLD_NOW | RTLD_LOCAL, so missing symbols fail here and not mid-request), finds
/// `keel_plugin_entry`, calls it once, and checks the ABI version and the descriptor. A library is never closed
/// unless its descriptor declares `KEEL_PLUGIN_FLAG_UNLOAD_SAFE`: unloading code that may still be referenced
/// (thread-local destructors, Swift metadata) crashes hosts later, so a retired library stays mapped. Its handle is
/// held open for the life of the process, including when the descriptor is refused (the entry has already run), so
/// its reference count never reaches zero. (Pinning it with a second `dlopen(RTLD_NOLOAD | RTLD_NODELETE)` would
/// guard only against a foreign `dlclose` of a handle the host never hands out, and it repeats the dynamic loader's
/// walk of every loaded object: with 5,000 plugins loaded, about 40 µs a library.) Open each build from its own path: glibc hands back the already-loaded library for a
/// path (or inode) it has open.
///
/// `activate` and `deactivate` must not overlap for one library (the ABI's [lifecycle] tag); the kernel serialises
/// them. Everything else is thread-safe.
/// `@unchecked` because of `plugin`, a pointer into the library's immutable descriptor that stays mapped as long as
/// this object lives; the dlopen handle is behind a lock.
public final class PluginLibrary: @unchecked Sendable {
    public let path: String
    public let descriptor: PluginDescriptor
    let plugin: UnsafePointer<keel_plugin>
    /// An address in the library's own code (its entry function), by which a crash is told apart as this library's:
    /// the descriptor may lie elsewhere (KeelPluginKit allocates it on the heap, outside every library).
    let code: UnsafeRawPointer
    private let handle: Mutex<UnsafeMutableRawPointer?>
    private let contexts = Mutex<[ActivationContext]>([])
    /// Set when an activation was closed with calls still running in it: its code may run on, so the library is
    /// never closed, unload-safe or not.
    private let leftRunning = Atomic<Bool>(false)
    /// The ledger charged for this copy at `open`, credited when `unloadIfSafe` closes it.
    private let ledger: LibraryLedger?
    /// The size of the library file this copy was mapped from, in bytes (what its ledger was charged).
    public let mappedBytes: Int

    /// Minimum descriptor size per ABI minor version of the current major.
    static let descriptorSizes: [Int: Int] = [0: 80, 1: 80]

    /// The versions this host loads, for messages: "1.0–1.3".
    public static var supportedABIText: String {
        let major = StatusCode.hostABIMajor, minor = StatusCode.hostABIMinor
        return minor == 0 ? "\(major).0" : "\(major).0–\(major).\(minor)"
    }

    init(path: String, descriptor: PluginDescriptor, plugin: UnsafePointer<keel_plugin>, code: UnsafeRawPointer,
         handle: UnsafeMutableRawPointer, ledger: LibraryLedger? = nil, mappedBytes: Int = 0) {
        self.path = path
        self.descriptor = descriptor
        self.plugin = plugin
        self.code = code
        self.ledger = ledger
        self.mappedBytes = mappedBytes
        // The handle is only ever used under the lock it is moved into here, so handing it over is safe.
        nonisolated(unsafe) let h: UnsafeMutableRawPointer? = handle
        self.handle = Mutex(h)
    }

    /// Opens and checks the library at `path`. `expectedID` (from the manifest) names the plugin in errors and is its
    /// id when the descriptor leaves the id empty (without it, such a descriptor is refused), and
    /// `reportAs` the file (when `path` is a private copy of it). `header`, the file's first bytes (up to 64) and its
    /// size when the caller already holds them, spares the header check a read. `ledger` is charged for the copy as soon as the dynamic loader has
    /// mapped it, whether or not it is then refused (it stays open either way).
    /// - Throws: `LoadError` with a one-line reason for each way a file can fail to be a plugin for this host.
    public static func open(path: String, expectedID: String? = nil, reportAs: String? = nil,
                            header: (bytes: [UInt8], size: Int)? = nil, ledger: LibraryLedger? = nil) throws(LoadError) -> PluginLibrary {
        do { return try open(path, expectedID: expectedID, shownPath: reportAs ?? path, header: header, ledger: ledger) } catch {
            var shown = error
            shown.path = reportAs ?? path
            throw shown
        }
    }

    private static func open(_ path: String, expectedID: String?, shownPath: String,
                             header: (bytes: [UInt8], size: Int)?, ledger: LibraryLedger?) throws(LoadError) -> PluginLibrary {
        do {
            if let header { try ELFHeader.check(prefix: header.bytes.prefix(64), fileSize: header.size, path: path) }
            else { try ELFHeader.check(path: path) }
        } catch {
            var named = error
            named.pluginID = expectedID
            throw named
        }
        _ = dlerror()
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw describeDlopenFailure(path: path, pluginID: expectedID)
        }
        let size = header?.size ?? fileSize(path)
        ledger?.charge(size)
        guard let symbol = dlsym(handle, KEEL_ENTRY_SYMBOL) else {
            throw LoadError(.missingEntry, path: path, pluginID: expectedID,
                            reason: "no \(KEEL_ENTRY_SYMBOL) symbol: define it with KEEL_PLUGIN_ENTRY(descriptor) in C, @_cdecl(\"keel_plugin_entry\") in Swift or keel_plugin::plugin! in Rust, and keep it visible")
        }
        let entry = unsafeBitCast(symbol, to: keel_plugin_entry_fn.self)
        guard let plugin = entry() else {
            throw LoadError(.entryReturnedNull, path: path, pluginID: expectedID,
                            reason: "\(KEEL_ENTRY_SYMBOL) returned NULL: the plugin declined to load")
        }
        // A refused descriptor leaves the handle open: code of the library has run, so it is not unloaded either.
        let descriptor = try readDescriptor(plugin, path: path, expectedID: expectedID)
        return PluginLibrary(path: shownPath, descriptor: descriptor, plugin: plugin, code: UnsafeRawPointer(symbol), handle: handle,
                             ledger: ledger, mappedBytes: size)
    }

    private static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    /// A library that was never closed keeps its code mapped, and threads the plugin started may still run it and
    /// call the host with a `ctx` of any of its activations: those contexts are kept for the life of the process
    /// (a closed context refuses everything but is still there), never freed under such a thread. Freed with this
    /// object only once `unloadIfSafe` closed the library.
    deinit {
        guard handle.withLock({ $0 != nil }) else { return }
        let mine = contexts.withLock { $0 }
        Self.outlived.withLock { $0.append(contentsOf: mine) }
    }

    /// The contexts of libraries that were never closed and whose `PluginLibrary` is gone: kept (reachable, not
    /// leaked) for the life of the process. At most one per activation of such a library, which the stale-copy
    /// limit bounds.
    private static let outlived = Mutex<[ActivationContext]>([])

    /// Closes the library when its descriptor declared it unload-safe; a no-op otherwise. Call only after
    /// `deactivate` returned for every activation of it: no code of it may run afterwards.
    /// Returns true when the library was closed.
    @discardableResult
    public func unloadIfSafe() -> Bool {
        guard descriptor.unloadSafe, !leftRunning.load(ordering: .sequentiallyConsistent) else { return false }
        let h = handle.withLock { h -> UInt? in
            defer { h = nil }
            return h.map { UInt(bitPattern: $0) }
        }
        guard let h, let pointer = UnsafeMutableRawPointer(bitPattern: h) else { return false }
        CrashGuard.unregister(code)
        guard dlclose(pointer) == 0 else { return false }
        ledger?.credit(mappedBytes)
        return true
    }

    /// Reads the descriptor from the front, trusting a field only once struct_size and the version cover it.
    static func readDescriptor(_ p: UnsafePointer<keel_plugin>, path: String,
                               expectedID: String?) throws(LoadError) -> PluginDescriptor {
        let raw = UnsafeRawPointer(p)
        let size = Int(raw.loadUnaligned(as: UInt32.self))
        let versionEnd = MemoryLayout<keel_plugin>.offset(of: \.abi_version)! + MemoryLayout<keel_version>.size
        guard size >= versionEnd else {
            throw LoadError(.descriptorTooSmall, path: path, pluginID: expectedID,
                            reason: "descriptor struct_size \(size) is too small to hold an ABI version (is it a keel_plugin?)")
        }
        let v = raw.loadUnaligned(fromByteOffset: MemoryLayout<keel_plugin>.offset(of: \.abi_version)!, as: keel_version.self)
        let abiText = "\(v.major).\(v.minor)"
        guard Int(v.major) == StatusCode.hostABIMajor, Int(v.minor) <= StatusCode.hostABIMinor else {
            throw LoadError(.incompatibleABI, path: path, pluginID: expectedID ?? "?",
                            reason: "ABI \(abiText), this host supports \(supportedABIText)")
        }
        let needed = descriptorSizes[Int(v.minor)] ?? GrowableStruct.minimumSize(of: keel_plugin.self)
        guard size >= needed else {
            throw LoadError(.descriptorTooSmall, path: path, pluginID: expectedID,
                            reason: "descriptor struct_size \(size) is smaller than the \(needed) bytes ABI \(abiText) requires")
        }
        // Only the bytes struct_size covers: a descriptor from an older minor version is shorter than this host's.
        guard let (d, _) = GrowableStruct.read(raw, as: keel_plugin.self, minimum: needed) else {
            throw LoadError(.descriptorTooSmall, path: path, pluginID: expectedID, reason: "descriptor struct_size \(size) is too small")
        }
        // An empty id (like an empty version) is the manifest's, given as `expectedID`: written once, in plugin.yaml.
        let statedID = d.id.validated(limit: 64)
        if statedID == "", expectedID == nil {
            throw LoadError(.invalidDescriptor, path: path, pluginID: nil,
                            reason: "the descriptor leaves its id to plugin.yaml: check the bundle folder, not the bare library")
        }
        guard let id = statedID == "" ? expectedID : statedID, Manifest.isValidID(id) else {
            throw LoadError(.invalidDescriptor, path: path, pluginID: expectedID,
                            reason: Manifest.reservedIDs.contains(statedID ?? "") ? "descriptor id \"\(statedID ?? "")\" is the host's own name: no plugin may take it"
                                : "descriptor id \"\(statedID ?? "<not UTF-8>")\" is not a valid plugin id")
        }
        // An empty version (KEEL_STR_EMPTY, or NULL with length 0) defers to the manifest; anything else must be semver.
        guard let text = d.version.validated(limit: 64), text.isEmpty || Semver(text) != nil else {
            throw LoadError(.invalidDescriptor, path: path, pluginID: id,
                            reason: "descriptor version \"\(d.version.validated(limit: 64) ?? "<not UTF-8>")\" is not a semantic version")
        }
        let version: String? = text.isEmpty ? nil : text
        guard d.activate != nil else {
            throw LoadError(.invalidDescriptor, path: path, pluginID: id, reason: "descriptor has no activate function")
        }
        return PluginDescriptor(id: id, version: version, abi: ABIVersion(Int(v.major), Int(v.minor)),
                                abiPatch: Int(v.patch), unloadSafe: d.flags & UInt64(KEEL_PLUGIN_FLAG_UNLOAD_SAFE) != 0,
                                reactivatable: d.flags & UInt64(KEEL_PLUGIN_FLAG_REACTIVATABLE) != 0)
    }

    static func describeDlopenFailure(path: String, pluginID: String?) -> LoadError {
        var message = dlerror().map { String(cString: $0) } ?? "unknown dynamic loader error"
        if message.hasPrefix(path + ": ") { message.removeFirst(path.count + 2) }
        // The loader names the file it opened elsewhere in the text too ("required by <path>"): that name is a copy's
        // or a descriptor's, not the one the user knows, which `LoadError.path` gives.
        message = message.replacing(path, with: "the library")
        if message.contains("cannot open shared object file") || message.contains("No such file"),
           let colon = message.firstIndex(of: ":") {
            let dependency = message[..<colon]
            return LoadError(.dependencyMissing, path: path, pluginID: pluginID,
                             reason: "needs \(dependency), which cannot be found (\(message[message.index(after: colon)...].drop(while: { $0 == " " })))")
        }
        if let range = message.range(of: "undefined symbol: ") {
            return LoadError(.dlopenFailed, path: path, pluginID: pluginID,
                             reason: "undefined symbol \(message[range.upperBound...]): a function it calls is in no library it links")
        }
        if message.contains("cannot dynamically load position-independent executable") {
            // A PIE is ELF type ET_DYN like a library, so only the loader tells them apart: `cc x.c -o libx.so`.
            return LoadError(.notSharedObject, path: path, pluginID: pluginID,
                             reason: "an executable, not a shared library: link it with -shared -fPIC")
        }
        return LoadError(.dlopenFailed, path: path, pluginID: pluginID, reason: "dynamic loader: \(message)")
    }

    /// Checks that the descriptor agrees with the bundle's manifest. A descriptor without a version takes the
    /// manifest's; one with a version must name the same one.
    /// - Throws: `LoadError.Code.manifestMismatch` naming both values.
    public func verify(against manifest: Manifest, manifestPath: String) throws(LoadError) {
        if descriptor.id != manifest.id {
            throw LoadError(.manifestMismatch, path: path, pluginID: manifest.id,
                            reason: "library says id \"\(descriptor.id)\" but \(manifestPath) says \"\(manifest.id)\"")
        }
        if let version = descriptor.version, Semver(version) != manifest.version {
            throw LoadError(.manifestMismatch, path: path, pluginID: manifest.id,
                            reason: "library says version \(version) but \(manifestPath) says \(manifest.version)")
        }
        // plugin.yaml asks for an ABI this host does not have: said as for a library built for one.
        if Int(manifest.abi.major) != StatusCode.hostABIMajor || Int(manifest.abi.minor) > StatusCode.hostABIMinor {
            throw LoadError(.incompatibleABI, path: path, pluginID: manifest.id,
                            reason: "\(manifestPath) says abi: \"\(manifest.abi)\", this host supports \(Self.supportedABIText)")
        }
        // The manifest names the ABI the plugin needs; the library may have been built against a later minor header.
        if descriptor.abi.major != manifest.abi.major || descriptor.abi.minor < manifest.abi.minor {
            throw LoadError(.manifestMismatch, path: path, pluginID: manifest.id,
                            reason: "library was built for ABI \(descriptor.abi) but \(manifestPath) says it needs \(manifest.abi)")
        }
    }

    /// The plugin's answer to `get_extension(id)`: its table for that extension, or nil when it has none (or no
    /// get_extension at all). [thread-safe]
    public func extensionTable(_ id: String) -> UnsafeRawPointer? {
        guard let getExtension = plugin.pointee.get_extension else { return nil }
        var id = id
        return id.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { getExtension(keel_str(ptr: $0.baseAddress, len: $0.count)) }
        }
    }

    /// The address of the exported symbol `name`, or nil when the library does not export it.
    public func symbol(_ name: String) -> UnsafeRawPointer? {
        handle.withLock { h in h.flatMap { dlsym($0, name) }.map { UnsafeRawPointer($0) } }
    }

    /// Finds and prepares each declared command for calls into this library under `context`.
    /// - Throws: `LoadError.Code.manifestMismatch` naming the command whose symbol is not exported, or whose
    ///   signature libffi refuses.
    public func prepareCommands(_ declarations: [CommandDeclaration], context: ActivationContext) throws(LoadError) -> [PluginCommand] {
        var out: [PluginCommand] = []
        for d in declarations {
            guard let function = symbol(d.symbol) else {
                throw LoadError(.manifestMismatch, path: path, pluginID: descriptor.id,
                                reason: "command \"\(d.name)\": the library exports no function \(d.symbol) (export it: KEEL_EXPORT in C, @_cdecl in Swift, #[no_mangle] or keel_plugin::command! in Rust)")
            }
            guard let command = PluginCommand(d, function: function, context: context) else {
                throw LoadError(.manifestMismatch, path: path, pluginID: descriptor.id,
                                reason: "command \"\(d.name)\": libffi cannot prepare a call of \(d.signature)")
            }
            out.append(command)
        }
        return out
    }

    /// How many times this copy has been activated (each activation's context is kept, closed, for stray calls).
    public var activations: Int { contexts.withLock { $0.count } }

    /// Runs the plugin's activate with `context`; `seed` holds what the host registers on its behalf first.
    /// - Returns: everything registered, to publish as one unit.
    /// - Throws: `LoadError.Code.activationFailed` with the plugin's message (or the host's last refusal); nothing
    ///   registered survives a failure.
    /// [lifecycle]
    public func activate(_ context: ActivationContext, seed: Contributions = Contributions()) throws(LoadError) -> Contributions {
        contexts.withLock { $0.append(context) }
        context.seed(seed)
        context.beginActivation()
        CrashGuard.register(code, plugin: context.pluginID, generation: context.identity.generation)
        let outer = ActivationContext.beginCall(context)  // so that `set_error` is kept for this thread's call
        let status = context.crashSite("activate").around {
            plugin.pointee.activate?(HostABI.host, HostABI.pointer(to: context)) ?? KEEL_ERR_INVALID_ARGUMENT
        }
        ActivationContext.endCall(outer)
        var contributions = context.endActivation(success: status == KEEL_OK)
        if status == KEEL_OK, let missing = context.identity.provides.first(where: { p in
            !contributions.services.contains { $0.interface == p.interface } }) {
            // A declared interface without a table: consumers would be promised what is not there. The plugin is
            // taken down again (nothing was published, so nothing can be running in it).
            contributions = Contributions()
            _ = finishDeactivation(context, stillRunning: 0, drainTimeout: 0)
            throw LoadError(.activationFailed, path: path, pluginID: descriptor.id,
                            reason: "declares provides \(missing.interface) in plugin.yaml but registered no table for it during activate")
        }
        guard status == KEEL_OK else {
            let message = context.takeError()
            let refusal = context.takeRefusal()
            // The host's own refusal names what was refused and the command that fixes it (a grant). It comes first
            // when the plugin said nothing of its own or only passed the refusal on (an SDK's "... refused by the
            // host ...; see the host log"); else the plugin's reason leads, and a registration it got past is no
            // more than a note (a plugin must not steer the operator to a grant by failing after a refusal).
            let passedOn = message.isEmpty || message.contains("refused by the host")
            let reason: String = if let refusal {
                passedOn ? (message.isEmpty || message == refusal ? refusal : "\(refusal) (the plugin said: \(message))")
                    : "\(message) (a registration was also refused: \(refusal))"
            } else {
                message.isEmpty ? "no message (the plugin gave none: call host->set_error(ctx, ...) before returning an error)" : message
            }
            throw LoadError(.activationFailed, path: path, pluginID: descriptor.id,
                            reason: "activate returned \(StatusCode.name(status)): \(reason)")
        }
        // Shown on an operator's terminal (`enable`'s note, `inspect`): it quotes what the plugin passed (a route's
        // path), so no control character of the plugin's reaches the terminal.
        contributions.ignoredRefusal = context.takeRefusal().map(Printable.escapingControls)
        return contributions
    }

    /// Stops calls into `context`, waits up to `drainTimeout` seconds for calls in flight, then runs the plugin's
    /// deactivate. Returns a problem to report (calls still running, or deactivate's error), or nil.
    /// [lifecycle]
    @discardableResult
    public func deactivate(_ context: ActivationContext, drainTimeout: Double = 5) -> String? {
        finishDeactivation(context, stillRunning: context.drain(timeout: drainTimeout), drainTimeout: drainTimeout)
    }

    /// The second half of `deactivate`, for a caller that drained `context` itself (without holding a thread):
    /// with calls still running, deactivate is skipped and the library stays mapped; else the plugin's deactivate
    /// runs. Either way the context is closed. [lifecycle]
    public func finishDeactivation(_ context: ActivationContext, stillRunning running: Int, drainTimeout: Double) -> String? {
        // The configuration goes only once deactivate ran: until it returns, the plugin may hold it (config.h).
        defer { context.close(freeingConfig: running == 0) }
        if running > 0 {
            leftRunning.store(true, ordering: .sequentiallyConsistent)
            return "\(running) call(s) still running after \(drainTimeout)s; deactivate skipped, library kept mapped"
        }
        guard let deactivate = plugin.pointee.deactivate else { return nil }
        let outer = ActivationContext.beginCall(context)
        let status = context.crashSite("deactivate").around { deactivate(HostABI.host, HostABI.pointer(to: context)) }
        ActivationContext.endCall(outer)
        guard status == KEEL_OK else {
            let message = context.takeError()
            return "deactivate returned \(StatusCode.name(status))\(message.isEmpty ? "" : ": " + message)"
        }
        return nil
    }
}
