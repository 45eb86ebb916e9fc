// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelState
@testable import KeelManifest
import Testing

/// The manifest cache (`ManifestCache`): a bundle's parsed manifest is taken from the cache only while its
/// plugin.yaml is the very file that was parsed. Real bundle folders with real libraries; the cache entries the tests
/// plant are written through the cache's own file format.
@Suite("manifest cache: unchanged manifests are not parsed again, changed ones always are", .scheduled)
struct ManifestCacheTests {
    /// A plugin folder with bundles `ids` (the hello-c library, manifests naming them "Test <id>"), and a cache file.
    struct Folder {
        let plugins: String
        let cache: ManifestCache
        let log = LogCollector()

        init(_ ids: [String], racyMargin: Double = 2) throws {
            let dir = TestEnvironment.makeTemporaryDirectory("mcache")
            plugins = dir + "/plugins"
            var cache = ManifestCache(path: dir + "/state.db.manifests")
            cache.racyMargin = racyMargin
            self.cache = cache
            let library = try TestEnvironment.builtLibrary("libhello-c.so")
            for id in ids { try write(id, TestEnvironment.manifest(id: id, library: "libhello-c.so"), library: library) }
        }

        func write(_ id: String, _ text: String, library: String? = nil) throws {
            try TestEnvironment.makeBundle(in: plugins, folder: id, manifest: text, library: library)
        }

        func path(_ id: String) -> String { plugins + "/" + id + "/plugin.yaml" }

        /// Overwrites `id`'s plugin.yaml in place (same inode), then sets its modification time back to what it was.
        func overwriteKeepingTimes(_ id: String, _ text: String) throws {
            var before = stat()
            #expect(stat(path(id), &before) == 0)
            let fd = open(path(id), O_WRONLY | O_TRUNC)
            #expect(fd >= 0)
            _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
            var times = [before.st_atim, before.st_mtim]
            #expect(futimens(fd, &times) == 0)
            close(fd)
        }

        func scan() throws -> [String: PluginBundle] {
            let found = try BundleScanner().scan(plugins, cache: cache, log: { log.append($0) })
            return Dictionary(found.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        }

        /// The cache file's entries by folder (nil when the file is not a valid cache).
        func entries() -> [String: ManifestCache.Entry]? {
            (try? ManifestCache.readFile(cache.path)).flatMap(ManifestCache.decode)
        }

        /// Plants an entry for `id` whose manifest is `manifest`, stamped with the file's current identity.
        func plant(_ id: String, _ manifest: Manifest, content: [UInt8]? = nil) throws {
            var all = entries() ?? [:]
            let stamp = try #require(ManifestCache.Stamp(path: path(id)))
            let payload = try #require(ManifestCodec.encode(manifest, warnings: []))
            all[plugins + "/" + id] = ManifestCache.Entry(stamp: stamp, content: content, payload: payload)
            #expect(cache.save(all) == nil)
        }
    }

    @Test("an unchanged plugin.yaml is taken from the cache: a planted entry with the file's identity is what the scan returns")
    func unchangedFromCache() throws {
        let f = try Folder(["alpha", "beta"], racyMargin: 0)
        #expect(try f.scan()["alpha"]?.manifest?.name == "Test alpha")
        #expect(f.entries()?.count == 2)
        var planted = try #require(f.scan()["alpha"]?.manifest)
        planted.name = "From the cache"
        try f.plant("alpha", planted)
        let found = try f.scan()
        #expect(found["alpha"]?.manifest?.name == "From the cache")
        #expect(found["beta"]?.manifest?.name == "Test beta")
        #expect(f.log.lines.isEmpty, "\(f.log.lines)")
    }

    @Test("a cache file another user owns (planted beside a state in /tmp) is ignored, said in one line, and its entries never used: one named the library the host loaded",
          .enabled(if: geteuid() == 0, "gives a file to another user (chown): needs root, as CI runs"))
    func plantedCacheIgnored() throws {
        let f = try Folder(["alpha"], racyMargin: 0)
        _ = try f.scan()
        var planted = try #require(f.scan()["alpha"]?.manifest)
        planted.name = "Planted"
        planted.library = "../../elsewhere/libpwn.so"
        try f.plant("alpha", planted)
        #expect(try f.scan()["alpha"]?.manifest?.name == "Planted", "this user's own cache is used")
        // The same file, another user's.
        try f.plant("alpha", planted)
        #expect(chown(f.cache.path, 65534, 65534) == 0)
        let found = try f.scan()
        #expect(found["alpha"]?.manifest?.name == "Test alpha" && found["alpha"]?.manifest?.library == "libhello-c.so",
                "read from plugin.yaml again: \(String(describing: found["alpha"]?.manifest))")
        #expect(f.log.lines.contains { $0.hasPrefix(f.cache.path + ": ignored: it belongs to uid 65534, not to this user") }, "\(f.log.lines)")
    }

    @Test("an edited plugin.yaml is read again (other size), and the cache then holds the new manifest")
    func staleAfterEdit() throws {
        let f = try Folder(["alpha"], racyMargin: 0)
        _ = try f.scan()
        try f.write("alpha", TestEnvironment.manifest(id: "alpha", version: "2.0.0", library: "libhello-c.so", extra: "description: longer now\n"))
        #expect(try f.scan()["alpha"]?.manifest?.version == Semver(2, 0, 0))
        let payload = try #require(f.entries()?[f.plugins + "/alpha"]?.payload)
        #expect(ManifestCodec.decode(payload)?.manifest.version == Semver(2, 0, 0))
    }

    @Test("a same-size edit in place with the modification time set back is read again (the change time moved)")
    func sameSizeSameTimeEdit() throws {
        let f = try Folder(["alpha"], racyMargin: 0)
        #expect(try f.scan()["alpha"]?.manifest?.version == Semver(1, 0, 0))
        try f.overwriteKeepingTimes("alpha", TestEnvironment.manifest(id: "alpha", version: "1.0.1", library: "libhello-c.so"))
        #expect(try f.scan()["alpha"]?.manifest?.version == Semver(1, 0, 1))
    }

    @Test("a fresh entry keeps the file's bytes: a same-size edit that leaves every time stamp equal is still read again")
    func sameTickEdit() throws {
        let f = try Folder(["alpha"])
        let old = Array(TestEnvironment.manifest(id: "alpha", library: "libhello-c.so").utf8)
        #expect(try f.scan()["alpha"]?.manifest?.version == Semver(1, 0, 0))
        #expect(f.entries()?[f.plugins + "/alpha"]?.content == old, "a file changed just now is cached with its bytes")
        // A second write within the same clock tick: same size, and (planted) the very same identity as the entry.
        try f.overwriteKeepingTimes("alpha", TestEnvironment.manifest(id: "alpha", version: "1.0.2", library: "libhello-c.so"))
        var stale = try #require(ManifestLoader().parse(Data(old), file: f.path("alpha")).0)
        stale.name = "stale"
        try f.plant("alpha", stale, content: old)
        let manifest = try f.scan()["alpha"]?.manifest
        #expect(manifest?.version == Semver(1, 0, 2) && manifest?.name == "Test alpha")
    }

    @Test("a removed bundle leaves the scan and the cache; an added one is read and cached")
    func removedAndAdded() throws {
        let f = try Folder(["alpha", "beta"])
        _ = try f.scan()
        try FileManager.default.removeItem(atPath: f.plugins + "/beta")
        try f.write("gamma", TestEnvironment.manifest(id: "gamma", library: "libhello-c.so"), library: TestEnvironment.builtLibrary("libhello-c.so"))
        let found = try f.scan()
        #expect(Set(found.keys) == ["alpha", "gamma"])
        #expect(found["gamma"]?.manifest?.name == "Test gamma")
        #expect(Set(f.entries()?.keys.map { ($0 as NSString).lastPathComponent } ?? []) == ["alpha", "gamma"])
    }

    @Test("a scan that changes nothing leaves the cache file as it is; one that drops a bundle rewrites it")
    func unchangedNotRewritten() throws {
        let f = try Folder(["alpha", "beta"], racyMargin: 0)
        _ = try f.scan()
        var first = stat(), second = stat()
        #expect(stat(f.cache.path, &first) == 0)
        #expect(try f.scan()["beta"]?.manifest?.name == "Test beta")
        #expect(stat(f.cache.path, &second) == 0)
        #expect(first.st_ino == second.st_ino, "the cache is replaced by a rename when written: same inode, not written")
        try FileManager.default.removeItem(atPath: f.plugins + "/beta")
        #expect(Set(try f.scan().keys) == ["alpha"])
        #expect(f.entries().map { Set($0.keys) } == [f.plugins + "/alpha"])
    }

    @Test("a bundle folder named by path outside the plugin folder is cached, and its edit is read again")
    func namedFolderEdit() throws {
        let f = try Folder(["alpha"], racyMargin: 0)
        let outside = TestEnvironment.makeTemporaryDirectory("mcache-outside")
        try TestEnvironment.makeBundle(in: outside, folder: "beta", manifest: TestEnvironment.manifest(id: "beta", library: "libhello-c.so"),
                                       library: TestEnvironment.builtLibrary("libhello-c.so"))
        func scan() throws -> [String: PluginBundle] {
            let found = try BundleScanner().scan(f.plugins, bundleFolders: [outside + "/beta"], cache: f.cache)
            return Dictionary(found.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        }
        #expect(try scan()["beta"]?.manifest?.version == Semver(1, 0, 0))
        #expect(f.entries()?[outside + "/beta"] != nil)
        try TestEnvironment.makeBundle(in: outside, folder: "beta", manifest: TestEnvironment.manifest(
            id: "beta", version: "2.0.0", library: "libhello-c.so", extra: "description: longer now\n"), library: nil)
        #expect(try scan()["beta"]?.manifest?.version == Semver(2, 0, 0))
        #expect(try scan()["alpha"]?.manifest?.name == "Test alpha")
    }

    @Test("a broken plugin.yaml is reported as before and not cached; fixed, it is read")
    func brokenNotCached() throws {
        let f = try Folder(["alpha"])
        try f.write("alpha", "id: alpha\nname: [unclosed\n")
        #expect(try f.scan()["alpha"]?.problem != nil)
        #expect(f.entries()?[f.plugins + "/alpha"] == nil)
        try f.write("alpha", TestEnvironment.manifest(id: "alpha", library: "libhello-c.so"))
        #expect(try f.scan()["alpha"]?.manifest?.name == "Test alpha")
    }

    @Test("the listing: a folder and a symbolic link to one are bundles; a file, a hidden folder and a dangling link are not")
    func listing() throws {
        let f = try Folder(["alpha"])
        let elsewhere = TestEnvironment.makeTemporaryDirectory("mcache-elsewhere")
        try TestEnvironment.makeBundle(in: elsewhere, folder: "linked", manifest: TestEnvironment.manifest(id: "linked", library: "libhello-c.so"), library: nil)
        try FileManager.default.createSymbolicLink(atPath: f.plugins + "/linked", withDestinationPath: elsewhere + "/linked")
        try FileManager.default.createSymbolicLink(atPath: f.plugins + "/dangling", withDestinationPath: elsewhere + "/none")
        try "not a bundle".write(toFile: f.plugins + "/README", atomically: true, encoding: .utf8)
        try f.write(".hidden", TestEnvironment.manifest(id: "hidden", library: "libhello-c.so"))
        let found = try f.scan()
        #expect(Set(found.keys) == ["alpha", "linked"])
        #expect(found["linked"]?.folder == f.plugins + "/linked")
    }

    @Test("a corrupt or cut-short cache file is ignored with one line naming it, and written anew")
    func corruptCache() throws {
        for damage in ["garbage", "cut", "flipped"] {
            let f = try Folder(["alpha", "beta"])
            _ = try f.scan()
            var bytes = try ManifestCache.readFile(f.cache.path)
            switch damage {
            case "garbage": bytes = Array("not a cache at all".utf8)
            case "cut": bytes.removeLast(bytes.count / 3)
            default: bytes[bytes.count / 2] ^= 0x40
            }
            try Data(bytes).write(to: URL(fileURLWithPath: f.cache.path))
            let found = try f.scan()
            #expect(found["alpha"]?.manifest?.name == "Test alpha" && found["beta"]?.manifest?.name == "Test beta", "\(damage)")
            #expect(f.log.lines.count == 1 && f.log.lines.first?.hasPrefix(f.cache.path + ": ") == true, "\(damage): \(f.log.lines)")
            #expect(f.entries()?.count == 2, "\(damage): rewritten")
        }
    }

    @Test("a cache of an older format version, or written by another Keel version, is ignored and rebuilt")
    func olderFormat() throws {
        let f = try Folder(["alpha"])
        _ = try f.scan()
        // The same entries in a file claiming format version 0, with a valid checksum.
        var bytes = try ManifestCache.readFile(f.cache.path)
        let at = ManifestCache.magic.count
        for i in 0..<8 { bytes[at + i] = 0 }
        bytes.removeLast(8)
        withUnsafeBytes(of: CacheFile.checksum(bytes[...]).littleEndian) { bytes.append(contentsOf: $0) }
        try Data(bytes).write(to: URL(fileURLWithPath: f.cache.path))
        #expect(try f.scan()["alpha"]?.manifest?.name == "Test alpha")
        #expect(f.log.lines.count == 1 && f.log.lines.first?.contains("not a manifest cache of this Keel version") == true, "\(f.log.lines)")
        #expect(f.entries()?.count == 1)
    }

    @Test("every example plugin's manifest, and a manifest using every section, survives the cache's encoding exactly")
    func codecRoundTrip() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: TestEnvironment.repository.path + "/Plugins")
        var texts = try folders.sorted().map { try String(contentsOfFile: TestEnvironment.repository.path + "/Plugins/\($0)/plugin.yaml", encoding: .utf8) }
        texts.append("""
            id: rich
            name: Rich
            version: 1.2.3-beta.1+b5
            abi: "1.1"
            library: librich.so
            capabilities: [routes, menus]
            host: ">=1.0.0 <2.0.0"
            dependencies:
              other: "^1.2"
            menus:
              - {id: rich.main, title: Main, link: /ext/rich/, order: 3}
            permissions:
              - {key: rich.math, actions: [run]}
            commands:
              - {name: add, symbol: calc_add, signature: "(i64, i64) -> i64", permission: "rich.math:run", probe: [2, 40]}
              - {name: greet, symbol: calc_greet, signature: "(str) -> status(str)"}
            proxy:
              - {prefix: /app, upstream: "http://127.0.0.1:9/base", timeout: 5}
            activation: lazy
            idle-timeout: 10m
            unknown-key: kept as a warning

            """)
        texts.append("id: prefixed\nname: P\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: lib.so\ncapabilities: [routes, \"route-prefix:/legacy\"]\n")
        for text in texts {
            let (manifest, warnings) = try ManifestLoader().parse(Data(text.utf8), file: "x/plugin.yaml")
            let bytes = try #require(ManifestCodec.encode(manifest, warnings: warnings), "\(manifest.id)")
            let back = try #require(ManifestCodec.decode(bytes))
            #expect(back.manifest == manifest && back.warnings == warnings)
        }
    }

    @Test("a kernel keeps its cache beside the state file, and a restart after a same-size edit shows the new manifest")
    func kernelRestart() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("mcache-kernel")
        let plugins = dir + "/plugins", state = dir + "/state.db"
        try TestEnvironment.stageExamples(into: plugins)
        func started() async throws -> Kernel {
            var configuration = KernelConfiguration(pluginsDirectory: plugins, stateFile: state, log: KernelConfiguration.silentLog)
            configuration.trustedCapabilities = Set(Capability.allCases)
            let k = try Kernel(configuration: configuration)
            await k.start()
            return k
        }
        var k = try await started()
        try await k.enable("hello")
        await k.shutdown()
        #expect(FileManager.default.fileExists(atPath: state + ".manifests"))
        let manifest = plugins + "/hello-c/plugin.yaml"
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        try text.replacingOccurrences(of: "name: Hello (C)", with: "name: Hallo (C)").write(toFile: manifest, atomically: false, encoding: .utf8)
        k = try await started()
        #expect(try await k.plugin("hello").name == "Hallo (C)")
        #expect(k.activePlugins.contains("hello"))
        await k.shutdown()
    }

    @Test("lazy plugins start idle and wake the same with the cache missing, damaged, or of an older format")
    func lazyWithoutUsableCache() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("lzcache", capabilities: ["routes", "menus"], extra: "activation: lazy\n")
        var k = try f.kernel()
        await k.start()
        try await k.enable("lzcache")
        await k.shutdown()
        let cache = f.state + ".manifests"
        for damage in ["missing", "damaged", "older"] {
            switch damage {
            case "missing": try FileManager.default.removeItem(atPath: cache)
            case "damaged": try Data("KEELMANI and then nothing useful".utf8).write(to: URL(fileURLWithPath: cache))
            default:
                var bytes = try ManifestCache.readFile(cache)
                bytes[ManifestCache.magic.count] = 2  // format version 2, whose checksum was taken byte by byte
                try Data(bytes).write(to: URL(fileURLWithPath: cache))
            }
            k = try f.kernel()
            await k.start()
            #expect(k.isIdle("lzcache"), "\(damage)")
            try await k.wake("lzcache")
            #expect(get(k, "/ext/lzcache/ping")?.0 == 200, "\(damage)")
            await k.shutdown()
            #expect(ManifestCache(path: cache).load().entries.count == 1, "\(damage): written anew")
        }
    }

    @Test("a deferred scan takes cached manifests as they are; its check names every folder whose plugin.yaml changed, went or is new")
    func deferredCheck() throws {
        let f = try Folder(["alpha", "beta", "gamma", "delta"], racyMargin: 0)
        _ = try f.scan()
        // An edit of alpha (other size), a same-size edit of beta with its times set back, gamma's plugin.yaml removed.
        try f.write("alpha", TestEnvironment.manifest(id: "alpha", version: "2.0.0", library: "libhello-c.so", extra: "description: longer now\n"))
        try f.overwriteKeepingTimes("beta", TestEnvironment.manifest(id: "beta", version: "1.0.1", library: "libhello-c.so"))
        try FileManager.default.removeItem(atPath: f.path("gamma"))
        let (found, check) = try BundleScanner().scanDeferringChecks(f.plugins, cache: f.cache, log: { f.log.append($0) })
        let byID = Dictionary(found.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        // What the cache holds, unchecked: the old manifests.
        #expect(byID["alpha"]?.manifest?.version == Semver(1, 0, 0))
        #expect(byID["beta"]?.manifest?.version == Semver(1, 0, 0))
        #expect(byID["gamma"]?.manifest != nil)
        #expect(check.count == 4)
        check.start()
        #expect(check.changedFolders() == ["alpha", "beta", "gamma"].map { f.plugins + "/" + $0 })
        #expect(check.changedFolders().count == 3, "asked again, it answers without waiting")
        // The ordinary scan that follows reads them.
        let again = try f.scan()
        #expect(again["alpha"]?.manifest?.version == Semver(2, 0, 0))
        #expect(again["beta"]?.manifest?.version == Semver(1, 0, 1))
        #expect(again["gamma"]?.manifest == nil && again["gamma"]?.problem != nil)
        #expect(again["delta"]?.manifest?.version == Semver(1, 0, 0))
    }

    @Test("a deferred scan checks an entry kept with its bytes at once, and reads a bundle the cache does not hold")
    func deferredScanChecksRacyEntriesAtOnce() throws {
        let f = try Folder(["alpha"], racyMargin: 3600)
        _ = try f.scan()
        #expect(f.entries()?[f.plugins + "/alpha"]?.content != nil)
        try f.overwriteKeepingTimes("alpha", TestEnvironment.manifest(id: "alpha", version: "1.0.1", library: "libhello-c.so"))
        try f.write("beta", TestEnvironment.manifest(id: "beta", library: "libhello-c.so"), library: try TestEnvironment.builtLibrary("libhello-c.so"))
        let (found, check) = try BundleScanner().scanDeferringChecks(f.plugins, cache: f.cache)
        #expect(found.first { $0.id == "alpha" }?.manifest?.version == Semver(1, 0, 1))
        #expect(found.contains { $0.id == "beta" })
        #expect(check.count == 0)
    }

    @Test("a kernel start uses cached manifests unchecked and settles the check: a plugin made eager while the host was down starts active with its lazy dependency (not idle as well), one changed but still lazy is parked by its new manifest, a quarantine is lifted by the library the new manifest names")
    func kernelSettlesDeferredCheck() async throws {
        let f = KernelFixture()
        try f.fixtureBundle("lzdefer", capabilities: ["routes", "menus"], extra: "activation: lazy\n")
        try f.fixtureBundle("lzdep", capabilities: ["routes", "menus"], extra: "activation: lazy\n")
        try f.fixtureBundle("lzname", capabilities: ["routes", "menus"],
                            extra: "activation: lazy\nmenus:\n  - {id: lzname.main, title: Named, link: /ext/lzname/ping}\n")
        try f.fixtureBundle("lzkeep", capabilities: ["routes", "menus"], extra: "activation: lazy\n")
        try f.fixtureBundle("quar", capabilities: ["routes", "menus"])
        let ids = ["lzdefer", "lzdep", "lzname", "lzkeep", "quar"]
        var k = try f.kernel()
        await k.start()
        for id in ids { try await k.enable(id) }
        let crashed = try #require(try await k.history("quar").last?.checksum)
        await k.shutdown()
        // Entries written within the cache's margin of a file's change are checked by their bytes at once: a start
        // after the margin rewrites them without, as on a host whose plugins were installed earlier.
        try await Task.sleep(for: .seconds(2.2))
        k = try f.kernel()
        await k.start()
        await k.shutdown()
        let entries = ManifestCache(path: f.state + ".manifests").load().entries
        #expect(entries.count == ids.count && entries.values.allSatisfy { $0.content == nil })
        // While the host is down: quar is quarantined (its build crashed), then a new build is installed under another
        // name; lzdefer becomes eager and needs lzdep; lzname is renamed and loses its menu entry.
        try k.state.setQuarantine("quar", checksum: crashed)
        try k.state.setEnabled("quar", false, status: .failed, reason: "quarantined: test")
        let rebuilt = try TestEnvironment.buildFixture("quar", ["PLUGIN_ID=\"quar\"", "PLUGIN_VERSION=\"1.0.1\""])
        try FileManager.default.copyItem(atPath: rebuilt, toPath: f.plugins + "/quar/libquar2.so")
        func edit(_ id: String, _ change: (String) -> String) throws {
            let path = f.plugins + "/\(id)/plugin.yaml"
            try change(try String(contentsOfFile: path, encoding: .utf8)).write(toFile: path, atomically: true, encoding: .utf8)
        }
        try edit("quar") {
            $0.replacingOccurrences(of: "library: libquar.so", with: "library: libquar2.so")
                .replacingOccurrences(of: "version: 1.0.0", with: "version: 1.0.1")
        }
        try edit("lzdefer") { $0.replacingOccurrences(of: "activation: lazy\n", with: "dependencies:\n  lzdep: \"*\"\n") }
        try edit("lzname") { text in
            text.replacingOccurrences(of: "name: Test ", with: "name: Renamed ")
                .replacingOccurrences(of: "menus:\n  - {id: lzname.main, title: Named, link: /ext/lzname/ping}\n", with: "")
        }
        k = try f.kernel()
        await k.start()
        #expect(k.activePlugins.contains("lzdefer"), "made eager while the host was down: active after the start")
        #expect(k.activePlugins.contains("lzdep") && !k.isIdle("lzdep"), "its lazy dependency is active, and not idle as well")
        #expect(!k.isIdle("lzdefer"))
        #expect(k.isIdle("lzkeep") && k.isIdle("lzname"))
        let named = try await k.plugin("lzname")
        #expect(named.name.hasPrefix("Renamed ") && named.menus.isEmpty, "parked by its new manifest: \(named.menus)")
        #expect(k.activePlugins.contains("quar"), "the quarantine is lifted: the manifest names a new build \(f.log.lines.filter { $0.contains("[quar]") })")
        #expect(f.log.lines.contains { $0.contains("plugin.yaml file(s) changed since their manifests were cached") }, "\(f.log.lines)")
        try await k.wake("lzname")
        #expect(get(k, "/ext/lzname/ping")?.0 == 200)
        await k.shutdown()
    }

    @Test("a kernel whose state lives in memory writes no cache")
    func inMemoryState() async throws {
        let dir = TestEnvironment.makeTemporaryDirectory("mcache-memory")
        try TestEnvironment.stageExamples(into: dir + "/plugins")
        let k = try Kernel(configuration: KernelConfiguration(pluginsDirectory: dir + "/plugins", stateFile: StateStore.inMemory, log: KernelConfiguration.silentLog))
        await k.start()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["plugins"])
        await k.shutdown()
    }
}
