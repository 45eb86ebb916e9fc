// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelIsolation
import KeelLoader
import KeelManifest
import KeelRegistry
import KeelState
import KeelSystem
import Synchronization

/// The Keel kernel: finds plugin bundles, keeps their state in SQLite, loads and activates the enabled ones in
/// dependency order, and composes what they register in `registry`.
///
/// ```swift
/// let kernel = try Kernel(configuration: KernelConfiguration(pluginsDirectory: "plugins", stateFile: "keel.db"))
/// await kernel.start()                       // activates what was enabled last time
/// try await kernel.enable("hello")           // persisted before it returns
/// let match = kernel.registry.snapshot.route(method: "GET", path: "/ext/hello/greet/bob")
/// await kernel.shutdown()                    // deactivates in reverse order
/// ```
///
/// Lifecycle operations are serialised by the actor. `registry` is read without the actor, from any thread.
/// A plugin that fails to load or activate ends `failed` with its reason; nothing it registered stays behind, and
/// other plugins are not affected.
public actor Kernel {
    /// The kernel's own thread: lifecycle work blocks and must never occupy Swift's cooperative pool.
    nonisolated let executor = LifecycleExecutor()
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    deinit {
        watcher?.stop()
        executor.stop()
    }
    public nonisolated let configuration: KernelConfiguration
    public nonisolated let registry = PluginRegistry()
    public nonisolated let state: StateStore
    /// Tenants, roles and the combined auth chain; read from any thread.
    public nonisolated let access: AccessControl
    /// What changed: every executed command, and plugin changes made without one (see `KernelEvents`).
    public nonisolated let events = KernelEvents()
    /// How long activations and reloads took, for `GET /metrics` (see `KernelMetrics`).
    public nonisolated let metrics: KernelMetrics
    /// The recent log lines of each plugin (see `PluginLogs`).
    public nonisolated let logs: PluginLogs
    /// `configuration.log`, keeping every line about a plugin in `logs` too: the log for the host's front ends.
    public nonisolated let logSink: @Sendable (LogRecord) -> Void
    let environment: KernelEnvironment
    /// `environment` as activations get it: detached when the kernel shuts down, so that the contexts a library that
    /// is never closed keeps for the life of the process do not keep this kernel (its registry, access control and
    /// state store) with them (`DetachableEnvironment`).
    let pluginEnvironment: DetachableEnvironment

    var bundles: [String: Bundle] = [:] {
        didSet {
            liveViewStale = true
            serviceDeclarations = nil
        }
    }
    /// The bundles the last scan found that `bundles` does not hold, by folder: the others of an id claimed twice
    /// (both refused). Empty but while some id is claimed twice.
    var droppedBundles: [String: Bundle] = [:]
    /// What the bundles' manifests declare of services, by interface (`services`); nil after the bundles changed.
    var serviceDeclarations: ServiceDeclarations?
    /// Changed only through `setActive` and `removeActive`, which keep `serving` and the change notice in step one
    /// plugin at a time (a start-up activating 5,000 plugins must not copy the whole map for each).
    private(set) var active: [String: ActivePlugin] = [:]
    /// The generation of each active plugin, for the log sink off the actor.
    nonisolated let serving: ServingGenerations
    /// Ids in the order they were activated; deactivation runs in reverse. Changed only through `appendActivated`
    /// and `removeActivated`, which keep `activeIDs` in step.
    private(set) var activationOrder: [String] = []
    /// `activationOrder` for readers off the actor (`/healthz` must answer while the kernel is busy). A list of its
    /// own, changed in step, not a copy of `activationOrder`: a copy shares its storage, so that every append after
    /// it copied the whole list (a start-up activating 5,000 plugins copied 12.5 million strings).
    private nonisolated let activeIDs = Mutex<[String]>([])

    func appendActivated(_ id: String) {
        activationOrder.append(id)
        activeIDs.withLock { $0.append(id) }
    }

    func removeActivated(_ id: String) {
        activationOrder.removeAll { $0 == id }
        activeIDs.withLock { $0.removeAll { $0 == id } }
    }

    struct ActivePlugin: Sendable {
        /// Nil for a manifest-only bundle.
        let library: PluginLibrary?
        let context: ActivationContext
        let manifest: Manifest
        /// Which load of this plugin it is (1, 2, ...), across restarts.
        let generation: Int
        /// SHA-256 of the library it was loaded from.
        let checksum: String
        /// The worker process it runs in (`isolation: process`); nil in the host.
        var worker: WorkerSupervisor? = nil
        /// The bundle's library file as it was read, when it had settled (see `ResidentLibraries`); nil otherwise.
        var source: LibrarySource? = nil
        /// The stamp of the stored configuration it was activated with (`Kernel.configStamp`).
        var configStamp = 0
    }

    /// Libraries of plugins stopped in an orderly way, for their next activation (see `ResidentLibraries`).
    var residents = ResidentLibraries()
    /// The copies of plugin libraries this kernel opened and has not closed, and for each plugin that had one mapped,
    /// whether one of its copies was then closed (an unload-safe library, deactivated with no call left running: see
    /// `Kernel+StaleCopies.swift`).
    nonisolated let libraryLedger = LibraryLedger()
    /// `stateSilentSince`'s value.
    nonisolated let stateSilence = Mutex<ContinuousClock.Instant?>(nil)
    var copiesOpened: [String: Bool] = [:]

    let generations: GenerationStore
    let activationMark: ActivationMark
    /// The plugin call the lifecycle thread is in, for `lifecycleStall`.
    nonisolated let lifecycleWatch = LifecycleWatch()
    /// The stored guard records (`StateStore.guardRecords`), read on first use and kept in step with what is
    /// written (`knownGuards`). Behind a lock, not actor state: the writes that keep it in step may run in a batch's
    /// or a command's transaction, after the code that asked for them.
    nonisolated let guardCache = Mutex<[String: [String]]?>(nil)
    /// The refused admin calls the audit trail takes one by one (`auditRefusal`).
    nonisolated let refusalBudget = RefusalBudget()
    /// Started with `safeMode`: no plugin is activated.
    var safeMode = false
    var nextGeneration: [String: Int] = [:]
    /// While `activateAll` activates many plugins: what each activation would read from the store one plugin at a
    /// time (grants, configuration, last generation), read once for all.
    var startReads: StartReads?
    /// The build (library checksum, manifest) whose reload failed last, by plugin. The folder watcher does not try
    /// that build again: a `keel dev` save is both reloaded by the dev loop and seen by the watcher, and each try
    /// probes and records a failure. An explicit reload always tries. Cleared when a build of the plugin is
    /// activated (`setActive`).
    var failedReloads: [String: (checksum: String, manifest: Manifest?)] = [:]
    /// What a plugin's author is told of its last activation, beside its outcome: a registration the host refused
    /// while activate went on regardless (`Contributions.ignoredRefusal`), routes that are likely mistakes
    /// (`Contributions.routeMistakes`). Said by `enable`.
    var authorNotes: [String: [String]] = [:]
    /// Builds whose code failed their probe lately, with why (`recentProbeFailure`).
    var failedProbes: [ProbedBuild: (reason: String, at: ContinuousClock.Instant)] = [:]
    /// Checksums of libraries loaded where they lie, by path, with the file identity they were computed for
    /// (`LibrarySums`): read at start, used by loads and the signature status, written back when they changed: at
    /// the end of start, a second after a change outside it (`remember`), and at shutdown.
    var checksums: [String: LibrarySums.Entry] = [:]
    /// Library checksums the signature status computed, by path (`libraryChecksum`); kept in memory only.
    var shownChecksums: [String: LibrarySums.Entry] = [:]
    /// True when `checksums` holds entries the cache file does not.
    var checksumsChanged = false
    /// On a host following a shared state: each plugin's stored grants and configuration stamp as the last pass read
    /// them (`followGrantsAndConfiguration`); nil before the first pass.
    var followedSettings: (grants: [String: Set<String>], configs: [String: Int])?
    /// The stored grants and configuration stamp a reload for them failed with, by plugin: not tried again until they
    /// change (each try loads the library again; a configuration this host's build refuses would be retried at every pass).
    var followFailed: [String: (grants: Set<String>, stamp: Int)] = [:]
    /// While `setConfig` reloads a plugin with a new configuration: that configuration, which its activation takes
    /// instead of the stored one (stored only once the plugin runs with it).
    var pendingConfig: (id: String, yaml: String, json: String)?
    /// While start-up activates a batch of plugins, the records of their success are collected here and written in
    /// one transaction after the batch: plugin code and child processes never run inside an open write transaction.
    var deferredWrites: [() -> Void]?
    /// While `execute` runs a command on the kernel's thread: the failure reasons already logged in that time, each
    /// with the plugin it was logged for (an activation's failure). The command's own line then names its outcome
    /// without repeating a reason logged for the same plugin (one logged for a dependency is said again).
    var loggedDuringCommand: Set<LoggedFailure>?
    struct LoggedFailure: Hashable {
        let pluginID: String?
        let reason: String
    }
    /// False while a lazy plugin is activated on first use: the record of its activation (status and load history)
    /// is then committed without waiting for the disk (see `wake`).
    var activationRecordsWait = true
    var watcher: PluginWatcher?
    /// Enabled lazy plugins not loaded now (`activation: lazy`): only their manifest's menu entries are published.
    /// Changed only through `markIdle` and `unmarkIdle`, which keep the environment's copy in step (by the ids
    /// changed: a wake among a thousand idle plugins does not compare the whole set).
    private(set) var idle: Set<String> = []

    /// Adds `plugins` to `idle` (with their manifests, for lookups off the actor); tells subscribers when one was new.
    func markIdle(_ plugins: [(id: String, manifest: Manifest)]) {
        guard !plugins.isEmpty else { return }
        var changed = false
        idle.reserveCapacity(idle.count + plugins.count)
        for (id, _) in plugins where idle.insert(id).inserted {
            changed = true
            if liveViewPublishers > 0 { liveViewTouched.insert(id) }
        }
        // Every manifest goes on, also one of a plugin idle already (parked again after a reload: its new manifest).
        environment.updateIdle(adding: plugins.map { ($0.id, $0.manifest) }, removing: [])
        if changed { noteChanged() }
    }

    /// Removes `id` from `idle`. Returns false when it was not idle.
    @discardableResult
    func unmarkIdle(_ id: String) -> Bool {
        guard idle.remove(id) != nil else { return false }
        if liveViewPublishers > 0 { liveViewTouched.insert(id) }
        environment.updateIdle(adding: [], removing: [id])
        noteChanged()
        return true
    }
    /// Changes of what is active or idle so far, and how many of them an event has told subscribers about (see
    /// `noteChanged`).
    var changeCount = 0
    var announcedChanges = 0
    /// When each active lazy plugin with an idle time-out was last seen in use (see `Kernel+Lazy`).
    var lastUse: [String: ContinuousClock.Instant] = [:]
    /// The task that deactivates lazy plugins left unused past their idle time-out; nil while none could be.
    var idleSweeper: Task<Void, Never>?
    /// How many servers keep the live view (`RemoteControl.publishOnChange`); while any does, each command stores it
    /// in its own audit transaction (`execute`).
    var liveViewPublishers = 0
    /// The admin API's last answers about the plugins (`pluginsJSON`, `pluginJSON`), given again while the state
    /// does not answer.
    var lastAnswered: [String: String] = [:]
    /// Each plugin's part of the live view as last built, by id (see `Kernel+LiveView`).
    var liveViewParts: [String: LiveViewPart] = [:]
    /// The plugins named by a command since the live view was last built: their parts are built again.
    var liveViewDirty: Set<String> = []
    /// The plugins whose activity (active generation, idle) changed since the live view was last built.
    var liveViewTouched: Set<String> = []
    /// The plugins whose part of the live view provides an interface: who serves one depends on the other providers.
    var liveViewProviders: Set<String> = []
    /// Whether every part of the live view must be built again, and the tenants it was last built with.
    var liveViewStale = true
    var liveViewDirectory: StateStore.Directory?
    /// How many parts of the live view were built rather than kept, since the kernel started (for the tests).
    var liveViewPartsBuilt = 0
    /// How many plugin records building the live view read, since the kernel started (for the tests).
    var liveViewRecordsRead = 0
    /// The services of the live view as last written, with their JSON: most commands change no service.
    var liveViewServices: (value: [InterfaceInfo], json: String)?
    /// The plugin an install or upgrade is changing (its download runs off the kernel's thread, so the kernel serves
    /// other work meanwhile), and the installs, upgrades and uninstalls waiting for it to end (see `Kernel+Install`).
    var extensionChange: String?
    /// Set by `shutdown()`: work that was waiting off the kernel's thread (a shared-state pass's download) starts
    /// nothing afterwards.
    var isShutDown = false
    var extensionChangeWaiters: [CheckedContinuation<Void, Never>] = []

    /// Opens the state file (creating and migrating it as needed). Loads nothing yet: call `start()`.
    /// - Throws: `KernelError.Code.state` when the state file cannot be used.
    public init(configuration: KernelConfiguration = KernelConfiguration()) throws(KernelError) {
        self.configuration = configuration
        do { state = try configuration.makeState() } catch {
            throw KernelError(.state, reason: error.description)
        }
        // A kernel writes its records from the start: a state it can only read is refused here, in one line, rather
        // than at the first write with SQLite's words.
        if let readOnly = state.readOnlyReason { throw KernelError(.state, reason: readOnly) }
        // Every log line about a plugin is also kept in that plugin's ring (`logs`). A line logged while a thread
        // serves a request carries its id; a line about a plugin carries the generation serving, unless it names one.
        let logs = PluginLogs(), base = configuration.log, serving = ServingGenerations()
        self.serving = serving
        let log: @Sendable (LogRecord) -> Void = { record in
            var record = record
            // Every line, the host's own too: a line about a request names its path, which a client chooses (up to
            // 80 KiB), and each plugin's ring keeps its last 1,000 lines.
            record.message = TextLimits.logLine(record.message)
            if record.requestID == nil { record.requestID = RequestScope.current }
            if record.generation == nil, let id = record.pluginID { record.generation = serving[id] }
            logs.append(record)
            base(record)
        }
        self.logs = logs
        logSink = log
        let metrics = KernelMetrics()
        self.metrics = metrics
        environment = KernelEnvironment(registry: registry, log: log, metrics: metrics)
        pluginEnvironment = DetachableEnvironment(environment)
        access = AccessControl(registry: registry, state: state, log: log)
        environment.attach(access)
        generations = GenerationStore(stateFile: configuration.stateFile, inMemory: configuration.copiesInMemory,
                                      stampMargin: configuration.libraryStampMargin)
        // With the state in memory nothing goes to disk: the mark goes to /dev/null, which cannot be mapped (no-op).
        activationMark = ActivationMark(path: state.isInMemory ? "/dev/null" : configuration.stateFile + ".activating")
    }

    /// Logs one line through the kernel's log (and, naming a plugin, into that plugin's ring, `logs`). [thread-safe]
    public nonisolated func log(_ level: LogLevel, _ pluginID: String?, _ message: String) {
        logSink(LogRecord(level: level, pluginID: pluginID, message: message))
    }

    // MARK: start-up and discovery

    /// Scans the plugin folder, records what it finds, and activates every plugin whose stored state says enabled,
    /// dependencies first. Failures are recorded per plugin and logged; they never stop the others.
    /// - Parameter safeMode: discover and record, but activate nothing.
    public func start(safeMode: Bool = false) {
        self.safeMode = safeMode
        environment.onMisbehaving { [weak self] id, generation, reason in
            guard let self else { return }
            Task { await self.disableMisbehaving(id, generation: generation, reason: reason) }
        }
        environment.onIdleNeeded { [weak self] need in self?.wakeBlocking(need) }
        environment.onChanged { [weak self] in
            guard let self else { return }
            Task { await self.noteChanged() }
        }
        generations.removeLeftovers()
        // The plugin records, the plugin folder's listing, the manifest cache and the libraries' checksums are
        // independent reads of about a millisecond each for a thousand plugins: made at once, on both cores where
        // there are two.
        let read = Mutex<(records: [PluginRecord]?, prefetch: BundleScanner.Prefetch?, sums: [String: LibrarySums.Entry],
                          sumsProblem: String?)>((nil, nil, [:], nil))
        let (state, directory, cache, sums) = (self.state, configuration.pluginsDirectory, manifestCache, librarySums)
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            if i == 0 {
                let records = try? state.plugins()
                let known = sums?.load()
                read.withLock { ($0.records, $0.sums, $0.sumsProblem) = (records, known?.entries ?? [:], known?.problem) }
            } else {
                let prefetch = BundleScanner.prefetch(directory, cache: cache)
                read.withLock { $0.prefetch = prefetch }
            }
        }
        let (stored, fetched, known, sumsProblem) = read.withLock { $0 }
        if checksums.isEmpty { checksums = known }
        if let sumsProblem { log(.warn, nil, sumsProblem) }
        // Work left by a crash changes the folder, an unfinished uninstall the records too: then both are read again.
        var prefetch = recoverInterruptedChanges(hidden: fetched?.folderListing?.hidden) ? nil : fetched
        let unchanged = finishUninstalls(stored)
        if unchanged == nil { prefetch = nil }
        // Start-up writes many small records: they go to SQLite in few transactions, none of them open while plugin
        // code or a probe runs (activateAll batches its own writes).
        var changed = unchanged == nil
        // Cached manifests are taken as they are; whether their files are unchanged is checked on the other core
        // meanwhile (`StampCheck`), and settled before any plugin's code runs.
        var check: StampCheck?
        try? state.batch {
            let scanned = rescan(records: unchanged, prefetched: prefetch, deferringChecks: true)
            if scanned.wrote { changed = true }
            check = scanned.check
            if quarantineAfterCrash() { changed = true }
            // A quarantine is lifted when the library a manifest names has changed: judged on checked manifests only.
            if check != nil, !((try? state.quarantinedChecksums()) ?? [:]).isEmpty, settle(&check, inBatch: true) { changed = true }
            if releaseRebuiltQuarantines() { changed = true }
        }
        // A folder named that is not there is most often a typo (the C API refuses it at keel_open; `keel serve` when
        // the state has plugins enabled): said once, as every enabled plugin is then recorded missing.
        // Only with plugins enabled, and not on a shared state (a host there installs what it lacks into a folder it
        // makes): a new host's folder is made later, and an enable names the folder that is not there itself.
        if bundles.isEmpty, !directory.isEmpty, configuration.openState == nil, (stored ?? []).contains(where: { $0.enabled }),
           !FileManager.default.fileExists(atPath: directory) {
            log(.warn, nil, "the plugin folder \(directory) does not exist: no plugin is found there, and the enabled ones are recorded missing")
        }
        if configuration.recordsCrashes {
            CrashGuard.install(recordPath: crashRecordPath)
            remindQuarantines(stored ?? [])
        }
        if safeMode {
            _ = settle(&check)
            log(.warn, nil, "safe mode: no plugin is activated")
            return
        }
        loadServiceSelections()
        // The records as read before the batch, unless it changed one: one read of them per start, not two.
        var records = (changed ? nil : unchanged) ?? (try? state.plugins()) ?? []
        var plan = startPlan(records)
        // Eager plugins run code now: their manifests are checked first.
        if !plan.activate.isEmpty, settle(&check) {
            records = (try? state.plugins()) ?? []
            plan = startPlan(records)
        }
        startPlugins(plan, records: records)
        // Parked plugins ran no code. When a manifest changed after all, what to activate and park is chosen again
        // from the folder as it is: every parked plugin is unparked first (a lazy dependency of a plugin that became
        // eager is activated, not left idle as well; one parked again is known off the kernel's thread, its menus
        // and its declared permissions by its new manifest).
        if settle(&check) {
            for id in idle.sorted() { unpark(id) }
            records = (try? state.plugins()) ?? []
            startPlugins(startPlan(records), records: records)
        }
        checkGuardsRunning()
        saveLibrarySums()
        // The start's reads (a thousand records, the folder listing, the cached manifests) take about a quarter of a
        // millisecond to free: freed on another thread, so that a lazy plugin's first request does not wait for it.
        // (Their last use: this thread's copies are released as the call returns, before the queue's thread gets to
        // them; `consume` here crashed Swift 6.3.1's optimizer.)
        Self.freeElsewhere((stored, fetched, prefetch, unchanged, records, plan))
    }

    /// The enabled plugins in the folder, split into those to activate at start and those to leave idle.
    private func startPlan(_ records: [PluginRecord]) -> (activate: Set<String>, idle: Set<String>) {
        splitLazy(Set(records.filter { $0.enabled && bundles[$0.id] != nil }.map(\.id)))
    }

    /// Activates `plan`'s eager plugins (dependencies first) and parks its idle ones; `records` as read before.
    private func startPlugins(_ plan: (activate: Set<String>, idle: Set<String>), records: [PluginRecord]) {
        // Parked first, the records as read above: an eager plugin whose preferred lazy provider fails wakes another
        // one of those (`wakeMissingProviders`). A kernel that starts everything idle runs one command: it leaves
        // stored statuses (a failure and its reason) as the host that ran them left them.
        park(Array(plan.idle), batched: true, records: records, recording: !configuration.startsIdle)
        activateAll(activationPlan(for: plan.activate).filter { active[$0] == nil })
        watchIdleTimeouts(plan.activate)
    }

    /// Runs a state write now, or, while a start-up batch or an enable/disable command (`execute`) collects them,
    /// after it, in one transaction (with the command's audit row).
    func write(_ change: @escaping () -> Void) {
        if deferredWrites != nil { deferredWrites?.append(change) } else { change() }
    }

    /// Tells `events` subscribers (the live view, the console) that plugins changed, once for a run of changes:
    /// the event is emitted after the kernel's current job, so a start-up that activates a thousand plugins, or a
    /// lazy plugin woken by a request, makes one event. A command's own `.executed` event covers the changes it made.
    func noteChanged() {
        let scheduled = changeCount != announcedChanges
        changeCount += 1
        if !scheduled { Task { await announceChanges() } }
    }

    private func announceChanges() async {
        checkGuardsRunning()
        guard changeCount != announcedChanges else { return }
        announcedChanges = changeCount
        await events.emit(.pluginsChanged)
    }

    /// Deactivates an active plugin the host will not let run, with the plugins that depend on it, and records them
    /// failed with the reason (`wanted`: whether it stays enabled, so that `enable` after a fix brings it back; nil
    /// leaves the desired state alone and records this host's observation only, for a host following a shared state:
    /// writing the wish there would undo a disable another host just made, and make every other host try it again).
    func takeDown(_ id: String, wanted: Bool?, reason: String, dependentsReason: String) {
        for (other, needs) in dependents(of: id).reversed() {
            deactivate(other)
            try? state.setStatus(other, .failed, reason: "its dependency (\(needs)) \(dependentsReason)")
        }
        deactivate(id)
        if let wanted { try? state.setEnabled(id, wanted, status: .failed, reason: reason) } else {
            try? state.setStatus(id, .failed, reason: reason)
        }
        log(.error, id, reason)
        noteChanged()
        checkGuardsRunning()
    }

    /// Deactivates every active plugin in reverse activation order. The state keeps them enabled, so the next
    /// start brings the same set back.
    public func shutdown() {
        isShutDown = true
        watcher?.stop()
        watcher = nil
        idleSweeper?.cancel()
        idleSweeper = nil
        for id in activationOrder.reversed() { deactivate(id) }
        // What the stop changed in the live view is stored here, before the checkpoint, rather than by its subscribers
        // once the deactivations' events reach them (they then find nothing left to store).
        if liveViewPublishers > 0 { publishLiveView() }
        // The stop's own records are in: the state file alone now holds everything (its write-ahead log folded in).
        try? state.checkpoint()
        saveLibrarySums()
        // Libraries that stay mapped keep their contexts; those keep nothing of this kernel from here on.
        pluginEnvironment.detach()
    }

    // MARK: queries

    /// The host's own version (`keel --version`, what a manifest's `keel:` range is judged against).
    public static let version = KeelVersion.current

    /// The version of the C embedding API (`keel_libversion`, `keel.pc`): 1.1.0 added `keel_reload`,
    /// `records_crashes` and `probe`. It moves with keel_embed.h, not with the host.
    public static let embeddingVersion = embeddingVersionText.description
    /// `embeddingVersion` as static text, NUL-terminated (`keel_libversion` returns it).
    public static let embeddingVersionText: StaticString = "1.1.0"

    /// Ids of the active plugins in activation order.
    /// Readable from any thread without waiting for the kernel (a lifecycle change in progress does not hold it up).
    public nonisolated var activePlugins: [String] { activeIDs.withLock { $0 } }

    /// Makes `plugin` the active generation of `id`. (Once per plugin, not a copy of every generation per change:
    /// start-up with many plugins was quadratic.)
    func setActive(_ id: String, _ plugin: ActivePlugin) {
        active[id] = plugin
        serving.set(id, plugin.generation)
        if !failedReloads.isEmpty { failedReloads[id] = nil }
        if liveViewPublishers > 0 { liveViewTouched.insert(id) }
        noteChanged()
    }

    /// Takes `id` out of the active plugins; returns the generation that was active.
    func removeActive(_ id: String) -> ActivePlugin? {
        serving.set(id, nil)
        guard let removed = active.removeValue(forKey: id) else { return nil }
        if liveViewPublishers > 0 { liveViewTouched.insert(id) }
        noteChanged()
        return removed
    }

}

/// A plugin bundle on disk (`KeelManifest.PluginBundle`); the short name inside the kernel.
typealias Bundle = PluginBundle
