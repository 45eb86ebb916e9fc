// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// keel-bench: Keel's costs against their physical baselines, each measured in the same run and printed as a ratio.
// Run it through Scripts/bench.sh, which builds the plugins it needs and installs wrk.

import CKeelBenchNative
import Foundation
import Hummingbird
import Keel
import KeelHTTP
import KeelIsolation
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

// The proxy section's upstream runs as this binary in a child process (see Proxy.swift).
// The isolation section's workers run as this binary in its `worker` mode (see Isolation.swift).
if CommandLine.arguments.count == 2, CommandLine.arguments[1] == "worker" { WorkerMain.run(socket: 0) }
if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "--upstream" { try runUpstream(portFile: CommandLine.arguments[2]) }
// The lazy section measures each start in a fresh child process (see Lazy.swift).
if CommandLine.arguments.count == 6, CommandLine.arguments[1] == "--start-child" { try await runStartChild(Array(CommandLine.arguments.dropFirst(2))) }

struct Options {
    var quick = false
    /// Run only these sections (comma-separated, run in the suite's order): abi, dispatch, http, load, services,
    /// commands, proxy, alternatives, scaling, lazy,
    /// operations, isolation.
    var only: String?
    var work = NSTemporaryDirectory() + "keel-bench-\(getpid())"
    var pluginA = "", pluginB = "", authz: [String] = [], loadTemplate = "", rawLoader = ""
    var providerA = "", providerB = "", consumer = ""
    /// `--extism PATH`: libextism for the alternatives section (skipped without it).
    var extism = ""
    /// `--routes-template PATH`: the scaling plugin (50 routes, empty id) for the scaling section.
    var routesTemplate = ""
    /// `--plot DIR`: where sections that draw their results (scaling) write SVG plots.
    var plot: String?
    /// `--reactivatable PATH`: the authorize plugin declaring KEEL_PLUGIN_FLAG_REACTIVATABLE, for the operations
    /// section (its row is skipped without it).
    var reactivatable = ""

    init() {
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            switch a {
            case "--quick": quick = true
            case "--only": only = args.next()
            case "--work": work = args.next() ?? work
            case "--plugin-a": pluginA = args.next() ?? ""
            case "--plugin-b": pluginB = args.next() ?? ""
            case "--authz": authz.append(args.next() ?? "")
            case "--load-template": loadTemplate = args.next() ?? ""
            case "--raw-loader": rawLoader = args.next() ?? ""
            case "--provider-a": providerA = args.next() ?? ""
            case "--provider-b": providerB = args.next() ?? ""
            case "--consumer": consumer = args.next() ?? ""
            case "--extism": extism = args.next() ?? ""
            case "--routes-template": routesTemplate = args.next() ?? ""
            case "--plot": plot = args.next()
            case "--reactivatable": reactivatable = args.next() ?? ""
            default: FileHandle.standardError.write(Data("keel-bench: unknown argument \(a)\n".utf8)); exit(64)
            }
        }
    }
}

struct Row {
    var name: String
    var measured: String
    var baseline: String
    var ratio: Double?
    var target: String
    var met: Bool?
}

var rows: [Row] = []
let options = Options()
try? FileManager.default.removeItem(atPath: options.work)
try FileManager.default.createDirectory(atPath: options.work, withIntermediateDirectories: true)

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Best of `runs` timings of `body` (seconds).
func best(_ runs: Int, _ body: () -> Void) -> Double {
    var result = Double.infinity
    for _ in 0..<runs {
        let t = now()
        body()
        result = min(result, now() - t)
    }
    return result
}

func rss() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

func bundle(_ dir: String, id: String, library: String, capabilities: String = "[routes, authorize]", extra: String = "") throws {
    let folder = dir + "/" + id
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try "id: \(id)\nname: \(id)\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib.so\ncapabilities: \(capabilities)\n\(extra)"
        .write(toFile: folder + "/plugin.yaml", atomically: true, encoding: .utf8)
    try? FileManager.default.removeItem(atPath: folder + "/lib.so")
    try FileManager.default.copyItem(atPath: library, toPath: folder + "/lib.so")
}

func kernel(_ plugins: String, _ state: String) throws -> Kernel {
    var c = KernelConfiguration(pluginsDirectory: plugins, stateFile: state, log: KernelConfiguration.silentLog)
    c.trustedCapabilities = [.routes, .menus, .authorize]
    return try Kernel(configuration: c)
}

func wanted(_ section: String) -> Bool { options.only.map { $0.split(separator: ",").contains(Substring(section)) } ?? true }

/// Writes `n` bundles `b00000`... under `plugins`, each a copy of the load template with its id patched in, with
/// `extra` appended to each plugin.yaml; with `raw`, also the bare libraries there. Returns the raw list (one per line).
func generatePlugins(_ n: Int, into plugins: String, raw: String? = nil, extra: String = "") throws -> String {
    if let raw { try FileManager.default.createDirectory(atPath: raw, withIntermediateDirectories: true) }
    let template = try Data(contentsOf: URL(fileURLWithPath: options.loadTemplate))
    let marker = Data("b00000".utf8)
    var rawList = ""
    for i in 0..<n {
        var copy = template
        let id = String(format: "b%05d", i)
        var range = copy.range(of: marker)
        while let r = range {
            copy.replaceSubrange(r, with: Data(id.utf8))
            range = copy.range(of: marker, in: r.upperBound..<copy.count)
        }
        if let raw {
            try copy.write(to: URL(fileURLWithPath: raw + "/lib\(id).so"))
            rawList += raw + "/lib\(id).so\n"
        }
        let folder = plugins + "/" + id
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try copy.write(to: URL(fileURLWithPath: folder + "/lib.so"))
        try "id: \(id)\nname: \(id)\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib.so\ncapabilities: [routes]\n\(extra)"
            .write(toFile: folder + "/plugin.yaml", atomically: true, encoding: .utf8)
    }
    return rawList
}

/// Runs Scripts/raw_loader.c over `list` (one library per line); the seconds it took.
func runRawLoader(_ list: String, _ arguments: [String] = [], preloading: [String] = []) throws -> Double {
    try rawLoaderRun(list, arguments, preloading: preloading).seconds
}

/// The shared libraries this process maps (its Swift runtime, Foundation, SQLite...), without the C library and the
/// dynamic loader, which every process has: what a plain C program must preload to look up symbols as the host does.
func hostLibraries() -> [String] {
    // Read to the end (a /proc file reports no size).
    let maps = (try? FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/maps")).readToEnd()).flatMap { $0 }
        .map { String(decoding: $0, as: UTF8.self) } ?? ""
    var seen: [String] = []
    for line in maps.split(separator: "\n") {
        guard let slash = line.firstIndex(of: "/") else { continue }
        let path = String(line[slash...])
        let name = path.split(separator: "/").last.map(String.init) ?? ""
        guard name.contains(".so"), !name.hasPrefix("libc.so"), !name.hasPrefix("ld-linux"), !seen.contains(path) else { continue }
        seen.append(path)
    }
    return seen
}

/// Runs Scripts/raw_loader.c over `list` (one library per line): the seconds it took, and its resident memory after
/// the loads and before them (KiB).
func rawLoaderRun(_ list: String, _ arguments: [String] = [], preloading: [String] = []) throws -> (seconds: Double, rssKiB: Int, bareKiB: Int) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: options.rawLoader)
    p.arguments = arguments
    if !preloading.isEmpty {
        var environment = ProcessInfo.processInfo.environment
        environment["LD_PRELOAD"] = preloading.joined(separator: ":")
        p.environment = environment
    }
    let input = Pipe(), output = Pipe()
    p.standardInput = input
    p.standardOutput = output
    try p.run()
    input.fileHandleForWriting.write(Data(list.utf8))
    try input.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
    func field(_ i: Int) -> Double { i < fields.count ? Double(fields[i]) ?? .nan : .nan }
    return (field(0) / 1e9, Int(field(2).isNaN ? 0 : field(2)), Int(field(3).isNaN ? 0 : field(3)))
}

// MARK: 1. Load: discover, load and activate N plugins vs a raw dlopen loop
// First, in a process that has loaded nothing yet, like the C baselines it is compared with.

if wanted("load") {
    let n = options.quick ? 100 : 1000
    let base = options.work + "/load", raw = options.work + "/raw"
    // Two kinds of plugins: bundles put into a plugins/ folder by hand (each library loaded from a private copy), and
    // installed packages, left as an install leaves them (every file read-only: loaded where they lie, no copy).
    let rawList = try await enabledPlugins(n, dir: base + "/copied", state: base + "/copied.db", lazy: false, raw: raw)
    _ = try await enabledPlugins(n, dir: base + "/installed", state: base + "/installed.db", lazy: false, installed: true)
    let installedAt = now()
    _ = try await enabledPlugins(0, dir: base + "/none", state: base + "/none.db", lazy: false)
    // Plugins installed a moment ago, not this very second, as on a real host (and as in the lazy section): a library
    // or manifest changed within the caches' margin (2 s) is read and hashed again at every start until it settles.
    let settled = installedAt + 2.1 - now()
    if settled > 0 { usleep(UInt32(settled * 1e6)) }
    // Baseline: a C program that only dlopens, dlsyms and calls the entry of the same files.
    // Second baseline: the same C loop doing the file work a copying host cannot skip (read the manifest, copy the
    // library privately so that a rebuild written over it cannot touch the mapped code).
    let bundleList = (0..<n).map { base + String(format: "/copied/b%05d/lib.so", $0) }.joined(separator: "\n") + "\n"
    // Each start in a fresh process that has loaded nothing yet, like the C baselines; three rounds, alternating, the
    // best of each (the machine is shared).
    var rawSeconds = Double.infinity, rawCopySeconds = Double.infinity, rawHostSeconds = Double.infinity
    // Third baseline: the raw loop in a C program that maps the host's own libraries first. Every `dlopen` looks a
    // plugin's undefined symbols up in every library of the process's global scope, and a Swift process has dozens.
    let preloads = hostLibraries()
    var copied: StartFigures?, installed: StartFigures?, empty: StartFigures?
    // The first start after the install reads and hashes every library; the later ones take the checksums of the
    // installed libraries from the cache (`LibrarySums`), as a host's restart does.
    var firstInstalled: StartFigures?
    func better(_ a: StartFigures?, _ b: StartFigures) -> StartFigures { a.map { $0.start <= b.start ? $0 : b } ?? b }
    for round in 0..<3 {
        rawSeconds = min(rawSeconds, try runRawLoader(rawList))
        rawCopySeconds = min(rawCopySeconds, try runRawLoader(bundleList, ["--copy"]))
        rawHostSeconds = min(rawHostSeconds, try runRawLoader(rawList, preloading: preloads))
        copied = better(copied, try startChild("eager", plugins: base + "/copied", state: base + "/copied.db", used: 0))
        let start = try startChild("eager", plugins: base + "/installed", state: base + "/installed.db", used: 0)
        if round == 0 { firstInstalled = start } else { installed = better(installed, start) }
    }
    empty = try startChild("eager", plugins: base + "/none", state: base + "/none.db", used: 0)
    guard let copied, let installed, let empty, let firstInstalled else { fatalError("no load figures") }
    guard copied.active == n, installed.active == n, copied.copies == n, installed.copies == 0 else {
        fatalError("plugins/ folder: \(copied.active) active, \(copied.copies) copies; installed: \(installed.active) active, \(installed.copies) copies")
    }
    func ms(_ s: Double) -> String { String(format: "%.0f ms", s * 1000) }
    rows.append(Row(name: "load: \(n) plugins in a plugins/ folder (private copies) vs raw dlopen loop", measured: ms(copied.start),
                    baseline: ms(rawSeconds), ratio: copied.start / rawSeconds, target: "≤ 1.5", met: copied.start / rawSeconds <= 1.5))
    rows.append(Row(name: "load: \(n) installed packages (no copy) vs raw dlopen loop", measured: ms(installed.start),
                    baseline: ms(rawSeconds), ratio: installed.start / rawSeconds, target: "≤ 1.5", met: installed.start / rawSeconds <= 1.5))
    rows.append(Row(name: "the same, the first start after the install (every library read and hashed)", measured: ms(firstInstalled.start),
                    baseline: ms(rawSeconds), ratio: firstInstalled.start / rawSeconds, target: "report", met: nil))
    rows.append(Row(name: "load, plugins/ folder, vs a C loop that also reads manifests and copies", measured: ms(copied.start),
                    baseline: ms(rawCopySeconds), ratio: copied.start / rawCopySeconds, target: "report", met: nil))
    rows.append(Row(name: "the raw loop with the host's \(preloads.count) libraries mapped (LD_PRELOAD) vs without", measured: ms(rawHostSeconds),
                    baseline: ms(rawSeconds), ratio: rawHostSeconds / rawSeconds, target: "report", met: nil))
    rows.append(Row(name: "load, installed packages, vs the raw loop with the host's libraries mapped", measured: ms(installed.start),
                    baseline: ms(rawHostSeconds), ratio: installed.start / rawHostSeconds, target: "report", met: nil))
    let perPlugin = Double((copied.hostKiB - copied.bareKiB) - (empty.hostKiB - empty.bareKiB)) / Double(n)
    rows.append(Row(name: "memory per idle plugin (plugins/ folder; installed)", measured: String(format: "%.1f KiB", perPlugin),
                    baseline: String(format: "%.1f KiB installed", Double((installed.hostKiB - installed.bareKiB) - (empty.hostKiB - empty.bareKiB)) / Double(n)),
                    ratio: nil, target: "report", met: nil))
}

// MARK: 2. ABI call

if wanted("abi") {
    let n = options.quick ? 2_000_000 : 20_000_000
    // At four or five cycles a call, where the code happens to sit (which the loader randomises) moves the result
    // by a cycle. So the plugin is loaded eight times, from eight copies at eight addresses, and the median counts.
    try FileManager.default.createDirectory(atPath: options.work, withIntermediateDirectories: true)
    let copies = options.quick ? 3 : 8
    typealias Add = @convention(c) (Int32, Int32) -> Int32
    var viaPlugin: [Add] = [], loopsInPlugin: [@convention(c) (Int, Add?) -> Int32] = []
    for k in 0..<copies {
        let path = options.work + "/abi-\(k).so"
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: options.pluginA, toPath: path)
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL), let symbol = dlsym(handle, "keel_bench_add"),
              let loop = dlsym(handle, "keel_bench_call_loop") else {
            fatalError("cannot load \(path): \(String(cString: dlerror()))")
        }
        viaPlugin.append(unsafeBitCast(symbol, to: Add.self))
        loopsInPlugin.append(unsafeBitCast(loop, to: (@convention(c) (Int, Add?) -> Int32).self))
    }
    // Each loop in a function of its own, kept out of line: the two differ only in the call, not in how the
    // optimiser happened to lay out the surrounding code.
    @inline(never) func directLoop(_ n: Int) -> Int32 {
        var sink: Int32 = 0
        for i in 0..<n { sink &+= keel_bench_add(Int32(truncatingIfNeeded: i), 1) }
        return sink
    }
    @inline(never) func pointerLoop(_ n: Int, _ f: @convention(c) (Int32, Int32) -> Int32) -> Int32 {
        var sink: Int32 = 0
        for i in 0..<n { sink &+= f(Int32(truncatingIfNeeded: i), 1) }
        return sink
    }
    let linkedIn: Add = keel_bench_add
    var sink: Int32 = 0
    var direct: [Double] = [], plugin: [Double] = [], pointer: [Double] = [], libToPlugin: [Double] = [], libToHost: [Double] = []
    // Interleaved, best of three per copy. The same calls are also made from the loop built into a plugin copy: into
    // the next copy, and into the host's linked-in function.
    for (k, f) in viaPlugin.enumerated() {
        let loop = loopsInPlugin[k], next = viaPlugin[(k + 1) % viaPlugin.count]
        direct.append(best(3) { sink &+= directLoop(n) })
        plugin.append(best(3) { sink &+= pointerLoop(n, f) })
        pointer.append(best(3) { sink &+= pointerLoop(n, linkedIn) })
        libToPlugin.append(best(3) { sink &+= loop(n, next) })
        libToHost.append(best(3) { sink &+= loop(n, linkedIn) })
    }
    if sink == 42 { print("") }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    let (d, p, q) = (median(direct), median(plugin), median(pointer))
    func ns(_ t: Double) -> String { String(format: "%.2f ns", t / Double(n) * 1e9) }
    // A call into a loaded library is always through a pointer (the PLT or a function table): the direct call is
    // shown for what inlining the linked-in copy's call site gains, not as the target.
    rows.append(Row(name: "ABI call (into the plugin vs linked in, direct call)", measured: ns(p), baseline: ns(d),
                    ratio: p / d, target: "report", met: nil))
    // What the plugin boundary itself costs: the same indirect call, into the plugin or into the linked-in copy (the
    // issue's target, "≤ 1.2 via pointer").
    rows.append(Row(name: "ABI call (into the plugin vs linked in, both via pointer)", measured: ns(p), baseline: ns(q),
                    ratio: p / q, target: "≤ 1.2", met: p / q <= 1.2))
    // What the difference above is made of: where the call site lies. The same indirect call, made from a loop inside
    // a loaded library, into another loaded plugin and into the host's linked-in function. On some processors a call
    // whose target lies far from the call site (the executable's code and the libraries' are terabytes apart in the
    // address space) costs a cycle or two more, whichever side the plugin is on.
    let (lp, lh) = (median(libToPlugin), median(libToHost))
    rows.append(Row(name: "the same call made from inside a loaded library: into another plugin vs into the host's linked-in copy",
                    measured: ns(lp), baseline: ns(lh), ratio: lp / lh, target: "report", met: nil))
}

// MARK: 3. Handler dispatch (marshalling a request and response across the ABI)

if wanted("dispatch") {
    let plugins = options.work + "/dispatch", state = options.work + "/dispatch.db"
    try bundle(plugins, id: "bench", library: options.pluginA)
    let k = try kernel(plugins, state)
    await k.start()
    try await k.enable("bench")
    let snapshot = k.registry.snapshot
    guard let match = snapshot.route(method: "GET", path: "/ext/bench/ping") else { fatalError("no route") }
    let request = PluginRequest(method: "GET", path: "/ext/bench/ping", routePath: "/ping",
                                headers: [("host", "127.0.0.1"), ("user-agent", "bench"), ("accept", "*/*")])
    let builtin: @Sendable (PluginRequest) -> PluginResponse = { _ in PluginResponse(status: 200, body: Array("pong A\n".utf8)) }
    let n = options.quick ? 20_000 : 500_000
    var bytes = 0
    let keelPath = best(3) { for _ in 0..<n { if case let .success(r) = match.route.handler.handle(request) { bytes &+= r.body.count } } }
    let native = best(3) { for _ in 0..<n { bytes &+= builtin(request).body.count } }
    if bytes == 1 { print("") }
    rows.append(Row(name: "handler call with request/response marshalling", measured: String(format: "%.0f ns", keelPath / Double(n) * 1e9),
                    baseline: String(format: "%.0f ns (Swift closure)", native / Double(n) * 1e9), ratio: keelPath / native,
                    target: "report", met: nil))
    await k.shutdown()
}

// MARK: 4–6. HTTP: dispatch, auth hooks, reload under load

if wanted("http") {
    let plugins = options.work + "/http", state = options.work + "/http.db"
    try bundle(plugins, id: "bench", library: options.pluginA)
    for (i, lib) in options.authz.enumerated() { try bundle(plugins, id: "authz\(i + 1)", library: lib) }
    let k = try kernel(plugins, state)
    await k.start()
    try await k.enable("bench")
    let server = try await BenchServer.start(k) { router in
        router.get("/builtin/ping") { _, _ in Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "pong A\n"))) }
        // The same answer with the headers the host adds to every plugin answer (sandbox policy, nosniff, request id).
        router.get("/builtin/ping-headers") { _, _ in
            var headers = HTTPFields()
            headers.append(contentsOf: PluginAnswerHeaders.fresh())
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: "pong A\n")))
        }
    }
    let base = server.base
    let (rounds, seconds) = options.quick ? (2, 2) : (5, 5)
    _ = wrk(base + "/builtin/ping", seconds: 1)
    _ = wrk(base + "/ext/bench/ping", seconds: 1)

    /// Runs the built-in and the plugin route in alternating pairs (ABBA order, so that a drift in the machine's load
    /// weighs on both alike) and reports the median of the per-pair ratios.
    func compare(_ label: String, builtin path: String = "/builtin/ping", report: Bool = false) {
        let pairs = abbaPairs(base + path, base + "/ext/bench/ping", rounds: rounds, seconds: seconds)
            .map { (builtin: $0.a, plugin: $0.b) }
        func median(_ xs: [Double]) -> Double {
            let s = xs.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        let rps = median(pairs.map { $0.plugin.rps / $0.builtin.rps })
        let p99 = median(pairs.map { $0.plugin.p99ms / $0.builtin.p99ms })
        let spread = pairs.map { $0.plugin.rps / $0.builtin.rps }
        rows.append(Row(name: "HTTP throughput, \(label)", measured: String(format: "%.0f req/s", median(pairs.map(\.plugin.rps))),
                        baseline: String(format: "%.0f req/s (%.2f–%.2f)", median(pairs.map(\.builtin.rps)), spread.min() ?? 0, spread.max() ?? 0),
                        ratio: rps, target: report ? "report" : "≥ 0.95", met: report ? nil : rps >= 0.95))
        rows.append(Row(name: "HTTP p99 latency, \(label)", measured: String(format: "%.2f ms", median(pairs.map(\.plugin.p99ms))),
                        baseline: String(format: "%.2f ms", median(pairs.map(\.builtin.p99ms))), ratio: p99,
                        target: report ? "report" : "≤ 1.1", met: report ? nil : p99 <= 1.1))
    }
    compare("plugin route vs built-in")
    // What bounds the row above: the same built-in route answering the three headers every plugin answer carries.
    _ = wrk(base + "/builtin/ping-headers", seconds: 1)
    compare("plugin route vs built-in with the plugin answer's headers", builtin: "/builtin/ping-headers", report: true)

    // The noise floor: the built-in route against itself, in pairs made the same way. Its spread is what a target
    // such as "≥ 0.95 in every one of five runs" can be judged against on this machine: where A/A pairs fall below
    // 0.95 themselves, a single pair says nothing about the plugin path.
    let same = abbaPairs(base + "/builtin/ping", base + "/builtin/ping", rounds: rounds, seconds: seconds)
    let sameRatios = same.map { $0.b.rps / $0.a.rps }.sorted()
    func middle(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    rows.append(Row(name: "HTTP throughput, built-in vs itself (A/A pairs: the noise floor)",
                    measured: String(format: "%.0f req/s", middle(same.map(\.b.rps))),
                    baseline: String(format: "%.0f req/s (%.2f–%.2f)", middle(same.map(\.a.rps)),
                                     sameRatios.first ?? 0, sameRatios.last ?? 0),
                    ratio: middle(sameRatios), target: "report", met: nil))

    // The cost of metrics: the plugin route on this server (metrics on) and on a second one of the same kernel with
    // metrics off, in alternating pairs (ABBA); the median ratio of the pairs.
    var unmeasured = ServerConfiguration(port: 0)
    unmeasured.metrics = false
    let offServer = try await BenchServer.start(k, configuration: unmeasured)
    let offBase = offServer.base
    _ = wrk(offBase + "/ext/bench/ping", seconds: 1)
    let metricPairs = abbaPairs(base + "/ext/bench/ping", offBase + "/ext/bench/ping", rounds: rounds, seconds: seconds)
        .map { (on: $0.a, off: $0.b) }
    await offServer.stop()
    let metricRatios = metricPairs.map { $0.on.rps / $0.off.rps }.sorted()
    let metricRatio = metricRatios[metricRatios.count / 2]
    rows.append(Row(name: "HTTP throughput, plugin route with metrics vs without",
                    measured: String(format: "%.0f req/s", metricPairs.map(\.on.rps).sorted()[rounds / 2]),
                    baseline: String(format: "%.0f req/s (%.2f–%.2f)", metricPairs.map(\.off.rps).sorted()[rounds / 2],
                                     metricRatios.first ?? 0, metricRatios.last ?? 0),
                    ratio: metricRatio, target: "≥ 0.97", met: metricRatio >= 0.97))
    for i in 1...options.authz.count { try await k.enable("authz\(i)") }
    compare("with 3 authorize hooks vs built-in")
    for i in 1...options.authz.count { try await k.disable("authz\(i)") }

    // Reload under load: wrk keeps hammering the plugin route while the plugin is swapped.
    let reloads = options.quick ? 10 : 50
    let load = Task.detached { wrk(base + "/ext/bench/ping", seconds: options.quick ? 4 : 15) }
    try await Task.sleep(for: .milliseconds(300))
    // Swap latency: from asking for the reload until it returned. The new build serves from its publish, inside the
    // call, before the load's records are written, so this bounds the swap from above. A client asking all along is
    // timed too, until it first gets an answer from the new build: that adds its own requests' time in the queue
    // behind wrk's connections (and a request already under way at the swap is answered by the old build).
    var calls: [Double] = [], seen: [Double] = []
    let session = URLSession(configuration: .ephemeral)
    for i in 0..<reloads {
        let (lib, tag) = i % 2 == 0 ? (options.pluginB, "pong B") : (options.pluginA, "pong A")
        let target = plugins + "/bench/lib.so"
        try? FileManager.default.removeItem(atPath: target + ".tmp")
        try FileManager.default.copyItem(atPath: lib, toPath: target + ".tmp")
        rename(target + ".tmp", target)
        let t = now()
        let reload = Task { try await k.reload("bench"); return now() }
        while true {
            let (data, _) = try await session.data(from: URL(string: base + "/ext/bench/ping")!)
            if String(decoding: data, as: UTF8.self).hasPrefix(tag) { break }
        }
        seen.append((now() - t) * 1000)
        calls.append((try await reload.value - t) * 1000)
    }
    let traffic = await load.value
    func percentiles(_ xs: [Double]) -> (Double, Double) {
        let s = xs.sorted()
        return (s[s.count / 2], s[min(s.count - 1, Int(Double(s.count) * 0.99))])
    }
    let (p50, p99) = percentiles(calls), (s50, s99) = percentiles(seen)
    rows.append(Row(name: "reload swap latency under load: the reload call, swap and records (p50 / p99)", measured: String(format: "%.1f / %.1f ms", p50, p99),
                    baseline: "\(reloads) reloads", ratio: nil, target: "p99 < 50 ms", met: p99 < 50))
    rows.append(Row(name: "the same, until a client asking all along first gets the new build (p50 / p99)", measured: String(format: "%.1f / %.1f ms", s50, s99),
                    baseline: "\(reloads) reloads", ratio: nil, target: "report", met: nil))
    rows.append(Row(name: "failed requests during reloads", measured: "\(traffic.failed)", baseline: String(format: "%.0f req/s served", traffic.rps),
                    ratio: nil, target: "0", met: traffic.failed == 0))

    await server.stop()
    await k.shutdown()
}

if wanted("services") && !options.consumer.isEmpty { try await servicesBenchmarks() }
if wanted("commands") { try await commandsBenchmarks() }
if wanted("proxy") { try await proxyBenchmarks() }
if wanted("alternatives") { try await alternativesBenchmarks() }
if wanted("scaling") { try await scalingBenchmarks() }
if wanted("lazy") { try await lazyBenchmarks() }
if wanted("isolation") { try await isolationBenchmarks() }
if wanted("operations") { try await operationsBenchmarks() }

// MARK: report

print("")
func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
print(pad("benchmark", 60) + pad("Keel", 18) + pad("baseline", 28) + pad("ratio", 8) + pad("target", 8) + "met")
for r in rows {
    let ratio = r.ratio.map { String(format: "%.3f", $0) } ?? "-"
    let met = r.met.map { $0 ? "yes" : "NO" } ?? "-"
    print(pad(r.name, 60) + pad(r.measured, 18) + pad(r.baseline, 28) + pad(ratio, 8) + pad(r.target, 8) + met)
}
let missed = rows.filter { $0.met == false }.count
print("")
print("\(rows.filter { $0.met == true }.count) targets met, \(missed) missed (\(options.quick ? "quick" : "full") run, \(ProcessInfo.processInfo.activeProcessorCount) cores)")
// KEEL_BENCH_KEEP=1 leaves the generated plugins and state files behind, to profile one start on its own
// (`keel-bench --start-child MODE PLUGINS STATE USED`).
if ProcessInfo.processInfo.environment["KEEL_BENCH_KEEP"] == nil { try? FileManager.default.removeItem(atPath: options.work) }
